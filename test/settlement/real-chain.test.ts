/**
 * Settlement policy and exactly-once delivery on the real local chain (issue 4), paid by the
 * reference client. A proxy between server and chain injects the faults a network produces.
 */
import { Hono } from 'hono'
import { Mppx, tempo as tempoClient } from 'mppx/client'
import { type Address, createClient, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { balanceOf, fundedAccount, localChain } from '../../scripts/local-chain.js'
import { type RpcProxy, startRpcProxy } from '../../scripts/rpc-proxy.js'
import { mpp, type PaymentEvent, parseReceipt } from '../../src/index.js'
import { memoryStore } from '../../src/stores/memory.js'
import { tempo } from '../../src/tempo/index.js'

const rpcUrl = inject('rpcUrl')
let proxy: RpcProxy
let payer: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  proxy = await startRpcProxy(rpcUrl)
  payer = await fundedAccount(rpcUrl, { amount: '20', funder: 8 })
})
afterAll(async () => {
  await proxy.close()
})

function setup(options: { settle?: 'before' | 'after'; handler?: (c: { req: { json(): Promise<unknown> } }) => Promise<Response | undefined> } = {}) {
  const recipient: Address = privateKeyToAccount(generatePrivateKey()).address
  const events: PaymentEvent[] = []
  const store = memoryStore()
  const pay = mpp({
    secret: 'settlement-test-secret-0123456789abcdef',
    methods: [tempo({ rpcUrl: proxy.url, chainId: 31337, recipient, timeout: 3_000 })],
    store,
    onEvent: (event) => events.push(event),
  })
  let runs = 0
  const app = new Hono().post('/work', pay.charge({ amount: '0.01', settle: options.settle ?? 'before' }), async (c) => {
    runs++
    const body = (await c.req.json().catch(() => ({}))) as { fail?: string }
    if (body.fail === 'throw') throw new Error('the work blew up')
    if (body.fail === '500') return c.json({ error: 'the work failed' }, 500)
    return c.json({ ok: true, reference: c.get('payment').reference })
  })
  app.onError((_error, c) => c.json({ error: 'internal' }, 500))
  const client = Mppx.create({
    polyfill: false,
    methods: [tempoClient.charge({ account: payer, getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }) })],
  })
  const url = 'http://api.test/work'
  const post = (body: unknown, authorization?: string) =>
    app.request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(authorization && { authorization }) },
      body: JSON.stringify(body),
    })
  const credentialFor = async (body: unknown) => {
    const unpaid = await post(body)
    expect(unpaid.status).toBe(402)
    return client.createCredential(unpaid, { mode: 'pull' })
  }
  return { recipient, events, post, credentialFor, runs: () => runs }
}

describe("settle: 'after' on the real chain", () => {
  test.each(['500', 'throw'])('C10 I3: a handler that fails (%s) leaves the payer balance unchanged and gets no receipt', async (fail) => {
    const s = setup({ settle: 'after' })
    const body = { fail }
    const authorization = await s.credentialFor(body)
    const before = await balanceOf(rpcUrl, payer.address)
    proxy.reset()
    const response = await s.post(body, authorization)
    expect(response.status).toBe(500)
    expect(response.headers.get('payment-receipt')).toBeNull()
    expect(s.runs()).toBe(1)
    expect(proxy.counts.get('eth_sendRawTransactionSync') ?? 0).toBe(0)
    expect(await balanceOf(rpcUrl, payer.address)).toBe(before)
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(0n)
    expect(s.events.some((e) => e.type === 'released')).toBe(true)
  })

  test('a 2xx handler is charged exactly the amount, once, with a receipt', async () => {
    const s = setup({ settle: 'after' })
    const body = { fail: 'no' }
    const authorization = await s.credentialFor(body)
    proxy.reset()
    const response = await s.post(body, authorization)
    expect(response.status).toBe(200)
    const receipt = parseReceipt(response.headers.get('payment-receipt')!)
    expect(receipt.reference).toMatch(/^0x[0-9a-f]{64}$/)
    expect(proxy.total()).toBe(1)
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
  })
})

describe('exactly once when the network misbehaves', () => {
  test('C9: the broadcast answer is lost after the node accepted it; the retry delivers once and charges once', async () => {
    const s = setup()
    const body = { n: 1 }
    const authorization = await s.credentialFor(body)
    proxy.inject({ method: 'eth_sendRawTransactionSync', action: 'drop' })
    const first = await s.post(body, authorization)
    expect(first.status).toBe(503)
    expect(first.headers.get('retry-after')).toBeTruthy()
    expect(first.headers.get('payment-receipt')).toBeNull()
    expect(((await first.json()) as { detail: string }).detail).toMatch(/outcome is not known/)
    expect(s.runs()).toBe(0)
    // The transaction did land: the node accepted it before the answer was lost.
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)

    const retry = await s.post(body, authorization)
    expect(retry.status).toBe(200)
    const receipt = parseReceipt(retry.headers.get('payment-receipt')!)
    expect(s.runs()).toBe(1)
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
    expect(s.events.some((e) => e.type === 'settled' && e.recovered && e.reference === receipt.reference)).toBe(true)

    const again = await s.post(body, authorization)
    expect(again.status).toBe(402)
    expect(s.runs()).toBe(1)
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
  })

  test('C9: the node was unreachable during the broadcast; the retry re-broadcasts the same signed bytes, delivers once', async () => {
    const s = setup()
    const body = { n: 2 }
    const authorization = await s.credentialFor(body)
    proxy.inject({ method: 'eth_sendRawTransactionSync', action: '5xx' })
    const first = await s.post(body, authorization)
    expect(first.status).toBe(503)
    expect(first.headers.get('retry-after')).toBeTruthy()
    expect(s.runs()).toBe(0)
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(0n)

    const retry = await s.post(body, authorization)
    expect(retry.status).toBe(200)
    expect(retry.headers.get('payment-receipt')).toBeTruthy()
    expect(s.runs()).toBe(1)
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
  })

  test('C9: 50 concurrent submissions of one credential → one settlement, one delivery', async () => {
    const s = setup()
    const body = { n: 3 }
    const authorization = await s.credentialFor(body)
    proxy.reset()
    const responses = await Promise.all(Array.from({ length: 50 }, () => s.post(body, authorization)))
    const statuses = responses.map((r) => r.status)
    expect(statuses.filter((status) => status === 200)).toHaveLength(1)
    expect(statuses.filter((status) => status === 402)).toHaveLength(49)
    expect(responses.filter((r) => r.headers.get('payment-receipt'))).toHaveLength(1)
    expect(s.runs()).toBe(1)
    expect(proxy.counts.get('eth_sendRawTransactionSync')).toBe(1)
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
  })
})
