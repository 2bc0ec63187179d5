/**
 * The one payment core under both transports: a second intent and a non-Payment credential
 * scheme plug into the same pipeline (test-only implementations), the same refusal reads the
 * same on HTTP and MCP, and an operator's mistake is reported as such (500, `onEvent`,
 * `app.onError`), never as a retryable 503.
 */
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { describe, expect, test } from 'vitest'
import { type CredentialScheme, type Intent, mpp, PaymentError, type PaymentEvent, type PaymentMethod, type Verified } from '../../src/index.js'
import { mcpPayments } from '../../src/transports/mcp.js'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, credentialFor } from '../helpers/http.js'

const secret = 'a test secret that is at least thirty-two bytes long'

/**
 * A test-only intent, "tab": a credential names a tab; the amount is added to it only when the
 * work succeeded. Nothing of it is built into the core.
 */
function tabIntent(tabs: Map<string, bigint>): Intent {
  return {
    name: 'tab',
    async pay(attempt) {
      const tab = (attempt.credential.payload as { tab?: unknown }).tab
      if (typeof tab !== 'string' || !tabs.has(tab)) throw new PaymentError('verification-failed', 'no such tab')
      const outcome = await attempt.run({
        method: attempt.offer.method,
        intent: 'tab',
        challengeId: attempt.credential.challenge.id,
        amount: attempt.offer.request.amount,
        decimalAmount: attempt.offer.decimalAmount,
        currency: attempt.offer.request.currency,
        recipient: attempt.offer.request.recipient,
        payer: tab,
        reference: `tab:${tab}`,
        credentialType: 'tab',
        settled: false,
        receipt: undefined,
      })
      if (!outcome.succeeded) return { result: outcome.result, succeeded: false, receipt: undefined, replayed: false }
      tabs.set(tab, tabs.get(tab)! + BigInt(attempt.offer.request.amount))
      return {
        result: outcome.result,
        succeeded: true,
        receipt: { status: 'success', method: attempt.offer.method, timestamp: new Date().toISOString(), reference: `tab:${tab}` },
        replayed: false,
      }
    },
  }
}

/** A payment method whose only intent is "tab" (its verify/settle are never called by the tab intent). */
function tabMethod(): PaymentMethod {
  const unused = async (): Promise<never> => {
    throw new Error('not used by the tab intent')
  }
  return {
    name: 'house',
    intent: 'tab',
    request: (charge) => ({ amount: String(Math.round(Number(charge.amount) * 100)), currency: 'CREDITS' }),
    verify: unused as () => Promise<Verified>,
    settle: unused,
    recover: unused,
  }
}

/** A test-only prepaid-key scheme: `Authorization: Bearer <key>` debits a balance when the work succeeds. */
function prepaidKeys(balances: Map<string, bigint>): CredentialScheme {
  return {
    scheme: 'Bearer',
    async pay(attempt) {
      const price = BigInt(attempt.offers[0]!.request.amount)
      const balance = balances.get(attempt.token)
      if (balance === undefined) throw new PaymentError('verification-failed', 'unknown API key')
      if (balance < price) throw new PaymentError('payment-insufficient', `the key's balance ${balance} is below the price ${price}`)
      const outcome = await attempt.run({
        method: 'prepaid',
        intent: 'charge',
        challengeId: '',
        amount: price.toString(),
        decimalAmount: attempt.offers[0]!.decimalAmount,
        currency: attempt.offers[0]!.request.currency,
        recipient: attempt.offers[0]!.request.recipient,
        payer: 'key-holder',
        reference: 'prepaid',
        credentialType: 'api-key',
        settled: false,
        receipt: undefined,
      })
      if (outcome.succeeded) balances.set(attempt.token, balances.get(attempt.token)! - price)
      return {
        result: outcome.result,
        succeeded: outcome.succeeded,
        receipt: outcome.succeeded ? { status: 'success', method: 'prepaid', timestamp: new Date().toISOString(), reference: 'prepaid' } : undefined,
        replayed: false,
      }
    },
  }
}

describe('the intent seam: a second intent through the same core, on HTTP and MCP', () => {
  test('HTTP: a "tab" offer is challenged beside charge, paid by its own intent, and charged only on success', async () => {
    const tabs = new Map([['alice', 0n]])
    const charge = fakeMethod()
    const pay = mpp({ secret, methods: [charge, tabMethod()], intents: [tabIntent(tabs)] })
    let fail = false
    const app = new Hono().get('/thing', pay.charge({ amount: '0.5' }), (c) =>
      fail ? c.text('no', 500) : c.json({ by: c.get('payment').payer, intent: c.get('payment').intent }),
    )

    const unpaid = await app.request('/thing')
    expect(unpaid.status).toBe(402)
    const challenges = challengesOf(unpaid)
    expect(challenges.map((ch) => `${ch.method}/${ch.intent}`)).toEqual(['fake/charge', 'house/tab'])
    const tab = challenges[1]!

    const paid = await app.request('/thing', { headers: { authorization: credentialFor(tab, { tab: 'alice' }) } })
    expect(paid.status).toBe(200)
    expect(await paid.json()).toEqual({ by: 'alice', intent: 'tab' })
    expect(paid.headers.get('payment-receipt')).toBeTruthy()
    expect(tabs.get('alice')).toBe(50n)

    fail = true
    const again = challengesOf(await app.request('/thing'))[1]!
    const failed = await app.request('/thing', { headers: { authorization: credentialFor(again, { tab: 'alice' }) } })
    expect(failed.status).toBe(500)
    expect(failed.headers.get('payment-receipt')).toBeNull()
    expect(tabs.get('alice')).toBe(50n)
    // The core's binding still guards the second intent: a tab challenge altered to charge more is refused.
    const forged = credentialFor({ ...again, intent: 'charge' }, { tab: 'alice' })
    expect((await app.request('/thing', { headers: { authorization: forged } })).status).toBe(402)
  })

  test('an intent no configured intent settles is refused at construction', () => {
    expect(() => mpp({ secret, methods: [tabMethod()] })).toThrow(/implements intent "tab", which no configured intent settles; add it to `intents`/)
  })

  test('MCP: the same intent pays a priced tool through mcpPayments', async () => {
    const tabs = new Map([['bob', 0n]])
    const app = new Hono().post('/mcp', mcpPayments({ secret, methods: [tabMethod()], intents: [tabIntent(tabs)], tools: { add: { amount: '0.25' } } }), (c) =>
      c.json({ jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: `paid by ${c.get('payment').payer}` }] } }),
    )
    const call = (meta?: unknown) =>
      app.request('/mcp', {
        method: 'POST',
        headers: { 'content-type': 'application/json', host: 'mcp.test' },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'tools/call',
          params: { name: 'add', arguments: {}, ...(meta !== undefined && { _meta: meta }) },
        }),
      })
    const unpaid = (await (await call()).json()) as { error: { code: number; data: { challenges: { intent: string }[] } } }
    expect(unpaid.error.code).toBe(-32042)
    const challenge = unpaid.error.data.challenges[0]!
    expect(challenge.intent).toBe('tab')
    const paid = (await (await call({ 'org.paymentauth/credential': { challenge, payload: { tab: 'bob' } } })).json()) as {
      result: { content: { text: string }[]; _meta: Record<string, { reference: string }> }
    }
    expect(paid.result.content[0]!.text).toBe('paid by bob')
    expect(paid.result._meta['org.paymentauth/receipt']!.reference).toBe('tab:bob')
    expect(tabs.get('bob')).toBe(25n)
  })
})

describe('a credential of another scheme (a prepaid API key) through the same core', () => {
  const setup = () => {
    const balances = new Map([['key-1', 20_000n]])
    const pay = mpp({ secret, methods: [fakeMethod()], schemes: [prepaidKeys(balances)] })
    let status = 200
    const app = new Hono().get('/thing', pay.charge({ amount: '0.01' }), (c) => c.json({ credential: c.get('payment').credentialType }, status as 200))
    return { app, balances, setStatus: (value: number) => (status = value) }
  }

  test('Bearer spends the balance on success only; no key still gets the Payment challenge', async () => {
    const { app, balances, setStatus } = setup()
    const withKey = await app.request('/thing', { headers: { authorization: 'Bearer key-1' } })
    expect(withKey.status).toBe(200)
    expect(await withKey.json()).toEqual({ credential: 'api-key' })
    expect(withKey.headers.get('payment-receipt')).toBeTruthy()
    expect(balances.get('key-1')).toBe(10_000n)

    setStatus(503)
    expect((await app.request('/thing', { headers: { authorization: 'Bearer key-1' } })).status).toBe(503)
    expect(balances.get('key-1')).toBe(10_000n)

    const unpaid = await app.request('/thing')
    expect(unpaid.status).toBe(402)
    expect(challengesOf(unpaid)[0]!.method).toBe('fake')
  })

  test('a refusal from the scheme is a problem JSON with a fresh Payment challenge', async () => {
    const { app } = setup()
    const refused = await app.request('/thing', { headers: { authorization: 'Bearer nope' } })
    expect(refused.status).toBe(402)
    expect(((await refused.json()) as { detail: string }).detail).toBe('unknown API key')
    expect(challengesOf(refused)).toHaveLength(1)
  })

  test('the Payment scheme cannot be replaced', () => {
    expect(() => mpp({ secret, methods: [fakeMethod()], schemes: [{ ...prepaidKeys(new Map()), scheme: 'Payment' }] })).toThrow(/Payment scheme is built in/)
  })
})

describe('the same refusal, the same words, on HTTP and MCP', () => {
  test('unpaid: "… costs 0.01 (10000 base units of FAKE)" on both, and a method the operation does not accept', async () => {
    const method = fakeMethod()
    const http = new Hono().get('/thing', mpp({ secret, methods: [method] }).charge({ amount: '0.01' }), (c) => c.text('ok'))
    const mcp = new Hono().post('/mcp', mcpPayments({ secret, methods: [method], tools: { thing: { amount: '0.01' } } }), (c) => c.json({}))
    const httpUnpaid = (await (await http.request('/thing')).json()) as { detail: string }
    const body = (message: unknown) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(message) })
    const mcpUnpaid = (await (await mcp.request('/mcp', body({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'thing' } }))).json()) as {
      error: { data: { problem: { detail: string }; challenges: Record<string, unknown>[] } }
    }
    expect(httpUnpaid.detail).toBe(
      'this resource costs 0.01 (10000 base units of FAKE); pay one of the offered challenges and retry with an Authorization: Payment credential',
    )
    expect(mcpUnpaid.error.data.problem.detail).toBe(
      'tools/call thing costs 0.01 (10000 base units of FAKE); pay one of the offered challenges and retry with _meta["org.paymentauth/credential"]',
    )
    const challenge = { ...mcpUnpaid.error.data.challenges[0]!, method: 'other' }
    const refused = (await (
      await mcp.request(
        '/mcp',
        body({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'thing', _meta: { 'org.paymentauth/credential': { challenge, payload: {} } } } }),
      )
    ).json()) as { error: { data: { detail: string } } }
    const httpChallenge = challengesOf(await http.request('/thing'))[0]!
    const httpRefused = (await (
      await http.request('/thing', { headers: { authorization: credentialFor({ ...httpChallenge, method: 'other' }, {}) } })
    ).json()) as { detail: string }
    expect(refused.error.data.detail).toBe('method "other" is not accepted for tools/call thing; accepted: fake')
    expect(httpRefused.detail).toBe('method "other" is not accepted for this route; accepted: fake')
  })

  test('PaymentInfo gives the price as written and in base units', async () => {
    const method = fakeMethod()
    method.vouchers.add('v1')
    const app = new Hono().get('/thing', mpp({ secret, methods: [method] }).charge({ amount: '0.01' }), (c) => {
      const { amount, decimalAmount, currency } = c.get('payment')
      return c.json({ amount, decimalAmount, currency })
    })
    const challenge = challengesOf(await app.request('/thing'))[0]!
    const paid = await app.request('/thing', { headers: { authorization: credentialFor(challenge, { type: 'voucher', token: 'v1' }) } })
    expect(await paid.json()).toEqual({ amount: '10000', decimalAmount: '0.01', currency: 'FAKE' })
  })
})

describe("an operator's mistake is the operator's: found at construction, or a 500 that says so", () => {
  test('a number amount, or a non-string description, fails at construction with the fix', () => {
    const pay = mpp({ secret, methods: [fakeMethod()] })
    expect(() => pay.charge({ amount: 0.01 as unknown as string })).toThrow(
      /`amount` must be a decimal string .* got the number 0.01 \(write it as a string: "0.01"\)/,
    )
    expect(() => pay.charge({ amount: '1e-7' })).toThrow(/charge: `amount` must be a decimal string in token units such as "0.01"; got "1e-7"/)
    expect(() => pay.charge({ amount: '0.0000001' })).toThrow(/more than 6 decimals/)
    expect(() => mcpPayments({ secret, methods: [fakeMethod()], tools: { t: { amount: 1 as unknown as string } } })).toThrow(/tools\["t"\] needs an `amount`/)
  })

  test.each([
    ['returns "3e-7"', () => '3e-7', /the price function returned an invalid price: `amount` must be a decimal string .* got "3e-7"/],
    ['returns a number', () => 0.01 as unknown as string, /got the number 0.01/],
    ['returns too many decimals', () => '0.0000001', /more than 6 decimals/],
    [
      'throws',
      () => {
        throw new Error('database down')
      },
      /the price function threw/,
    ],
  ])('a price function that %s: every request answers 500 problem JSON naming it; onEvent and app.onError see the cause', async (_name, amount, detail) => {
    const events: PaymentEvent[] = []
    const seen: unknown[] = []
    const pay = mpp({ secret, methods: [fakeMethod()], onEvent: (event) => events.push(event) })
    const app = new Hono()
    app.onError((error, c) => {
      seen.push(error)
      return error instanceof HTTPException ? error.getResponse() : c.text('?', 500)
    })
    app.get('/dyn', pay.charge({ amount }), (c) => c.text('ok'))
    for (const headers of [{}, { authorization: 'Payment abc' }] as Record<string, string>[]) {
      const response = await app.request('/dyn', { headers })
      expect(response.status).toBe(500)
      expect(response.headers.get('content-type')).toBe('application/problem+json')
      expect(response.headers.get('retry-after')).toBeNull()
      const problem = (await response.json()) as { detail: string }
      expect(problem.detail).toMatch(/this route's price is misconfigured/)
      expect(problem.detail).toMatch(detail)
    }
    expect(events.filter((event) => event.type === 'error')).toHaveLength(2)
    expect(events.some((event) => event.type === 'rejected')).toBe(false)
    expect(seen).toHaveLength(2)
    expect((seen[0] as HTTPException).cause).toMatchObject({ name: 'PriceError' })
  })

  test('a price function that throws an HTTPException answers with it (e.g. 404 for an unknown item)', async () => {
    const pay = mpp({ secret, methods: [fakeMethod()] })
    const app = new Hono().get(
      '/item/:id',
      pay.charge({
        amount: (c) => {
          if (c.req.param('id') !== '1') throw new HTTPException(404, { message: 'no such item' })
          return '0.01'
        },
      }),
      (c) => c.text('ok'),
    )
    expect((await app.request('/item/2')).status).toBe(404)
    expect((await app.request('/item/1')).status).toBe(402)
  })
})

describe('unpaidResponse: customise the unpaid answer, keep the protocol', () => {
  test("the body and type are the hook's; the status, challenge and no-store stay", async () => {
    const pay = mpp({
      secret,
      methods: [fakeMethod()],
      unpaidResponse: (c, { detail, challengeId }) =>
        c.req.header('accept')?.includes('text/plain') ? { body: `Pay up: ${detail} (${challengeId})`, contentType: 'text/plain; charset=utf-8' } : undefined,
    })
    const app = new Hono().get('/thing', pay.charge({ amount: '0.01' }), (c) => c.text('ok'))
    const custom = await app.request('/thing', { headers: { accept: 'text/plain' } })
    expect(custom.status).toBe(402)
    expect(custom.headers.get('content-type')).toBe('text/plain; charset=utf-8')
    expect(custom.headers.get('cache-control')).toBe('no-store')
    const [challenge] = challengesOf(custom)
    expect(await custom.text()).toBe(
      `Pay up: this resource costs 0.01 (10000 base units of FAKE); pay one of the offered challenges and retry with an Authorization: Payment credential (${challenge!.id})`,
    )
    const plain = await app.request('/thing')
    expect(plain.headers.get('content-type')).toBe('application/problem+json')
  })
})
