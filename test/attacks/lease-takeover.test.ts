/**
 * Lease takeover: on a `settle: 'after'` route whose handler outlives its lease, a retry of the
 * same credential takes the claim over, settles and delivers. Whatever the first attempt does
 * afterwards — its handler fails, or succeeds late — it must change nothing: one payment, one
 * transfer, one delivery, and the landed transaction stays used (wrapped in a fresh challenge,
 * or its hash pushed). Run on every claim store: memory, Redis (a real redis-server) and the
 * Durable Object (in workerd via Miniflare).
 */

import { Hono } from 'hono'
import { createClient } from 'redis'
import { type Hex, keccak256 } from 'viem'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { balanceOf, fundedAccount, pathUsd } from '../../scripts/local-chain.js'
import { type ClaimStore, mpp, type PaymentEvent } from '../../src/index.js'
import { memoryStore } from '../../src/stores/memory.js'
import { nodeRedisCommand, redisStore } from '../../src/stores/redis.js'
import { tempo } from '../../src/tempo/index.js'
import { challengesOf, credentialFor } from '../helpers/http.js'
import { type ClaimWorker, startClaimWorker } from '../stores/durable-object-worker.js'
import { type RedisServer, startRedisServer } from '../stores/redis-server.js'
import { craft, rawRpc, scriptedTransport, transferCall } from '../tempo/helpers.js'
import { broadcast, expectDelivered, expectRefusal, fresh, origin, rpcUrl, type Shop, secret, withCredential } from './support.js'

let payer: Awaited<ReturnType<typeof fundedAccount>>
let redis: RedisServer
let redisClient: ReturnType<typeof createClient>
let worker: ClaimWorker

beforeAll(async () => {
  ;[payer, redis, worker] = await Promise.all([fundedAccount(rpcUrl(), { funder: 7, amount: '5' }), startRedisServer(), startClaimWorker()])
  redisClient = createClient({ url: redis.url })
  redisClient.on('error', () => {})
  await redisClient.connect()
})

afterAll(async () => {
  redisClient?.destroy()
  await Promise.all([redis?.stop(), worker?.dispose()])
})

const leaseMs = 1_000
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function deferred<T = void>(): { promise: Promise<T>; resolve(value: T): void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return { promise, resolve }
}

type Lab = Shop & {
  /** Resolves once the first attempt's handler is running. */
  firstStarted: Promise<void>
  /** Lets the first attempt's handler answer: 500 (`fail`) or 200 (`succeed`). */
  finishFirst(outcome: 'fail' | 'succeed'): void
  /** Holds the next chain call that settles (receipt lookup or broadcast) until `release()`. */
  holdNextSettlementCall(): { reached: Promise<void>; release(): void }
  /** `eth_sendRawTransactionSync` calls made by the server. */
  broadcasts(): number
}

/**
 * A shop with GET /slow (`settle: 'after'`, leaseMs 1 s): its first handler run waits for the
 * test to say how it ends; later runs deliver at once. GET /paid settles before and takes push.
 */
function lab(store: ClaimStore): Lab {
  const recipient = fresh()
  let hold: { reached: () => void; gate: Promise<void> } | undefined
  let broadcasts = 0
  const { transport } = scriptedTransport(rpcUrl(), async (method, _params, forward) => {
    if (method === 'eth_sendRawTransactionSync') broadcasts++
    if (hold && (method === 'eth_getTransactionReceipt' || method === 'eth_sendRawTransactionSync')) {
      const { reached, gate } = hold
      hold = undefined
      reached()
      await gate
    }
    return forward()
  })
  const events: PaymentEvent[] = []
  const pay = mpp({
    secret,
    methods: [tempo({ transport, chainId: 31337, recipient })],
    store,
    leaseMs,
    onEvent: (event) => events.push(event),
  })
  let runs = 0
  const started = deferred()
  const outcome = deferred<'fail' | 'succeed'>()
  const app = new Hono()
  app.get('/slow', pay.charge({ amount: '0.01', settle: 'after' }), async (c) => {
    const turn = ++runs
    if (turn === 1) {
      started.resolve()
      if ((await outcome.promise) === 'fail') return c.json({ error: 'the work failed' }, 500)
    }
    return c.json({ delivered: 'slow', turn })
  })
  app.get('/paid', pay.charge({ amount: '0.01' }), (c) => {
    runs++
    return c.json({ delivered: 'paid' })
  })
  const fetch = (path: string, init: RequestInit = {}) => Promise.resolve(app.request(origin + path, init))
  return {
    app,
    recipient,
    runs: () => runs,
    events,
    secrets: [secret],
    fetch,
    async challenge(path = '/slow', init = {}) {
      const response = await fetch(path, init)
      expect(response.status).toBe(402)
      return { challenge: challengesOf(response)[0]!, response }
    },
    firstStarted: started.promise,
    finishFirst: (value) => outcome.resolve(value),
    holdNextSettlementCall() {
      const reached = deferred()
      const gate = deferred()
      hold = { reached: () => reached.resolve(), gate: gate.promise }
      return { reached: reached.promise, release: () => gate.resolve() }
    },
    broadcasts: () => broadcasts,
  }
}

/** A memo-less pull payment of 0.01 to the lab (bound to its first use by the claims alone). */
async function signedFor(s: Lab): Promise<{ raw: Hex; authorization: string }> {
  const { challenge } = await s.challenge('/slow')
  const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
  return { raw, authorization: credentialFor(challenge, { type: 'transaction', signature: raw }) }
}

/** The landed transaction stays used: wrapped in a fresh challenge, and its hash pushed. */
async function expectStillUsed(s: Lab, raw: Hex, authorization: string, hash: string): Promise<void> {
  const watch = [{ address: payer.address }]
  await expectRefusal(
    s,
    () => s.fetch('/slow', withCredential(authorization)),
    { status: 402, kind: 'invalid-challenge', detail: /this challenge has already been used/ },
    { watch, credentials: [authorization] },
  )
  const { challenge } = await s.challenge('/slow')
  const wrapped = credentialFor(challenge, { type: 'transaction', signature: raw })
  await expectRefusal(
    s,
    () => s.fetch('/slow', withCredential(wrapped)),
    { status: 402, kind: 'verification-failed', detail: /this payment has already been used for another request/ },
    { watch, credentials: [wrapped] },
  )
  const { challenge: forPush } = await s.challenge('/paid')
  const pushed = credentialFor(forPush, { type: 'hash', hash })
  await expectRefusal(
    s,
    () => s.fetch('/paid', withCredential(pushed)),
    { status: 402, kind: 'verification-failed', detail: /challenge's MPP attribution memo|already been used/ },
    { watch, credentials: [pushed] },
  )
}

const stores: [string, () => ClaimStore][] = [
  ['memory', () => memoryStore()],
  ['redis', () => redisStore({ command: nodeRedisCommand(redisClient), prefix: `takeover-${crypto.randomUUID()}:` })],
  ['durable-object', () => worker.remote('SQLITE')],
]

describe.each(stores)('lease takeover on a settle-after route (%s store)', (_name, makeStore) => {
  test("C9 I3: A's handler outlives its lease and then fails while B (same credential) settles → A releases nothing; B delivers once; the landed transaction stays used", async () => {
    const s = lab(makeStore())
    const { raw, authorization } = await signedFor(s)
    const first = s.fetch('/slow', withCredential(authorization))
    await s.firstStarted
    await sleep(leaseMs + 100) // A's lease runs out while its handler works
    const held = s.holdNextSettlementCall()
    const second = s.fetch('/slow', withCredential(authorization))
    await held.reached // B took the claim over and is settling
    s.finishFirst('fail')
    const a = await first
    expect(a.status).toBe(500)
    expect(a.headers.get('payment-receipt')).toBeNull()
    held.release()
    const b = await second
    const receipt = b.headers.get('payment-receipt')
    await expectDelivered(b)
    expect(s.runs()).toBe(2)
    expect(s.broadcasts()).toBe(1)
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
    const hash = JSON.parse(Buffer.from(receipt!, 'base64url').toString('utf8')).reference as string
    await expectStillUsed(s, raw, authorization, hash)
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
  })

  test("C9 I3: A's handler succeeds late, after B delivered → A's answer is withheld, nothing is broadcast again", async () => {
    const s = lab(makeStore())
    const { raw, authorization } = await signedFor(s)
    const first = s.fetch('/slow', withCredential(authorization))
    await s.firstStarted
    await sleep(leaseMs + 100)
    const b = await s.fetch('/slow', withCredential(authorization))
    const receipt = b.headers.get('payment-receipt')
    await expectDelivered(b)
    s.finishFirst('succeed')
    const a = await first
    expect(a.status).toBe(402)
    expect(a.headers.get('payment-receipt')).toBeNull()
    expect(((await a.json()) as { detail: string }).detail).toMatch(/taken over by another attempt; no second delivery/)
    expect(s.broadcasts()).toBe(1)
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
    const hash = JSON.parse(Buffer.from(receipt!, 'base64url').toString('utf8')).reference as string
    await expectStillUsed(s, raw, authorization, hash)
  })

  test("C9 I3: A's handler succeeds late while B is settling → A neither broadcasts nor delivers; B delivers once", async () => {
    const s = lab(makeStore())
    const { authorization } = await signedFor(s)
    const first = s.fetch('/slow', withCredential(authorization))
    await s.firstStarted
    await sleep(leaseMs + 100)
    const held = s.holdNextSettlementCall()
    const second = s.fetch('/slow', withCredential(authorization))
    await held.reached
    s.finishFirst('succeed')
    const a = await first
    expect(a.status).toBe(402)
    expect(a.headers.get('payment-receipt')).toBeNull()
    held.release()
    await expectDelivered(await second)
    expect(s.broadcasts()).toBe(1)
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
  })
})

describe('a transaction already on chain, presented for a fresh challenge', () => {
  test('C9 T4: a node answering "already known" for a landed transaction → refused as used (only a retry recovering the same claim may take it as its own)', async () => {
    // A node that refuses a re-submitted transaction once it is on chain (the local node hands
    // back the old receipt instead): the answer a broadcast of a used transaction gets there.
    const recipient = fresh()
    const { transport } = scriptedTransport(rpcUrl(), async (method, params, forward) => {
      if (method === 'eth_sendRawTransactionSync') {
        const hash = keccak256(params[0] as Hex)
        if (await rawRpc(rpcUrl(), 'eth_getTransactionReceipt', [hash])) throw Object.assign(new Error('already known'), { code: -32000 })
      }
      return forward()
    })
    let runs = 0
    const events: PaymentEvent[] = []
    const pay = mpp({ secret, methods: [tempo({ transport, chainId: 31337, recipient })], store: memoryStore(), onEvent: (e) => events.push(e) })
    const app = new Hono().get('/paid', pay.charge({ amount: '0.01' }), (c) => {
      runs++
      return c.json({ delivered: true })
    })
    const s: Shop = {
      app,
      recipient,
      runs: () => runs,
      events,
      secrets: [secret],
      fetch: (path, init = {}) => Promise.resolve(app.request(origin + path, init)),
      async challenge(path = '/paid') {
        const response = await app.request(origin + path)
        return { challenge: challengesOf(response)[0]!, response }
      },
    }
    // The payment landed (sent around this server, or by an attempt whose claims were lost).
    const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, recipient, 10_000n)] })
    expect((await broadcast(raw)).status).toBe('success')
    const { challenge } = await s.challenge()
    const wrapped = credentialFor(challenge, { type: 'transaction', signature: raw })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(wrapped)),
      { status: 402, kind: 'verification-failed', detail: /already been used for another request: its transaction is already on chain/ },
      { watch: [{ address: payer.address }], credentials: [wrapped] },
    )
    expect(await balanceOf(rpcUrl(), recipient)).toBe(10_000n)
  })
})

describe('a payment key the store lost', () => {
  test('C9: when marking a payment key settled finds it gone (evicted, lost), the settlement fails: nothing is delivered', async () => {
    // A store that drops transaction-hash claims as soon as they are made, as an evicting Redis
    // might: whoever presents the transaction next would find it free.
    const backing = memoryStore()
    const losing: ClaimStore = {
      claim: async (key, record) => (key.startsWith('tempo:tx:') ? true : backing.claim(key, record)),
      transition: backing.transition,
      get: backing.get,
    }
    const s = lab(losing)
    const { challenge } = await s.challenge('/paid')
    const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
    const response = await s.fetch('/paid', withCredential(credentialFor(challenge, { type: 'transaction', signature: raw })))
    expect(response.status).toBe(402)
    expect(response.headers.get('payment-receipt')).toBeNull()
    expect(((await response.json()) as { detail: string }).detail).toMatch(/already been used for another request; no delivery is made/)
    expect(s.runs()).toBe(0)
    expect(s.events.some((e) => e.type === 'settled')).toBe(false)
    expect(s.events.some((e) => e.type === 'settlement-failed')).toBe(true)
  })
})
