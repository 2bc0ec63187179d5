/**
 * The session intent end to end: the reference client (mppx's legacy contract-backed session
 * manager, `tempo.sessionLegacy`, pointed at our escrow deployed on the local chain) opens a
 * channel with a hono-mpp server, pays 100 requests by voucher, streams an SSE answer paid per
 * chunk with mid-stream vouchers, tops the deposit up and closes; the payee's capture and the
 * payer's refund are read on chain.
 */
import { Hono } from 'hono'
import { Challenge, Credential } from 'mppx'
import { tempo as mppxTempo } from 'mppx/client'
import { type Address, encodeFunctionData, type Hex } from 'viem'
import { prepareTransactionRequest, signTransaction } from 'viem/actions'
import { Abis } from 'viem/tempo'
import { beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, balanceOf, fundedAccount, localChainId } from '../../scripts/local-chain.js'
import { mpp } from '../../src/index.js'
import { meteredStream, sessionIntent, type TempoSession, tempo, tempoSession } from '../../src/tempo/index.js'
import { chunks, clientFor, deployEscrow, escrowAbi, getChannel, token } from './support.js'

const secret = 'session-e2e-secret-session-e2e-secret-0123'
let rpcUrl: string
let escrow: Address
let payee: Awaited<ReturnType<typeof fundedAccount>>
let session: TempoSession
let app: Hono
const served = { session: 0 }
const rpcCalls: string[] = []

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  escrow = await deployEscrow(rpcUrl, { funder: 6 })
  payee = await fundedAccount(rpcUrl, { funder: 6, amount: '1', tokens: [alphaUsd] })
  session = tempoSession({
    rpcUrl,
    chainId: localChainId,
    escrow,
    account: payee,
    currency: token,
    feeToken: alphaUsd,
    suggestedDeposit: '1',
    onRpcCall: (call) => rpcCalls.push(call.method),
  })
  const pay = mpp({ secret, methods: [tempo({ rpcUrl, chainId: localChainId, recipient: payee.address }), session], intents: [sessionIntent] })
  app = new Hono()
  app.on(['GET', 'POST'], '/session', pay.charge({ amount: '0.001' }), (c) => {
    served.session++
    return c.json({ n: served.session, channel: (c.get('payment') as { channelId?: string }).channelId })
  })
  app.on(['GET', 'POST'], '/stream', pay.charge({ amount: '0.0001', methods: [session] }), (c) => meteredStream(c, chunks(10)))
})

const base = 'http://api.session.test'
/** The app as the client's fetch; remembers each credential's action and the answer's status. */
const exchanges: string[] = []
const appFetch = async (input: RequestInfo | URL, init?: RequestInit) => {
  const request = new Request(input, init)
  const authorization = request.headers.get('authorization')
  const response = await app.fetch(request)
  if (authorization) exchanges.push(`${request.method} ${(Credential.deserialize(authorization).payload as { action: string }).action} ${response.status}`)
  return response
}

describe('session e2e: mppx pays a hono-mpp server by voucher on the local chain', () => {
  test('S3 S9 S10 S11 S13 S14 S15 S16: open, 100 requests by voucher, a metered stream, top-up, close; capture and refund on chain', async () => {
    const payer = await fundedAccount(rpcUrl, { funder: 6, amount: '5' })
    exchanges.length = 0
    const manager = mppxTempo.sessionLegacy({
      account: payer,
      client: clientFor(rpcUrl) as never,
      escrowContract: escrow,
      maxDeposit: '1',
      fetch: appFetch as typeof fetch,
    })

    // 100 requests: the first opens the channel, every one is paid by a voucher.
    for (let i = 1; i <= 100; i++) {
      if (i === 2) {
        // The open broadcast its transaction and read the channel; from here on, no RPC call.
        expect(rpcCalls).toEqual(['eth_sendRawTransactionSync', 'eth_call'])
        rpcCalls.length = 0
      }
      const response = await manager.fetch(`${base}/session`)
      expect(response.status).toBe(200)
      expect(response.receipt).toMatchObject({ method: 'tempo', intent: 'session', spent: String(i * 1000), acceptedCumulative: String(i * 1000), units: i })
    }
    expect(rpcCalls).toEqual([]) // 99 vouchers, 0 RPC calls
    const channelId = manager.channelId as Hex
    expect(exchanges.slice(0, 2)).toEqual(['GET open 200', 'GET voucher 200'])
    expect(served.session).toBe(100)
    expect(await session.channel(channelId)).toMatchObject({ highest: 100_000n, spent: 100_000n, units: 100, deposit: 1_000_000n, payer: payer.address })
    expect((await getChannel(rpcUrl, escrow, channelId)).deposit).toBe(1_000_000n)

    // A stream of 10 chunks at 100 each: the request's voucher pays the first, each next one a mid-stream voucher.
    const received: string[] = []
    const receipts: { spent: string }[] = []
    for await (const message of await manager.sse(`${base}/stream`, { onReceipt: (r) => receipts.push(r) })) received.push(message)
    expect(received).toEqual([...chunks(10)])
    expect(receipts.at(-1)?.spent).toBe(String(100_000 + 10 * 100))
    // Nine chunks past the first, each paid by a voucher the client POSTed when asked mid-stream.
    expect(exchanges.filter((e) => e === 'POST voucher 204')).toHaveLength(9)
    expect(await session.channel(channelId)).toMatchObject({ highest: 101_000n, spent: 101_000n })

    // Top-up: the payer approves and tops up in one transaction; the credential goes by mppx's manual mode.
    const topUpAmount = 500_000n
    const wallet = clientFor(rpcUrl)
    const prepared = await prepareTransactionRequest(wallet, {
      account: payer,
      calls: [
        { to: token, data: encodeFunctionData({ abi: Abis.tip20, functionName: 'approve', args: [escrow, topUpAmount] }) },
        { to: escrow, data: encodeFunctionData({ abi: escrowAbi, functionName: 'topUp', args: [channelId, topUpAmount] }) },
      ],
      feeToken: alphaUsd,
      nonceKey: 'expiring',
      validBefore: Math.floor(Date.now() / 1000) + 25,
    } as never)
    const transaction = await signTransaction(wallet, prepared as never)
    const challenge = Challenge.fromResponseList(await appFetch(`${base}/session`)).find((ch) => ch.intent === 'session')!
    const method = mppxTempo.sessionLegacy.method({ account: payer, getClient: () => clientFor(rpcUrl) as never, escrowContract: escrow })
    const topUp = await method.createCredential({
      challenge,
      context: { action: 'topUp', channelId, transaction, additionalDepositRaw: topUpAmount.toString() },
    } as never)
    const topUpResponse = await appFetch(`${base}/session`, { method: 'POST', headers: { authorization: topUp } })
    expect(topUpResponse.status).toBe(204)
    expect((await getChannel(rpcUrl, escrow, channelId)).deposit).toBe(1_500_000n)
    expect((await session.channel(channelId))?.deposit).toBe(1_500_000n)
    expect(Credential.deserialize(topUp).payload).toMatchObject({ action: 'topUp' })

    // Close: the payee captures the highest voucher (= what was spent), the payer gets the rest back.
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    const payerBefore = await balanceOf(rpcUrl, payer.address)
    const closed = await manager.close()
    expect(closed?.txHash).toMatch(/^0x[0-9a-f]{64}$/)
    const onChain = await getChannel(rpcUrl, escrow, channelId)
    expect(onChain.finalized).toBe(true)
    expect((await balanceOf(rpcUrl, payee.address)) - payeeBefore).toBe(101_000n)
    expect((await balanceOf(rpcUrl, payer.address)) - payerBefore).toBe(1_500_000n - 101_000n)
    expect(await session.channel(channelId)).toMatchObject({ finalized: true, settled: 101_000n })

    // The channel is closed: a further voucher is refused.
    const after = await appFetch(`${base}/session`)
    expect(after.status).toBe(402)
  })
})
