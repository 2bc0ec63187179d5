/**
 * The MCP adapter over a fake payment method and a hand-written JSON-RPC handler: error codes,
 * credential placement, the operation binding, receipts, capabilities, batches.
 */
import { Hono } from 'hono'
import { describe, expect, test } from 'vitest'
import type { PaymentEvent } from '../../src/index.js'
import { challengeId, secretKeys } from '../../src/protocol/challenge.js'
import { decodeJson, encodeJson } from '../../src/protocol/encoding.js'
import { hmacKey } from '../../src/protocol/hmac.js'
import { type McpChallenge, mcpPayments } from '../../src/transports/mcp.js'
import { fakeMethod } from '../helpers/fake-method.js'

const secret = 'mcp-test-secret-0123456789abcdef-0123'
type RpcAnswer = { jsonrpc: string; id: unknown; result?: Record<string, any>; error?: { code: number; message: string; data: any } }

function setup(options: { settle?: 'before' | 'after'; sse?: boolean } = {}) {
  const method = Object.assign(fakeMethod(), { deferrable: ['voucher'] })
  const events: PaymentEvent[] = []
  const calls: string[] = []
  const app = new Hono()
  app.post(
    '/mcp',
    mcpPayments({
      secret,
      methods: [method],
      onEvent: (event) => events.push(event),
      tools: {
        summarize: { amount: '0.01', description: 'one summary', ...(options.settle && { settle: options.settle }) },
        translate: { amount: '0.02' },
      },
      resources: { 'file:///report.pdf': { amount: '0.5' } },
      prompts: { expert: { amount: '0.001' } },
    }),
    async (c) => {
      const message = (await c.req.json()) as { id: unknown; method: string; params?: any }
      calls.push(message.params?.name ?? message.params?.uri ?? message.method)
      let result: Record<string, unknown>
      if (message.method === 'initialize') result = { protocolVersion: '2025-11-25', capabilities: { tools: {} }, serverInfo: { name: 't', version: '1' } }
      else if (message.params?.arguments?.fail === 'rpc') return c.json({ jsonrpc: '2.0', id: message.id, error: { code: -32000, message: 'the tool broke' } })
      else if (message.params?.arguments?.fail === 'isError') result = { content: [{ type: 'text', text: 'no' }], isError: true }
      else result = { content: [{ type: 'text', text: `done: ${calls.at(-1)}` }], payer: c.get('payment')?.payer ?? null }
      const answer = { jsonrpc: '2.0', id: message.id, result }
      if (options.sse) return c.body(`event: message\ndata: ${JSON.stringify(answer)}\n\n`, 200, { 'content-type': 'text/event-stream' })
      return c.json(answer)
    },
  )
  let nextId = 1
  const send = async (body: unknown) => {
    const response = await app.request('http://mcp.test/mcp', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify(body),
    })
    const text = await response.text()
    if (response.headers.get('content-type')?.includes('text/event-stream')) {
      const data = text
        .split('\n')
        .find((line) => line.startsWith('data: '))!
        .slice(6)
      return { response, answer: JSON.parse(data) as RpcAnswer }
    }
    return { response, answer: (text ? JSON.parse(text) : undefined) as RpcAnswer }
  }
  const call = (name: string, extra: { meta?: unknown; rootMeta?: unknown; arguments?: unknown } = {}) =>
    send({
      jsonrpc: '2.0',
      id: nextId++,
      method: 'tools/call',
      params: { name, arguments: extra.arguments ?? {}, ...(extra.meta !== undefined && { _meta: extra.meta }) },
      ...(extra.rootMeta !== undefined && { _meta: extra.rootMeta }),
    })
  const challengeFor = async (name: string): Promise<McpChallenge> => {
    const { answer } = await call(name)
    expect(answer.error?.code).toBe(-32042)
    return answer.error!.data.challenges[0] as McpChallenge
  }
  const voucher = (token: string) => {
    method.vouchers.add(token)
    return { type: 'voucher', token }
  }
  const credential = (challenge: McpChallenge, payload: unknown) => ({ 'org.paymentauth/credential': { challenge, payload } })
  return { app, method, events, calls, send, call, challengeFor, voucher, credential }
}

describe('M1 payment required', () => {
  test('M1: a priced tools/call without credential gets -32042 with JSON challenges whose id binds JCS(request); the handler does not run', async () => {
    const s = setup()
    const { response, answer } = await s.call('summarize')
    expect(response.status).toBe(200)
    expect(answer.id).toBe(1)
    expect(answer.result).toBeUndefined()
    const error = answer.error!
    expect(error.code).toBe(-32042)
    expect(error.data.httpStatus).toBe(402)
    expect(error.data.problem.type).toBe('https://paymentauth.org/problems/payment-required')
    const [challenge] = error.data.challenges as McpChallenge[]
    expect(error.data.problem.challengeId).toBe(challenge!.id)
    expect(typeof challenge!.request).toBe('object')
    expect(challenge!.request).toMatchObject({ amount: '10000', currency: 'FAKE', recipient: 'merchant' })
    expect(challenge).toMatchObject({ realm: 'mcp.test', method: 'fake', intent: 'charge', description: 'one summary' })
    expect(Date.parse(challenge!.expires)).toBeGreaterThan(Date.now())
    expect((decodeJson(challenge!.opaque) as { r: string }).r).toBe('tools/call summarize')
    const expected = challengeId(hmacKey(secretKeys(secret)[0]!), {
      realm: challenge!.realm,
      method: challenge!.method,
      intent: challenge!.intent,
      request: encodeJson(challenge!.request),
      expires: challenge!.expires,
      opaque: challenge!.opaque,
    })
    expect(challenge!.id).toBe(expected)
    expect(s.calls).toEqual([])
    expect(s.events.map((e) => e.type)).toEqual(['challenge'])
  })

  test('M1 M5: resources/read by uri and prompts/get by name are priced; other uris, tools and methods pass free', async () => {
    const s = setup()
    const resource = await s.send({ jsonrpc: '2.0', id: 'r', method: 'resources/read', params: { uri: 'file:///report.pdf' } })
    expect(resource.answer.error?.code).toBe(-32042)
    expect(resource.answer.error!.data.challenges[0].request.amount).toBe('500000')
    expect((decodeJson(resource.answer.error!.data.challenges[0].opaque) as { r: string }).r).toBe('resources/read file:///report.pdf')
    const prompt = await s.send({ jsonrpc: '2.0', id: 'p', method: 'prompts/get', params: { name: 'expert' } })
    expect(prompt.answer.error?.code).toBe(-32042)
    expect(prompt.answer.error!.data.challenges[0].request.amount).toBe('1000')
    expect(s.calls).toEqual([])

    const freeResource = await s.send({ jsonrpc: '2.0', id: 1, method: 'resources/read', params: { uri: 'file:///free.txt' } })
    const freeTool = await s.call('free-tool')
    const list = await s.send({ jsonrpc: '2.0', id: 3, method: 'tools/list' })
    for (const { answer } of [freeResource, freeTool, list]) {
      expect(answer.error).toBeUndefined()
      expect(answer.result!._meta).toBeUndefined()
    }
    expect(s.calls).toEqual(['file:///free.txt', 'free-tool', 'tools/list'])
  })

  test('M1: a priced notification (no id) is dropped unanswered and never reaches the handler', async () => {
    const s = setup()
    const { response } = await s.send({ jsonrpc: '2.0', method: 'tools/call', params: { name: 'summarize' } })
    expect(response.status).toBe(202)
    expect(s.calls).toEqual([])
  })
})

describe('M2 M4 paying', () => {
  test('M2 M4: a credential in params._meta pays once; the result carries the receipt with challengeId and reference', async () => {
    const s = setup()
    const challenge = await s.challengeFor('summarize')
    const { answer } = await s.call('summarize', { meta: s.credential(challenge, s.voucher('v1')) })
    expect(answer.error).toBeUndefined()
    expect(answer.result!.content[0].text).toBe('done: summarize')
    expect(answer.result!.payer).toBe('payer-of-v1')
    const receipt = answer.result!._meta['org.paymentauth/receipt']
    expect(receipt).toMatchObject({ status: 'success', method: 'fake', challengeId: challenge.id, reference: 'ref-v1' })
    expect(Date.parse(receipt.timestamp)).toBeLessThanOrEqual(Date.now())
    expect(s.method.settledOnChain).toEqual(['v1'])
    expect(s.calls).toEqual(['summarize'])
  })

  test('M2: a credential at the message root is accepted too', async () => {
    const s = setup()
    const challenge = await s.challengeFor('summarize')
    const { answer } = await s.call('summarize', { rootMeta: s.credential(challenge, s.voucher('root')) })
    expect(answer.result!._meta['org.paymentauth/receipt'].reference).toBe('ref-root')
    expect(s.method.settledOnChain).toEqual(['root'])
  })

  test('M2: a credential sent to a free tool is ignored: no verification, no charge, no receipt', async () => {
    const s = setup()
    const challenge = await s.challengeFor('summarize')
    const { answer } = await s.call('free-tool', { meta: s.credential(challenge, s.voucher('unused')) })
    expect(answer.result!.content[0].text).toBe('done: free-tool')
    expect(answer.result!._meta).toBeUndefined()
    expect(s.method.calls.verify).toBe(0)
    expect(s.method.settledOnChain).toEqual([])
  })

  test('M4 C9: the same credential replayed is refused with -32043 and a fresh challenge; the handler ran once', async () => {
    const s = setup()
    const challenge = await s.challengeFor('summarize')
    const meta = s.credential(challenge, s.voucher('once'))
    expect((await s.call('summarize', { meta })).answer.result).toBeDefined()
    const replay = await s.call('summarize', { meta })
    expect(replay.answer.result).toBeUndefined()
    expect(replay.answer.error!.code).toBe(-32043)
    expect(replay.answer.error!.data.problem.type).toBe('https://paymentauth.org/problems/invalid-challenge')
    expect(replay.answer.error!.data.problem.detail).toMatch(/already been used/)
    expect(replay.answer.error!.data.challenges[0].id).not.toBe(challenge.id)
    expect(s.calls).toEqual(['summarize'])
    expect(s.method.settledOnChain).toEqual(['once'])
  })

  test('M4: an SSE answer (Streamable HTTP) gets the receipt inside the result of its event', async () => {
    const s = setup({ sse: true })
    const challenge = await s.challengeFor('summarize')
    const { response, answer } = await s.call('summarize', { meta: s.credential(challenge, s.voucher('sse')) })
    expect(response.headers.get('content-type')).toContain('text/event-stream')
    expect(answer.result!._meta['org.paymentauth/receipt']).toMatchObject({ challengeId: challenge.id, reference: 'ref-sse' })
  })

  test("M4 I3: settle 'after' charges only a result without isError; a JSON-RPC error or isError result is not charged and carries no receipt", async () => {
    const s = setup({ settle: 'after' })
    for (const fail of ['rpc', 'isError']) {
      const challenge = await s.challengeFor('summarize')
      const { answer } = await s.call('summarize', { meta: s.credential(challenge, s.voucher(`after-${fail}`)), arguments: { fail } })
      if (fail === 'rpc') expect(answer.error!.code).toBe(-32000)
      else expect(answer.result!.isError).toBe(true)
      expect(answer.result?._meta).toBeUndefined()
    }
    expect(s.method.settledOnChain).toEqual([])
    expect(s.events.filter((e) => e.type === 'released')).toHaveLength(2)
    const challenge = await s.challengeFor('summarize')
    const { answer } = await s.call('summarize', { meta: s.credential(challenge, s.voucher('after-ok')) })
    expect(answer.result!._meta['org.paymentauth/receipt'].reference).toBe('ref-after-ok')
    expect(s.method.settledOnChain).toEqual(['after-ok'])
  })
})

describe('M3 refusals', () => {
  test('M3: a credential for tool A cannot pay for tool B (operation binding), with -32043 and a challenge for B', async () => {
    const s = setup()
    const challenge = await s.challengeFor('summarize')
    const { answer } = await s.call('translate', { meta: s.credential(challenge, s.voucher('cross')) })
    expect(answer.error!.code).toBe(-32043)
    expect(answer.error!.data.httpStatus).toBe(402)
    expect(answer.error!.data.problem.detail).toBe('the challenge was issued for tools/call summarize, not for tools/call translate')
    const fresh = answer.error!.data.challenges[0] as McpChallenge
    expect((decodeJson(fresh.opaque) as { r: string }).r).toBe('tools/call translate')
    expect(answer.error!.data.problem.challengeId).toBe(fresh.id)
    expect(s.method.calls.verify).toBe(0)
    expect(s.calls).toEqual([])
  })

  test('M3: an altered request (lower amount) breaks the HMAC binding: -32043 invalid-challenge', async () => {
    const s = setup()
    const challenge = await s.challengeFor('summarize')
    const altered = { ...challenge, request: { ...challenge.request, amount: '1' } }
    const { answer } = await s.call('summarize', { meta: s.credential(altered, s.voucher('cheap')) })
    expect(answer.error!.code).toBe(-32043)
    expect(answer.error!.data.problem.type).toBe('https://paymentauth.org/problems/invalid-challenge')
    expect(answer.error!.data.problem.detail).toMatch(/does not match its parameters/)
    expect(s.method.settledOnChain).toEqual([])
  })

  test('M3: a payment the method cannot verify gets -32043 verification-failed, naming the reason', async () => {
    const s = setup()
    const challenge = await s.challengeFor('summarize')
    const { answer } = await s.call('summarize', { meta: s.credential(challenge, { type: 'voucher', token: 'never-issued' }) })
    expect(answer.error!.code).toBe(-32043)
    expect(answer.error!.data.problem.detail).toBe('unknown voucher')
    expect(answer.error!.data.challenges).toHaveLength(1)
    expect(s.calls).toEqual([])
  })

  test.each([
    ['not an object', 'a string'],
    ['no challenge', { payload: {} }],
    ['base64 request that is not JSON', { challenge: { id: 'x', realm: 'mcp.test', method: 'fake', intent: 'charge', request: '!!' }, payload: {} }],
    ['challenge without id', { challenge: { realm: 'mcp.test', method: 'fake', intent: 'charge', request: { amount: '1', currency: 'x' } }, payload: {} }],
  ])('M3: a malformed credential (%s) gets -32602 and never reaches the handler', async (_name, value) => {
    const s = setup()
    const { answer } = await s.call('summarize', { meta: { 'org.paymentauth/credential': value } })
    expect(answer.error!.code).toBe(-32602)
    expect(answer.error!.data.problem.type).toBe('https://paymentauth.org/problems/malformed-credential')
    expect(answer.error!.data.detail).toBe(answer.error!.data.problem.detail)
    expect(JSON.stringify(answer.error)).not.toContain('a string')
    expect(s.calls).toEqual([])
  })

  test('M3: an internal payment error (settlement outcome unknown) gets -32603; the handler does not run', async () => {
    const s = setup()
    const challenge = await s.challengeFor('summarize')
    s.method.nextSettle = 'unknown'
    const { answer } = await s.call('summarize', { meta: s.credential(challenge, s.voucher('unknown')) })
    expect(answer.error!.code).toBe(-32603)
    expect(answer.error!.data.httpStatus).toBe(503)
    expect(answer.error!.data.problem.detail).toMatch(/outcome is not known/)
    expect(answer.error!.data.retryAfter).toBeGreaterThan(0)
    expect(s.calls).toEqual([])
  })

  test('M3 C11: refusals never echo the credential payload', async () => {
    const s = setup()
    const challenge = await s.challengeFor('summarize')
    const { answer } = await s.call('summarize', { meta: s.credential(challenge, { type: 'voucher', token: 'secret-token-xyz' }) })
    expect(answer.error!.code).toBe(-32043)
    expect(JSON.stringify(answer)).not.toContain('secret-token-xyz')
    expect(JSON.stringify(s.events)).not.toContain('secret-token-xyz')
  })
})

describe('M5 capabilities and batches', () => {
  test('M5: the initialize result advertises capabilities.experimental.payment.methods, keeping the server capabilities', async () => {
    const s = setup()
    const { answer } = await s.send({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {} } })
    expect(answer.result!.capabilities).toEqual({ tools: {}, experimental: { payment: { methods: { fake: { intents: ['charge'] } } } } })
    expect(answer.result!.serverInfo).toEqual({ name: 't', version: '1' })
  })

  test('M1: a batch containing a priced call is refused whole with -32600, naming the call; the handler does not run', async () => {
    const s = setup()
    const { answer } = await s.send([
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'summarize' } },
    ])
    const answers = answer as unknown as RpcAnswer[]
    expect(answers.map((a) => [a.id, a.error!.code])).toEqual([
      [1, -32600],
      [2, -32600],
    ])
    expect(answers[1]!.error!.data.detail).toMatch(/tools\/call summarize.*cannot be batched/)
    expect(s.calls).toEqual([])
  })

  test('misconfiguration throws at construction, naming the operation', () => {
    expect(() => mcpPayments({ secret, methods: [fakeMethod()], tools: { bad: { amount: '1,5' } } })).toThrow(/tools\["bad"\].*decimal string/)
    expect(() => mcpPayments({ secret: 'short', methods: [fakeMethod()] })).toThrow(/at least 32 bytes/)
    expect(() => mcpPayments({ secret, methods: [fakeMethod()], tools: { bad: {} as never } })).toThrow(/tools\["bad"\] needs an `amount`/)
  })
})
