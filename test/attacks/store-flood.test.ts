/**
 * Filling the claim store. Zero-amount proofs cost their sender nothing, and each one leaves a
 * claim (and, with an Idempotency-Key, a kept answer) until its challenge expires. They must not
 * be able to take paid routes down by filling the store (503), nor paid claims free routes; and
 * a Redis that may evict claims (which would let a used credential pay again) is refused.
 * Through the real middleware and Tempo method on the local chain.
 */

import { createClient } from 'redis'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { balanceOf, fundedAccount } from '../../scripts/local-chain.js'
import type { Challenge, ClaimStore } from '../../src/index.js'
import { memoryStore } from '../../src/stores/memory.js'
import { nodeRedisCommand, redisStore } from '../../src/stores/redis.js'
import { credentialFor } from '../helpers/http.js'
import { type RedisServer, startRedisServer } from '../stores/redis-server.js'
import { expectDelivered, mppxPays, problemBase, proofOf, rpcUrl, type Shop, shop, source, withCredential } from './support.js'

let payer: Awaited<ReturnType<typeof fundedAccount>>
const prover = privateKeyToAccount(generatePrivateKey())

beforeAll(async () => {
  payer = await fundedAccount(rpcUrl(), { funder: 4, amount: '20' })
})

/** A proof credential for `challenge`, signed by `prover`. */
async function proofFor(challenge: Challenge): Promise<string> {
  const signature = await proofOf(prover, challenge)
  return credentialFor(challenge, { type: 'proof', signature }, { source: source(prover.address) })
}

/** Sends `count` fresh proofs to the free route GET /cheap; the statuses, in order. */
async function flood(s: Shop, count: number, headers: (i: number) => Record<string, string> = () => ({})): Promise<number[]> {
  const statuses: number[] = []
  for (let i = 0; i < count; i++) {
    const { challenge } = await s.challenge('/cheap')
    const response = await s.fetch('/cheap', withCredential(await proofFor(challenge), { headers: headers(i) }))
    if (response.status === 503) await expectStoreRefusal(response)
    else await response.text()
    statuses.push(response.status)
  }
  return statuses
}

/** A 503 from a store that cannot take the claim: problem JSON, Retry-After, no receipt. */
async function expectStoreRefusal(response: Response): Promise<void> {
  expect(response.status).toBe(503)
  expect(response.headers.get('content-type')).toBe('application/problem+json')
  expect(response.headers.get('retry-after')).toBeTruthy()
  expect(response.headers.get('payment-receipt')).toBeNull()
  const body = (await response.json()) as { type: string; detail: string }
  expect(body.type).toBe(`${problemBase}payment-unavailable`)
  expect(body.detail).toMatch(/^the payment store is unreachable; /)
}

/** The paid route GET /paid, paid by the reference client in pull mode: delivered, the recipient paid. */
async function paysOnce(s: Shop): Promise<void> {
  const before = await balanceOf(rpcUrl(), s.recipient)
  const authorization = await mppxPays(s, payer, 'pull', '/paid')
  await expectDelivered(await s.fetch('/paid', withCredential(authorization)))
  expect((await balanceOf(rpcUrl(), s.recipient)) - before).toBe(10_000n)
}

describe('a flood of free proofs cannot take paid routes down, nor the reverse', () => {
  test("C9 T6: free proofs fill only their share of the store's entries; the paid route still settles (no 503)", async () => {
    const store = memoryStore({ maxEntries: 10, maxFreeEntries: 5 })
    const s = shop({ cheap: '0', store })
    const statuses = await flood(s, 20)
    expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200])
    expect(statuses.slice(5)).toEqual(Array(15).fill(503))
    expect(store.usage.free.entries).toBe(5)
    await paysOnce(s)
    await paysOnce(s)
    expect(store.usage.paid.entries).toBe(6)
  })

  test('C9 C10 T6: free proofs whose answers are kept (Idempotency-Key) spend only the free byte budget; paid claims still go through', async () => {
    const store = memoryStore({ maxFreeBytes: 4_000, maxFreeEntries: 1_000 })
    const s = shop({ cheap: '0', store })
    const statuses = await flood(s, 30, (i) => ({ 'idempotency-key': `free-${i}` }))
    const delivered = statuses.filter((status) => status === 200).length
    expect(delivered).toBeGreaterThan(0)
    expect(statuses).toEqual([...Array(delivered).fill(200), ...Array(30 - delivered).fill(503)])
    // The kept answers counted: far fewer than the 1000 entries fit in 4000 bytes.
    expect(delivered).toBeLessThan(10)
    expect(store.usage.free.bytes).toBeLessThanOrEqual(4_000)
    await paysOnce(s)
  })

  test('C9 T6: paid claims over their budget refuse new payments before charging (503), while free proofs still answer', async () => {
    // One pull payment claims three keys: its challenge, its transaction, its signature payload.
    const store = memoryStore({ maxEntries: 3, maxFreeEntries: 5 })
    const s = shop({ cheap: '0', store })
    await paysOnce(s)
    const authorization = await mppxPays(s, payer, 'pull', '/paid')
    const payerBefore = await balanceOf(rpcUrl(), payer.address)
    const recipientBefore = await balanceOf(rpcUrl(), s.recipient)
    const runs = s.runs()
    await expectStoreRefusal(await s.fetch('/paid', withCredential(authorization)))
    expect(s.runs()).toBe(runs)
    expect(await balanceOf(rpcUrl(), payer.address)).toBe(payerBefore)
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(recipientBefore)
    expect(await flood(s, 3)).toEqual([200, 200, 200])
  })
})

describe('a Redis that may evict claims is refused', () => {
  let redis: RedisServer
  let client: ReturnType<typeof createClient>

  beforeAll(async () => {
    redis = await startRedisServer()
    client = createClient({ url: redis.url })
    client.on('error', () => {})
    await client.connect()
  })

  afterAll(async () => {
    client?.destroy()
    await redis?.stop()
  })

  test('C9: maxmemory-policy allkeys-lru is refused at start-up with the reason, and payments on it stop before charging', async () => {
    await client.sendCommand(['CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru'])
    const store = redisStore({ command: nodeRedisCommand(client) })
    await expect(store.check()).rejects.toThrow(
      /Redis runs with maxmemory-policy allkeys-lru, which may evict live claims and let a used credential pay again\. Set it to noeviction/,
    )

    // Not checked at start-up: the first payment is refused before anything is claimed or sent.
    const s = shop({ store: redisStore({ command: nodeRedisCommand(client) }) as ClaimStore })
    const authorization = await mppxPays(s, payer, 'pull', '/paid')
    const payerBefore = await balanceOf(rpcUrl(), payer.address)
    await expectStoreRefusal(await s.fetch('/paid', withCredential(authorization)))
    expect(s.runs()).toBe(0)
    expect(await balanceOf(rpcUrl(), payer.address)).toBe(payerBefore)
    expect(await client.sendCommand(['DBSIZE'])).toBe(0)

    // Fixed without a restart: the same credential then pays once.
    await client.sendCommand(['CONFIG', 'SET', 'maxmemory-policy', 'noeviction'])
    await expect(store.check()).resolves.toBeUndefined()
    await expectDelivered(await s.fetch('/paid', withCredential(authorization)))
    expect(s.runs()).toBe(1)
  })
})
