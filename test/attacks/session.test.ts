/**
 * Attacks on the session intent, through the real server on the local chain: a channel is opened
 * by the reference client (mppx's legacy session manager, against our escrow), then vouchers are
 * crafted by hand — replayed, decreasing, forged, for another channel, chain or escrow, above the
 * deposit, below the minimum increment, for a closed or closing channel, raced on two instances
 * sharing one store, reused on another route — and a metered stream is read past its vouchers.
 * Each must be refused with a problem JSON naming the reason, with nothing served or spent beyond
 * what the vouchers cover.
 */
import { Hono } from 'hono'
import { tempo as mppxTempo } from 'mppx/client'
import { createClient as createRedisClient } from 'redis'
import { type Address, encodeFunctionData, type Hex, toHex } from 'viem'
import { prepareTransactionRequest, readContract, signTransaction } from 'viem/actions'
import { Abis } from 'viem/tempo'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, balanceOf, fundedAccount, localChainId } from '../../scripts/local-chain.js'
import { type Challenge, type ClaimStore, mpp, parseReceipt } from '../../src/index.js'
import { memoryStore } from '../../src/stores/memory.js'
import { nodeRedisCommand, redisStore } from '../../src/stores/redis.js'
import { meteredStream, sessionIntent, type TempoSession, tempo, tempoSession } from '../../src/tempo/index.js'
import { challengesOf, credentialFor } from '../helpers/http.js'
import {
  chunks,
  clientFor,
  deployEscrow,
  escrowAbi,
  escrowCall,
  getChannel,
  keyOnly,
  openCalls,
  send,
  signVoucher,
  sponsoredOpen,
  sponsorLimits,
  token,
} from '../session/support.js'
import { type RedisServer, startRedisServer } from '../stores/redis-server.js'

const base = 'http://api.session-attacks.test'
const secret = 'session-attack-secret-session-attack-secret-01'
const problems = 'https://paymentauth.org/problems/'
let rpcUrl: string
let escrow: Address
let payee: Awaited<ReturnType<typeof fundedAccount>>

type Server = {
  app: Hono
  session: TempoSession
  served: { a: number; b: number }
  /** `/fail-after` waits for this before failing; `/ok-after` calls `succeeded` when it runs. */
  hooks: { beforeFailure: () => Promise<void>; succeeded: () => void }
}

/** One instance of the server: `/a` and `/b` (0.001 each, also offered as charge on `/a`), `/min` (minimum increment 0.005), `/stream` (0.0001 per chunk). */
function server(store: ClaimStore): Server {
  const common = { rpcUrl, chainId: localChainId, escrow, account: payee, currency: token, feeToken: alphaUsd, suggestedDeposit: '0.02', store }
  const session = tempoSession({ ...common, voucherTimeoutMs: 300, pollMs: 20 })
  const strict = tempoSession({ ...common, minVoucherDelta: '0.005' })
  const pay = mpp({ secret, methods: [tempo({ rpcUrl, chainId: localChainId, recipient: payee.address }), session], intents: [sessionIntent] })
  const served = { a: 0, b: 0 }
  const app = new Hono()
  app.on(['GET', 'POST', 'HEAD'], '/a', pay.charge({ amount: '0.001' }), (c) => c.json({ route: 'a', n: ++served.a }))
  app.on(['GET', 'POST'], '/b', pay.charge({ amount: '0.001', methods: [session] }), (c) => c.json({ route: 'b', n: ++served.b }))
  app.post('/chat', pay.charge({ amount: '0.001', methods: [session] }), async (c) => c.json({ echo: await c.req.json() }))
  app.on(['GET', 'POST'], '/fail', pay.charge({ amount: '0.001', methods: [session] }), (c) => c.text('broken', 500))
  const hooks: Server['hooks'] = { beforeFailure: async () => {}, succeeded: () => {} }
  const after = pay.charge({ amount: '0.001', methods: [session], settle: 'after' })
  app.get('/fail-after', after, async (c) => {
    await hooks.beforeFailure()
    return c.text('broken', 500)
  })
  app.get('/throw-after', after, () => {
    throw new Error('the handler threw')
  })
  app.get('/ok-after', after, (c) => {
    hooks.succeeded()
    return c.json({ route: 'ok-after' })
  })
  app.on(['GET', 'POST'], '/min', pay.charge({ amount: '0.001', methods: [strict] }), (c) => c.json({ route: 'min' }))
  app.on(['GET', 'POST'], '/stream', pay.charge({ amount: '0.0001', methods: [session] }), (c) => meteredStream(c, chunks(5)))
  return { app, session, served, hooks }
}

let main: Server

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  escrow = await deployEscrow(rpcUrl, { funder: 7 })
  payee = await fundedAccount(rpcUrl, { funder: 7, amount: '1', tokens: [alphaUsd] })
  main = server(memoryStore())
})

const fetchOf = (s: Server) => (input: RequestInfo | URL, init?: RequestInit) => s.app.fetch(new Request(input, init))

/** A payer with a channel opened through `s` by the reference client, after one paid request (spent = highest = 1000). */
async function opened(s: Server = main) {
  const payer = await fundedAccount(rpcUrl, { funder: 7, amount: '1' })
  const manager = mppxTempo.sessionLegacy({
    account: payer,
    client: clientFor(rpcUrl) as never,
    escrowContract: escrow,
    maxDeposit: '0.02',
    fetch: fetchOf(s) as typeof fetch,
  })
  const first = await manager.fetch(`${base}/a`)
  expect(first.status).toBe(200)
  return { payer, manager, channelId: manager.channelId as Hex }
}

async function sessionChallenge(s: Server, path: string, method = 'GET'): Promise<Challenge> {
  const response = await s.app.request(`${base}${path}`, { method })
  return challengesOf(response).find((challenge) => challenge.intent === 'session')!
}

type Voucher = { channelId: Hex; cumulativeAmount: bigint; signature: Hex; action?: string }
const payloadOf = (v: Voucher) => ({
  action: v.action ?? 'voucher',
  channelId: v.channelId,
  cumulativeAmount: v.cumulativeAmount.toString(),
  signature: v.signature,
})

async function pay(s: Server, path: string, voucher: Voucher, method = 'GET'): Promise<Response> {
  const challenge = await sessionChallenge(s, path, 'GET')
  return s.app.request(`${base}${path}`, { method, headers: { authorization: credentialFor(challenge, payloadOf(voucher)) } })
}

async function expectRefused(response: Response, type: string, detail: RegExp) {
  expect(response.status).toBe(402)
  expect(response.headers.get('payment-receipt')).toBeNull()
  expect(response.headers.get('www-authenticate')).toMatch(/intent="session"/)
  const problem = (await response.json()) as { type: string; detail: string }
  expect(problem.type).toBe(problems + type)
  expect(problem.detail).toMatch(detail)
  return problem
}

describe('session attacks (S11 S12 S13): vouchers the server must refuse', () => {
  test('S11 S13: a replayed voucher is an idempotent no-op — never served twice, never spent twice', async () => {
    const { payer, channelId } = await opened()
    const voucher = { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) }
    const challenge = await sessionChallenge(main, '/a')
    const credential = credentialFor(challenge, payloadOf(voucher))
    const before = main.served.a
    expect((await main.app.request(`${base}/a`, { headers: { authorization: credential } })).status).toBe(200)
    const again = await main.app.request(`${base}/a`, { headers: { authorization: credential } })
    const problem = await expectRefused(again, 'session/insufficient-balance', /costs 1000.*cover 2000 and 2000 is spent.*at least 3000/)
    expect(problem).toMatchObject({ channelId, requiredTopUp: '1000', requiredCumulative: '3000' })
    // As a voucher-only update (HEAD, or a bodiless POST) the same voucher is accepted again and changes nothing.
    const update = await main.app.request(`${base}/a`, {
      method: 'POST',
      headers: { authorization: credentialFor(await sessionChallenge(main, '/a'), payloadOf(voucher)) },
    })
    expect(update.status).toBe(204)
    const head = await main.app.request(`${base}/a`, {
      method: 'HEAD',
      headers: { authorization: credentialFor(await sessionChallenge(main, '/a'), payloadOf(voucher)) },
    })
    expect(head.status).toBe(204)
    expect(head.headers.get('payment-receipt')).toBeTruthy()
    expect(main.served.a).toBe(before + 1)
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 2000n, spent: 2000n, units: 2 })
  })

  test('S11 S13: a retry with the same credential and Idempotency-Key gets the kept answer; spent does not grow', async () => {
    const { payer, channelId } = await opened()
    const voucher = { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) }
    const challenge = await sessionChallenge(main, '/a')
    const headers = { authorization: credentialFor(challenge, payloadOf(voucher)), 'idempotency-key': 'retry-1' }
    const first = await main.app.request(`${base}/a`, { headers })
    expect(first.status).toBe(200)
    const body = await first.text()
    const before = main.served.a
    const again = await main.app.request(`${base}/a`, { headers })
    expect(again.status).toBe(200)
    expect(await again.text()).toBe(body)
    expect(again.headers.get('payment-receipt')).toBe(first.headers.get('payment-receipt'))
    expect(main.served.a).toBe(before)
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 2000n, spent: 2000n, units: 2 })
    // The key with another credential for the same challenge is refused.
    const other = credentialFor(challenge, payloadOf({ channelId, cumulativeAmount: 3000n, signature: await signVoucher(payer, escrow, channelId, 3000n) }))
    const reused = await main.app.request(`${base}/a`, { headers: { authorization: other, 'idempotency-key': 'retry-1' } })
    expect(reused.status).toBe(400)
    expect(((await reused.json()) as { detail: string }).detail).toMatch(/Idempotency-Key was already used with another credential/)
  })

  test('S11: a decreasing voucher is refused', async () => {
    const { payer, channelId } = await opened()
    await pay(main, '/a', { channelId, cumulativeAmount: 3000n, signature: await signVoucher(payer, escrow, channelId, 3000n) })
    const lower = await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) })
    await expectRefused(lower, 'verification-failed', /2000 is below the highest accepted 3000; cumulative amounts never decrease/)
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 3000n, spent: 2000n })
  })

  test('S11: forged vouchers — a stranger’s key, a high-s twin of a valid signature, garbage — are refused', async () => {
    const { payer, channelId } = await opened()
    const stranger = await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(keyOnly(), escrow, channelId, 2000n) })
    await expectRefused(stranger, 'session/signer-mismatch', /not signed by the channel's signer/)
    const valid = await signVoucher(payer, escrow, channelId, 2000n)
    const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n
    const s = BigInt(`0x${valid.slice(66, 130)}`)
    const v = Number.parseInt(valid.slice(130), 16)
    const highS = `${valid.slice(0, 66)}${(n - s).toString(16).padStart(64, '0')}${(v === 27 ? 28 : 27).toString(16)}` as Hex
    await expectRefused(await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: highS }), 'session/invalid-signature', /low s/)
    const garbage = `0x${'11'.repeat(65)}` as Hex
    const refused = await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: garbage })
    expect(refused.status).toBe(402)
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 1000n, spent: 1000n })
  })

  test('S11: vouchers for another channel, another chain, another escrow are refused; an unknown channel is not found', async () => {
    const { payer, channelId } = await opened()
    const other = toHex(crypto.getRandomValues(new Uint8Array(32)))
    // Signed for another channel, presented for this one.
    const crossed = await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, other, 2000n) })
    await expectRefused(crossed, 'session/signer-mismatch', /not signed by the channel's signer/)
    const wrongChain = await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n, 4217) })
    await expectRefused(wrongChain, 'session/signer-mismatch', /chain 31337/)
    const wrongEscrow = await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, payee.address, channelId, 2000n) })
    await expectRefused(wrongEscrow, 'session/signer-mismatch', new RegExp(`escrow ${escrow}`))
    const unknown = await pay(main, '/a', { channelId: other, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, other, 2000n) })
    await expectRefused(unknown, 'session/channel-not-found', /not open with this server/)
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 1000n, spent: 1000n })
  })

  test('S11: a voucher above the deposit, and one below the minimum increment, are refused', async () => {
    const { payer, channelId } = await opened()
    const over = 20_001n
    const refused = await pay(main, '/a', { channelId, cumulativeAmount: over, signature: await signVoucher(payer, escrow, channelId, over) })
    await expectRefused(refused, 'session/amount-exceeds-deposit', /exceeds the channel's deposit 20000; top up the deposit by at least 1 first/)
    const small = await pay(main, '/min', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) })
    await expectRefused(small, 'session/delta-too-small', /rises by 1000, below the minimum increment 5000/)
    const enough = await pay(main, '/min', { channelId, cumulativeAmount: 6000n, signature: await signVoucher(payer, escrow, channelId, 6000n) })
    expect(enough.status).toBe(200)
  })

  test('S13: a voucher that does not cover the price gets 402 with the top-up required', async () => {
    const { payer, channelId } = await opened()
    const short = await pay(main, '/a', { channelId, cumulativeAmount: 1500n, signature: await signVoucher(payer, escrow, channelId, 1500n) })
    const problem = await expectRefused(short, 'session/insufficient-balance', /sign a voucher for a cumulativeAmount of at least 2000/)
    expect(problem).toMatchObject({ requiredTopUp: '500', requiredCumulative: '2000' })
    // The valid voucher is kept (it authorises more), nothing is served or spent.
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 1500n, spent: 1000n })
    const topped = await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) })
    expect(topped.status).toBe(200)
  })

  test('S12: the unit is recorded before the work runs; a failing handler gets no receipt and the unit stays spent', async () => {
    const { payer, channelId } = await opened()
    const failed = await pay(main, '/fail', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) })
    expect(failed.status).toBe(500)
    expect(failed.headers.get('payment-receipt')).toBeNull()
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 2000n, spent: 2000n, units: 2 })
  })

  test("S12: under settle 'after', a failing handler (an error status, or a throw) gets no receipt and its unit is given back; the next request is covered by the same voucher", async () => {
    const { payer, channelId } = await opened()
    const voucher = { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) }
    const failed = await pay(main, '/fail-after', voucher)
    expect(failed.status).toBe(500)
    expect(failed.headers.get('payment-receipt')).toBeNull()
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 2000n, spent: 1000n, units: 1, available: 1000n })
    const threw = await pay(main, '/throw-after', voucher)
    expect(threw.status).toBe(500)
    expect(threw.headers.get('payment-receipt')).toBeNull()
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 2000n, spent: 1000n, units: 1 })
    // No new increment: the voucher already held covers the next request.
    const next = await pay(main, '/ok-after', voucher)
    expect(next.status).toBe(200)
    expect(parseReceipt(next.headers.get('payment-receipt')!)).toMatchObject({ acceptedCumulative: '2000', spent: '2000', units: 2, charged: '1000' })
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 2000n, spent: 2000n, units: 2, available: 0n })
    // And it is spent now: the same voucher pays nothing more.
    await expectRefused(await pay(main, '/ok-after', voucher), 'session/insufficient-balance', /2000 is spent/)
  })

  test("S12: under settle 'before' (the default) a failing handler's unit stays spent: the same voucher does not pay again", async () => {
    const { payer, channelId } = await opened()
    const voucher = { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) }
    expect((await pay(main, '/fail', voucher)).status).toBe(500)
    await expectRefused(await pay(main, '/a', voucher), 'session/insufficient-balance', /2000 is spent/)
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 2000n, spent: 2000n, units: 2 })
  })

  test('S11 S15: on a route whose requests carry a body, a bodiless POST is a voucher-only update; another body is still refused', async () => {
    const { payer, channelId } = await opened()
    const challenge = challengesOf(
      await main.app.request(`${base}/chat`, { method: 'POST', body: '{"q":1}', headers: { 'content-type': 'application/json' } }),
    ).find((ch) => ch.intent === 'session')!
    const voucher = async (amount: bigint) =>
      credentialFor(challenge, payloadOf({ channelId, cumulativeAmount: amount, signature: await signVoucher(payer, escrow, channelId, amount) }))
    const paid = await main.app.request(`${base}/chat`, {
      method: 'POST',
      body: '{"q":1}',
      headers: { 'content-type': 'application/json', authorization: await voucher(2000n) },
    })
    expect(await paid.json()).toEqual({ echo: { q: 1 } })
    // The same challenge, no body: a voucher-only update (as a client sends mid-stream), 204.
    const update = await main.app.request(`${base}/chat`, { method: 'POST', headers: { authorization: await voucher(3000n) } })
    expect(update.status).toBe(204)
    // The same challenge with another body: the digest binding still refuses it.
    const other = await main.app.request(`${base}/chat`, {
      method: 'POST',
      body: '{"q":2}',
      headers: { 'content-type': 'application/json', authorization: await voucher(4000n) },
    })
    await expectRefused(other, 'verification-failed', /content digest mismatch/)
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 3000n, spent: 2000n })
  })

  test('S11: a voucher used on one route cannot pay another: its challenge is bound to the first, and its amount is spent', async () => {
    const { payer, channelId } = await opened()
    const voucher = { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) }
    const challenge = await sessionChallenge(main, '/a')
    const credential = credentialFor(challenge, payloadOf(voucher))
    expect((await main.app.request(`${base}/a`, { headers: { authorization: credential } })).status).toBe(200)
    const before = main.served.b
    const moved = await main.app.request(`${base}/b`, { headers: { authorization: credential } })
    expect(moved.status).toBe(402)
    expect(((await moved.json()) as { detail: string }).detail).toMatch(/issued for GET \/a, not for GET \/b/)
    await expectRefused(await pay(main, '/b', voucher), 'session/insufficient-balance', /2000 is spent/)
    expect(main.served.b).toBe(before)
  })
})

describe('session attacks (S10): opens the server must refuse', () => {
  /** A signed approve + open transaction from `payer`, as the reference client builds it. */
  async function openTransaction(payer: Awaited<ReturnType<typeof fundedAccount>>, to: Address, deposit: bigint) {
    const salt = toHex(crypto.getRandomValues(new Uint8Array(32)))
    const wallet = clientFor(rpcUrl)
    const channelId = (await readContract(wallet, {
      address: escrow,
      abi: escrowAbi,
      functionName: 'computeChannelId',
      args: [payer.address, to, token, salt, payer.address],
    })) as Hex
    const prepared = await prepareTransactionRequest(wallet, {
      account: payer,
      calls: openCalls(escrow, to, deposit, salt, payer.address),
      feeToken: alphaUsd,
      nonceKey: 'expiring',
      validBefore: Math.floor(Date.now() / 1000) + 25,
    } as never)
    return { channelId, transaction: await signTransaction(wallet, prepared as never) }
  }

  test('S10: an open for another payee is refused before it is broadcast; nothing is opened', async () => {
    const payer = await fundedAccount(rpcUrl, { funder: 7, amount: '1' })
    const other = keyOnly().address
    const { channelId, transaction } = await openTransaction(payer, other, 20_000n)
    const challenge = await sessionChallenge(main, '/a')
    const payload = {
      action: 'open',
      type: 'transaction',
      channelId,
      transaction,
      cumulativeAmount: '1000',
      signature: await signVoucher(payer, escrow, channelId, 1000n),
    }
    const refused = await main.app.request(`${base}/a`, { headers: { authorization: credentialFor(challenge, payload) } })
    await expectRefused(refused, 'verification-failed', new RegExp(`the channel's payee is ${other}; this server is paid at ${payee.address}`))
    expect((await getChannel(rpcUrl, escrow, channelId)).deposit).toBe(0n)
    expect(await main.session.channel(channelId)).toBeUndefined()
  })

  test('S10 S11: an open whose first voucher is not the payer’s is refused; the channel serves nothing until a voucher of its signer', async () => {
    const payer = await fundedAccount(rpcUrl, { funder: 7, amount: '1' })
    const { channelId, transaction } = await openTransaction(payer, payee.address, 20_000n)
    const payload = {
      action: 'open',
      type: 'transaction',
      channelId,
      transaction,
      cumulativeAmount: '1000',
      signature: await signVoucher(keyOnly(), escrow, channelId, 1000n),
    }
    const before = main.served.a
    const refused = await main.app.request(`${base}/a`, { headers: { authorization: credentialFor(await sessionChallenge(main, '/a'), payload) } })
    await expectRefused(refused, 'session/signer-mismatch', new RegExp(`not signed by the channel's signer ${payer.address}`))
    expect(main.served.a).toBe(before)
    const paid = await pay(main, '/a', { channelId, cumulativeAmount: 1000n, signature: await signVoucher(payer, escrow, channelId, 1000n) })
    expect(paid.status).toBe(200)
  })
})

describe('session attacks (S12): two instances racing on one channel through one store', () => {
  let redis: RedisServer | undefined
  const clients: { destroy(): void }[] = []
  afterAll(async () => {
    for (const client of clients) client.destroy()
    await redis?.stop()
  })
  /** A store on the shared Redis through a connection of its own (one per instance). */
  async function redisOf(): Promise<ClaimStore> {
    redis ??= await startRedisServer()
    const client = createRedisClient({ url: redis.url })
    client.on('error', () => {})
    clients.push(client)
    await client.connect()
    return redisStore({ command: nodeRedisCommand(client), timeout: 15_000 })
  }

  test.each(['memory', 'redis'] as const)(
    'S12: one voucher covering one request, sent to two instances on one %s store at once, pays exactly one request',
    async (kind) => {
      const shared = kind === 'memory' ? memoryStore() : undefined
      const one = server(shared ?? (await redisOf()))
      const two = server(shared ?? (await redisOf()))
      const { payer, channelId } = await opened(one)
      const voucher = { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) }
      const credentials = await Promise.all(
        Array.from({ length: 10 }, async (_, i) => {
          const s = i % 2 ? two : one
          return { s, authorization: credentialFor(await sessionChallenge(s, '/a'), payloadOf(voucher)) }
        }),
      )
      const answers = await Promise.all(credentials.map(({ s, authorization }) => s.app.request(`${base}/a`, { headers: { authorization } })))
      expect(answers.filter((r) => r.status === 200)).toHaveLength(1)
      expect(answers.filter((r) => r.status === 402)).toHaveLength(9)
      expect(one.served.a + two.served.a).toBe(2) // the opening request and one more
      expect(await two.session.channel(channelId)).toMatchObject({ highest: 2000n, spent: 2000n, units: 2 })
    },
  )
})

describe("session attacks (S12): settle 'after' — a failing and a succeeding request racing on one channel", () => {
  test('S12: both in flight at once on two instances of one store (the failure waits for the success): exactly one unit is spent', async () => {
    const shared = memoryStore()
    const one = server(shared)
    const two = server(shared)
    const { payer, channelId } = await opened(one)
    // The voucher covers two more units; both requests reserve one before either handler ends.
    const voucher = { channelId, cumulativeAmount: 3000n, signature: await signVoucher(payer, escrow, channelId, 3000n) }
    let release!: () => void
    const succeeded = new Promise<void>((resolve) => {
      release = resolve
    })
    one.hooks.beforeFailure = () => succeeded
    two.hooks.succeeded = release
    const [failed, ok] = await Promise.all([pay(one, '/fail-after', voucher), pay(two, '/ok-after', voucher)])
    expect(failed.status).toBe(500)
    expect(failed.headers.get('payment-receipt')).toBeNull()
    expect(ok.status).toBe(200)
    // The success's receipt was made while the failure still held its unit.
    expect(parseReceipt(ok.headers.get('payment-receipt')!)).toMatchObject({ charged: '1000' })
    expect(await one.session.channel(channelId)).toMatchObject({ highest: 3000n, spent: 2000n, units: 2, available: 1000n })
  })

  test('S12: with one unit covered, whichever wins the reservation, spent grows by exactly the requests served (never more, never both)', async () => {
    const shared = memoryStore()
    const one = server(shared)
    const two = server(shared)
    const { payer, channelId } = await opened(one)
    let cumulative = 1000n
    for (let round = 0; round < 4; round++) {
      cumulative += 1000n
      const before = (await one.session.channel(channelId))!
      const voucher = { channelId, cumulativeAmount: cumulative, signature: await signVoucher(payer, escrow, channelId, cumulative) }
      const answers = await Promise.all([pay(one, '/fail-after', voucher), pay(two, '/ok-after', voucher)])
      const served = answers.filter((r) => r.status === 200)
      expect(answers.filter((r) => r.headers.get('payment-receipt') !== null)).toHaveLength(served.length)
      expect(answers.map((r) => r.status).every((status) => [200, 402, 500].includes(status))).toBe(true)
      const after = (await two.session.channel(channelId))!
      expect(after.spent - before.spent).toBe(1000n * BigInt(served.length))
      expect(after.spent).toBeLessThanOrEqual(after.highest)
      // What was not spent is still there for the next request: a retry of the success with the same voucher.
      if (served.length === 0) expect((await pay(two, '/ok-after', voucher)).status).toBe(200)
      expect((await two.session.channel(channelId))!.spent).toBe(cumulative)
    }
  })
})

describe('session attacks (S15 S16 S17): closed and closing channels, a stream read past its vouchers', () => {
  test('S16 S11: after a cooperative close, vouchers are refused; the payee captured exactly what was spent', async () => {
    const { payer, channelId, manager } = await opened()
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    const receipt = await manager.close()
    expect(receipt?.txHash).toMatch(/^0x[0-9a-f]{64}$/)
    expect((await balanceOf(rpcUrl, payee.address)) - payeeBefore).toBe(1000n)
    const after = await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) })
    await expectRefused(after, 'session/channel-finalized', /is closed; open a new channel/)
  })

  test('S16: a close never captures more than was consumed: closed with the exact voucher held, or refused', async () => {
    const { payer, channelId } = await opened()
    // Authorised 5000 in a voucher-only update, consumed 1000: closing at 5000 would capture 4000 never served.
    const prepay = await pay(main, '/a', { channelId, cumulativeAmount: 5000n, signature: await signVoucher(payer, escrow, channelId, 5000n) }, 'POST')
    expect(prepay.status).toBe(204)
    const close = await pay(
      main,
      '/a',
      { action: 'close', channelId, cumulativeAmount: 5000n, signature: await signVoucher(payer, escrow, channelId, 5000n) },
      'POST',
    )
    await expectRefused(close, 'verification-failed', /captures only what was consumed \(1000\).*sign the close for exactly 1000/)
    const below = await pay(
      main,
      '/a',
      { action: 'close', channelId, cumulativeAmount: 500n, signature: await signVoucher(payer, escrow, channelId, 500n) },
      'POST',
    )
    await expectRefused(below, 'verification-failed', /below what is owed, 1000/)
    expect((await getChannel(rpcUrl, escrow, channelId)).finalized).toBe(false)
    // Signed for exactly what was consumed: closed, the payee gets 1000, the payer the other 19 000.
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    const payerBefore = await balanceOf(rpcUrl, payer.address)
    const exact = await pay(
      main,
      '/a',
      { action: 'close', channelId, cumulativeAmount: 1000n, signature: await signVoucher(payer, escrow, channelId, 1000n) },
      'POST',
    )
    expect(exact.status).toBe(204)
    expect((await balanceOf(rpcUrl, payee.address)) - payeeBefore).toBe(1000n)
    expect((await balanceOf(rpcUrl, payer.address)) - payerBefore).toBe(19_000n)
  })

  test('S16: a close request above what was consumed, when the highest voucher held is exactly what was consumed, captures just that', async () => {
    const { payer, channelId } = await opened()
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    const close = await pay(
      main,
      '/a',
      { action: 'close', channelId, cumulativeAmount: 5000n, signature: await signVoucher(payer, escrow, channelId, 5000n) },
      'POST',
    )
    expect(close.status).toBe(204)
    expect((await balanceOf(rpcUrl, payee.address)) - payeeBefore).toBe(1000n)
    expect(await getChannel(rpcUrl, escrow, channelId)).toMatchObject({ finalized: true, settled: 1000n })
  })

  test('S17: a forced close requested on chain: sync stops spending and closes with the highest voucher inside the grace period', async () => {
    const { payer, channelId } = await opened()
    await send(rpcUrl, payer, [escrowCall(escrow, 'requestClose', [channelId])])
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    const state = await main.session.sync(channelId)
    expect(state).toMatchObject({ finalized: true, settled: 1000n })
    expect((await balanceOf(rpcUrl, payee.address)) - payeeBefore).toBe(1000n)
    expect((await getChannel(rpcUrl, escrow, channelId)).finalized).toBe(true)
    await expectRefused(
      await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) }),
      'session/channel-finalized',
      /closed/,
    )
  })

  test('S17: checkCloses finds a forced close on chain by itself (no channel id given) and closes with the highest voucher; the next look reads only newer blocks', async () => {
    const { payer, channelId } = await opened()
    await main.session.checkCloses() // whatever earlier tests left is dealt with first
    const requested = await send(rpcUrl, payer, [escrowCall(escrow, 'requestClose', [channelId])])
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    const first = await main.session.checkCloses()
    expect(first.synced).toEqual([channelId])
    expect((await balanceOf(rpcUrl, payee.address)) - payeeBefore).toBe(1000n)
    expect(await getChannel(rpcUrl, escrow, channelId)).toMatchObject({ finalized: true, settled: 1000n })
    await expectRefused(
      await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) }),
      'session/channel-finalized',
      /closed/,
    )
    const second = await main.session.checkCloses()
    expect(second.synced).toEqual([])
    expect(second.nextBlock).toBeGreaterThan(first.nextBlock)
    // Asked again from the request's block, it finds the channel again and syncing it changes nothing.
    expect((await main.session.checkCloses({ fromBlock: requested.blockNumber })).synced).toEqual([channelId])
    expect((await balanceOf(rpcUrl, payee.address)) - payeeBefore).toBe(1000n)
  })

  test('S17: while a forced close is pending (nothing left to capture), vouchers are refused as closing', async () => {
    const { payer, channelId } = await opened()
    expect((await main.session.settle(channelId)).txHash).toMatch(/^0x[0-9a-f]{64}$/)
    await send(rpcUrl, payer, [escrowCall(escrow, 'requestClose', [channelId])])
    expect(await main.session.sync(channelId)).toMatchObject({ closeRequested: true, finalized: false, settled: 1000n })
    const refused = await pay(main, '/a', { channelId, cumulativeAmount: 2000n, signature: await signVoucher(payer, escrow, channelId, 2000n) })
    await expectRefused(refused, 'session/channel-finalized', /is closing \(the payer requested a forced close on chain\)/)
  })

  test('S15: a stream read past its vouchers asks for one, then ends cleanly; nothing beyond the vouchers is served', async () => {
    const { payer, channelId } = await opened()
    const challenge = await sessionChallenge(main, '/stream')
    // Covers the first chunk only (1000 spent + 100).
    const voucher = { channelId, cumulativeAmount: 1100n, signature: await signVoucher(payer, escrow, channelId, 1100n) }
    const response = await main.app.request(`${base}/stream`, {
      headers: { authorization: credentialFor(challenge, payloadOf(voucher)), accept: 'text/event-stream' },
    })
    expect(response.status).toBe(200)
    expect(response.headers.get('payment-receipt')).toBeTruthy()
    const text = await response.text()
    const events = text
      .trim()
      .split('\n\n')
      .map((block) => ({ event: /^event: (.*)$/m.exec(block)?.[1], data: /^data: (.*)$/m.exec(block)?.[1] }))
    expect(events.map((e) => e.event)).toEqual(['message', 'payment-need-voucher', 'payment-receipt'])
    expect(events[0]!.data).toBe('chunk 1')
    expect(JSON.parse(events[1]!.data!)).toEqual({ channelId, requiredCumulative: '1200', acceptedCumulative: '1100', deposit: '20000' })
    expect(JSON.parse(events[2]!.data!)).toMatchObject({ intent: 'session', channelId, acceptedCumulative: '1100', spent: '1100' })
    expect(await main.session.channel(channelId)).toMatchObject({ highest: 1100n, spent: 1100n })
  })

  test('S10 S20: a fee-sponsored open that also does something else (a transfer elsewhere, an approval to a stranger, another payee, a channel other than the one named) is refused before co-signing; the sponsor pays nothing', async () => {
    const sponsor = await fundedAccount(rpcUrl, { funder: 7, amount: '5', tokens: [alphaUsd] })
    const sponsored = tempoSession({
      rpcUrl,
      chainId: localChainId,
      escrow,
      account: payee,
      currency: token,
      feeToken: alphaUsd,
      feePayer: { account: sponsor, feeToken: alphaUsd, ...sponsorLimits },
    })
    const app = new Hono()
    app.get('/a', mpp({ secret, methods: [sponsored], intents: [sessionIntent] }).charge({ amount: '0.001' }), (c) => c.json({ ok: true }))
    const challenge = async () => challengesOf(await app.request(`${base}/a`)).find((c) => c.intent === 'session')!
    const payer = await fundedAccount(rpcUrl, { funder: 7, amount: '1' })
    const stranger = keyOnly().address
    const before = {
      sponsor: await balanceOf(rpcUrl, sponsor.address, alphaUsd),
      path: await balanceOf(rpcUrl, payer.address),
      alpha: await balanceOf(rpcUrl, payer.address, alphaUsd),
    }
    const transfer = { to: token, data: encodeFunctionData({ abi: Abis.tip20, functionName: 'transfer', args: [stranger, 5000n] }) }
    const approveStranger = { to: token, data: encodeFunctionData({ abi: Abis.tip20, functionName: 'approve', args: [stranger, 5000n] }) }
    const cosignsOnly = /^the fee sponsor co-signs only approve \+ open on the escrow .*; this transaction makes 3 calls/
    const variants = [
      { ...(await sponsoredOpen(rpcUrl, escrow, payer, payee.address, await challenge(), [transfer])), detail: cosignsOnly },
      { ...(await sponsoredOpen(rpcUrl, escrow, payer, payee.address, await challenge(), [approveStranger])), detail: cosignsOnly },
      { ...(await sponsoredOpen(rpcUrl, escrow, payer, stranger, await challenge())), detail: /^the channel's payee is .*; this server is paid at/ },
      {
        ...(await sponsoredOpen(rpcUrl, escrow, payer, payee.address, await challenge(), [], toHex(crypto.getRandomValues(new Uint8Array(32))))),
        detail: /^the transaction opens channel 0x[0-9a-f]{64}, not 0x[0-9a-f]{64} \(nothing was co-signed\)$/,
      },
    ]
    for (const { channelId, authorization, detail } of variants) {
      const response = await app.request(`${base}/a`, { headers: { authorization } })
      expect(response.status).toBe(402)
      expect(await response.json()).toMatchObject({
        type: `${problems}verification-failed`,
        detail: expect.stringMatching(detail),
      })
      expect((await getChannel(rpcUrl, escrow, channelId)).deposit).toBe(0n)
    }
    expect(await balanceOf(rpcUrl, sponsor.address, alphaUsd)).toBe(before.sponsor)
    expect(await balanceOf(rpcUrl, payer.address)).toBe(before.path)
    expect(await balanceOf(rpcUrl, payer.address, alphaUsd)).toBe(before.alpha)
    expect(await balanceOf(rpcUrl, stranger)).toBe(0n)
    // The same payer's plain sponsored open goes through: the refusals held no reservation.
    const plain = await sponsoredOpen(rpcUrl, escrow, payer, payee.address, await challenge())
    expect((await app.request(`${base}/a`, { headers: { authorization: plain.authorization } })).status).toBe(200)
    expect((await getChannel(rpcUrl, escrow, plain.channelId)).deposit).toBe(plain.deposit)
    expect(await balanceOf(rpcUrl, payer.address, alphaUsd)).toBe(before.alpha)
    expect(await balanceOf(rpcUrl, sponsor.address, alphaUsd)).toBeLessThan(before.sponsor)
  })
})
