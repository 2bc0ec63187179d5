/**
 * Re-splitting the challenge binding. The id binds seven slots joined with `|`; a realm taken
 * from the Host header could carry `|` itself, and a lenient date parser read `expires` such as
 * `Jan 1 2099 (…` as a far-future time: a genuine id issued for a crafted Host then verified as
 * another challenge, for this host, expiring in 2099. Three causes, each closed and shown here:
 * a Host that is not `host[:port]` is refused (400) before anything is bound to it; the binding
 * input escapes `|` and `\` inside a slot, so one id binds exactly one tuple of slots; `expires`
 * is read as an RFC 3339 date-time and nothing else.
 */
import { Hono } from 'hono'
import { describe, expect, test } from 'vitest'
import { mpp } from '../../src/index.js'
import { challengeId, verifyChallengeId } from '../../src/protocol/challenge.js'
import { utf8 } from '../../src/protocol/encoding.js'
import { mcpPayments } from '../../src/transports/mcp.js'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf } from '../helpers/http.js'
import { challengeFrom, credentialFor, expectedId, expectRefusal, harness, origin, pay, secret, voucher } from '../protocol/support.js'

/** Host values a runtime may pass through unvalidated; none is a `host[:port]`. */
const craftedHosts = [
  'api.test|fake|charge|x|Jan 1 2099 (',
  'api.test|',
  'api.test"',
  'api.test\\',
  'api.test (comment)',
  'api test',
  'api.test:80|x',
  'api.test:8o',
  'api.test:123456',
  '[::1',
  '[::1]x',
  '[not:an:ip]',
  '[1:2:3:4:5:6:7:8:9]',
  'ümlaut.test',
  'api.test/evil',
  'user@api.test',
  'api.test%',
  'api.test%zz',
]

const validHosts = [
  'api.test',
  'api.test:8443',
  'shop.example',
  '127.0.0.1:3000',
  '[::1]',
  '[::1]:8080',
  '[2001:db8::8a2e:370:7334]',
  '[::ffff:192.0.2.1]',
  'xn--mlaut-jva.test',
  "a-b_c~d.e!$&'()*+,;=f",
  'api%2Etest',
]

describe('crafted Host headers', () => {
  test('C3 I2: a Host header that is not host[:port] (|, quotes, spaces, a bad port or IP-literal…) is refused with 400 before any challenge is bound to it', async () => {
    const { app, ran, method } = harness({}, ['v1'])
    for (const host of craftedHosts) {
      for (const init of [{}, { method: 'POST', body: 'a body' }] as RequestInit[]) {
        const response = await app.request(`${origin}/paid`, { ...init, headers: { host } })
        const body = await expectRefusal(response, 'bad-request', { status: 400, challenge: false, detail: /Host header is not a valid host\[:port\]/ })
        expect(body.detail).not.toContain(host)
      }
    }
    // Even with a credential the request is refused for its Host, before anything is verified.
    const { challenge } = await challengeFrom(app)
    const response = await pay(app, '/paid', credentialFor(challenge, voucher()), { headers: { host: craftedHosts[0]! } })
    await expectRefusal(response, 'bad-request', { status: 400, challenge: false, detail: /Host header/ })
    expect(ran.count).toBe(0)
    expect(method.calls.verify).toBe(0)
  })

  test('C3 I2: valid hosts (names, ports, IPv4, IPv6 literals, percent-encoding, sub-delims) still get challenges bound to them', async () => {
    const { app } = harness()
    for (const host of validHosts) {
      const response = await app.request(`${origin}/paid`, { headers: { host } })
      expect(response.status, host).toBe(402)
      const [challenge] = challengesOf(response)
      expect(challenge!.realm).toBe(host)
      expect(challenge!.id).toBe(expectedId(secret, challenge!))
    }
  })

  test('M1 I2: the MCP adapter refuses a priced call under an invalid Host, naming the Host, and binds nothing to it', async () => {
    const method = fakeMethod()
    let calls = 0
    const app = new Hono()
    app.post('/mcp', mcpPayments({ secret, methods: [method], tools: { summarize: { amount: '0.01' } } }), (c) => {
      calls++
      return c.json({ jsonrpc: '2.0', id: 1, result: {} })
    })
    const call = (host: string) =>
      app.request('http://mcp.test/mcp', {
        method: 'POST',
        headers: { host, 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'summarize', arguments: {} } }),
      })
    for (const host of craftedHosts) {
      const answer = (await (await call(host)).json()) as {
        error: { data: { httpStatus: number; challenges: unknown[]; problem: { type: string; detail: string } } }
      }
      expect(answer.error.data.httpStatus, host).toBe(400)
      expect(answer.error.data.challenges).toEqual([])
      expect(answer.error.data.problem.type).toBe('https://paymentauth.org/problems/bad-request')
      expect(answer.error.data.problem.detail).toMatch(/Host header is not a valid host\[:port\]/)
    }
    const good = (await (await call('mcp.test:8080')).json()) as { error: { code: number; data: { challenges: { realm: string }[] } } }
    expect(good.error.code).toBe(-32042)
    expect(good.error.data.challenges[0]!.realm).toBe('mcp.test:8080')
    expect(calls).toBe(0)
  })
})

describe('re-splitting a genuine id', () => {
  test('C3: a genuine challenge bound to a realm holding |…|Jan 1 2099 ( cannot be re-split into a challenge for this host that expires in 2099', async () => {
    // This server derives its realm from the Host (api.test here). Another server with the same
    // secret is configured with a realm crafted to hold the first slots of another challenge: the
    // bytes of `realm|method|intent|request|expires` for api.test with `Jan 1 2099 (` as expires.
    const { app, ran, method } = harness({}, ['v1', 'v2'])
    const { challenge: own } = await challengeFrom(app)
    const crafted = `api.test|fake|charge|${own.request}|Jan 1 2099 (`
    const other = new Hono()
    other.get('/paid', mpp({ secret, realm: crafted, methods: [method] }).charge({ amount: '0.01' }), (c) => c.text('other'))
    const genuine = challengesOf(await other.request(`${origin}/paid`))[0]!
    expect(genuine.realm).toBe(crafted)

    // The same seven slots, split where the plain join would put the separators.
    const resplit = { ...genuine, realm: 'api.test', expires: `Jan 1 2099 (|fake|charge|${own.request}|${genuine.expires}` }
    const response = await pay(app, '/paid', credentialFor(resplit, voucher('v1')))
    await expectRefusal(response, 'invalid-challenge', { usedId: genuine.id })
    expect(ran.count).toBe(0)
    expect(method.calls.verify).toBe(0)

    // Control: the genuine challenge pays the server that issued it.
    expect((await pay(other, '/paid', credentialFor(genuine, voucher('v2')))).status).toBe(200)
  })

  test('C3: the binding input is injective: moving bytes across a | between slots changes the id', () => {
    const key = utf8(secret)
    const slots = { realm: 'api.test|fake', method: 'fake', intent: 'charge', request: 'e30', expires: '2099-01-01T00:00:00Z', opaque: 'e30' }
    const id = challengeId(key, slots)
    const variants = [
      { ...slots, realm: 'api.test', method: 'fake|fake' },
      { ...slots, realm: 'api.test|fake|fake', method: 'charge', intent: 'e30', request: '' },
      { ...slots, realm: 'api.test\\', method: 'fake' },
      { ...slots, expires: '2099-01-01T00:00:00Z|', digest: undefined, opaque: 'e30' },
      { ...slots, expires: '2099-01-01T00:00:00Z', digest: '|e30', opaque: undefined },
    ]
    for (const variant of variants) {
      expect(challengeId(key, variant)).not.toBe(id)
      expect(verifyChallengeId([key], id, variant)).toBe(false)
    }
    expect(verifyChallengeId([key], id, slots)).toBe(true)
  })
})

describe('expires is RFC 3339 and nothing else', () => {
  const lenient = [
    '2099-01-01',
    'Jan 1 2099',
    'Jan 1 2099 (anything)',
    '2099-01-01T00:00:00',
    '2099-01-01 00:00:00Z',
    '+275760-09-13T00:00:00Z',
    '+002099-01-01T00:00:00Z',
    '4102444800',
    '2099-01-01T00:00Z',
    '2099-01-01T00:00:00.Z',
    '2099-01-01T00:00:00+0100',
    '2099-01-01T00:00:00 Z',
    ' 2099-01-01T00:00:00Z',
    '2099-13-01T00:00:00Z',
    '2099-02-29T00:00:00Z',
    '2099-04-31T00:00:00Z',
    '2099-01-01T24:00:00Z',
    '2099-01-01T00:60:00Z',
    '2099-01-01T00:00:61Z',
    '2099-01-01T00:00:00+24:00',
    '2099-01-01T00:00:00-00:60',
    'Thu, 01 Jan 2099 00:00:00 GMT',
  ]

  test.each(lenient)('C2: a challenge whose id binds expires %j is refused: not an RFC 3339 date-time', async (expires) => {
    const { app, ran, method } = harness({}, ['v1'])
    const { challenge } = await challengeFrom(app)
    // Minted with the server's own secret: only the expires form is at fault.
    const signed = { ...challenge, expires, id: expectedId(secret, { ...challenge, expires }) }
    const response = await pay(app, '/paid', credentialFor(signed, voucher()))
    await expectRefusal(response, 'invalid-challenge', { usedId: signed.id, detail: /not an RFC 3339 date-time/ })
    expect(ran.count).toBe(0)
    expect(method.calls.verify).toBe(0)
  })

  test('C2: RFC 3339 forms with a fraction, a lower-case t/z, an offset or a leap day are read as the instant they name', async () => {
    const forms = [
      '2099-01-01T00:00:00Z',
      '2099-01-01t00:00:00.123456z',
      '2099-01-01T05:30:00+05:30',
      '2098-12-31T23:00:00-01:00',
      '2096-02-29T12:00:00Z',
      '2000-02-29T00:00:00Z',
    ]
    const { app, ran } = harness(
      {},
      forms.map((_, i) => `v${i}`),
    )
    for (const [i, expires] of forms.entries()) {
      const { challenge } = await challengeFrom(app)
      const signed = { ...challenge, expires, id: expectedId(secret, { ...challenge, expires }) }
      const response = await pay(app, '/paid', credentialFor(signed, voucher(`v${i}`)))
      if (expires.startsWith('2000')) await expectRefusal(response, 'payment-expired', { usedId: signed.id })
      else expect(response.status, expires).toBe(200)
    }
    expect(ran.count).toBe(forms.length - 1)
  })
})
