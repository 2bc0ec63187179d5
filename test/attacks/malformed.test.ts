/**
 * Malformed input: whatever arrives in `Authorization`, the answer is a 400/402 problem naming
 * the fault, with nothing echoed and nothing the client sent reaching a response header.
 */
import { beforeAll, describe, expect, test } from 'vitest'
import { fundedAccount } from '../../scripts/local-chain.js'
import { challengesOf, credentialFor } from '../helpers/http.js'
import { authorizationOf, expectDelivered, expectRefusal, mppxPays, origin, realm, rpcUrl, shop, wireOf, withCredential } from './support.js'

let payer: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  payer = await fundedAccount(rpcUrl(), { funder: 0, amount: '5' })
})

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64url')
const malformed = (detail: RegExp) => ({ status: 402, kind: 'malformed-credential', detail }) as const

describe('C4 C5: credentials that do not parse', () => {
  const cases: [string, string, RegExp][] = [
    ['bad base64url', 'Payment !!!not*base64url!!!', /the credential is not base64url \(RFC 4648 §5, no padding\) of UTF-8 JSON/],
    ['standard base64 with + and /', `Payment ${Buffer.from('{"a":"???>>>"}').toString('base64')}`, /not base64url/],
    ['base64url of bytes that are not UTF-8', `Payment ${Buffer.from([0xff, 0xfe, 0xfd]).toString('base64url')}`, /not base64url .* of UTF-8 JSON/],
    ['base64url of text that is not JSON', `Payment ${b64('hello, server')}`, /the credential is base64url but its content is not JSON/],
    ['JSON that is an array', `Payment ${b64('[1,2,3]')}`, /the credential JSON has the wrong shape/],
    ['JSON without a challenge', `Payment ${b64('{"payload":{}}')}`, /the credential JSON has the wrong shape: challenge/],
    ['a challenge that is a string', `Payment ${b64('{"challenge":"x","payload":{}}')}`, /wrong shape: challenge/],
    [
      'a challenge without id',
      `Payment ${b64(JSON.stringify({ challenge: { realm, method: 'tempo', intent: 'charge', request: b64('{}') }, payload: {} }))}`,
      /wrong shape: challenge\.id/,
    ],
    [
      'a method name with a quote',
      `Payment ${b64(JSON.stringify({ challenge: { id: 'x', realm, method: 'te"mpo', intent: 'charge', request: b64('{}') }, payload: {} }))}`,
      /wrong shape: challenge\.method/,
    ],
    [
      'a request that is not base64url JSON',
      `Payment ${b64(JSON.stringify({ challenge: { id: 'x', realm, method: 'tempo', intent: 'charge', request: 'not json' }, payload: {} }))}`,
      /challenge\.request is not base64url of JSON/,
    ],
    [
      'a request of the wrong shape',
      `Payment ${b64(JSON.stringify({ challenge: { id: 'x', realm, method: 'tempo', intent: 'charge', request: b64('{"amount":5}') }, payload: {} }))}`,
      /challenge\.request has the wrong shape: amount/,
    ],
    ['an empty Payment credential', 'Payment', /the Payment credential is empty/],
    ['a 64 KB credential', `Payment ${'A'.repeat(64 * 1024)}`, /the credential is 65536 characters; at most 16384 are accepted/],
  ]

  test.each(cases)('C4 C5: %s → 402 malformed-credential', async (_name, authorization, detail) => {
    const s = shop()
    await expectRefusal(s, () => s.fetch('/paid', { headers: { authorization } }), malformed(detail), {
      credentials: authorization.length > 8 ? [authorization] : [],
    })
  })

  test('C4 C5: a genuine challenge with a payload of the wrong shape → 402 malformed-credential naming the field', async () => {
    const s = shop()
    const { challenge } = await s.challenge()
    for (const [payload, detail] of [
      [undefined, /the credential JSON has the wrong shape: payload|payload must have type/],
      [42, /payload/],
      [{ type: 'transaction' }, /payload\.signature/],
      [{ type: 'transaction', signature: 'nothex' }, /payload\.signature must be 0x-prefixed hex bytes/],
      [
        { type: 'transaction', signature: `0x${'00'.repeat(5_000)}` },
        /payload\.signature must be a signed Tempo transaction \(0x76 or 0x78 envelope\), got type 0x00/,
      ],
      [{ type: 'hash', hash: '0x1234' }, /payload\.hash must be a 32-byte hex hash/],
      [{ type: 'cash', amount: 1 }, /payload(\.type)? must have type "transaction", "hash" or "proof"/],
      [{ type: 'transaction', signature: '0x02f86c0182' }, /payload\.signature must be a signed Tempo transaction \(0x76 or 0x78 envelope\), got type 0x02/],
      [{ type: 'transaction', signature: '0x76c0ffee' }, /payload\.signature is not a decodable Tempo transaction/],
    ] as const) {
      const credential = credentialFor(challenge, payload)
      await expectRefusal(s, () => s.fetch('/paid', withCredential(credential)), malformed(detail), { credentials: [credential] })
    }
  })

  test('C4: a genuine credential padded past 4 KB with unknown fields is still accepted', async () => {
    const s = shop()
    const genuine = await mppxPays(s, payer, 'pull')
    const wire = wireOf(genuine) as unknown as Record<string, unknown>
    const padded = authorizationOf({ ...wire, note: 'x'.repeat(5_000), challenge: { ...(wire.challenge as object), extra: 'ignored' } })
    expect(padded.length).toBeGreaterThan(4_096)
    await expectDelivered(await s.fetch('/paid', withCredential(padded)))
  })
})

describe('C5: several credentials', () => {
  test('C5: two Authorization: Payment headers → 400, no challenge, nothing settled', async () => {
    const s = shop()
    const first = await mppxPays(s, payer, 'pull')
    const second = await mppxPays(s, payer, 'pull')
    const headers = new Headers()
    headers.append('authorization', first)
    headers.append('authorization', second)
    await expectRefusal(
      s,
      () => s.fetch('/paid', { headers }),
      {
        status: 400,
        kind: 'bad-request',
        detail: /the request carries 2 Payment credentials; send exactly one/,
      },
      { watch: [{ address: payer.address }], credentials: [first, second] },
    )
    // Neither credential was used up: each still pays on its own.
    await expectDelivered(await s.fetch('/paid', withCredential(first)))
  })

  test('C5: two credentials in one header, and a Payment credential next to another scheme', async () => {
    const s = shop()
    const one = await mppxPays(s, payer, 'pull')
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(`${one}, ${one}`)),
      {
        status: 400,
        kind: 'bad-request',
        detail: /carries 2 Payment credentials/,
      },
      { credentials: [one] },
    )
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(`Payment !!, ${one}`)),
      {
        status: 400,
        kind: 'bad-request',
        detail: /carries 2 Payment credentials/,
      },
      { credentials: [one] },
    )
  })
})

describe('C2 C11: nothing the client sends reaches a response header', () => {
  function expectCleanHeaders(response: Response) {
    for (const [name, value] of response.headers) {
      expect(value, name).not.toMatch(/[\r\n\0]/)
      expect(name).not.toBe('set-cookie')
    }
    const challenges = challengesOf(response)
    expect(challenges.length).toBeGreaterThan(0)
    for (const challenge of challenges) {
      expect(challenge.realm).toBe(realm)
      expect(Object.keys(challenge).sort()).toEqual(['expires', 'id', 'intent', 'method', 'opaque', 'realm', 'request'])
    }
  }

  test('C2: quotes, backslashes and a forged auth-param in Host do not reach a challenge: the request is refused for its Host', async () => {
    const s = shop()
    for (const host of ['evil.test", realm="attacker', 'evil\\" x="y', 'a"b']) {
      const response = await s.fetch('/paid', { headers: { host } })
      expect(response.status).toBe(400)
      expect(response.headers.get('www-authenticate')).toBeNull()
      expect(((await response.json()) as { detail: string }).detail).toMatch(/Host header is not a valid host\[:port\]/)
    }
  })

  test('C2: CR/LF and quotes in the path and query stay inside the base64url opaque', async () => {
    const s = shop()
    const response = await s.app.request(`${origin}/paid?x=%22%0d%0aSet-Cookie:%20a=b&y="q"`)
    expect(response.status).toBe(402)
    expectCleanHeaders(response)
  })

  test('C2 C11: CR/LF and quotes inside an echoed challenge are refused and never echoed', async () => {
    const s = shop()
    const { challenge } = await s.challenge()
    for (const change of [
      { realm: 'shop.test\r\nSet-Cookie: stolen=1' },
      { description: 'a"b\\c\r\nX-Injected: 1' },
      { expires: '2099-01-01T00:00:00Z\r\nX-Injected: 1' },
      { opaque: 'x"\r\n' },
    ]) {
      const credential = credentialFor({ ...challenge, ...change }, { type: 'hash', hash: `0x${'11'.repeat(32)}` })
      const response = await s.fetch('/paid', withCredential(credential))
      expect(response.status).toBe(402)
      expectCleanHeaders(response)
      const text = await response.text()
      expect(text).not.toMatch(/Injected|stolen/)
    }
  })
})
