/**
 * hono-mpp/metrics: a real Hono app with mpp() and the in-memory method, prom-client's real
 * registry, and the exposition text as Prometheus scrapes it. Payments, refusals, failed and
 * unknown settlements are counted with bounded labels; nothing secret or identifying (credential,
 * payer, challenge id, request path) appears anywhere in the scrape.
 */
import { prometheus } from '@hono/prometheus'
import { Hono } from 'hono'
import { combineListeners, mpp, type PaymentEvent } from 'hono-mpp'
import { paymentMetrics } from 'hono-mpp/metrics'
import { Registry } from 'prom-client'
import { describe, expect, test } from 'vitest'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, credentialFor } from '../helpers/http.js'

const secret = 'a metrics test secret, at least thirty-two bytes long'

function harness(registry: Registry) {
  const method = fakeMethod()
  const events: PaymentEvent[] = []
  const metrics = paymentMetrics({ registry })
  const pay = mpp({
    secret,
    methods: [method],
    onEvent: combineListeners(
      () => {
        throw new Error('a failing listener stops neither the others nor the payment')
      },
      metrics.onEvent,
      (event) => events.push(event),
    ),
  })
  const app = new Hono()
  app.get(
    '/articles/:id',
    pay.charge({ amount: '0.01' }, (c) => c.json({ id: c.req.param('id') })),
  )
  /** Pays `path` with a fresh challenge and the voucher `token`; returns the answer and what identifies the payment. */
  const payWith = async (path: string, token: string, options: { authorization?: string } = {}) => {
    const challenge = challengesOf(await app.request(path))[0]!
    method.vouchers.add(token)
    const authorization = options.authorization ?? credentialFor(challenge, { type: 'voucher', token })
    const response = await app.request(path, { headers: { authorization } })
    return { response, authorization, challengeId: challenge.id }
  }
  return { app, method, events, payWith }
}

/** The value of one sample line of the exposition text (undefined when absent). */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`)
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue
    const inner = line.slice(name.length + 1, line.indexOf('}'))
    const parts = inner.split(',')
    if (parts.length === wanted.length && wanted.every((label) => parts.includes(label))) return Number(line.slice(line.indexOf('}') + 2))
  }
  return undefined
}

describe('hono-mpp/metrics', () => {
  test('payments, amounts, refusals, failed and unknown settlements and settle latency are counted by route, method, intent and reason', async () => {
    const registry = new Registry()
    const { app, method, events, payWith } = harness(registry)
    const secrets: string[] = [secret]

    // Two payments settle.
    for (const token of ['tok-alpha-7f3a', 'tok-bravo-91c2']) {
      const paid = await payWith(`/articles/${token.length}`, token)
      expect(paid.response.status).toBe(200)
      secrets.push(token, paid.authorization, paid.challengeId)
    }
    // A credential with an unknown voucher is refused.
    const challenge = challengesOf(await app.request('/articles/1'))[0]!
    const forged = credentialFor(challenge, { type: 'voucher', token: 'tok-forged-0d0d' })
    const refused = await app.request('/articles/1', { headers: { authorization: forged } })
    expect(refused.status).toBe(402)
    secrets.push('tok-forged-0d0d', forged, challenge.id)
    // The chain refuses one settlement.
    method.nextSettle = 'fail'
    const failed = await payWith('/articles/2', 'tok-charlie-55aa')
    expect(failed.response.status).toBe(402)
    secrets.push('tok-charlie-55aa', failed.authorization, failed.challengeId)
    // One settlement's outcome is unknown (it landed), and its retry recovers it.
    method.nextSettle = 'unknown-but-landed'
    const unknown = await payWith('/articles/3', 'tok-delta-3e3e')
    expect(unknown.response.status).toBe(503)
    method.nextSettle = 'ok'
    const recovered = await app.request('/articles/3', { headers: { authorization: unknown.authorization } })
    expect(recovered.status).toBe(200)
    secrets.push('tok-delta-3e3e', unknown.authorization, unknown.challengeId)

    const text = await registry.metrics()
    const route = '/articles/:id'
    const payment = { route, method: 'fake', intent: 'charge' }
    expect(sample(text, 'mpp_challenges_total', { route })).toBe(5)
    expect(sample(text, 'mpp_payments_total', { ...payment, outcome: 'verified' })).toBe(4)
    expect(sample(text, 'mpp_payments_total', { ...payment, outcome: 'settled' })).toBe(2)
    expect(sample(text, 'mpp_payments_total', { ...payment, outcome: 'recovered' })).toBe(1)
    expect(sample(text, 'mpp_payments_total', { ...payment, outcome: 'settlement_failed' })).toBe(1)
    expect(sample(text, 'mpp_payments_total', { ...payment, outcome: 'settlement_unknown' })).toBe(1)
    expect(sample(text, 'mpp_payments_total', { ...payment, outcome: 'released' })).toBe(2)
    // 0.01 in a 6-decimal token: 10 000 base units, three times (two settled, one recovered).
    expect(sample(text, 'mpp_amount_base_units_total', { method: 'fake', intent: 'charge', currency: 'FAKE' })).toBe(30_000)
    expect(sample(text, 'mpp_refusals_total', { route, reason: 'verification-failed', status: '402' })).toBe(1)
    expect(sample(text, 'mpp_refusals_total', { route, reason: 'settlement-failed', status: '402' })).toBe(1)
    expect(sample(text, 'mpp_refusals_total', { route, reason: 'payment-unavailable', status: '503' })).toBe(1)
    const latency = { method: 'fake', intent: 'charge' }
    expect(sample(text, 'mpp_settle_duration_seconds_count', { ...latency, outcome: 'settled' })).toBe(2)
    expect(sample(text, 'mpp_settle_duration_seconds_count', { ...latency, outcome: 'failed' })).toBe(1)
    expect(sample(text, 'mpp_settle_duration_seconds_count', { ...latency, outcome: 'unknown' })).toBe(1)
    expect(sample(text, 'mpp_settle_duration_seconds_count', { ...latency, outcome: 'recovered' })).toBe(1)
    expect(sample(text, 'mpp_settle_duration_seconds_bucket', { ...latency, outcome: 'settled', le: '+Inf' })).toBe(2)

    // The events carry the payers and challenge ids; the scrape carries none of them, nor a path.
    const payers = events.flatMap((event) => ('payer' in event && event.payer ? [event.payer] : []))
    const challengeIds = events.flatMap((event) =>
      event.type === 'challenge' ? event.challengeIds : 'challengeId' in event && event.challengeId ? [event.challengeId] : [],
    )
    expect(payers.length).toBeGreaterThan(0)
    expect(challengeIds.length).toBeGreaterThan(5)
    for (const hidden of [...secrets, ...payers, ...challengeIds, '/articles/14', '/articles/2', '/articles/3', 'ref-tok']) expect(text).not.toContain(hidden)
    for (const authorization of secrets.filter((value) => value.startsWith('Payment '))) expect(text).not.toContain(authorization.slice(8, 40))
  })

  test('paymentMetrics twice on one registry reuses the metrics; routeLabel: false drops the route', async () => {
    const registry = new Registry()
    const first = paymentMetrics({ registry, routeLabel: false })
    const second = paymentMetrics({ registry, routeLabel: false })
    expect(second.payments).toBe(first.payments)
    const pay = mpp({ secret, methods: [fakeMethod()], onEvent: second.onEvent })
    const app = new Hono()
    app.get('/x/:id', pay.charge({ amount: '1' }), (c) => c.text('ok'))
    expect((await app.request('/x/1')).status).toBe(402)
    const text = await registry.metrics()
    expect(text).toContain('mpp_challenges_total 1')
    expect(text).not.toContain('route=')
  })

  test('beside @hono/prometheus on one registry: one /metrics scrape shows HTTP and payment metrics', async () => {
    const registry = new Registry()
    const { printMetrics, registerMetrics } = prometheus({ registry })
    const metrics = paymentMetrics({ registry })
    const method = fakeMethod()
    const pay = mpp({ secret, methods: [method], onEvent: metrics.onEvent })
    const app = new Hono()
    app.use('*', registerMetrics)
    app.get('/metrics', printMetrics)
    app.get('/report', pay.charge({ amount: '0.25' }), (c) => c.json({ report: true }))

    const challenge = challengesOf(await app.request('/report'))[0]!
    method.vouchers.add('tok-echo-4b4b')
    const authorization = credentialFor(challenge, { type: 'voucher', token: 'tok-echo-4b4b' })
    expect((await app.request('/report', { headers: { authorization } })).status).toBe(200)

    const scrape = await app.request('/metrics')
    expect(scrape.status).toBe(200)
    const text = await scrape.text()
    expect(sample(text, 'http_requests_total', { method: 'GET', route: '/report', status: '200', ok: 'true' })).toBe(1)
    expect(sample(text, 'mpp_payments_total', { route: '/report', method: 'fake', intent: 'charge', outcome: 'settled' })).toBe(1)
    expect(sample(text, 'mpp_amount_base_units_total', { method: 'fake', intent: 'charge', currency: 'FAKE' })).toBe(250_000)
    for (const hidden of ['tok-echo-4b4b', challenge.id, 'payer-of-', authorization.slice(8, 40)]) expect(text).not.toContain(hidden)
  })
})
