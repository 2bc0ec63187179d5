/**
 * The `delivered` payment event: the paid work's result handed back with its receipt, once per
 * payment, through a real Hono app with mpp() and the in-memory method. Counted by
 * hono-mpp/metrics (payments_total{outcome="delivered"}) and traced by hono-mpp/otel
 * (`mpp.deliver`), never carrying the credential, the payer or the receipt.
 */
import type { Attributes, Span, Tracer } from '@opentelemetry/api'
import { Hono } from 'hono'
import { combineListeners, mpp, type PaymentEvent } from 'hono-mpp'
import { paymentMetrics } from 'hono-mpp/metrics'
import { paymentTracing } from 'hono-mpp/otel'
import { Registry } from 'prom-client'
import { describe, expect, test } from 'vitest'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, credentialFor } from '../helpers/http.js'

const secret = 'a delivered-event test secret, at least thirty-two bytes'

/** A tracer that records each span's name and attributes (enough for paymentTracing). */
function recordingTracer() {
  const spans: { name: string; attributes: Attributes }[] = []
  const tracer = {
    startSpan(name: string, options: { attributes?: Attributes } = {}) {
      spans.push({ name, attributes: { ...options.attributes } })
      return { setStatus: () => {}, end: () => {} } as unknown as Span
    },
  } as unknown as Tracer
  return { spans, tracer }
}

function harness() {
  // Vouchers are settled by the method itself, so a route may settle them after the work.
  const method = Object.assign(fakeMethod(), { deferrable: ['voucher'] })
  const events: PaymentEvent[] = []
  const registry = new Registry()
  const metrics = paymentMetrics({ registry })
  const { spans, tracer } = recordingTracer()
  const pay = mpp({ secret, methods: [method], onEvent: combineListeners(metrics.onEvent, paymentTracing({ tracer }), (event) => events.push(event)) })
  const app = new Hono()
  app.get('/before/:outcome', pay.charge({ amount: '0.01' }), (c) => (c.req.param('outcome') === 'ok' ? c.json({ ok: true }) : c.json({ ok: false }, 500)))
  app.get('/after/:outcome', pay.charge({ amount: '0.5', settle: 'after' }), (c) =>
    c.req.param('outcome') === 'ok' ? c.json({ ok: true }) : c.json({ ok: false }, 500),
  )
  const payWith = async (path: string, token: string) => {
    const challenge = challengesOf(await app.request(path))[0]!
    method.vouchers.add(token)
    const authorization = credentialFor(challenge, { type: 'voucher', token })
    return { response: await app.request(path, { headers: { authorization } }), authorization, challengeId: challenge.id }
  }
  const delivered = () => events.filter((event) => event.type === 'delivered')
  return { app, method, events, registry, spans, payWith, delivered }
}

describe('the delivered event', () => {
  test('settle before: a paid 200 is delivered once, with intent, method, challengeId, amount and currency; a retry of the same credential is not delivered again', async () => {
    const { app, payWith, delivered } = harness()
    const paid = await payWith('/before/ok', 'tok-delivered-1')
    expect(paid.response.status).toBe(200)
    expect(paid.response.headers.get('payment-receipt')).toBeTruthy()
    expect(delivered()).toEqual([
      {
        type: 'delivered',
        challengeId: paid.challengeId,
        method: 'fake',
        intent: 'charge',
        amount: '10000',
        currency: 'FAKE',
        path: '/before/ok',
        route: '/before/:outcome',
      },
    ])
    const again = await app.request('/before/ok', { headers: { authorization: paid.authorization } })
    expect(again.status).not.toBe(200)
    expect(delivered()).toHaveLength(1)
    // Nothing that authorizes or identifies the payer rides on the event.
    const text = JSON.stringify(delivered())
    for (const hidden of [paid.authorization.slice(8, 48), 'tok-delivered-1', 'payer', 'receipt', 'reference']) expect(text).not.toContain(hidden)
  })

  test('no delivery when the paid work failed (settle before: settled, not delivered; settle after: released), and settle after delivers a success', async () => {
    const { events, payWith, delivered } = harness()
    expect((await payWith('/before/fail', 'tok-delivered-2')).response.status).toBe(500)
    expect(events.some((event) => event.type === 'settled')).toBe(true)
    expect(delivered()).toEqual([])
    expect((await payWith('/after/fail', 'tok-delivered-3')).response.status).toBe(500)
    expect(events.filter((event) => event.type === 'released')).toHaveLength(1)
    expect(delivered()).toEqual([])
    const paid = await payWith('/after/ok', 'tok-delivered-4')
    expect(paid.response.status).toBe(200)
    expect(delivered()).toEqual([expect.objectContaining({ challengeId: paid.challengeId, amount: '500000', route: '/after/:outcome' })])
    // Delivered after the payment settled, never before.
    const types = events.filter((event) => 'challengeId' in event && event.challengeId === paid.challengeId).map((event) => event.type)
    expect(types).toEqual(['verified', 'settled', 'delivered'])
  })

  test('an unknown settlement recovered by the retry is delivered once, by the retry', async () => {
    const { app, method, payWith, delivered } = harness()
    method.nextSettle = 'unknown-but-landed'
    const unknown = await payWith('/before/ok', 'tok-delivered-5')
    expect(unknown.response.status).toBe(503)
    expect(delivered()).toEqual([])
    method.nextSettle = 'ok'
    expect((await app.request('/before/ok', { headers: { authorization: unknown.authorization } })).status).toBe(200)
    expect(delivered()).toEqual([expect.objectContaining({ challengeId: unknown.challengeId })])
  })

  test('hono-mpp/metrics counts payments_total{outcome="delivered"}; hono-mpp/otel records an mpp.deliver span with bounded attributes', async () => {
    const { registry, spans, payWith } = harness()
    const paid = [await payWith('/before/ok', 'tok-delivered-6'), await payWith('/after/ok', 'tok-delivered-7')]
    await payWith('/before/fail', 'tok-delivered-8')
    const text = await registry.metrics()
    expect(text).toContain('mpp_payments_total{route="/before/:outcome",method="fake",intent="charge",outcome="delivered"} 1')
    expect(text).toContain('mpp_payments_total{route="/after/:outcome",method="fake",intent="charge",outcome="delivered"} 1')
    expect(text).toContain('mpp_payments_total{route="/before/:outcome",method="fake",intent="charge",outcome="settled"} 2')
    const delivers = spans.filter((span) => span.name === 'mpp.deliver')
    expect(delivers.map((span) => span.attributes)).toEqual([
      {
        'mpp.event': 'delivered',
        'http.route': '/before/:outcome',
        'mpp.method': 'fake',
        'mpp.intent': 'charge',
        'mpp.outcome': 'delivered',
        'mpp.amount': '10000',
        'mpp.currency': 'FAKE',
      },
      expect.objectContaining({ 'http.route': '/after/:outcome', 'mpp.amount': '500000' }),
    ])
    for (const { challengeId } of paid) expect(JSON.stringify(spans) + text).not.toContain(challengeId)
  })
})
