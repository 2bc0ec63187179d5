/**
 * The JSON-RPC client over fetch (what `tempo({ rpcUrl })` uses): every way a node can answer or
 * fail is sorted into "the node refused" (nothing happened) or "no answer" (the outcome is
 * unknown), the distinction settlement rests on (T4). Faked with msw: a real node does not
 * produce most of these on demand.
 */
import { delay, HttpResponse, http } from 'msw'
import { setupServer } from 'msw/node'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createRpc, RpcAnswerError, RpcTransportError } from '../../src/tempo/rpc.js'

const url = 'http://node.test/rpc'
const server = setupServer()
beforeAll(() => server.listen({ onUnhandledRequest: 'error' }))
afterEach(() => server.resetHandlers())
afterAll(() => server.close())

const rpc = (timeout = 2_000) => createRpc({ rpcUrl: url, chainId: 31337, timeout })
const answering = (respond: () => Response | Promise<Response>) => server.use(http.post(url, respond))

describe('T4 the fetch JSON-RPC client', () => {
  test('T4: sends one JSON-RPC 2.0 POST per call and returns its result', async () => {
    const seen: unknown[] = []
    server.use(
      http.post(url, async ({ request }) => {
        seen.push(await request.json())
        return HttpResponse.json({ jsonrpc: '2.0', id: 1, result: { status: '0x1' } })
      }),
    )
    expect(await rpc().request('eth_sendRawTransactionSync', ['0x76ab'])).toEqual({ status: '0x1' })
    expect(seen).toEqual([{ jsonrpc: '2.0', id: expect.any(Number), method: 'eth_sendRawTransactionSync', params: ['0x76ab'] }])
  })

  test('T4: a JSON-RPC error is the node refusing: RpcAnswerError with its code and a sanitised reason', async () => {
    const longHex = `0x${'ab'.repeat(100)}`
    answering(() => HttpResponse.json({ jsonrpc: '2.0', id: 1, error: { code: -32000, message: `nonce too low: tx ${longHex}` } }))
    const error = await rpc()
      .request('eth_sendRawTransactionSync', [])
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(RpcAnswerError)
    expect(error).toMatchObject({ code: -32000, reason: 'nonce too low: tx 0x…' })
    expect(String((error as Error).message)).not.toContain(longHex)
  })

  test('T4: an error answer with HTTP 400 is still the node refusing', async () => {
    answering(() => HttpResponse.json({ jsonrpc: '2.0', id: 1, error: { code: -32602, message: 'invalid params' } }, { status: 400 }))
    await expect(rpc().request('eth_call', [])).rejects.toMatchObject({ name: 'RpcAnswerError', code: -32602 })
  })

  test.each([
    ['HTTP 502', () => new HttpResponse('bad gateway', { status: 502 })],
    ['HTTP 429', () => new HttpResponse('slow down', { status: 429 })],
    ['HTTP 404 without a JSON-RPC body', () => new HttpResponse('not found', { status: 404 })],
    ['a body that is not JSON', () => new HttpResponse('<html>', { status: 200, headers: { 'content-type': 'text/html' } })],
    ['JSON without result or error', () => HttpResponse.json({ jsonrpc: '2.0', id: 1 })],
    ['an internal error (-32603: not processed)', () => HttpResponse.json({ jsonrpc: '2.0', id: 1, error: { code: -32603, message: 'internal' } })],
    ['an error without a numeric code', () => HttpResponse.json({ jsonrpc: '2.0', id: 1, error: { message: 'odd' } })],
    ['a dropped connection', () => HttpResponse.error()],
  ])('T4: %s is no answer: RpcTransportError (outcome unknown)', async (_name, respond) => {
    answering(respond)
    await expect(rpc().request('eth_sendRawTransactionSync', [])).rejects.toBeInstanceOf(RpcTransportError)
  })

  test('T4: a node slower than the timeout is no answer, and the call returns at the timeout', async () => {
    answering(async () => {
      await delay(5_000)
      return HttpResponse.json({ jsonrpc: '2.0', id: 1, result: '0x1' })
    })
    const start = Date.now()
    const error = await rpc(200)
      .request('eth_sendRawTransactionSync', [])
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(RpcTransportError)
    expect((error as Error).message).toMatch(/did not answer within 200 ms/)
    expect(Date.now() - start).toBeLessThan(4_000)
  })

  test('T4: a result of null is a result (a receipt not found yet), not a failure', async () => {
    answering(() => HttpResponse.json({ jsonrpc: '2.0', id: 1, result: null }))
    expect(await rpc().request('eth_getTransactionReceipt', ['0x00'])).toBeNull()
  })
})

describe('onRpcCall: every call is reported, and a listener cannot change it', () => {
  test('answered, refused and unanswered calls, each with its method and duration; a throwing listener is ignored', async () => {
    const calls: { method: string; outcome: string; durationMs: number }[] = []
    const observed = createRpc({
      rpcUrl: url,
      chainId: 31337,
      timeout: 300,
      onCall: (call) => {
        calls.push(call)
        throw new Error('a broken listener')
      },
    })
    answering(() => HttpResponse.json({ jsonrpc: '2.0', id: 1, result: '0x1' }))
    expect(await observed.request('eth_chainId', [])).toBe('0x1')
    answering(() => HttpResponse.json({ jsonrpc: '2.0', id: 1, error: { code: -32000, message: 'nonce too low' } }))
    expect(await observed.request('eth_sendRawTransactionSync', []).catch((e: unknown) => e)).toBeInstanceOf(RpcAnswerError)
    answering(async () => {
      await delay(1_000)
      return HttpResponse.json({ jsonrpc: '2.0', id: 1, result: '0x1' })
    })
    expect(await observed.request('eth_getTransactionReceipt', []).catch((e: unknown) => e)).toBeInstanceOf(RpcTransportError)
    expect(calls.map(({ method, outcome }) => ({ method, outcome }))).toEqual([
      { method: 'eth_chainId', outcome: 'answered' },
      { method: 'eth_sendRawTransactionSync', outcome: 'refused' },
      { method: 'eth_getTransactionReceipt', outcome: 'unanswered' },
    ])
    for (const call of calls) expect(call.durationMs).toBeGreaterThanOrEqual(0)
  })
})
