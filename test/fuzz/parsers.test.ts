/**
 * Property tests over the wire parsers: whatever arrives, they answer or throw only their
 * documented errors, and what we serialise reads back unchanged.
 */
import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { type Challenge, PaymentError, parseChallenges, parseCredential, paymentTokens, rankOffers, serializeChallenge } from '../../src/index.js'
import { maxCredentialLength } from '../../src/protocol/credential.js'
import { decodeJson, encodeJson } from '../../src/protocol/encoding.js'

const runs = { numRuns: 1000 }
const b64url = (value: string) => Buffer.from(value, 'utf8').toString('base64url')

/** Text a header could carry (no CR, LF, NUL), any other Latin-1 or wider character. */
const headerText = (maxLength = 200) => fc.string({ maxLength, unit: 'binary' }).filter((s) => !/[\r\n\0]/.test(s))

/** Strings built from the pieces of an auth header, so the parser's branches are all reached. */
const authLike = fc
  .array(
    fc.oneof(
      fc.constantFrom(
        'Payment',
        'payment',
        'Bearer',
        'Basic',
        ' ',
        ',',
        ', ',
        '=',
        '"',
        '\\',
        '\\"',
        '\\u00e9',
        '\\u12',
        'id',
        'realm',
        'method',
        'intent',
        'request',
        'expires',
        'description',
        'opaque',
        'digest',
      ),
      fc.stringMatching(/^[A-Za-z0-9_-]{1,8}$/),
      headerText(6),
    ),
    { maxLength: 40 },
  )
  .map((parts) => parts.join(''))

const methodName = fc.stringMatching(/^[a-z][a-z0-9:_-]{0,12}$/)

const challengeArbitrary: fc.Arbitrary<Challenge> = fc.record(
  {
    id: fc.string({ minLength: 1, maxLength: 60, unit: 'binary' }).filter((s) => !/[\r\n\0]/.test(s)),
    realm: fc.string({ minLength: 1, maxLength: 60, unit: 'binary' }).filter((s) => !/[\r\n\0]/.test(s)),
    method: methodName,
    intent: fc.stringMatching(/^[a-z0-9-]{1,12}$/),
    request: fc.jsonValue({ maxDepth: 2 }).map((value) => encodeJson({ amount: '1', value })),
    expires: fc.date({ noInvalidDate: true, min: new Date(0), max: new Date('9999-12-31T00:00:00Z') }).map((d) => d.toISOString()),
    digest: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((bytes) => `sha-256=:${Buffer.from(bytes).toString('base64')}:`),
    description: fc.string({ minLength: 0, maxLength: 80, unit: 'binary' }).filter((s) => !/[\r\n\0]/.test(s)),
    opaque: fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 10 })).map(encodeJson),
  },
  { requiredKeys: ['id', 'realm', 'method', 'intent', 'request'] },
)

describe('parseChallenges', () => {
  const answersOrMalformed = (header: string) => {
    let challenges: Challenge[]
    try {
      challenges = parseChallenges(header)
    } catch (error) {
      expect(error).toBeInstanceOf(Error)
      expect(error).not.toBeInstanceOf(TypeError)
      expect((error as Error).message).toMatch(/^malformed /)
      return
    }
    for (const challenge of challenges)
      for (const name of ['id', 'realm', 'method', 'intent', 'request'] as const)
        expect(typeof challenge[name] === 'string' && challenge[name].length > 0).toBe(true)
  }

  test('C2 fuzz: any header text parses or throws a "malformed" Error, nothing else', () => {
    fc.assert(fc.property(headerText(), answersOrMalformed), runs)
    fc.assert(fc.property(authLike, answersOrMalformed), runs)
  })

  test('C2 fuzz: serialise → parse is the identity for arbitrary challenges, alone, joined, and among other schemes', () => {
    fc.assert(
      fc.property(fc.array(challengeArbitrary, { minLength: 1, maxLength: 3 }), (challenges) => {
        const headers = challenges.map(serializeChallenge)
        for (const header of headers) expect(/[^\x00-\xff]|[\r\n]/.test(header)).toBe(false)
        expect(parseChallenges(headers[0]!)).toEqual([challenges[0]])
        expect(parseChallenges(headers.join(', '))).toEqual(challenges)
        expect(parseChallenges(`Bearer realm="x", error="invalid_token", ${headers.join(', ')}, Basic realm="y"`)).toEqual(challenges)
      }),
      runs,
    )
  })
})

describe('parseCredential', () => {
  const onlyMalformed = (token: string) => {
    try {
      const parsed = parseCredential(token)
      expect(parsed.challenge.method).toMatch(/^[a-z][a-z0-9:_-]*$/)
      expect(parsed.challenge.id.length).toBeGreaterThan(0)
      expect(typeof parsed.challenge.request.amount).toBe('string')
      expect(typeof parsed.requestEncoded).toBe('string')
    } catch (error) {
      expect(error).toBeInstanceOf(PaymentError)
      expect((error as PaymentError).kind).toBe('malformed-credential')
      expect((error as PaymentError).status).toBe(402)
      expect((error as PaymentError).detail.length).toBeGreaterThan(10)
      // the detail never echoes what was sent
      if (token.length >= 12) expect((error as PaymentError).detail).not.toContain(token)
    }
  }

  const validWire = fc.record({
    challenge: fc.record({
      id: fc.string({ minLength: 1, maxLength: 20 }),
      realm: fc.string({ maxLength: 20 }),
      method: methodName,
      intent: fc.constant('charge'),
      request: fc.record({ amount: fc.string({ maxLength: 5 }), currency: fc.string({ maxLength: 5 }) }).map(encodeJson),
      expires: fc.string({ maxLength: 25 }),
    }),
    payload: fc.jsonValue({ maxDepth: 2 }),
  })

  /** A valid-looking credential with one field replaced by any JSON value, or removed. */
  const mutated = fc
    .tuple(
      validWire,
      fc.constantFrom('id', 'realm', 'method', 'intent', 'request', 'expires', 'digest', 'opaque', 'description', 'challenge', 'payload', 'source'),
      fc.option(fc.jsonValue({ maxDepth: 2 })),
    )
    .map(([wire, field, value]) => {
      const copy = JSON.parse(JSON.stringify(wire)) as Record<string, unknown> & { challenge: Record<string, unknown> }
      const target = ['challenge', 'payload', 'source'].includes(field) ? copy : copy.challenge
      if (value === null) delete target[field]
      else target[field] = value
      return b64url(JSON.stringify(copy))
    })

  test('C4 fuzz: parseCredential only ever throws PaymentError malformed-credential', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300, unit: 'binary' }), onlyMalformed), runs)
    fc.assert(fc.property(fc.base64String({ maxLength: 300 }), onlyMalformed), runs)
    fc.assert(
      fc.property(
        fc.jsonValue({ maxDepth: 4 }).map((v) => b64url(JSON.stringify(v))),
        onlyMalformed,
      ),
      runs,
    )
    fc.assert(
      fc.property(
        validWire.map((w) => b64url(JSON.stringify(w))),
        onlyMalformed,
      ),
      runs,
    )
    fc.assert(fc.property(mutated, onlyMalformed), runs)
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes).toString('base64url')),
        onlyMalformed,
      ),
      runs,
    )
  })

  test('C4 fuzz: oversized tokens are refused before decoding, whatever they contain', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 50_000 }), fc.constantFrom('A', '%', '{', 'é'), (extra, char) => {
        const token = char.repeat(maxCredentialLength + extra)
        expect(() => parseCredential(token)).toThrow(/at most 16384 are accepted/)
      }),
      { numRuns: 50 },
    )
  })
})

describe('paymentTokens', () => {
  test('C4 fuzz: never throws; tokens carry no comma and no surrounding whitespace', () => {
    fc.assert(
      fc.property(fc.oneof(headerText(), authLike, fc.constant(undefined), fc.constant(null)), (header) => {
        const tokens = paymentTokens(header)
        expect(Array.isArray(tokens)).toBe(true)
        for (const token of tokens) {
          expect(token).not.toContain(',')
          expect(token).toBe(token.trim())
        }
      }),
      runs,
    )
  })

  test('C4 fuzz: finds exactly the Payment credentials among other schemes, in order', () => {
    const credential = fc
      .base64String({ minLength: 4, maxLength: 40 })
      .map((s) => s.replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_'))
      .filter((s) => s.length > 0)
    const other = fc.constantFrom('Bearer abc.def', 'Basic dXNlcjpwYXNz', 'Paymentx 123', 'Pay ment', 'Token token="x"')
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.tuple(credential, fc.mixedCase(fc.constant('payment'))).map(([token, scheme]) => ({ token, scheme })),
            other,
          ),
          { maxLength: 6 },
        ),
        (parts) => {
          const header = parts.map((p) => (typeof p === 'string' ? p : `${p.scheme} ${p.token}`)).join(', ')
          const expected = parts.filter((p): p is { token: string; scheme: string } => typeof p !== 'string').map((p) => p.token)
          expect(paymentTokens(header)).toEqual(expected)
        },
      ),
      runs,
    )
  })
})

describe('rankOffers', () => {
  type Offer = { method: string; intent: string }
  const offersArbitrary = fc.uniqueArray(
    fc.record({ method: fc.constantFrom('tempo', 'stripe', 'fake', 'ln'), intent: fc.constantFrom('charge', 'session') }),
    {
      selector: (o) => `${o.method}/${o.intent}`,
      minLength: 0,
      maxLength: 8,
    },
  )
  const entry = fc.record({
    method: fc.constantFrom('tempo', 'stripe', 'fake', 'ln', 'other', '*'),
    intent: fc.constantFrom('charge', 'session', '*'),
    q: fc.option(fc.constantFrom('0', '0.1', '0.5', '0.999', '1', '1.000', '0.0'), { nil: undefined }),
  })

  /** The spec's rules, written out directly: filter q>0, order by q, server order on ties, most specific range wins. */
  const model = (offers: Offer[], entries: { method: string; intent: string; q: string | undefined }[]) => {
    const specificity = (e: { method: string; intent: string }) => (e.method === '*' ? 0 : 2) + (e.intent === '*' ? 0 : 1)
    return offers
      .map((offer, index) => {
        const matching = entries.filter((e) => (e.method === '*' || e.method === offer.method) && (e.intent === '*' || e.intent === offer.intent))
        const best = matching.reduce<(typeof entries)[number] | undefined>((acc, e) => (!acc || specificity(e) > specificity(acc) ? e : acc), undefined)
        return { offer, index, q: best ? Number(best.q ?? '1') : 0 }
      })
      .filter((s) => s.q > 0)
      .sort((a, b) => b.q - a.q || a.index - b.index)
      .map((s) => s.offer)
  }

  test('C8 fuzz: well-formed Accept-Payment headers rank offers exactly as the spec rules say', () => {
    fc.assert(
      fc.property(offersArbitrary, fc.array(entry, { minLength: 1, maxLength: 6 }), (offers, entries) => {
        const header = entries.map((e) => `${e.method}/${e.intent}${e.q === undefined ? '' : `;q=${e.q}`}`).join(', ')
        expect(rankOffers(offers, header)).toEqual(model(offers, entries))
      }),
      runs,
    )
  })

  test('C8 fuzz: any header: never throws, returns a subset of the offers without duplicates; absent or */* keeps everything', () => {
    fc.assert(
      fc.property(offersArbitrary, fc.oneof(headerText(80), fc.constant(undefined), fc.constant('')), (offers, header) => {
        const ranked = rankOffers(offers, header)
        expect(new Set(ranked).size).toBe(ranked.length)
        for (const offer of ranked) expect(offers).toContain(offer)
        expect(rankOffers(offers, undefined)).toEqual(offers)
        expect(rankOffers(offers, '*/*')).toEqual(offers)
      }),
      runs,
    )
  })
})

describe('decodeJson', () => {
  test('fuzz: decodeJson returns a value or throws a decoding/JSON Error, and inverts encodeJson', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          headerText(120),
          fc.base64String({ maxLength: 120 }),
          fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b).toString('base64url')),
        ),
        (text) => {
          try {
            decodeJson(text)
          } catch (error) {
            const ok =
              (error instanceof Error && error.message === 'not base64url') ||
              error instanceof SyntaxError ||
              (error instanceof TypeError && /encoded data was not valid/i.test(error.message))
            expect(ok, String(error)).toBe(true)
          }
        },
      ),
      runs,
    )
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 3 }), (value) => {
        expect(decodeJson(encodeJson(value))).toEqual(JSON.parse(JSON.stringify(value)))
      }),
      runs,
    )
  })
})
