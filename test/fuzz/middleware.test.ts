/**
 * Property tests over the whole middleware: random methods, paths, queries, bodies,
 * `Authorization` and `Accept-Payment` headers, and credentials derived from real challenges then
 * mutated. No voucher is valid, so nothing may ever be delivered: the middleware never throws,
 * never answers 5xx or 2xx, and every answer is problem JSON naming its reason.
 */
import fc from 'fast-check'
import { Hono } from 'hono'
import { Challenge } from 'mppx'
import { describe, expect, test } from 'vitest'
import { mpp, parseChallenges } from '../../src/index.js'
import { fakeMethod } from '../helpers/fake-method.js'

const secret = 'fuzz-secret-0123456789-0123456789-0123456789'
const b64url = (value: string) => Buffer.from(value, 'utf8').toString('base64url')

function app() {
  const alpha = fakeMethod({ name: 'alpha' })
  const beta = Object.assign(fakeMethod({ name: 'beta' }), { deferrable: ['voucher'] })
  const pay = mpp({ secret, methods: [alpha, beta] })
  let ran = 0
  let price = 1
  const hono = new Hono()
  hono.onError((_error, c) => c.json({ error: 'handler failed' }, 500))
  const handler = (c: { json: (v: unknown) => Response }) => {
    ran++
    return c.json({ delivered: true })
  }
  hono.all('/after/*', pay.charge({ amount: '0.5', settle: 'after', methods: [beta] }), handler)
  hono.all('/dynamic/*', pay.charge({ amount: () => `0.0${price++ % 9}`, description: 'changing "price" — ¥' }), handler)
  hono.all('/*', pay.charge({ amount: '0.01', description: 'fuzzed' }), handler)
  return { hono, methods: [alpha, beta], ran: () => ran }
}

/** Header-safe text: no CR, LF or NUL (the Request constructor refuses those before we could). */
const headerText = (maxLength = 120) =>
  fc.string({
    maxLength,
    unit: fc
      .integer({ min: 0x01, max: 0xff })
      .filter((c) => c !== 0x0a && c !== 0x0d)
      .map((c) => String.fromCharCode(c)),
  })

const httpMethod = fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS')
const path = fc
  .tuple(fc.constantFrom('', '/after', '/dynamic'), fc.webPath(), fc.option(fc.webQueryParameters(), { nil: undefined }))
  .map(([prefix, p, query]) => `${prefix}${p.startsWith('/') ? p : `/${p}`}${query ? `?${query}` : ''}`)
const body = fc.option(fc.oneof(fc.string({ maxLength: 200 }), fc.uint8Array({ maxLength: 200 })), { nil: undefined })

const acceptPayment = fc.option(
  fc.oneof(
    headerText(60),
    fc
      .array(
        fc.tuple(
          fc.constantFrom('alpha', 'beta', 'gamma', '*', 'ALPHA', ''),
          fc.constantFrom('charge', '*', 'session'),
          fc.constantFrom('', ';q=0', ';q=0.5', ';q=1', ';q=7', ';x=1'),
        ),
        { maxLength: 4 },
      )
      .map((entries) => entries.map(([m, i, q]) => `${m}/${i}${q}`).join(', ')),
  ),
  { nil: undefined },
)

/** How to build the Authorization header, possibly from the challenge the request first got. */
const authorization = fc.oneof(
  fc.constant({ kind: 'none' as const }),
  headerText().map((value) => ({ kind: 'raw' as const, value })),
  headerText().map((value) => ({ kind: 'raw' as const, value: `Payment ${value}` })),
  fc.jsonValue({ maxDepth: 3 }).map((value) => ({ kind: 'raw' as const, value: `Payment ${b64url(JSON.stringify(value))}` })),
  // most runs answer a real challenge, so the binding, the method and settlement are reached
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('mutated' as const),
      pick: fc.nat(),
      field: fc.oneof(
        { weight: 3, arbitrary: fc.constant('none') },
        fc.constant('swap-method'),
        fc.constantFrom('id', 'realm', 'method', 'intent', 'request', 'expires', 'digest', 'opaque', 'description', 'payload', 'source', 'challenge'),
      ),
      value: fc.option(fc.oneof(fc.jsonValue({ maxDepth: 2 }), headerText(30), fc.constantFrom('alpha', 'beta', 'gamma', 'session', '')), { nil: undefined }),
      payload: fc.oneof(
        fc.record({ type: fc.constantFrom('voucher', 'receipt', 'other'), token: fc.string({ maxLength: 12 }) }),
        fc.jsonValue({ maxDepth: 2 }),
      ),
      twice: fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, fc.constant(true)),
    }),
  },
)

function buildAuthorization(
  auth: { kind: 'none' } | { kind: 'raw'; value: string } | { kind: 'mutated'; pick: number; field: string; value: unknown; payload: unknown; twice: boolean },
  challengeHeader: string | null,
): string | undefined {
  if (auth.kind === 'none') return undefined
  if (auth.kind === 'raw') return auth.value
  if (!challengeHeader) return `Payment ${b64url(JSON.stringify({ payload: auth.payload }))}`
  const challenges = parseChallenges(challengeHeader)
  const challenge = challenges[auth.pick % challenges.length]! as unknown as Record<string, unknown>
  const wire: Record<string, unknown> & { challenge: Record<string, unknown> } = { challenge: { ...challenge }, payload: auth.payload }
  if (auth.field === 'swap-method') wire.challenge.method = ['alpha', 'beta', 'gamma'][auth.pick % 3]
  else if (auth.field !== 'none') {
    const target = ['payload', 'source', 'challenge'].includes(auth.field) ? wire : wire.challenge
    if (auth.value === undefined) delete target[auth.field]
    else target[auth.field] = auth.value
  }
  const credential = `Payment ${b64url(JSON.stringify(wire))}`
  return auth.twice ? `${credential}, ${credential}` : credential
}

const scenario = fc.record({
  method: httpMethod,
  path,
  body,
  accept: acceptPayment,
  auth: authorization,
  host: fc.oneof(fc.constant('api.test'), fc.domain()),
})

const seenKinds = new Set<string>()

async function expectProblem(response: Response, credential: string | undefined) {
  expect(response.status, 'never 2xx: no voucher is valid').not.toBeLessThan(300)
  expect(response.status, 'never 5xx').toBeLessThan(500)
  expect(response.headers.get('payment-receipt')).toBeNull()
  expect(response.headers.get('content-type')).toBe('application/problem+json')
  const text = await response.text()
  const problem = JSON.parse(text) as { type: string; status: number; detail: string; title: string; challengeId?: string }
  expect(problem.type).toMatch(/^https:\/\/paymentauth\.org\/problems\/[a-z-]+$/)
  seenKinds.add(problem.type.slice(problem.type.lastIndexOf('/') + 1))
  expect(problem.status).toBe(response.status)
  expect(typeof problem.detail).toBe('string')
  expect(problem.detail.trim().length).toBeGreaterThan(0)
  if (credential && credential.length > 20) expect(text).not.toContain(credential.slice('Payment '.length))
  expect(text).not.toContain(secret)
  if (response.status === 402) {
    const header = response.headers.get('www-authenticate')
    expect(header, 'a 402 always carries a challenge').not.toBeNull()
    const challenges = parseChallenges(header!)
    expect(challenges.length).toBeGreaterThan(0)
    expect(problem.challengeId).toBe(challenges[0]!.id)
    // and the reference client reads it too
    expect(Challenge.deserializeList(header!)).toHaveLength(challenges.length)
  }
}

describe('middleware fuzz', () => {
  test('C5 C10 fuzz: random requests never get past the middleware, never 5xx, always problem JSON with a detail', async () => {
    const { hono, methods, ran } = app()
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const url = `http://${s.host}${s.path}`
        const hasBody = s.body !== undefined && s.method !== 'GET'
        const init = (extra: Record<string, string>): RequestInit => {
          const headers: Record<string, string> = { ...extra }
          if (s.accept !== undefined) headers['accept-payment'] = s.accept
          return { method: s.method, headers, ...(hasBody && { body: s.body as BodyInit }) }
        }
        // first the unpaid request, as a client would send it
        const first = await hono.request(url, init({}))
        await expectProblem(first.clone(), undefined)
        const credential = buildAuthorization(s.auth as Parameters<typeof buildAuthorization>[0], first.headers.get('www-authenticate'))
        if (credential === undefined) return
        const second = await hono.request(url, init({ authorization: credential }))
        await expectProblem(second, credential)
      }),
      { numRuns: 400 },
    )
    expect(ran()).toBe(0)
    // the generators reach every layer, not only the parser
    for (const kind of ['payment-required', 'malformed-credential', 'invalid-challenge', 'verification-failed', 'method-unsupported', 'bad-request'])
      expect([...seenKinds]).toContain(kind)
    for (const method of methods) {
      expect(method.calls.settle).toBe(0)
      expect(method.settledOnChain).toEqual([])
    }
  })

  test('C9 fuzz: with one valid voucher among random submissions, it is delivered at most once', async () => {
    const { hono, methods, ran } = app()
    methods[0]!.vouchers.add('good')
    const first = await hono.request('http://api.test/item')
    const header = first.headers.get('www-authenticate')!
    const alphaChallenge = parseChallenges(header).find((c) => c.method === 'alpha')!
    const valid = `Payment ${b64url(JSON.stringify({ challenge: alphaChallenge, payload: { type: 'voucher', token: 'good' } }))}`
    let delivered = 0
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.constant(valid),
          headerText().map((v) => `Payment ${v}`),
        ),
        async (authorizationValue) => {
          const response = await hono.request('http://api.test/item', { headers: { authorization: authorizationValue } })
          if (response.status === 200) {
            delivered++
            expect(authorizationValue).toBe(valid)
            expect(response.headers.get('payment-receipt')).not.toBeNull()
          } else await expectProblem(response, authorizationValue)
        },
      ),
      { numRuns: 300 },
    )
    expect(delivered).toBe(1)
    expect(ran()).toBe(delivered)
    expect(methods[0]!.settledOnChain).toEqual(['good'])
  })
})
