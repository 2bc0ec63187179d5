/**
 * Session intent edge cases found in review, through the real server on the local chain (our
 * escrow deployed, channels opened by mppx's legacy session client or by hand-signed
 * transactions): what the server accepts must be what the escrow pays, a channel pays only the
 * method (payee, token) it was opened for, and a transaction the server or its sponsor sends must
 * be one the server will then accept.
 */
import { Hono } from 'hono'
import { tempo as mppxTempo } from 'mppx/client'
import { type Address, type Hex, toHex } from 'viem'
import { prepareTransactionRequest, readContract, signTransaction } from 'viem/actions'
import { beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, balanceOf, fundedAccount, localChainId } from '../../scripts/local-chain.js'
import { type Challenge, type ClaimStore, mpp } from '../../src/index.js'
import { memoryStore } from '../../src/stores/memory.js'
import { meteredStream, sessionIntent, type TempoSession, tempoSession } from '../../src/tempo/index.js'
import { challengesOf, credentialFor } from '../helpers/http.js'
import {
  approveCall,
  type Call,
  chunks,
  clientFor,
  deployEscrow,
  escrowAbi,
  escrowCall,
  getChannel,
  keyOnly,
  openCalls,
  signVoucher,
  sponsoredTransaction,
  sponsorLimits,
  token,
} from '../session/support.js'

const base = 'http://api.session-review.test'
const secret = 'session-review-secret-session-review-secret-01'
const problems = 'https://paymentauth.org/problems/'
let rpcUrl: string
let escrow: Address
let payee: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  escrow = await deployEscrow(rpcUrl, { funder: 6 })
  payee = await fundedAccount(rpcUrl, { funder: 6, amount: '1', tokens: [alphaUsd] })
})

type Server = { app: Hono; session: TempoSession; served: () => number }

type Options = { store?: ClaimStore; feePayer?: Parameters<typeof tempoSession>[0]['feePayer']; account?: typeof payee; currency?: Address }

/** One server: `/a` at 0.001 per request, paid only by a session of `payee` in pathUSD (or the account and currency given). */
function server(options: Options = {}): Server {
  const session = tempoSession({
    rpcUrl,
    chainId: localChainId,
    escrow,
    account: options.account ?? payee,
    currency: options.currency ?? token,
    feeToken: alphaUsd,
    suggestedDeposit: '0.02',
    voucherTimeoutMs: 300,
    pollMs: 20,
    ...(options.store && { store: options.store }),
    ...(options.feePayer && { feePayer: options.feePayer }),
  })
  const pay = mpp({ secret, methods: [session], intents: [sessionIntent] })
  let served = 0
  const app = new Hono()
  app.on(['GET', 'POST'], '/a', pay.charge({ amount: '0.001' }), (c) => c.json({ n: ++served }))
  app.on(['GET', 'POST'], '/stream', pay.charge({ amount: '0.0001' }), (c) => meteredStream(c, chunks(3)))
  return { app, session, served: () => served }
}

async function challengeOf(s: Server, path = '/a'): Promise<Challenge> {
  return challengesOf(await s.app.request(`${base}${path}`)).find((c) => c.intent === 'session')!
}

/** A payer with a channel of 0.02 opened through `s` by the reference client, after one paid request (spent = highest = 1000). */
async function opened(s: Server) {
  const payer = await fundedAccount(rpcUrl, { funder: 6, amount: '1' })
  const manager = mppxTempo.sessionLegacy({
    account: payer,
    client: clientFor(rpcUrl) as never,
    escrowContract: escrow,
    maxDeposit: '0.02',
    fetch: ((input: RequestInfo | URL, init?: RequestInit) => s.app.fetch(new Request(input, init))) as typeof fetch,
  })
  expect((await manager.fetch(`${base}/a`)).status).toBe(200)
  return { payer, channelId: manager.channelId as Hex }
}

async function send(s: Server, payload: Record<string, unknown>, method = 'GET'): Promise<Response> {
  return s.app.request(`${base}/a`, { method, headers: { authorization: credentialFor(await challengeOf(s), payload) } })
}

/** `calls` signed by `account` as one Tempo transaction paying its own fee (not sent). */
async function signed(account: typeof payee, calls: Call[]): Promise<Hex> {
  const wallet = clientFor(rpcUrl)
  const prepared = await prepareTransactionRequest(wallet, {
    account,
    calls,
    feeToken: alphaUsd,
    nonceKey: 'expiring',
    validBefore: Math.floor(Date.now() / 1000) + 25,
    gas: 3_000_000n,
  } as never)
  return (await signTransaction(wallet, prepared as never)) as Hex
}

/** The same signature with `v` written as 0/1 instead of 27/28 (the y parity alone). */
const parityV = (signature: Hex): Hex => `${signature.slice(0, 130)}0${Number.parseInt(signature.slice(130), 16) - 27}` as Hex

describe('session review: signatures the server accepts are signatures the escrow pays (S3 S11 S16)', () => {
  test('S3 S11: a voucher whose v is the bare y parity (0/1) is accepted only as the 27/28 form the escrow verifies; settled on chain', async () => {
    const s = server()
    const { payer, channelId } = await opened(s)
    const signature = parityV(await signVoucher(payer, escrow, channelId, 2000n))
    expect(signature.slice(-2)).toMatch(/^0[01]$/)
    const paid = await send(s, { action: 'voucher', channelId, cumulativeAmount: '2000', signature })
    expect(paid.status).toBe(200)
    expect(await s.session.channel(channelId)).toMatchObject({ highest: 2000n, spent: 2000n })
    // What was accepted is what the escrow pays: the payee's settlement lands.
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    expect((await s.session.settle(channelId)).txHash).toMatch(/^0x[0-9a-f]{64}$/)
    expect((await getChannel(rpcUrl, escrow, channelId)).settled).toBe(2000n)
    expect((await balanceOf(rpcUrl, payee.address)) - payeeBefore).toBe(2000n)
  })

  test('S16: a close request whose v is 0/1 closes the channel on chain with that amount', async () => {
    const s = server()
    const { payer, channelId } = await opened(s)
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    const signature = parityV(await signVoucher(payer, escrow, channelId, 1000n))
    const closed = await send(s, { action: 'close', channelId, cumulativeAmount: '1000', signature }, 'POST')
    expect(closed.status, await closed.clone().text()).toBe(204)
    expect(await getChannel(rpcUrl, escrow, channelId)).toMatchObject({ finalized: true, settled: 1000n })
    expect((await balanceOf(rpcUrl, payee.address)) - payeeBefore).toBe(1000n)
  })
})

describe('session review: a channel pays only the payee and token it was opened for (S10 S11 S14 S16)', () => {
  test('S11 S14 S16: on one shared store, a channel opened with one payee is refused by a method of another payee or token — vouchers, a re-presented open, top-up and close', async () => {
    const store = memoryStore()
    const mine = server({ store })
    const otherPayee = await fundedAccount(rpcUrl, { funder: 6, amount: '1', tokens: [alphaUsd] })
    const others = [server({ store, account: otherPayee }), server({ store, currency: alphaUsd })]
    const { payer, channelId } = await opened(mine)
    const voucher = async (amount: bigint) => ({
      channelId,
      cumulativeAmount: amount.toString(),
      signature: await signVoucher(payer, escrow, channelId, amount),
    })
    for (const other of others) {
      const refused = await send(other, { action: 'voucher', ...(await voucher(2000n)) })
      expect(refused.status).toBe(402)
      expect(refused.headers.get('payment-receipt')).toBeNull()
      expect(await refused.json()).toMatchObject({
        type: `${problems}verification-failed`,
        detail: expect.stringMatching(new RegExp(`channel ${channelId} pays ${payee.address} in ${token}; this route is paid to .* in `)),
      })
      // Nothing recorded: the channel's own server still sees its first unit only.
      expect(await mine.session.channel(channelId)).toMatchObject({ highest: 1000n, spent: 1000n, units: 1 })
      // A voucher-only update, and a close request, are refused the same way.
      expect((await send(other, { action: 'voucher', ...(await voucher(2000n)) }, 'POST')).status).toBe(402)
      const reopen = { action: 'open', type: 'transaction', transaction: await signed(payer, []), ...(await voucher(2000n)) }
      expect(((await (await send(other, reopen)).json()) as { detail: string }).detail).toMatch(/this route is paid to/)
      const topUp = await signed(payer, [approveCall(escrow, 5000n), escrowCall(escrow, 'topUp', [channelId, 5000n])])
      const topped = await send(other, { action: 'topUp', type: 'transaction', channelId, transaction: topUp, additionalDeposit: '5000' }, 'POST')
      expect(topped.status).toBe(402)
      expect(((await topped.json()) as { detail: string }).detail).toMatch(/this route is paid to/)
      const close = await send(other, { action: 'close', ...(await voucher(1000n)) }, 'POST')
      expect(close.status).toBe(402)
      expect(((await close.json()) as { detail: string }).detail).toMatch(/this route is paid to/)
      expect(other.served()).toBe(0)
    }
    expect(await getChannel(rpcUrl, escrow, channelId)).toMatchObject({ finalized: false, settled: 0n, deposit: 20_000n })
    expect(await mine.session.channel(channelId)).toMatchObject({ highest: 1000n, spent: 1000n, units: 1, closing: false })
    // The channel's own method still takes them.
    expect((await send(mine, { action: 'voucher', ...(await voucher(2000n)) })).status).toBe(200)
  })
})

describe('session review: an open is checked for its deposit before it is sent or co-signed (S10 S20)', () => {
  /** The id and calls of an open of `deposit` from `payer` to this payee (without the approval when the deposit is zero). */
  async function openOf(payer: Address, deposit: bigint) {
    const salt = toHex(crypto.getRandomValues(new Uint8Array(32)))
    const channelId = (await readContract(clientFor(rpcUrl), {
      address: escrow,
      abi: escrowAbi,
      functionName: 'computeChannelId',
      args: [payer, payee.address, token, salt, payer],
    } as never)) as Hex
    const calls = openCalls(escrow, payee.address, deposit, salt, payer)
    return { channelId, calls: deposit === 0n ? calls.slice(1) : calls }
  }

  test('S10 S20: a sponsored open of a key holding nothing, depositing less than the price, is refused before co-signing; the sponsor pays nothing', async () => {
    const sponsor = await fundedAccount(rpcUrl, { funder: 6, amount: '5', tokens: [alphaUsd] })
    const s = server({ feePayer: { account: sponsor, feeToken: alphaUsd, ...sponsorLimits } })
    const before = await balanceOf(rpcUrl, sponsor.address, alphaUsd)
    for (const deposit of [0n, 999n]) {
      const payer = deposit === 0n ? keyOnly() : await fundedAccount(rpcUrl, { funder: 6, amount: '1', tokens: [token] })
      const { channelId, calls } = await openOf(payer.address, deposit)
      const transaction = await sponsoredTransaction(rpcUrl, payer, calls)
      const signature = await signVoucher(payer, escrow, channelId, 1000n)
      const refused = await send(s, { action: 'open', type: 'transaction', channelId, transaction, cumulativeAmount: '1000', signature })
      expect(refused.status).toBe(402)
      expect(await refused.json()).toMatchObject({
        type: `${problems}payment-insufficient`,
        detail: expect.stringMatching(new RegExp(`the open deposits ${deposit}, less than the price 1000`)),
      })
      expect((await getChannel(rpcUrl, escrow, channelId)).payer).toBe('0x0000000000000000000000000000000000000000')
    }
    expect(await balanceOf(rpcUrl, sponsor.address, alphaUsd)).toBe(before)
    expect(s.served()).toBe(0)
  })

  test('S10: an open depositing less than the price is refused before it is broadcast; the payer’s deposit is not locked in a channel the server refuses', async () => {
    const s = server()
    const payer = await fundedAccount(rpcUrl, { funder: 6, amount: '1' })
    const { channelId, calls } = await openOf(payer.address, 999n)
    const transaction = await signed(payer, calls)
    const before = await balanceOf(rpcUrl, payer.address)
    const signature = await signVoucher(payer, escrow, channelId, 999n)
    const refused = await send(s, { action: 'open', type: 'transaction', channelId, transaction, cumulativeAmount: '999', signature })
    expect(refused.status).toBe(402)
    expect(((await refused.json()) as { detail: string }).detail).toMatch(/the open deposits 999, less than the price 1000/)
    expect((await getChannel(rpcUrl, escrow, channelId)).deposit).toBe(0n)
    expect(await balanceOf(rpcUrl, payer.address)).toBe(before)
    expect(await s.session.channel(channelId)).toBeUndefined()
  })
})

describe('session review: a metered stream that is paid goes on (S15)', () => {
  test('S15: a voucher accepted while the stream was deciding to ask for one is used; no need-voucher asks for what is already covered', async () => {
    // The memory store, with a hook that runs once the channel's record has been read three times
    // in a row without a write: the stream found the next chunk unpaid, and reads the channel
    // again. The client's voucher (sent ahead, on another request) lands exactly then.
    const memory = memoryStore()
    let channelKey: ((key: string) => boolean) | undefined
    let reads = 0
    let hook: (() => Promise<void>) | undefined
    const store: ClaimStore = {
      ...memory,
      async get(key) {
        if (hook && channelKey?.(key) && ++reads === 3) {
          const run = hook
          hook = undefined
          await run()
        }
        return memory.get(key)
      },
      async transition(key, from, to, owner) {
        if (channelKey?.(key)) reads = 0
        return memory.transition(key, from, to, owner)
      },
    }
    const s = server({ store })
    const { payer, channelId } = await opened(s)
    channelKey = (key) => key.endsWith(`:${channelId}`) && !key.includes(':settle:')
    const streamChallenge = challengesOf(await s.app.request(`${base}/stream`))[0]!
    const voucher = async (amount: bigint) =>
      credentialFor(streamChallenge, {
        action: 'voucher',
        channelId,
        cumulativeAmount: amount.toString(),
        signature: await signVoucher(payer, escrow, channelId, amount),
      })
    // The request's voucher covers the first chunk (1000 spent + 100).
    const response = await s.app.request(`${base}/stream`, { headers: { authorization: await voucher(1100n) } })
    expect(response.status).toBe(200)
    const ahead = await voucher(1300n)
    let posted: Response | undefined
    reads = 0
    hook = async () => {
      posted = await s.app.request(`${base}/stream`, { method: 'POST', headers: { authorization: ahead } })
    }
    const events = (await response.text())
      .trim()
      .split('\n\n')
      .map((block) => ({ event: /^event: (.*)$/m.exec(block)?.[1], data: /^data: (.*)$/m.exec(block)?.[1] ?? '' }))
    expect(posted?.status).toBe(204)
    expect(events.filter((e) => e.event === 'message').map((e) => e.data)).toEqual([...chunks(3)])
    for (const asked of events.filter((e) => e.event === 'payment-need-voucher')) {
      const { requiredCumulative, acceptedCumulative } = JSON.parse(asked.data) as { requiredCumulative: string; acceptedCumulative: string }
      expect(BigInt(requiredCumulative)).toBeGreaterThan(BigInt(acceptedCumulative))
    }
    expect(JSON.parse(events.at(-1)!.data)).toMatchObject({ spent: '1300', acceptedCumulative: '1300' })
  })
})
