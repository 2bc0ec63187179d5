/**
 * Conformance with the core "Payment" scheme: one or more tests per line C1–C12 of
 * docs/conformance.md, over the Hono middleware with the chain-free fake method.
 */
import fc from 'fast-check'
import { Hono } from 'hono'
import { bearerAuth } from 'hono/bearer-auth'
import { describe, expect, test } from 'vitest'
import { type ClaimStore, memoryStore, mpp, PaymentError, type PaymentMethod, parseChallenges, StoreUnavailableError } from '../../src/index.js'
import { constantTimeEqual } from '../../src/protocol/encoding.js'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, requestOf } from '../helpers/http.js'
import { storeFailingToRecordSettlement } from '../helpers/stores.js'
import {
  challengeFrom,
  credentialFor,
  expectedId,
  expectRefusal,
  fromB64url,
  harness,
  jcs,
  origin,
  pay,
  problemBase,
  rfc3339,
  secret,
  sha256Digest,
  tokenOf,
  voucher,
} from './support.js'

const b64url = (value: string) => Buffer.from(value, 'utf8').toString('base64url')

describe('C1 unpaid request', () => {
  test('C1: an unpaid request gets 402, a Payment challenge, Cache-Control no-store and problem JSON with challengeId', async () => {
    const { app, ran } = harness()
    const response = await app.request(`${origin}/paid`)
    expect(response.status).toBe(402)
    expect(response.headers.get('www-authenticate')).toMatch(/^Payment id="/)
    expect(response.headers.get('cache-control')).toBe('no-store')
    expect(response.headers.get('content-type')).toBe('application/problem+json')
    expect(response.headers.get('payment-receipt')).toBeNull()
    const body = (await response.json()) as Record<string, unknown>
    expect(body).toMatchObject({ type: `${problemBase}payment-required`, title: 'Payment Required', status: 402 })
    expect(body.detail).toMatch(/10000 base units/)
    const [challenge] = challengesOf(response)
    expect(body.challengeId).toBe(challenge!.id)
    expect(ran.count).toBe(0)
  })

  test('C1: every offered method gets its own challenge, and challengeId names the first', async () => {
    const alpha = fakeMethod({ name: 'alpha' })
    const beta = fakeMethod({ name: 'beta' })
    const { app } = harness({ methods: [alpha, beta] })
    const response = await app.request(`${origin}/paid`, { method: 'POST', body: '{"q":1}' })
    expect(response.status).toBe(402)
    const challenges = challengesOf(response)
    expect(challenges.map((c) => c.method)).toEqual(['alpha', 'beta'])
    expect(new Set(challenges.map((c) => c.id)).size).toBe(2)
    expect(((await response.json()) as { challengeId: string }).challengeId).toBe(challenges[0]!.id)
  })

  test('C1: each 402 carries a fresh challenge id (ids are never reused)', async () => {
    const { app } = harness()
    const ids = new Set<string>()
    for (let i = 0; i < 20; i++) ids.add((await challengeFrom(app)).challenge.id)
    expect(ids.size).toBe(20)
  })
})

describe('C2 challenge auth-params', () => {
  test('C2: a challenge carries id, realm, method (lowercase), intent, request and an RFC 3339 expires', async () => {
    const { app } = harness({ expires: 120 })
    const before = Date.now()
    const { challenge, response } = await challengeFrom(app, '/paid?x=1')
    const raw = response.headers.get('www-authenticate')!
    expect(raw).toMatch(/^Payment id="[A-Za-z0-9_-]{43}", realm="api\.test", method="fake", intent="charge", request="[A-Za-z0-9_-]+"/)
    expect(challenge.id.length).toBeGreaterThan(0)
    expect(challenge.realm).toBe('api.test')
    expect(challenge.method).toMatch(/^[a-z][a-z0-9:_-]*$/)
    expect(challenge.intent).toBe('charge')
    expect(challenge.expires).toMatch(rfc3339)
    const expires = Date.parse(challenge.expires!)
    expect(expires).toBeGreaterThan(before + 115_000)
    expect(expires).toBeLessThanOrEqual(Date.now() + 121_000)
  })

  test('C2: realm is the configured one when given, else the request host', async () => {
    expect((await challengeFrom(harness().app)).challenge.realm).toBe('api.test')
    const { app } = harness({ realm: 'payments.example' })
    expect((await challengeFrom(app)).challenge.realm).toBe('payments.example')
    const viaHost = await harness().app.request(`${origin}/paid`, { headers: { host: 'shop.example:8443' } })
    expect(challengesOf(viaHost)[0]!.realm).toBe('shop.example:8443')
  })

  test('C2: request is base64url without padding of the JCS (RFC 8785) serialisation of the request JSON', async () => {
    const { app } = harness({ route: { description: 'Zürich – 東京 "report"', externalId: 'order-7' } })
    const { challenge } = await challengeFrom(app)
    expect(challenge.request).toMatch(/^[A-Za-z0-9_-]+$/)
    const json = fromB64url(challenge.request)
    const value = JSON.parse(json) as Record<string, unknown>
    expect(json).toBe(jcs(value))
    expect(Object.keys(value)).toEqual([...Object.keys(value)].sort())
    expect(value).toEqual({
      amount: '10000',
      currency: 'FAKE',
      recipient: 'merchant',
      description: 'Zürich – 東京 "report"',
      externalId: 'order-7',
    })
  })

  test('C2: opaque is base64url of the JCS of a flat string map', async () => {
    const { challenge } = await challengeFrom(harness().app, '/items/9?sort=asc')
    expect(challenge.opaque).toMatch(/^[A-Za-z0-9_-]+$/)
    const json = fromB64url(challenge.opaque!)
    const map = JSON.parse(json) as Record<string, unknown>
    expect(json).toBe(jcs(map))
    for (const value of Object.values(map)) expect(typeof value).toBe('string')
  })

  test('C2: a description with " and \\ is escaped in the header and reads back intact', async () => {
    const description = 'He said "pay me" \\ then C:\\dir\\"x"'
    const { app } = harness({ route: { description } })
    const { challenge, response } = await challengeFrom(app)
    const raw = response.headers.get('www-authenticate')!
    expect(raw).toContain('description="He said \\"pay me\\" \\\\ then C:\\\\dir\\\\\\"x\\""')
    expect(challenge.description).toBe(description)
  })

  test('C2: characters above Latin-1 travel as \\uXXXX escapes, so the header stays a byte string', async () => {
    const description = 'Café — 日本語 😀'
    const { challenge, response } = await challengeFrom(harness({ route: { description } }).app)
    const raw = response.headers.get('www-authenticate')!
    for (const char of raw) expect(char.charCodeAt(0)).toBeLessThanOrEqual(0xff)
    expect(raw).toContain('\\u2014')
    expect(raw).toContain('Caf\u00e9')
    expect(challenge.description).toBe(description)
  })

  test('C2: CR or LF in a description or realm is refused at construction, saying what to fix', () => {
    const { pay } = harness()
    expect(() => pay.charge({ amount: '1', description: 'line one\r\nSet-Cookie: x=1' })).toThrow(/description.*CR or LF/)
    expect(() => pay.charge({ amount: '1', description: 'a\nb' })).toThrow(/CR or LF/)
    expect(() => mpp({ secret, methods: [fakeMethod()], realm: 'evil\r\nx' })).toThrow(/realm.*CR or LF/)
  })

  test('C2: a NUL in a description is refused at construction (no header can carry it)', () => {
    const { pay } = harness()
    expect(() => pay.charge({ amount: '1', description: 'a\u0000b' })).toThrow(/description/)
    expect(() => mpp({ secret, methods: [fakeMethod()], realm: 'a\u0000b' })).toThrow(/realm/)
  })
})

describe('C3 challenge binding', () => {
  test('C3: id = base64url(HMAC-SHA256(secret, realm|method|intent|request|expires|digest|opaque)), recomputed independently', async () => {
    const { app } = harness()
    const { challenge } = await challengeFrom(app, '/paid')
    expect(challenge.digest).toBeUndefined()
    expect(challenge.id).toBe(expectedId(secret, challenge))
    // with the digest slot filled
    const body = JSON.stringify({ question: 'what is paid?' })
    const { challenge: posted } = await challengeFrom(app, '/paid', { method: 'POST', body })
    expect(posted.digest).toBe(sha256Digest(body))
    expect(posted.id).toBe(expectedId(secret, posted))
    // the description is not bound: it is display text
    const { challenge: described } = await challengeFrom(harness({ route: { description: 'shown only' } }).app)
    expect(described.id).toBe(expectedId(secret, described))
  })

  test('C3: ids issued from the precomputed per-second state equal a from-scratch HMAC, for any realm, price, target and body', async () => {
    // The middleware hashes a challenge's fixed part once a second and only the nonce's block per
    // request, with a salt sized to the alignment: every length of realm, request and target
    // lands the nonce somewhere else, so all of them must agree with the plain HMAC.
    const segment = fc.string({ minLength: 1, maxLength: 12, unit: fc.constantFrom(...'abcXYZ019-._~%é€"\\'.split('')) })
    await fc.assert(
      fc.asyncProperty(
        fc.string({ minLength: 1, maxLength: 40, unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789.-:'.split('')) }),
        fc.integer({ min: 1, max: 10 ** 9 }),
        fc.array(segment, { minLength: 1, maxLength: 5 }),
        fc.option(fc.string({ minLength: 1, maxLength: 30 }), { nil: undefined }),
        async (realm, cents, segments, body) => {
          const { app } = harness({ realm, route: { amount: (cents / 100).toFixed(2) } })
          const path = `/${segments.map(encodeURIComponent).join('/')}${segments.length > 2 ? `?q=${segments[0]}` : ''}`
          const seen = new Set<string>()
          for (let i = 0; i < 3; i++) {
            const { challenge } = await challengeFrom(app, path, body === undefined ? {} : { method: 'POST', body })
            expect(challenge.id).toBe(expectedId(secret, challenge))
            const opaque = JSON.parse(fromB64url(challenge.opaque!)) as { r: string; s: string }
            expect(opaque.r).toBe(`${body === undefined ? 'GET' : 'POST'} ${new URL(origin + path).pathname}${new URL(origin + path).search}`)
            expect(opaque.s).toMatch(/^[A-Za-z0-9_-]{16,63}$/)
            seen.add(challenge.id)
          }
          expect(seen.size).toBe(3)
        },
      ),
      { numRuns: 60 },
    )
  })

  test('C3: a forged or altered id is refused with invalid-challenge', async () => {
    const { app, ran, method } = harness()
    const { challenge } = await challengeFrom(app)
    const flipped = challenge.id.slice(0, 10) + (challenge.id[10] === 'A' ? 'B' : 'A') + challenge.id.slice(11)
    const attempts = [
      { ...challenge, id: flipped },
      // parameters altered under the original id
      { ...challenge, expires: new Date(Date.parse(challenge.expires!) + 3_600_000).toISOString().replace(/\.\d+Z$/, 'Z') },
      { ...challenge, request: b64url(jcs({ ...requestOf(challenge), amount: '1' })) },
      { ...challenge, opaque: b64url(jcs({ r: 'GET /paid' })) },
      { ...challenge, realm: 'other.test' },
    ]
    for (const forged of attempts) {
      const authorization = credentialFor(forged, voucher())
      await expectRefusal(await pay(app, '/paid', authorization), 'invalid-challenge', {
        usedId: forged.id,
        secrets: [tokenOf(authorization)],
        detail: /does not match its parameters/,
      })
    }
    expect(ran.count).toBe(0)
    expect(method.calls.verify).toBe(0)
  })

  test('C3: a challenge issued under a secret this server does not hold is refused', async () => {
    const other = harness({ secret: 'another-secret-of-enough-length-0123456789' })
    const { challenge } = await challengeFrom(other.app)
    const { app } = harness()
    await expectRefusal(await pay(app, '/paid', credentialFor(challenge, voucher())), 'invalid-challenge', { detail: /secret/ })
  })

  test('C3: with a list of secrets the first signs and every one verifies (rotation)', async () => {
    const oldSecret = 'old-secret-0123456789-0123456789-0123456789'
    const newSecret = 'new-secret-0123456789-0123456789-0123456789'
    const before = harness({ secret: oldSecret })
    const { challenge: issuedBefore } = await challengeFrom(before.app)
    expect(issuedBefore.id).toBe(expectedId(oldSecret, issuedBefore))

    const rotated = harness({ secret: [newSecret, oldSecret] }, ['v1', 'v2'])
    const { challenge: issuedAfter } = await challengeFrom(rotated.app)
    expect(issuedAfter.id).toBe(expectedId(newSecret, issuedAfter))
    expect(issuedAfter.id).not.toBe(expectedId(oldSecret, issuedAfter))

    expect((await pay(rotated.app, '/paid', credentialFor(issuedBefore, voucher('v1')))).status).toBe(200)
    expect((await pay(rotated.app, '/paid', credentialFor(issuedAfter, voucher('v2')))).status).toBe(200)
    // a server that dropped the old secret no longer accepts challenges signed with it
    const dropped = harness({ secret: [newSecret] }, ['v3'])
    const { challenge: again } = await challengeFrom(before.app)
    await expectRefusal(await pay(dropped.app, '/paid', credentialFor(again, voucher('v3'))), 'invalid-challenge')
  })

  test('C3: a challenge signed under a rotated-out secret still verifies until it expires', async () => {
    const oldSecret = 'old-secret-0123456789-0123456789-0123456789'
    const newSecret = 'new-secret-0123456789-0123456789-0123456789'
    const { app } = harness({ secret: [newSecret, oldSecret] })
    const { challenge: fresh } = await challengeFrom(app)
    // the same slots, signed with the old secret, once expired
    const expired = { ...fresh, expires: new Date(Date.now() - 1_000).toISOString().replace(/\.\d+Z$/, 'Z') }
    expired.id = expectedId(oldSecret, expired)
    // the binding verified (not invalid-challenge): only its expiry refuses it
    await expectRefusal(await pay(app, '/paid', credentialFor(expired, voucher())), 'payment-expired', { usedId: expired.id })
  })

  test('C3: ids of another length are refused (the compare is constant-time over equal lengths)', async () => {
    const { app } = harness()
    const { challenge } = await challengeFrom(app)
    for (const id of [`${challenge.id}A`, challenge.id.slice(0, -1), challenge.id + challenge.id, 'x'])
      await expectRefusal(await pay(app, '/paid', credentialFor({ ...challenge, id }, voucher())), 'invalid-challenge')
    // an empty or oversized id is not even a credential
    await expectRefusal(await pay(app, '/paid', credentialFor({ ...challenge, id: '' }, voucher())), 'malformed-credential')
    await expectRefusal(await pay(app, '/paid', credentialFor({ ...challenge, id: 'a'.repeat(300) }, voucher())), 'malformed-credential')
    expect(constantTimeEqual(challenge.id, challenge.id)).toBe(true)
    expect(constantTimeEqual(challenge.id, `${challenge.id}A`)).toBe(false)
    expect(constantTimeEqual('', 'a')).toBe(false)
    expect(constantTimeEqual('abc', 'abd')).toBe(false)
  })
})

describe('C4 credential', () => {
  test('C4: a credential of more than 4 KB is accepted', async () => {
    const { app, method } = harness()
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, { ...voucher(), note: 'n'.repeat(2500) }, { source: `did:example:${'s'.repeat(2000)}` })
    expect(tokenOf(authorization).length).toBeGreaterThanOrEqual(4096)
    const response = await pay(app, '/paid', authorization)
    expect(response.status).toBe(200)
    expect(method.settledOnChain).toEqual(['v1'])
  })

  test('C4: unknown fields of the credential, its challenge and its payload are ignored', async () => {
    const { app } = harness()
    const { challenge } = await challengeFrom(app)
    const wire = {
      challenge: { ...challenge, futureParam: 'x', header: 'Authorization' },
      payload: { ...voucher(), extension: { deep: [1, 2, 3] } },
      source: 'did:pkh:eip155:1:0x0000000000000000000000000000000000000001',
      version: 7,
    }
    const response = await pay(app, '/paid', `Payment ${b64url(JSON.stringify(wire))}`)
    expect(response.status).toBe(200)
  })

  test('C4: the scheme name is case-insensitive and other schemes in Authorization are not credentials', async () => {
    const { app } = harness({}, ['v1', 'v2'])
    const { challenge } = await challengeFrom(app)
    expect((await pay(app, '/paid', `payment ${tokenOf(credentialFor(challenge, voucher('v1')))}`)).status).toBe(200)
    const { challenge: second } = await challengeFrom(app)
    expect((await pay(app, '/paid', `PAYMENT ${tokenOf(credentialFor(second, voucher('v2')))}`)).status).toBe(200)
    // Bearer alone: no payment offered, so the resource still asks for one
    const bearer = await pay(app, '/paid', 'Bearer abc.def')
    await expectRefusal(bearer, 'payment-required')
  })

  test('C4: absurdly large credentials are refused unread with malformed-credential', async () => {
    const { app, method } = harness()
    const { challenge } = await challengeFrom(app)
    for (const size of [20_000, 200_000, 2_000_000]) {
      const authorization = credentialFor(challenge, { ...voucher(), junk: 'j'.repeat(size) })
      await expectRefusal(await pay(app, '/paid', authorization), 'malformed-credential', { usedId: challenge.id, detail: /characters/ })
    }
    expect(method.calls.verify).toBe(0)
  })

  test('C4: several Payment credentials in one request are refused with 400', async () => {
    const { app, ran, method } = harness({}, ['v1', 'v2'])
    const { challenge: a } = await challengeFrom(app)
    const { challenge: b } = await challengeFrom(app)
    const one = credentialFor(a, voucher('v1'))
    const two = credentialFor(b, voucher('v2'))
    // joined in one header, and as two header lines
    const joined = await pay(app, '/paid', `${one}, ${two}`)
    await expectRefusal(joined, 'bad-request', { status: 400, challenge: false, secrets: [tokenOf(one), tokenOf(two)], detail: /2 Payment credentials/ })
    const headers = new Headers()
    headers.append('authorization', one)
    headers.append('authorization', two)
    await expectRefusal(await app.request(`${origin}/paid`, { headers }), 'bad-request', { status: 400, challenge: false })
    expect(ran.count).toBe(0)
    expect(method.calls.verify).toBe(0)
  })
})

describe('C5 failure answers', () => {
  const denying = (): PaymentMethod => {
    const inner = fakeMethod({ name: 'policy' })
    inner.vouchers.add('v1')
    return {
      ...inner,
      name: 'policy',
      request: inner.request,
      settle: inner.settle,
      recover: inner.recover,
      async verify() {
        throw new PaymentError('payment-denied', 'payer is on the sanctions list of this merchant')
      },
    }
  }

  test('C5: every failure kind answers its status, problem type, a reason, and (for 402/400 method) a fresh challenge', async () => {
    let price = '0.01'
    const { app, ran, method } = harness({ route: { amount: () => price } }, ['v1'])
    const cases: { name: string; authorization: () => Promise<string>; kind: string; status: number; challenge: boolean; detail: RegExp }[] = [
      {
        name: 'not base64url',
        authorization: async () => 'Payment %%%not-base64%%%',
        kind: 'malformed-credential',
        status: 402,
        challenge: true,
        detail: /base64url/,
      },
      {
        name: 'not JSON',
        authorization: async () => `Payment ${b64url('{"challenge":')}`,
        kind: 'malformed-credential',
        status: 402,
        challenge: true,
        detail: /not JSON/,
      },
      {
        name: 'wrong shape',
        authorization: async () => `Payment ${b64url(JSON.stringify({ challenge: { id: 'x' }, payload: {} }))}`,
        kind: 'malformed-credential',
        status: 402,
        challenge: true,
        detail: /wrong shape: challenge\.realm/,
      },
      {
        name: 'empty',
        authorization: async () => 'Payment',
        kind: 'malformed-credential',
        status: 402,
        challenge: true,
        detail: /empty/,
      },
      {
        name: 'forged id',
        authorization: async () => {
          const { challenge } = await challengeFrom(app)
          return credentialFor({ ...challenge, id: `${challenge.id.slice(0, -2)}AA` }, voucher())
        },
        kind: 'invalid-challenge',
        status: 402,
        challenge: true,
        detail: /does not match/,
      },
      {
        name: 'expired',
        authorization: async () => {
          const { challenge } = await challengeFrom(app)
          const expired = { ...challenge, expires: '2020-01-01T00:00:00Z' }
          return credentialFor({ ...expired, id: expectedId(secret, expired) }, voucher())
        },
        kind: 'payment-expired',
        status: 402,
        challenge: true,
        detail: /expired at 2020-01-01T00:00:00Z/,
      },
      {
        name: 'proof does not verify',
        authorization: async () => credentialFor((await challengeFrom(app)).challenge, voucher('nobody-issued-this')),
        kind: 'verification-failed',
        status: 402,
        challenge: true,
        detail: /unknown voucher/,
      },
      {
        name: 'amount too low',
        authorization: async () => {
          const { challenge } = await challengeFrom(app)
          price = '0.02'
          return credentialFor(challenge, voucher())
        },
        kind: 'payment-insufficient',
        status: 402,
        challenge: true,
        detail: /pays 10000 base units but this route now charges 20000/,
      },
      {
        name: 'method not accepted',
        authorization: async () => credentialFor({ ...(await challengeFrom(app)).challenge, method: 'lightning' }, voucher()),
        kind: 'method-unsupported',
        status: 400,
        challenge: true,
        detail: /"lightning" is not accepted for this route; accepted: fake/,
      },
    ]
    for (const c of cases) {
      price = '0.01'
      const authorization = await c.authorization()
      const token = tokenOf(authorization)
      const response = await pay(app, '/paid', authorization)
      const secrets = token.length > 8 ? [token, fromB64url(token)].filter((s) => s.length > 8) : []
      await expectRefusal(response, c.kind, { status: c.status, challenge: c.challenge, secrets, detail: c.detail }).catch((error) => {
        throw new Error(`case "${c.name}": ${(error as Error).message}`)
      })
    }
    // a used challenge: pay once, then replay
    price = '0.01'
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    expect((await pay(app, '/paid', authorization)).status).toBe(200)
    await expectRefusal(await pay(app, '/paid', authorization), 'invalid-challenge', {
      usedId: challenge.id,
      secrets: [tokenOf(authorization)],
      detail: /already been used/,
    })
    expect(ran.count).toBe(1)
    expect(method.settledOnChain).toEqual(['v1'])
  })

  test('C5: paid but denied by policy answers 403 without a challenge', async () => {
    const method = denying()
    const { app, ran } = harness({ methods: [method] })
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    await expectRefusal(await pay(app, '/paid', authorization), 'payment-denied', {
      status: 403,
      challenge: false,
      secrets: [tokenOf(authorization)],
      detail: /sanctions/,
    })
    expect(ran.count).toBe(0)
  })

  test('C5: a rejection event names the reason and status of every refusal', async () => {
    const { app, events } = harness()
    await pay(app, '/paid', 'Payment !!!')
    const rejected = events.filter((e) => e.type === 'rejected')
    expect(rejected).toEqual([
      expect.objectContaining({ type: 'rejected', path: '/paid', reason: 'malformed-credential', status: 402, challengeId: expect.any(String) }),
    ])
  })
})

describe('C6 success and receipts', () => {
  test('C6: a paid answer carries Payment-Receipt {status, method, timestamp, reference} and Cache-Control private', async () => {
    const { app, ran } = harness({ route: { externalId: 'order-42' } })
    const { challenge } = await challengeFrom(app)
    const response = await pay(app, '/paid', credentialFor(challenge, voucher()))
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ delivered: 'the paid resource' })
    expect(response.headers.get('cache-control')).toBe('private')
    const header = response.headers.get('payment-receipt')!
    expect(header).toMatch(/^[A-Za-z0-9_-]+$/)
    const receipt = JSON.parse(fromB64url(header)) as Record<string, string>
    expect(receipt).toEqual({ status: 'success', method: 'fake', timestamp: expect.stringMatching(rfc3339), reference: 'ref-v1', externalId: 'order-42' })
    expect(Math.abs(Date.parse(receipt.timestamp!) - Date.now())).toBeLessThan(5_000)
    // the handler saw the same payment
    expect(ran.seen[0]).toMatchObject({ method: 'fake', challengeId: challenge.id, amount: '10000', reference: 'ref-v1', settled: true, payer: 'payer-of-v1' })
    expect(ran.seen[0]!.receipt).toEqual(receipt)
  })

  test('C6: no Payment-Receipt on a non-2xx answer (handler answers 500 under settle before)', async () => {
    const { app, method } = harness({ status: 500 })
    const { challenge } = await challengeFrom(app)
    const response = await pay(app, '/paid', credentialFor(challenge, voucher()))
    expect(response.status).toBe(500)
    expect(response.headers.get('payment-receipt')).toBeNull()
    // settle 'before' charged first: documented, the answer is the handler's own
    expect(method.settledOnChain).toEqual(['v1'])
  })

  test('C6: no Payment-Receipt when the handler throws under settle before', async () => {
    const { app } = harness({ throws: true })
    const { challenge } = await challengeFrom(app)
    const response = await pay(app, '/paid', credentialFor(challenge, voucher()))
    expect(response.status).toBe(500)
    expect(response.headers.get('payment-receipt')).toBeNull()
  })
  test('C6: a handler that throws reaches app.onError; under settle before it is paid, under settle after nothing is charged', async () => {
    for (const settle of ['before', 'after'] as const) {
      const method = Object.assign(fakeMethod(), { deferrable: ['voucher'] })
      method.vouchers.add('v1')
      const { app } = harness({ throws: true, methods: [method], route: { settle } })
      const { challenge } = await challengeFrom(app)
      const response = await pay(app, '/paid', credentialFor(challenge, voucher()))
      // The harness's app.onError answers this body: the error went through it in both forms.
      expect({ status: response.status, body: await response.json() }).toEqual({ status: 500, body: { error: 'handler failed' } })
      expect(response.headers.get('payment-receipt')).toBeNull()
      expect(method.settledOnChain).toEqual(settle === 'before' ? ['v1'] : [])
    }
  })
})

describe('C7 content digest', () => {
  test('C7: a challenge for a request with a body carries its sha-256 digest; one without a body none', async () => {
    const { app } = harness()
    const body = JSON.stringify({ prompt: 'summarise', n: 3 })
    const { challenge } = await challengeFrom(app, '/paid', { method: 'POST', body, headers: { 'content-type': 'application/json' } })
    expect(challenge.digest).toBe(sha256Digest(body))
    expect(challenge.digest).toMatch(/^sha-256=:[A-Za-z0-9+/]+=*:$/)
    expect((await challengeFrom(app, '/paid')).challenge.digest).toBeUndefined()
    expect((await challengeFrom(app, '/paid', { method: 'DELETE' })).challenge.digest).toBeUndefined()
  })

  test('C7: the paid retry with the same body is accepted and the handler can still read the body', async () => {
    const method = fakeMethod()
    method.vouchers.add('v1')
    const pay2 = mpp({ secret, methods: [method] })
    let seen: unknown
    const app = new Hono().post('/paid', pay2.charge({ amount: '0.01' }), async (c) => {
      seen = await c.req.json()
      return c.json({ ok: true })
    })
    const body = JSON.stringify({ prompt: 'summarise' })
    const { challenge } = await challengeFrom(app, '/paid', { method: 'POST', body })
    const response = await pay(app, '/paid', credentialFor(challenge, voucher()), { method: 'POST', body })
    expect(response.status).toBe(200)
    expect(seen).toEqual({ prompt: 'summarise' })
  })

  test('C7: a retry whose body differs from the challenged one is refused', async () => {
    const { app, ran } = harness()
    const { challenge } = await challengeFrom(app, '/paid', { method: 'POST', body: '{"amount":1}' })
    const response = await pay(app, '/paid', credentialFor(challenge, voucher()), { method: 'POST', body: '{"amount":1000}' })
    const problem = await expectRefusal(response, 'verification-failed', { usedId: challenge.id, detail: /digest mismatch/ })
    // the fresh challenge binds the body that was sent
    expect(parseChallenges(response.headers.get('www-authenticate')!)[0]!.digest).toBe(sha256Digest('{"amount":1000}'))
    expect(problem.challengeId).toBeDefined()
    expect(ran.count).toBe(0)
  })

  test('C7: a body-less retry of a body challenge is refused, and so is a body on a body-less challenge', async () => {
    const { app, ran } = harness()
    const { challenge } = await challengeFrom(app, '/paid', { method: 'POST', body: 'payload' })
    await expectRefusal(await pay(app, '/paid', credentialFor(challenge, voucher()), { method: 'POST' }), 'verification-failed', { detail: /has none/ })
    const { challenge: empty } = await challengeFrom(app, '/paid', { method: 'POST' })
    await expectRefusal(await pay(app, '/paid', credentialFor(empty, voucher()), { method: 'POST', body: 'smuggled' }), 'verification-failed', {
      detail: /differs/,
    })
    expect(ran.count).toBe(0)
  })
})

describe('C8 Accept-Payment', () => {
  const twoMethods = () => {
    const alpha = fakeMethod({ name: 'alpha' })
    const beta = fakeMethod({ name: 'beta' })
    alpha.vouchers.add('a1')
    beta.vouchers.add('b1')
    return { ...harness({ methods: [alpha, beta] }), alpha, beta }
  }
  const offered = async (app: Hono, accept?: string) => {
    const response = await app.request(`${origin}/paid`, accept === undefined ? {} : { headers: { 'accept-payment': accept } })
    expect(response.status).toBe(402)
    return challengesOf(response).map((c) => c.method)
  }

  test('C8: challenges are ordered by descending q, server order among equals, most specific range wins', async () => {
    const { app } = twoMethods()
    expect(await offered(app, 'beta/charge, alpha/charge;q=0.5')).toEqual(['beta', 'alpha'])
    expect(await offered(app, 'beta/charge, alpha/charge')).toEqual(['alpha', 'beta'])
    expect(await offered(app, 'alpha/*;q=0.2, */charge;q=0.9')).toEqual(['beta', 'alpha'])
    expect(await offered(app, '*/*;q=0.9, alpha/charge;q=0.1')).toEqual(['beta', 'alpha'])
    expect(await offered(app, 'BETA/Charge;Q=1, alpha/charge;q=0.999')).toEqual(['beta', 'alpha'])
  })

  test('C8: q=0 excludes a method, and ranges that match nothing leave it out', async () => {
    const { app } = twoMethods()
    expect(await offered(app, 'alpha/charge;q=0, */*')).toEqual(['beta'])
    expect(await offered(app, 'beta/*')).toEqual(['beta'])
    expect(await offered(app, 'alpha/session, beta/charge')).toEqual(['beta'])
  })

  test('C8: absent or malformed Accept-Payment is ignored: everything is offered in server order', async () => {
    const { app } = twoMethods()
    expect(await offered(app)).toEqual(['alpha', 'beta'])
    for (const malformed of ['alpha', 'alpha/charge;q=2', 'alpha/charge;q=abc', 'álpha/charge', '/charge', 'alpha/charge beta/charge', ';;;'])
      expect(await offered(app, malformed), malformed).toEqual(['alpha', 'beta'])
  })

  test('C8: when nothing acceptable remains the server returns its normal set, never a 402 without a challenge', async () => {
    const { app } = twoMethods()
    expect(await offered(app, 'alpha/charge;q=0, beta/charge;q=0')).toEqual(['alpha', 'beta'])
    expect(await offered(app, 'lightning/charge')).toEqual(['alpha', 'beta'])
    // refusals too
    const response = await app.request(`${origin}/paid`, { headers: { 'accept-payment': '*/*;q=0', authorization: 'Payment !!!' } })
    await expectRefusal(response, 'malformed-credential')
  })

  test('C8: refusals order their fresh challenges by Accept-Payment as well', async () => {
    const { app } = twoMethods()
    const response = await app.request(`${origin}/paid`, { headers: { 'accept-payment': 'beta/charge, alpha/charge;q=0.1', authorization: 'Payment !!!' } })
    expect(challengesOf(response).map((c) => c.method)).toEqual(['beta', 'alpha'])
  })

  test('C8: the client may pay any offered method', async () => {
    const { app, alpha, beta } = twoMethods()
    const response = await app.request(`${origin}/paid`, { headers: { 'accept-payment': 'beta/charge' } })
    const [challenge] = challengesOf(response)
    const paid = await pay(app, '/paid', credentialFor(challenge!, voucher('b1')))
    expect(paid.status).toBe(200)
    expect(JSON.parse(fromB64url(paid.headers.get('payment-receipt')!))).toMatchObject({ method: 'beta', reference: 'ref-b1' })
    expect(beta.settledOnChain).toEqual(['b1'])
    expect(alpha.calls.verify).toBe(0)
  })
})

describe('C9 single use', () => {
  test('C9: a credential pays exactly once; its replay is refused', async () => {
    const { app, method, ran } = harness()
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    expect((await pay(app, '/paid', authorization)).status).toBe(200)
    for (let i = 0; i < 3; i++) await expectRefusal(await pay(app, '/paid', authorization), 'invalid-challenge', { usedId: challenge.id })
    expect(method.settledOnChain).toEqual(['v1'])
    expect(ran.count).toBe(1)
  })

  test('C9: 50 concurrent submissions of one credential give exactly one 200 and one settlement', async () => {
    const { app, method, ran, events } = harness()
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    const responses = await Promise.all(Array.from({ length: 50 }, () => pay(app, '/paid', authorization)))
    const statuses = responses.map((r) => r.status)
    expect(statuses.filter((s) => s === 200)).toHaveLength(1)
    expect(statuses.filter((s) => s === 402)).toHaveLength(49)
    for (const response of responses.filter((r) => r.status !== 200)) await expectRefusal(response, 'invalid-challenge')
    expect(responses.filter((r) => r.headers.get('payment-receipt') !== null)).toHaveLength(1)
    expect(method.calls.settle).toBe(1)
    expect(method.settledOnChain).toEqual(['v1'])
    expect(ran.count).toBe(1)
    expect(events.filter((e) => e.type === 'settled')).toHaveLength(1)
  })

  test('C9: 50 concurrent submissions under settle after also deliver and settle once', async () => {
    const method = Object.assign(fakeMethod(), { deferrable: ['voucher'] })
    method.vouchers.add('v1')
    const { app, ran } = harness({ methods: [method], route: { settle: 'after' } })
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    const responses = await Promise.all(Array.from({ length: 50 }, () => pay(app, '/paid', authorization)))
    expect(responses.filter((r) => r.status === 200)).toHaveLength(1)
    expect(method.settledOnChain).toEqual(['v1'])
    expect(ran.count).toBe(1)
  })

  test('C9: one payment cannot answer two challenges', async () => {
    const { app, method } = harness()
    const { challenge: first } = await challengeFrom(app)
    const { challenge: second } = await challengeFrom(app)
    expect((await pay(app, '/paid', credentialFor(first, voucher()))).status).toBe(200)
    await expectRefusal(await pay(app, '/paid', credentialFor(second, voucher())), 'verification-failed', { detail: /already been used/ })
    expect(method.settledOnChain).toEqual(['v1'])
  })

  test('C9: while a payment is in progress a second submission is told to retry', async () => {
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const method = fakeMethod()
    method.vouchers.add('v1')
    const slow: PaymentMethod = {
      ...method,
      request: method.request,
      verify: method.verify,
      recover: method.recover,
      async settle(verified) {
        await gate
        return method.settle(verified)
      },
    }
    const { app } = harness({ methods: [slow] })
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    const first = pay(app, '/paid', authorization)
    await new Promise((resolve) => setTimeout(resolve, 20))
    const second = await pay(app, '/paid', authorization)
    await expectRefusal(second, 'invalid-challenge', { detail: /in progress/ })
    expect(second.headers.get('retry-after')).toBe('1')
    release()
    expect((await first).status).toBe(200)
  })
})

describe('C10 no side effects before payment', () => {
  test('C10: the handler never runs for unpaid or refused requests', async () => {
    const { app, ran, method } = harness()
    await app.request(`${origin}/paid`)
    await app.request(`${origin}/paid`, { method: 'POST', body: 'x' })
    await pay(app, '/paid', 'Payment abc')
    const { challenge } = await challengeFrom(app)
    await pay(app, '/paid', credentialFor(challenge, voucher('unknown')))
    await pay(app, '/other', credentialFor(challenge, voucher()))
    expect(ran.count).toBe(0)
    expect(method.settledOnChain).toEqual([])
  })

  test('C10: a retry after an unknown outcome (payment landed, answer lost) delivers once and charges once', async () => {
    const { app, method, ran, events } = harness()
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    method.nextSettle = 'unknown-but-landed'
    const lost = await pay(app, '/paid', authorization)
    await expectRefusal(lost, 'payment-unavailable', { status: 503, challenge: false, detail: /retry with the same credential/ })
    expect(lost.headers.get('retry-after')).toBe('2')
    expect(ran.count).toBe(0)
    expect(method.settledOnChain).toEqual(['v1'])

    method.nextSettle = 'ok'
    // another credential for the same challenge cannot take over the pending payment
    await expectRefusal(await pay(app, '/paid', credentialFor(challenge, voucher('v2'))), 'invalid-challenge')
    const retry = await pay(app, '/paid', authorization)
    expect(retry.status).toBe(200)
    expect(JSON.parse(fromB64url(retry.headers.get('payment-receipt')!))).toMatchObject({ reference: 'ref-v1' })
    expect(method.calls.recover).toBe(1)
    expect(method.settledOnChain).toEqual(['v1'])
    expect(ran.count).toBe(1)
    expect(events.filter((e) => e.type === 'settled')).toEqual([expect.objectContaining({ recovered: true })])
    await expectRefusal(await pay(app, '/paid', authorization), 'invalid-challenge')
    expect(ran.count).toBe(1)
  })

  test('C10: a retry after an unknown outcome that never landed settles it exactly once', async () => {
    const { app, method, ran } = harness()
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    method.nextSettle = 'unknown'
    expect((await pay(app, '/paid', authorization)).status).toBe(503)
    expect(method.settledOnChain).toEqual([])
    const retries = await Promise.all(Array.from({ length: 10 }, () => pay(app, '/paid', authorization)))
    expect(retries.filter((r) => r.status === 200)).toHaveLength(1)
    expect(method.settledOnChain).toEqual(['v1'])
    expect(ran.count).toBe(1)
  })
})

describe('C11 secrecy and ordering with authentication', () => {
  test('C11: onEvent events never contain the credential, a receipt or the secret', async () => {
    const method = Object.assign(fakeMethod(), { deferrable: ['voucher'] })
    for (const v of ['v1', 'v2', 'v3', 'v4']) method.vouchers.add(v)
    const h = harness({ methods: [method] })
    const after = new Hono()
    const events = h.events
    const payAfter = mpp({ secret, methods: [method], onEvent: (e) => events.push(e) })
    after.all('/*', payAfter.charge({ amount: '0.01', settle: 'after' }), (c) => c.json({ ok: true }))

    const hidden: string[] = [secret, Buffer.from(secret).toString('hex'), Buffer.from(secret).toString('base64url')]
    const remember = (authorization: string) => {
      hidden.push(tokenOf(authorization), fromB64url(tokenOf(authorization)))
      return authorization
    }
    const { challenge: c1 } = await challengeFrom(h.app)
    const paid = await pay(h.app, '/paid', remember(credentialFor(c1, { ...voucher('v1'), signature: 'sig-secret-material' })))
    hidden.push(paid.headers.get('payment-receipt')!, fromB64url(paid.headers.get('payment-receipt')!), 'sig-secret-material')
    await pay(h.app, '/paid', remember(credentialFor(c1, voucher('v1')))) // replay
    await pay(h.app, '/paid', remember(credentialFor({ ...c1, id: `${c1.id}x` }, voucher('v1')))) // forged
    await pay(h.app, '/paid', remember(`Payment ${b64url('{"challenge":{"id":"x"},"payload":{"pin":"1234-secret"}}')}`)) // wrong shape
    await pay(h.app, '/paid', remember(credentialFor((await challengeFrom(h.app)).challenge, voucher('forged-secret-token'))))
    method.nextSettle = 'unknown-but-landed'
    const { challenge: c2 } = await challengeFrom(h.app)
    await pay(h.app, '/paid', remember(credentialFor(c2, voucher('v2'))))
    method.nextSettle = 'ok'
    await pay(h.app, '/paid', remember(credentialFor(c2, voucher('v2')))) // recovered
    method.nextSettle = 'fail'
    await pay(after, '/paid', remember(credentialFor((await challengeFrom(after)).challenge, voucher('v3'))))
    method.nextSettle = 'ok'

    const kinds = new Set(events.map((e) => e.type))
    for (const kind of ['challenge', 'rejected', 'verified', 'settled', 'settlement-unknown', 'settlement-failed', 'released'])
      expect(kinds, kind).toContain(kind)
    for (const event of events) {
      const text = JSON.stringify(event)
      for (const value of hidden) expect(text).not.toContain(value)
    }
  })

  test('C11: a throwing onEvent listener never changes a payment outcome', async () => {
    const method = fakeMethod()
    method.vouchers.add('v1')
    const paying = mpp({
      secret,
      methods: [method],
      onEvent: () => {
        throw new Error('listener down')
      },
    })
    const app = new Hono().get('/paid', paying.charge({ amount: '0.01' }), (c) => c.text('ok'))
    const { challenge } = await challengeFrom(app)
    expect((await pay(app, '/paid', credentialFor(challenge, voucher()))).status).toBe(200)
  })

  test('C11: authentication runs first: a 401 stays a 401 and issues no payment challenge', async () => {
    const { pay: paying, ran } = harness()
    const app = new Hono()
    app.use('/paid', bearerAuth({ token: 'user-token' }))
    app.get('/paid', paying.charge({ amount: '0.01' }), (c) => {
      ran.count++
      return c.text('ok')
    })
    const anonymous = await app.request(`${origin}/paid`)
    expect(anonymous.status).toBe(401)
    expect(anonymous.headers.get('www-authenticate')).not.toMatch(/Payment/)
    const authenticated = await app.request(`${origin}/paid`, { headers: { authorization: 'Bearer user-token' } })
    expect(authenticated.status).toBe(402)
    expect(ran.count).toBe(0)
  })
})

describe('C12 Retry-After', () => {
  test('C12: an unknown settlement outcome answers 503 with Retry-After', async () => {
    const { app, method, ran } = harness()
    method.nextSettle = 'unknown'
    const { challenge } = await challengeFrom(app)
    const response = await pay(app, '/paid', credentialFor(challenge, voucher()))
    await expectRefusal(response, 'payment-unavailable', { status: 503, challenge: false })
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(ran.count).toBe(0)
  })

  test('C12: an unreachable store answers 503 with Retry-After, charges nothing and does not run the handler', async () => {
    const backing = memoryStore()
    const down: ClaimStore = {
      claim: async () => {
        throw new StoreUnavailableError('connection refused')
      },
      transition: backing.transition,
      get: backing.get,
    }
    const { app, method, ran } = harness({ store: down })
    const { challenge } = await challengeFrom(app)
    const response = await pay(app, '/paid', credentialFor(challenge, voucher()))
    const problem = await expectRefusal(response, 'payment-unavailable', { status: 503, challenge: false, detail: /store is unreachable/ })
    expect(problem.detail).not.toContain('connection refused')
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(ran.count).toBe(0)
    expect(method.calls.verify).toBe(0)
    expect(method.settledOnChain).toEqual([])
  })

  test('C12: a store failing after the claim (before settling) also fails closed with 503', async () => {
    const backing = memoryStore()
    let transitions = 0
    const flaky: ClaimStore = {
      claim: backing.claim,
      get: backing.get,
      transition: async (...args) => {
        if (transitions++ === 0) throw new StoreUnavailableError('timeout')
        return backing.transition(...args)
      },
    }
    const { app, method, ran } = harness({ store: flaky })
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    const response = await pay(app, '/paid', authorization)
    await expectRefusal(response, 'payment-unavailable', { status: 503, challenge: false, detail: /nothing was charged/ })
    expect(response.headers.get('retry-after')).not.toBeNull()
    expect(ran.count).toBe(0)
    expect(method.settledOnChain).toEqual([])
    // nothing was charged, so nothing stays locked: the same credential pays once the store is back
    expect((await pay(app, '/paid', authorization)).status).toBe(200)
    expect(method.settledOnChain).toEqual(['v1'])
  })

  test('C12 C10: a store failing to record a payment that happened says so, and a later retry delivers once', async () => {
    const flaky = storeFailingToRecordSettlement()
    const { app, method, ran } = harness({ store: flaky, leaseMs: 1_000 })
    const { challenge } = await challengeFrom(app)
    const authorization = credentialFor(challenge, voucher())
    const response = await pay(app, '/paid', authorization)
    const problem = await expectRefusal(response, 'payment-unavailable', { status: 503, challenge: false, detail: /payment was made/ })
    expect(problem.detail).not.toMatch(/nothing was charged/)
    expect(response.headers.get('retry-after')).not.toBeNull()
    expect(method.settledOnChain).toEqual(['v1'])
    expect(ran.count).toBe(0)
    // the holder's lease still runs: a retry is told to wait
    const early = await pay(app, '/paid', authorization)
    expect(early.status).toBe(402)
    expect(early.headers.get('retry-after')).toBe('1')
    await new Promise((resolve) => setTimeout(resolve, 1_100))
    const retry = await pay(app, '/paid', authorization)
    expect(retry.status).toBe(200)
    expect(retry.headers.get('payment-receipt')).not.toBeNull()
    expect(method.settledOnChain).toEqual(['v1'])
    expect(ran.count).toBe(1)
  })
})

test('C2 C3: parseChallenges reads back exactly what the middleware wrote', async () => {
  const { response } = await challengeFrom(harness({ route: { description: 'a "b" \\ c — d' } }).app, '/x', { method: 'PUT', body: 'b' })
  const [challenge] = parseChallenges(response.headers.get('www-authenticate')!)
  expect(challenge!.id).toBe(expectedId(secret, challenge!))
  expect(challenge!.description).toBe('a "b" \\ c — d')
})
