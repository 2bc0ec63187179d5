/**
 * The headline promise of a shared claim store: two app instances, each with its own
 * `redisStore` on the SAME real Redis, receive 1 000 concurrent submissions of ONE valid
 * credential (signed by the mppx client, pull mode, on the local Tempo chain). Exactly one
 * submission is delivered, the chain sees exactly one broadcast, and the recipient is paid
 * the amount exactly once.
 */
import { Hono } from 'hono'
import { Mppx, tempo as tempoClient } from 'mppx/client'
import { createClient as createRedisClient } from 'redis'
import { createClient, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, expect, inject, test } from 'vitest'
import { balanceOf, fundedAccount, localChain, localChainId, pathUsd } from '../../scripts/local-chain.js'
import { type RpcProxy, startRpcProxy } from '../../scripts/rpc-proxy.js'
import { mpp, type PaymentEvent, parseReceipt } from '../../src/index.js'
import { nodeRedisCommand, redisStore } from '../../src/stores/redis.js'
import { tempo } from '../../src/tempo/index.js'
import { type RedisServer, startRedisServer } from './redis-server.js'

const rpcUrl = inject('rpcUrl')
const secret = crypto.getRandomValues(new Uint8Array(32))
const recipient = privateKeyToAccount(generatePrivateKey()).address
const submissions = 1000

let redis: RedisServer
let proxy: RpcProxy
const redisClients: Array<{ destroy(): void }> = []

beforeAll(async () => {
  redis = await startRedisServer()
  proxy = await startRpcProxy(rpcUrl)
})

afterAll(async () => {
  for (const client of redisClients) client.destroy()
  await proxy?.close()
  await redis?.stop()
})

/** One app instance: its own Redis connection, store, payment method and Hono app. */
async function instance(name: string, delivered: string[], events: PaymentEvent[]) {
  const client = createRedisClient({ url: redis.url })
  client.on('error', () => {})
  redisClients.push(client)
  await client.connect()
  const pay = mpp({
    secret,
    realm: 'api.test',
    methods: [tempo({ rpcUrl: proxy.url, chainId: localChainId, currency: pathUsd, recipient })],
    // 1 000 requests queue their commands on one connection each: on a loaded two-core machine the
    // default 1 s command timeout can pass before Redis answers, and a timed-out command rightly
    // fails closed (503). This test is about exactly-once under contention, so it waits longer.
    store: redisStore({ command: nodeRedisCommand(client), timeout: 15_000 }),
    onEvent: (event) => events.push(event),
  })
  return new Hono().get('/report', pay.charge({ amount: '0.25' }), (c) => {
    delivered.push(name)
    return c.json({ report: 'paid content', payer: c.get('payment').payer })
  })
}

test(`C9 I3 T4: two instances on one Redis, ${submissions} concurrent submissions of one pull credential → one delivery, one settlement`, async () => {
  const delivered: string[] = []
  const events: PaymentEvent[] = []
  const apps = [await instance('a', delivered, events), await instance('b', delivered, events)]
  const payer = await fundedAccount(rpcUrl, { funder: 5, amount: '1' })
  const before = await balanceOf(rpcUrl, recipient)

  // The client meets a 402 on instance a and signs one credential for it.
  const unpaid = await apps[0]!.request('http://api.test/report')
  expect(unpaid.status).toBe(402)
  const client = Mppx.create({
    polyfill: false,
    methods: [
      tempoClient.charge({
        account: payer,
        mode: 'pull',
        getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }),
      }),
    ],
  })
  const authorization = await client.createCredential(unpaid)
  proxy.reset()

  // The same credential, 1 000 times at once, alternating between the instances.
  const responses = await Promise.all(
    Array.from({ length: submissions }, (_, i) => apps[i % 2]!.request('http://api.test/report', { headers: { authorization } })),
  )

  const paid = responses.filter((r) => r.status === 200)
  expect(paid).toHaveLength(1)
  expect(delivered).toHaveLength(1)
  const receipt = parseReceipt(paid[0]!.headers.get('payment-receipt')!)
  expect(receipt).toMatchObject({ status: 'success', method: 'tempo' })
  expect(await paid[0]!.json()).toEqual({ report: 'paid content', payer: payer.address })

  // Every other submission is refused as used or in progress, never with a receipt, never a 5xx.
  const refused = responses.filter((r) => r.status !== 200)
  const statuses = new Set(refused.map((r) => r.status))
  for (const status of statuses) expect([402, 409]).toContain(status)
  for (const r of refused) expect(r.headers.get('payment-receipt')).toBeNull()

  // One settlement: one broadcast reached the chain, one settled event, the recipient paid once.
  const broadcasts = (proxy.counts.get('eth_sendRawTransactionSync') ?? 0) + (proxy.counts.get('eth_sendRawTransaction') ?? 0)
  expect(broadcasts).toBe(1)
  const settled = events.filter((e) => e.type === 'settled')
  expect(settled).toHaveLength(1)
  expect(settled[0]).toMatchObject({ reference: receipt.reference })
  expect((await balanceOf(rpcUrl, recipient)) - before).toBe(250_000n)

  // Later replays on either instance are still refused, and nothing more is delivered.
  for (const app of apps) {
    const replay = await app.request('http://api.test/report', { headers: { authorization } })
    expect(replay.status).toBe(402)
    expect(replay.headers.get('payment-receipt')).toBeNull()
  }
  expect(delivered).toHaveLength(1)
  expect((await balanceOf(rpcUrl, recipient)) - before).toBe(250_000n)
})

test('C9 C10: when the shared Redis is down the paid request fails closed — 503, handler not run, nothing broadcast', async () => {
  const doomed = await startRedisServer()
  const client = createRedisClient({ url: doomed.url, socket: { reconnectStrategy: () => 100 } })
  client.on('error', () => {})
  redisClients.push(client)
  await client.connect()
  let ran = 0
  const pay = mpp({
    secret,
    realm: 'api.test',
    methods: [tempo({ rpcUrl: proxy.url, chainId: localChainId, currency: pathUsd, recipient })],
    store: redisStore({ command: nodeRedisCommand(client), timeout: 300 }),
  })
  const app = new Hono().get('/report', pay.charge({ amount: '0.25' }), (c) => {
    ran++
    return c.text('paid content')
  })
  const payer = await fundedAccount(rpcUrl, { funder: 5, amount: '1' })
  const before = await balanceOf(rpcUrl, recipient)
  const unpaid = await app.request('http://api.test/report')
  expect(unpaid.status).toBe(402)
  const authorization = await Mppx.create({
    polyfill: false,
    methods: [
      tempoClient.charge({
        account: payer,
        mode: 'pull',
        getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }),
      }),
    ],
  }).createCredential(unpaid)

  await doomed.stop()
  proxy.reset()
  const response = await app.request('http://api.test/report', { headers: { authorization } })
  expect(response.status).toBe(503)
  expect(response.headers.get('retry-after')).not.toBeNull()
  expect(response.headers.get('payment-receipt')).toBeNull()
  const problem = (await response.json()) as { type: string; detail: string }
  expect(problem.type).toBe('https://paymentauth.org/problems/payment-unavailable')
  expect(problem.detail).not.toContain(authorization.slice('Payment '.length, 'Payment '.length + 40))
  expect(ran).toBe(0)
  expect((proxy.counts.get('eth_sendRawTransactionSync') ?? 0) + (proxy.counts.get('eth_sendRawTransaction') ?? 0)).toBe(0)
  expect(await balanceOf(rpcUrl, recipient)).toBe(before)
})
