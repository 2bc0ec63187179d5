/**
 * Conformance with the `charge` intent: lines I1–I3 of docs/conformance.md, and the
 * exactly-once ordering of `settle: 'before' | 'after'` that I3 (atomic exchange) asks for.
 */
import { afterEach, describe, expect, test, vi } from 'vitest'
import { parseChallenges } from '../../src/index.js'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, requestOf } from '../helpers/http.js'
import { challengeFrom, credentialFor, expectedId, expectRefusal, fromB64url, harness, origin, pay, secret, tokenOf, voucher } from './support.js'

const b64url = (value: string) => Buffer.from(value, 'utf8').toString('base64url')

/** A fake whose vouchers may be settled after the handler (like Tempo pull transactions). */
const deferrable = (vouchers: string[] = ['v1']) => {
  const method = Object.assign(fakeMethod(), { deferrable: ['voucher'] })
  for (const v of vouchers) method.vouchers.add(v)
  return method
}

afterEach(() => {
  vi.useRealTimers()
})

describe('I1 request fields', () => {
  test('I1: request carries amount (base-unit integer string), currency, recipient, description, externalId and no expires', async () => {
    const { app } = harness({ route: { amount: '1.25', description: 'one report', externalId: 'inv-9' } })
    const { challenge } = await challengeFrom(app)
    const request = requestOf(challenge)
    expect(request).toEqual({ amount: '1250000', currency: 'FAKE', recipient: 'merchant', description: 'one report', externalId: 'inv-9' })
    expect(request.amount).toMatch(/^(0|[1-9]\d*)$/)
    expect(challenge.expires).toBeDefined()
    expect(JSON.stringify(request)).not.toMatch(/expires/)
  })

  test('I1: expiry lives only in the expires auth-param, also when methodDetails are present', async () => {
    const { app } = harness({ methods: [deferrable()], route: { settle: 'after' } })
    const { challenge } = await challengeFrom(app)
    const request = requestOf(challenge)
    expect(request.methodDetails).toEqual({ supportedModes: ['voucher'] })
    expect(fromB64url(challenge.request)).not.toMatch(/expires/)
  })

  test('I1: decimal amounts become base-unit integer strings', async () => {
    const cases: [string, string][] = [
      ['0', '0'],
      ['0.000001', '1'],
      ['0.01', '10000'],
      ['12.5', '12500000'],
      ['100', '100000000'],
      ['123456789.123456', '123456789123456'],
    ]
    for (const [amount, base] of cases) {
      const { challenge } = await challengeFrom(harness({ route: { amount } }).app)
      expect(requestOf(challenge).amount, amount).toBe(base)
    }
  })

  test('I1: an amount that is not a decimal string in token units is refused at construction', () => {
    const { pay: paying } = harness()
    for (const amount of ['', '1e3', '-1', '.5', '1.', ' 1', '0x10', '01', '1,5', 'NaN'])
      expect(() => paying.charge({ amount }), JSON.stringify(amount)).toThrow(/amount.*decimal string/)
    expect(() => paying.charge({ amount: '0.0000001' })).toThrow(/more than 6 decimals/)
  })

  test('I1: a dynamic amount that is not a decimal string fails closed: no challenge that could be paid, no handler', async () => {
    const { app, ran } = harness({ route: { amount: () => 'lots' } })
    const response = await app.request(`${origin}/paid`)
    expect(response.status).toBeGreaterThanOrEqual(500)
    expect(response.headers.get('www-authenticate')).toBeNull()
    expect(ran.count).toBe(0)
  })
})

describe('I2 server verification', () => {
  test('I2: an expired challenge is refused with payment-expired', async () => {
    const { app, ran, method } = harness({ expires: 5 })
    const { challenge } = await challengeFrom(app)
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(Date.parse(challenge.expires!) + 1)
    const authorization = credentialFor(challenge, voucher())
    const response = await pay(app, '/paid', authorization)
    const problem = await expectRefusal(response, 'payment-expired', { usedId: challenge.id, secrets: [tokenOf(authorization)] })
    expect(problem.detail).toContain(challenge.expires!)
    // the fresh challenge expires in the future of the (moved) clock
    expect(Date.parse(challengesOf(response)[0]!.expires!)).toBeGreaterThan(Date.now())
    expect(ran.count).toBe(0)
    expect(method.calls.verify).toBe(0)
  })

  test('I2: a challenge is still accepted just before it expires', async () => {
    const { app } = harness({ expires: 5 })
    const { challenge } = await challengeFrom(app)
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(Date.parse(challenge.expires!) - 50)
    expect((await pay(app, '/paid', credentialFor(challenge, voucher()))).status).toBe(200)
  })

  test('I2: a route whose amount was raised refuses the old challenge with payment-insufficient', async () => {
    let price = '0.01'
    const { app, ran } = harness({ route: { amount: () => price } })
    const { challenge } = await challengeFrom(app)
    price = '0.05'
    await expectRefusal(await pay(app, '/paid', credentialFor(challenge, voucher())), 'payment-insufficient', {
      usedId: challenge.id,
      detail: /10000 base units but this route now charges 50000/,
    })
    // the fresh challenge carries the new price and pays
    price = '0.05'
    const { challenge: fresh } = await challengeFrom(app)
    expect(requestOf(fresh).amount).toBe('50000')
    expect((await pay(app, '/paid', credentialFor(fresh, voucher()))).status).toBe(200)
    expect(ran.count).toBe(1)
  })

  test('I2: a lowered amount or another recipient refuses the old challenge, naming the field', async () => {
    let price = '0.05'
    const { app } = harness({ route: { amount: () => price } })
    const { challenge } = await challengeFrom(app)
    price = '0.01'
    await expectRefusal(await pay(app, '/paid', credentialFor(challenge, voucher())), 'verification-failed', { detail: /amount differs/ })

    // same secret and route, another recipient: the binding holds, the request does not match
    const before = harness()
    const other = fakeMethod({ recipient: 'someone-else' })
    other.vouchers.add('v1')
    const after = harness({ methods: [other] })
    const { challenge: old } = await challengeFrom(before.app)
    await expectRefusal(await pay(after.app, '/paid', credentialFor(old, voucher())), 'verification-failed', { detail: /recipient differs/ })
    expect(after.ran.count).toBe(0)
  })

  test('I2: realm binding: a challenge for one host does not pay on another', async () => {
    const { app, ran } = harness()
    const { challenge } = await challengeFrom(app)
    const response = await app.request('http://other.test/paid', { headers: { authorization: credentialFor(challenge, voucher()) } })
    const problem = await expectRefusal(response, 'invalid-challenge', { detail: /another realm/ })
    expect(parseChallenges(response.headers.get('www-authenticate')!)[0]!.realm).toBe('other.test')
    expect(problem.challengeId).toBeDefined()
    expect(ran.count).toBe(0)
  })

  test('I2: route binding: a credential for /items/1 does not pay /items/2, another query, or another HTTP method', async () => {
    const { app, ran, method } = harness()
    const { challenge } = await challengeFrom(app, '/items/1?view=full')
    const authorization = credentialFor(challenge, voucher())
    const elsewhere: [string, RequestInit, RegExp][] = [
      ['/items/2?view=full', {}, /issued for GET \/items\/1\?view=full, not for GET \/items\/2\?view=full/],
      ['/items/1?view=summary', {}, /not for GET \/items\/1\?view=summary/],
      ['/items/1', {}, /not for GET \/items\/1$/],
      ['/items/1?view=full&x=1', {}, /not for GET/],
      ['/items/1?view=full', { method: 'DELETE' }, /not for DELETE \/items\/1\?view=full/],
    ]
    for (const [path, init, detail] of elsewhere)
      await expectRefusal(await pay(app, path, authorization, init), 'invalid-challenge', { detail, secrets: [tokenOf(authorization)] })
    expect(method.calls.verify).toBe(0)
    // where it was issued, it pays
    expect((await pay(app, '/items/1?view=full', authorization)).status).toBe(200)
    expect(ran.count).toBe(1)
  })

  test('I2: a correctly signed challenge of another intent, without expires, or without a bound target is refused', async () => {
    const { app, ran } = harness()
    const { challenge } = await challengeFrom(app)
    const sign = <T extends typeof challenge>(c: T): T => ({ ...c, id: expectedId(secret, c) })
    const { expires: _dropped, ...noExpires } = challenge
    const { opaque: _gone, ...noOpaque } = challenge
    const cases: [typeof challenge, string, RegExp][] = [
      [sign({ ...challenge, intent: 'session' }), 'invalid-challenge', /intent "session" is not charged here/],
      [sign(noExpires), 'invalid-challenge', /no expires/],
      [sign({ ...challenge, expires: 'next tuesday' }), 'invalid-challenge', /not an RFC 3339 date-time/],
      [sign(noOpaque), 'invalid-challenge', /not bound to a request of this server/],
      [sign({ ...challenge, opaque: b64url('not json') }), 'invalid-challenge', /not bound to a request/],
    ]
    for (const [forged, kind, detail] of cases) await expectRefusal(await pay(app, '/paid', credentialFor(forged, voucher())), kind, { detail })
    expect(ran.count).toBe(0)
  })

  test('I2: the proof must verify (unknown voucher) and its payment must be new', async () => {
    const { app, method } = harness()
    const { challenge } = await challengeFrom(app)
    await expectRefusal(await pay(app, '/paid', credentialFor(challenge, voucher('never-issued'))), 'verification-failed', { detail: /unknown voucher/ })
    await expectRefusal(await pay(app, '/paid', credentialFor(challenge, { type: 'cheque', token: 'v1' })), 'malformed-credential', { detail: /payload.type/ })
    expect(method.settledOnChain).toEqual([])
  })
})

describe('I3 atomic exchange', () => {
  test('I3: a refused verification leaves no partial access: no handler, nothing settled, the challenge still payable', async () => {
    const { app, method, ran, events } = harness()
    const { challenge } = await challengeFrom(app)
    await expectRefusal(await pay(app, '/paid', credentialFor(challenge, voucher('v9'))), 'verification-failed')
    expect(ran.count).toBe(0)
    expect(method.settledOnChain).toEqual([])
    expect(events.filter((e) => e.type === 'released')).toHaveLength(1)
    // nothing was consumed: the same challenge pays with a good proof, and v9 pays later
    expect((await pay(app, '/paid', credentialFor(challenge, voucher('v1')))).status).toBe(200)
    method.vouchers.add('v9')
    expect((await pay(app, '/paid', credentialFor((await challengeFrom(app)).challenge, voucher('v9')))).status).toBe(200)
    expect(method.settledOnChain).toEqual(['v1', 'v9'])
  })

  test('I3: a settlement the chain refuses (settle before) gives no access and keeps the credential usable', async () => {
    const { app, method, ran, events } = harness()
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    method.nextSettle = 'fail'
    await expectRefusal(await pay(app, '/paid', authorization), 'settlement-failed', { usedId: challenge.id, detail: /refused the voucher/ })
    expect(ran.count).toBe(0)
    expect(method.settledOnChain).toEqual([])
    expect(events.find((e) => e.type === 'settlement-failed')).toMatchObject({ afterHandler: false })
    method.nextSettle = 'ok'
    expect((await pay(app, '/paid', authorization)).status).toBe(200)
    expect(method.settledOnChain).toEqual(['v1'])
  })

  test('I3: settle after: the handler runs unsettled, then the 2xx is delivered with a receipt and charged once', async () => {
    const method = deferrable()
    const { app, ran } = harness({ methods: [method], route: { settle: 'after' } })
    const { challenge } = await challengeFrom(app)
    const response = await pay(app, '/paid', credentialFor(challenge, voucher()))
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ delivered: 'the paid resource' })
    expect(JSON.parse(fromB64url(response.headers.get('payment-receipt')!))).toMatchObject({ status: 'success', reference: 'ref-v1' })
    expect(response.headers.get('cache-control')).toBe('private')
    expect(ran.seen[0]).toMatchObject({ settled: false, receipt: undefined, credentialType: 'voucher' })
    expect(method.settledOnChain).toEqual(['v1'])
  })

  test('I3: settle after: a handler answering 500 releases the payment: not settled, no receipt, credential reusable', async () => {
    const method = deferrable()
    let status = 500
    const { app, ran, events } = harness({ methods: [method], route: { settle: 'after' }, status: () => status })
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    const failed = await pay(app, '/paid', authorization)
    expect(failed.status).toBe(500)
    expect(failed.headers.get('payment-receipt')).toBeNull()
    expect(method.calls.settle).toBe(0)
    expect(method.settledOnChain).toEqual([])
    expect(events.filter((e) => e.type === 'released')).toEqual([expect.objectContaining({ reason: expect.stringMatching(/500; nothing was charged/) })])
    expect(events.some((e) => e.type === 'settled')).toBe(false)
    status = 200
    const retry = await pay(app, '/paid', authorization)
    expect(retry.status).toBe(200)
    expect(retry.headers.get('payment-receipt')).not.toBeNull()
    expect(method.settledOnChain).toEqual(['v1'])
    expect(ran.count).toBe(2)
  })

  test('I3: settle after: a handler that throws releases the payment: not settled, no receipt', async () => {
    const method = deferrable()
    const { app, events } = harness({ methods: [method], route: { settle: 'after' }, throws: true })
    const { challenge } = await challengeFrom(app)
    const response = await pay(app, '/paid', credentialFor(challenge, voucher()))
    expect(response.status).toBe(500)
    expect(response.headers.get('payment-receipt')).toBeNull()
    expect(method.calls.settle).toBe(0)
    expect(events.map((e) => e.type)).toContain('released')
  })

  test('I3: settle after: a settlement failing after a 2xx handler withholds its answer: 402, event, no receipt', async () => {
    const method = deferrable()
    const { app, ran, events } = harness({ methods: [method], route: { settle: 'after' } })
    const { challenge } = await challengeFrom(app)
    method.nextSettle = 'fail'
    const authorization = credentialFor(challenge, voucher())
    const response = await pay(app, '/paid', authorization)
    const problem = await expectRefusal(response.clone(), 'settlement-failed', { usedId: challenge.id, secrets: [tokenOf(authorization)] })
    expect(problem.detail).toMatch(/refused the voucher/)
    expect(await response.text()).not.toContain('the paid resource')
    expect(ran.count).toBe(1)
    expect(method.settledOnChain).toEqual([])
    expect(events.find((e) => e.type === 'settlement-failed')).toMatchObject({ afterHandler: true, challengeId: challenge.id })
    expect(events.find((e) => e.type === 'rejected')).toMatchObject({ reason: 'settlement-failed', status: 402 })
  })

  test('I3: settle after: an unknown settlement outcome withholds the answer (503); the retry delivers once', async () => {
    const method = deferrable()
    const { app, ran } = harness({ methods: [method], route: { settle: 'after' } })
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    method.nextSettle = 'unknown-but-landed'
    const lost = await pay(app, '/paid', authorization)
    await expectRefusal(lost.clone(), 'payment-unavailable', { status: 503, challenge: false })
    expect(await lost.text()).not.toContain('the paid resource')
    expect(lost.headers.get('retry-after')).not.toBeNull()
    method.nextSettle = 'ok'
    const retry = await pay(app, '/paid', authorization)
    expect(retry.status).toBe(200)
    expect(await retry.json()).toEqual({ delivered: 'the paid resource' })
    expect(retry.headers.get('payment-receipt')).not.toBeNull()
    expect(method.settledOnChain).toEqual(['v1'])
    expect(ran.count).toBe(2)
  })

  test('I3: settle after refuses a credential the client already settled, before the handler runs', async () => {
    const method = deferrable()
    const { app, ran } = harness({ methods: [method], route: { settle: 'after' } })
    const { challenge } = await challengeFrom(app)
    await expectRefusal(await pay(app, '/paid', credentialFor(challenge, { type: 'receipt', token: 'v1' })), 'verification-failed', {
      detail: /already settled by the client/,
    })
    expect(ran.count).toBe(0)
    // and the voucher was not consumed by that attempt
    expect((await pay(app, '/paid', credentialFor(challenge, voucher()))).status).toBe(200)
  })

  test('I3: settle after refuses payload types the method cannot settle itself', async () => {
    const plain = fakeMethod() // no `deferrable`: only "transaction" may be settled after the handler
    plain.vouchers.add('v1')
    const { app, ran } = harness({ methods: [plain], route: { settle: 'after' } })
    const { challenge } = await challengeFrom(app)
    await expectRefusal(await pay(app, '/paid', credentialFor(challenge, voucher())), 'bad-request', {
      status: 400,
      challenge: false,
      detail: /voucher credential cannot be settled after the handler/,
    })
    expect(ran.count).toBe(0)
    expect(plain.settledOnChain).toEqual([])
  })
})
