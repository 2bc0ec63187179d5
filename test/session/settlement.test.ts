/**
 * Settlement of session channels on the local chain: threshold settlement in the background, and
 * exactly-once settlement across instances and restarts when a broadcast's outcome is unknown
 * (the answer was lost after the node took it, the request never reached the node, or the
 * instance died mid-flight). Whatever happens, the payee is paid each voucher once and the
 * server's bookkeeping ends equal to the chain's.
 */
import { Hono } from 'hono'
import { tempo as mppxTempo } from 'mppx/client'
import type { Address, Hex } from 'viem'
import { beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, balanceOf, fundedAccount, localChainId } from '../../scripts/local-chain.js'
import { type ClaimStore, mpp, PaymentError } from '../../src/index.js'
import { memoryStore } from '../../src/stores/memory.js'
import { sessionIntent, type TempoSessionConfig, tempoSession } from '../../src/tempo/index.js'
import { scriptedTransport } from '../tempo/helpers.js'
import { clientFor, deployEscrow, getChannel, token } from './support.js'

const base = 'http://api.session-settle.test'
let rpcUrl: string
let escrow: Address
let payee: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  escrow = await deployEscrow(rpcUrl, { funder: 8 })
  payee = await fundedAccount(rpcUrl, { funder: 8, amount: '1', tokens: [alphaUsd] })
})

function instance(store: ClaimStore, extra: Partial<TempoSessionConfig> = {}) {
  const session = tempoSession({
    ...(extra.transport ? {} : { rpcUrl }),
    chainId: localChainId,
    escrow,
    account: payee,
    currency: token,
    feeToken: alphaUsd,
    suggestedDeposit: '0.1',
    store,
    ...extra,
  })
  const pay = mpp({ secret: 'session-settle-secret-session-settle-secret-0', methods: [session], intents: [sessionIntent] })
  const app = new Hono().on(['GET', 'POST'], '/paid', pay.charge({ amount: '0.001' }), (c) => c.json({ ok: true }))
  return { session, app }
}

/** Opens a channel through `app` with mppx and pays `requests` requests (1000 each). */
async function payRequests(app: Hono, requests: number) {
  const payer = await fundedAccount(rpcUrl, { funder: 8, amount: '1' })
  const manager = mppxTempo.sessionLegacy({
    account: payer,
    client: clientFor(rpcUrl) as never,
    escrowContract: escrow,
    maxDeposit: '0.1',
    fetch: ((input: RequestInfo | URL, init?: RequestInit) => app.fetch(new Request(input, init))) as typeof fetch,
  })
  for (let i = 0; i < requests; i++) expect((await manager.fetch(`${base}/paid`)).status).toBe(200)
  return { payer, channelId: manager.channelId as Hex, manager }
}

const lost = () => Object.assign(new Error('the answer was lost'), { name: 'TimeoutError' })

describe('session settlement (S18)', () => {
  test('S18: threshold settlement — the highest voucher is settled once the unsettled amount reaches the threshold', async () => {
    const work: Promise<unknown>[] = []
    const { app, session } = instance(memoryStore(), { settleThreshold: '0.003', waitUntil: (p) => work.push(p) })
    const before = await balanceOf(rpcUrl, payee.address)
    const { channelId, manager } = await payRequests(app, 3)
    expect(work).toHaveLength(1)
    await Promise.all(work)
    expect((await getChannel(rpcUrl, escrow, channelId)).settled).toBe(3000n)
    // 1000 more is below the threshold: nothing more is settled.
    expect((await manager.fetch(`${base}/paid`)).status).toBe(200)
    expect(work).toHaveLength(1)
    expect(await session.channel(channelId)).toMatchObject({ settled: 3000n, highest: 4000n, spent: 4000n })
    expect((await balanceOf(rpcUrl, payee.address)) - before).toBe(3000n)
  })

  test('S18: the broadcast landed but its answer was lost — 503, then another instance recovers it from the kept hash; paid once', async () => {
    const store = memoryStore()
    let drop = false
    const { transport } = scriptedTransport(rpcUrl, async (method, _params, forward) => {
      if (method === 'eth_sendRawTransactionSync' && drop) {
        await forward()
        throw lost()
      }
      return forward()
    })
    const one = instance(store, { transport })
    const two = instance(store)
    const { channelId } = await payRequests(one.app, 3)
    const before = await balanceOf(rpcUrl, payee.address)
    drop = true
    const failed = await one.session.settle(channelId).catch((error) => error)
    expect(failed).toBeInstanceOf(PaymentError)
    expect((failed as PaymentError).kind).toBe('payment-unavailable')
    expect((await getChannel(rpcUrl, escrow, channelId)).settled).toBe(3000n)
    expect((await two.session.channel(channelId))?.settled).toBe(0n)
    const recovered = await two.session.settle(channelId)
    expect(recovered.state.settled).toBe(3000n)
    expect((await balanceOf(rpcUrl, payee.address)) - before).toBe(3000n)
    // Nothing left to settle: a further settle sends nothing.
    expect((await two.session.settle(channelId)).txHash).toBeUndefined()
    expect((await balanceOf(rpcUrl, payee.address)) - before).toBe(3000n)
  })

  test('S18: the broadcast never reached the node — the retry sends the same signed transaction again; paid once', async () => {
    const store = memoryStore()
    let drop = false
    const { transport } = scriptedTransport(rpcUrl, async (method, _params, forward) => {
      if (method === 'eth_sendRawTransactionSync' && drop) throw lost()
      return forward()
    })
    const one = instance(store, { transport })
    const two = instance(store)
    const { channelId } = await payRequests(one.app, 2)
    const before = await balanceOf(rpcUrl, payee.address)
    drop = true
    await expect(one.session.settle(channelId)).rejects.toBeInstanceOf(PaymentError)
    expect((await getChannel(rpcUrl, escrow, channelId)).settled).toBe(0n)
    const recovered = await two.session.settle(channelId)
    expect(recovered.txHash).toMatch(/^0x[0-9a-f]{64}$/)
    expect(recovered.state.settled).toBe(2000n)
    expect((await balanceOf(rpcUrl, payee.address)) - before).toBe(2000n)
  })

  test('S18: an instance dies after sending its close — after the lease, another instance finishes that close; closed once', async () => {
    const store = memoryStore()
    let hang = false
    const { transport } = scriptedTransport(rpcUrl, async (method, _params, forward) => {
      if (method === 'eth_sendRawTransactionSync' && hang) {
        await forward()
        return new Promise(() => {}) // the instance never hears back (it died)
      }
      return forward()
    })
    const one = instance(store, { transport, timeout: 600_000 })
    let clock = 0
    const two = instance(store, { now: () => Date.now() + clock })
    const { payer, channelId } = await payRequests(one.app, 2)
    const payerBefore = await balanceOf(rpcUrl, payer.address)
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    hang = true
    void one.session.close(channelId)
    // Wait until the close is on chain (the dead instance sent it).
    for (let i = 0; i < 100 && !(await getChannel(rpcUrl, escrow, channelId)).finalized; i++) await new Promise((r) => setTimeout(r, 50))
    // While its lease runs, nobody else may touch the job.
    await expect(two.session.settle(channelId)).rejects.toMatchObject({ kind: 'payment-unavailable' })
    clock = 120_000
    const finished = await two.session.close(channelId)
    expect(finished.state).toMatchObject({ finalized: true, settled: 2000n })
    expect((await balanceOf(rpcUrl, payee.address)) - payeeBefore).toBe(2000n)
    expect((await balanceOf(rpcUrl, payer.address)) - payerBefore).toBe(100_000n - 2000n)
  })
})
