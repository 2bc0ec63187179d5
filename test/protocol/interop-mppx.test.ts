/**
 * Differential tests against the reference SDK mppx: its own Challenge / Credential / Receipt
 * modules must read what we write, we must read what it writes, and both must bind a challenge
 * to the same id. Finally mppx's serialised credentials, and its client, pay our middleware.
 */
import fc from 'fast-check'
import { Hono } from 'hono'
import { Challenge, Credential, Method, Receipt, z } from 'mppx'
import { Mppx } from 'mppx/client'
import { describe, expect, test } from 'vitest'
import { mpp, parseChallenges, parseCredential, parseReceipt, serializeChallenge, serializeReceipt } from '../../src/index.js'
import { challengeId } from '../../src/protocol/challenge.js'
import { decodeJson, encodeJson, utf8 } from '../../src/protocol/encoding.js'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengeFrom, credentialFor, harness, origin, pay, secret, sha256Digest, voucher } from './support.js'

const tricky = 'He said "pay" \\ then — 日本語 Café 😀 \\u0041'

/** What mppx makes of a header: request decoded, fields it drops when empty left out. */
function viaMppx(header: string) {
  return Challenge.deserializeList(header)
}

function comparable(ours: ReturnType<typeof parseChallenges>[number]) {
  return {
    id: ours.id,
    realm: ours.realm,
    method: ours.method,
    intent: ours.intent,
    request: decodeJson(ours.request),
    ...(ours.expires !== undefined && { expires: ours.expires }),
    ...(ours.digest !== undefined && { digest: ours.digest }),
    ...(ours.description !== undefined && { description: ours.description }),
    ...(ours.opaque !== undefined && { opaque: ours.opaque }),
  }
}

describe('challenges: ours → mppx', () => {
  test('C2 interop: our WWW-Authenticate values parse in mppx Challenge.deserialize(List) with identical fields, and mppx verifies their ids', async () => {
    const alpha = fakeMethod({ name: 'alpha' })
    const beta = fakeMethod({ name: 'beta' })
    const { app } = harness({ methods: [alpha, beta], route: { description: tricky, externalId: 'ext "1"' } })
    const requests: [string, RequestInit][] = [
      ['/paid', {}],
      ['/paid?q=1&r=ü', {}],
      ['/upload', { method: 'POST', body: JSON.stringify({ text: 'bytes ✓' }) }],
    ]
    for (const [path, init] of requests) {
      const response = await app.request(origin + path, init)
      expect(response.status).toBe(402)
      const header = response.headers.get('www-authenticate')!
      const ours = parseChallenges(header)
      const theirs = viaMppx(header)
      expect(theirs).toHaveLength(2)
      expect(theirs).toEqual(ours.map(comparable))
      for (const challenge of theirs) expect(Challenge.verify(challenge, { secretKey: secret })).toBe(true)
      if (init.body) expect(theirs[0]!.digest).toBe(sha256Digest(init.body as string))
      // the first challenge alone parses the same way
      expect(Challenge.deserialize(serializeChallenge(ours[1]!))).toEqual(comparable(ours[1]!))
    }
  })

  test('C2 interop: arbitrary challenges serialised here parse identically in mppx', () => {
    fc.assert(
      fc.property(challengeArbitrary(), (challenge) => {
        const header = serializeChallenge(challenge)
        expect(Challenge.deserialize(header)).toEqual(comparable(challenge))
        // and two of them joined in one header value
        expect(Challenge.deserializeList(`${header}, ${header}`)).toEqual([comparable(challenge), comparable(challenge)])
      }),
      { numRuns: 300 },
    )
  })
})

describe('challenges: mppx → ours', () => {
  test('C2 interop: challenges serialised by mppx parse identically here', () => {
    fc.assert(
      fc.property(challengeArbitrary(), (challenge) => {
        const theirs = Challenge.from({ ...comparable(challenge), request: decodeJson(challenge.request) as Record<string, unknown> })
        const [ours] = parseChallenges(Challenge.serialize(theirs))
        expect(comparable(ours!)).toEqual(comparable(challenge))
      }),
      { numRuns: 300 },
    )
  })
})

describe('challenge ids', () => {
  const fixed = [
    {
      realm: 'api.example.com',
      method: 'tempo',
      intent: 'charge',
      request: { amount: '1000000', currency: '0x20c0000000000000000000000000000000000001', recipient: '0xabc' },
    },
    {
      realm: 'ümlaut.example',
      method: 'fake',
      intent: 'charge',
      request: { amount: '1', currency: 'FAKE', description: tricky, methodDetails: { nested: { z: 1, a: [true, null] } } },
      expires: '2030-01-01T00:00:00Z',
      digest: sha256Digest('body'),
      opaque: encodeJson({ n: 'nonce', r: 'POST /x?y="z"' }),
      description: tricky,
    },
  ]

  test('C3 interop: for the same secret and fields mppx Challenge.from and our challengeId compute the same id', () => {
    for (const fields of fixed) {
      const theirs = Challenge.from({ ...fields, secretKey: secret })
      const ours = challengeId(utf8(secret), { ...fields, request: encodeJson(fields.request) })
      expect(ours).toBe(theirs.id)
    }
  })

  test('C3 interop: ids agree for arbitrary realms, requests, expiries, digests, opaque maps and keys (slots without | or \\)', () => {
    fc.assert(
      fc.property(
        challengeArbitrary().filter((challenge) => !/[|\\]/.test(challenge.realm)),
        fc.string({ minLength: 32, maxLength: 80, unit: 'grapheme' }),
        (challenge, key) => {
          const request = decodeJson(challenge.request) as Record<string, unknown>
          const { id: _id, ...fields } = comparable(challenge)
          const theirs = Challenge.from({ ...fields, request, secretKey: key })
          expect(challengeId(utf8(key), challenge)).toBe(theirs.id)
          expect(Challenge.verify({ ...theirs }, { secretKey: key })).toBe(true)
        },
      ),
      { numRuns: 300 },
    )
  })

  test('C3: a slot containing | or \\ is escaped in our binding input, so its id differs from the plain |-join mppx computes', () => {
    // Only a realm can hold either character (every other slot is base64url, a token or a
    // timestamp); the plain join would let `a|b` + `c` and `a` + `b|c` share an id.
    for (const realm of ['shop.test|fake|charge', 'back\\slash.test', 'a|']) {
      const fields = { ...fixed[0]!, realm }
      const theirs = Challenge.from({ ...fields, secretKey: secret })
      expect(challengeId(utf8(secret), { ...fields, request: encodeJson(fields.request) })).not.toBe(theirs.id)
    }
  })
})

describe('credentials', () => {
  test('C4 interop: credentials serialised by mppx parse here with the same challenge, payload and source', () => {
    fc.assert(
      fc.property(
        challengeArbitrary(),
        fc.jsonValue({ maxDepth: 3 }),
        fc.option(fc.string({ minLength: 1, maxLength: 60 }), { nil: undefined }),
        (challenge, payload, source) => {
          const theirs = Challenge.deserialize(serializeChallenge(challenge))
          const header = Credential.serialize({ challenge: theirs, payload, ...(source !== undefined && { source }) })
          const [scheme, token] = header.split(' ')
          expect(scheme).toBe('Payment')
          const parsed = parseCredential(token!)
          expect(parsed.challenge).toEqual({ ...comparable(challenge), request: decodeJson(challenge.request) })
          // the echoed request is our exact encoding: JCS on both sides
          expect(parsed.requestEncoded).toBe(challenge.request)
          expect(JSON.stringify(parsed.payload ?? null)).toBe(JSON.stringify(payload))
          expect(parsed.source).toBe(source)
        },
      ),
      { numRuns: 300 },
    )
  })

  test('C4 interop: mppx reads a credential shaped the way our clients and tests send it', async () => {
    const { challenge } = await challengeFrom(harness({ route: { description: tricky } }).app)
    const back = Credential.deserialize(credentialFor(challenge, voucher(), { source: 'did:example:1' }))
    expect(back.challenge).toEqual(comparable(challenge))
    expect(back.payload).toEqual(voucher())
    expect(back.source).toBe('did:example:1')
  })
})

describe('receipts', () => {
  test('C6 interop: our Payment-Receipt parses in mppx Receipt.deserialize', async () => {
    const { app } = harness({ route: { externalId: 'order-1' } })
    const { challenge } = await challengeFrom(app)
    const header = Credential.serialize({ challenge: Challenge.deserialize(serializeChallenge(challenge)), payload: voucher() })
    const response = await pay(app, '/paid', header)
    expect(response.status).toBe(200)
    const receipt = response.headers.get('payment-receipt')!
    expect(Receipt.deserialize(receipt)).toEqual(parseReceipt(receipt))
    expect(Receipt.deserialize(receipt)).toMatchObject({ status: 'success', method: 'fake', reference: 'ref-v1', externalId: 'order-1' })
  })

  test('C6 interop: receipts round-trip both ways for arbitrary references and external ids', () => {
    fc.assert(
      fc.property(
        fc.record(
          {
            method: methodName,
            reference: fc.string({ unit: 'grapheme' }),
            externalId: fc.string({ unit: 'grapheme' }),
            timestamp: timestamp,
          },
          { requiredKeys: ['method', 'reference', 'timestamp'] },
        ),
        (fields) => {
          const receipt = { status: 'success' as const, ...fields }
          expect(Receipt.deserialize(serializeReceipt(receipt))).toEqual(receipt)
          expect(parseReceipt(Receipt.serialize(Receipt.from(receipt)))).toEqual(receipt)
        },
      ),
      { numRuns: 300 },
    )
  })

  test('C6 interop: mppx receipts with fields we do not know still parse here', () => {
    const theirs = Receipt.serialize(
      Receipt.from({ status: 'success', method: 'tempo', reference: '0xabc', timestamp: '2030-01-01T00:00:00.123Z', subscriptionId: 'sub_1' }),
    )
    expect(parseReceipt(theirs)).toMatchObject({ method: 'tempo', reference: '0xabc', timestamp: '2030-01-01T00:00:00.123Z' })
  })
})

describe('end to end', () => {
  test('C4 C6 interop: a credential made by mppx Credential.serialize from Challenge.deserialize(ourHeader) pays our middleware', async () => {
    const method = fakeMethod()
    method.vouchers.add('v1').add('v2')
    const { app, ran } = harness({ methods: [method], route: { description: tricky } })
    // GET
    const first = await app.request(`${origin}/paid?x=1`)
    const challenge = Challenge.deserialize(first.headers.get('www-authenticate')!)
    const paid = await pay(app, '/paid?x=1', Credential.serialize({ challenge, payload: { type: 'voucher', token: 'v1' } }))
    expect(paid.status).toBe(200)
    expect(Receipt.fromResponse(paid)).toMatchObject({ status: 'success', reference: 'ref-v1' })
    // POST with a body: the digest survives mppx's round trip
    const body = JSON.stringify({ prompt: 'Grüße' })
    const second = await app.request(`${origin}/paid`, { method: 'POST', body })
    const [posted] = Challenge.deserializeList(second.headers.get('www-authenticate')!)
    expect(posted!.digest).toBe(sha256Digest(body))
    const paidPost = await pay(app, '/paid', Credential.serialize({ challenge: posted!, payload: { type: 'voucher', token: 'v2' } }), {
      method: 'POST',
      body,
    })
    expect(paidPost.status).toBe(200)
    expect(method.settledOnChain).toEqual(['v1', 'v2'])
    expect(ran.count).toBe(2)
  })

  test('C8 interop: the mppx client (Mppx.create with a custom method) pays our middleware through its own 402 handling', async () => {
    const method = fakeMethod({ name: 'fake' })
    method.vouchers.add('client-voucher')
    const pay2 = mpp({ secret, methods: [fakeMethod({ name: 'other' }), method] })
    const app = new Hono().post('/paid', pay2.charge({ amount: '0.5', description: tricky }), async (c) =>
      c.json({ echoed: await c.req.json(), payer: c.get('payment').payer }),
    )
    const fake = Method.from({
      name: 'fake',
      intent: 'charge',
      schema: {
        credential: { payload: z.object({ type: z.literal('voucher'), token: z.string() }) },
        request: z.object({ amount: z.string(), currency: z.string(), recipient: z.optional(z.string()) }),
      },
    })
    const seen: string[] = []
    const client = Mppx.create({
      polyfill: false,
      fetch: async (input, init) => app.request(input instanceof Request ? input : String(input), init),
      methods: [
        Method.toClient(fake, {
          async createCredential({ challenge }) {
            seen.push(challenge.method)
            return Credential.serialize({ challenge, payload: { type: 'voucher', token: 'client-voucher' } })
          },
        }),
      ],
    })
    const response = await client.fetch(`${origin}/paid`, { method: 'POST', body: JSON.stringify({ n: 1 }), headers: { 'content-type': 'application/json' } })
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ echoed: { n: 1 }, payer: 'payer-of-client-voucher' })
    expect(Receipt.fromResponse(response)).toMatchObject({ method: 'fake', reference: 'ref-client-voucher' })
    expect(seen).toEqual(['fake'])
    expect(method.settledOnChain).toEqual(['client-voucher'])
  })
})

// ---------------------------------------------------------------------------------------------
// Arbitraries: challenges in the forms a server produces (request/opaque are base64url JCS,
// expires RFC 3339, digest RFC 9530), with free text where the protocol allows any.

const methodName = fc.stringMatching(/^[a-z][a-z0-9:_-]{0,15}$/)
const text = (minLength = 0) => fc.string({ minLength, maxLength: 40, unit: 'binary' }).filter((s) => !/[\r\n\0]/.test(s))
const timestamp = fc
  .date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2099-12-31T23:59:59Z'), noInvalidDate: true })
  .chain((date) => fc.boolean().map((millis) => (millis ? date.toISOString() : date.toISOString().replace(/\.\d{3}Z$/, 'Z'))))
const jsonObject = fc.dictionary(fc.string({ maxLength: 8, unit: 'grapheme' }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 })

function challengeArbitrary() {
  return fc.record(
    {
      id: fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
      realm: text(1),
      method: methodName,
      intent: fc.constantFrom('charge', 'session', 'subscription'),
      request: fc
        .record({ amount: fc.bigInt({ min: 0n, max: 10n ** 30n }).map(String), currency: fc.string({ maxLength: 42 }) })
        .chain((base) => jsonObject.map((extra) => encodeJson({ ...extra, ...base }))),
      expires: timestamp,
      digest: fc.uint8Array({ minLength: 1, maxLength: 64 }).map((bytes) => `sha-256=:${Buffer.from(bytes).toString('base64')}:`),
      description: text(1),
      opaque: fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 20, unit: 'grapheme' }), { maxKeys: 4 }).map(encodeJson),
    },
    { requiredKeys: ['id', 'realm', 'method', 'intent', 'request'] },
  )
}
