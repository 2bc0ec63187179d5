/**
 * Fee-sponsored session opens and top-ups (S20, `feePayer`): the reference client (mppx's
 * legacy session manager, `tempo.sessionLegacy`, with the local gas-padded client) reads
 * `feePayer: true` in the offer, signs its approve + open with an empty fee-payer slot, and the
 * server co-signs and broadcasts it. On chain, only the deposit leaves the payer; the sponsor
 * pays the fee. A sponsored top-up of the channel is co-signed too; one sender has one sponsored
 * transaction in flight at a time.
 */
import { Hono } from 'hono'
import { Challenge, Credential } from 'mppx'
import { tempo as mppxTempo } from 'mppx/client'
import { type Address, encodeFunctionData, type Hex } from 'viem'
import { Abis } from 'viem/tempo'
import { beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, balanceOf, fundedAccount, localChainId } from '../../scripts/local-chain.js'
import { mpp } from '../../src/index.js'
import { sessionIntent, type TempoSession, tempo, tempoSession } from '../../src/tempo/index.js'
import { challengesOf } from '../helpers/http.js'
import { clientFor, deployEscrow, escrowCall, getChannel, sponsoredOpen, sponsoredTransaction, sponsorLimits, token } from './support.js'

const secret = 'session-sponsor-secret-session-sponsor-secret'
const base = 'http://api.session-sponsor.test'
let rpcUrl: string
let escrow: Address
let payee: Awaited<ReturnType<typeof fundedAccount>>
let sponsor: Awaited<ReturnType<typeof fundedAccount>>
let session: TempoSession
let app: Hono

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  escrow = await deployEscrow(rpcUrl, { funder: 5 })
  payee = await fundedAccount(rpcUrl, { funder: 5, amount: '1', tokens: [alphaUsd] })
  sponsor = await fundedAccount(rpcUrl, { funder: 5, amount: '50', tokens: [alphaUsd] })
  session = tempoSession({
    rpcUrl,
    chainId: localChainId,
    escrow,
    account: payee,
    currency: token,
    feeToken: alphaUsd,
    suggestedDeposit: '1',
    feePayer: { account: sponsor, feeToken: alphaUsd, ...sponsorLimits },
  })
  const pay = mpp({ secret, methods: [tempo({ rpcUrl, chainId: localChainId, recipient: payee.address }), session], intents: [sessionIntent] })
  app = new Hono()
  app.on(['GET', 'POST'], '/session', pay.charge({ amount: '0.001', methods: [session] }), (c) => c.json({ ok: true }))
})

const balances = async (address: Address) => ({ path: await balanceOf(rpcUrl, address, token), alpha: await balanceOf(rpcUrl, address, alphaUsd) })

/** A session challenge for /session. */
const challengeOf = async () => challengesOf(await app.request(`${base}/session`)).find((c) => c.intent === 'session')!

describe('session fee sponsorship: the server pays the fee of the open and the top-up', () => {
  test('S9 S10 S14 S20: the offer says feePayer; mppx opens a sponsored channel; only the deposit leaves the payer, the sponsor pays the fee; a sponsored top-up too', async () => {
    const challenge = await challengeOf()
    expect(JSON.parse(Buffer.from(challenge.request, 'base64url').toString()).methodDetails).toMatchObject({ feePayer: true })

    const payer = await fundedAccount(rpcUrl, { funder: 5, amount: '5' })
    const payerBefore = await balances(payer.address)
    const sponsorBefore = await balances(sponsor.address)
    const manager = mppxTempo.sessionLegacy({
      account: payer,
      client: clientFor(rpcUrl) as never,
      escrowContract: escrow,
      maxDeposit: '1',
      fetch: ((input: RequestInfo | URL, init?: RequestInit) => app.fetch(new Request(input, init))) as typeof fetch,
    })
    for (let i = 1; i <= 3; i++) expect((await manager.fetch(`${base}/session`)).status).toBe(200)
    const channelId = manager.channelId as Hex
    const onChain = await getChannel(rpcUrl, escrow, channelId)
    expect(onChain).toMatchObject({ payer: payer.address, payee: payee.address, deposit: 1_000_000n })
    expect(await session.channel(channelId)).toMatchObject({ spent: 3000n, deposit: 1_000_000n })

    const payerAfter = await balances(payer.address)
    const sponsorAfter = await balances(sponsor.address)
    expect(payerBefore.path - payerAfter.path).toBe(1_000_000n) // the deposit, no fee
    expect(payerAfter.alpha).toBe(payerBefore.alpha)
    expect(sponsorAfter.alpha).toBeLessThan(sponsorBefore.alpha) // the sponsor paid the fee
    expect(sponsorAfter.path).toBe(sponsorBefore.path)

    const method = mppxTempo.sessionLegacy.method({ account: payer, getClient: () => clientFor(rpcUrl) as never, escrowContract: escrow })
    // A sponsored top-up adding less than one unit's price (0.001) is refused before it is co-signed or sent.
    for (const tiny of [0n, 999n]) {
      const sponsorBeforeTiny = await balances(sponsor.address)
      const tinyTransaction = await sponsoredTransaction(rpcUrl, payer, [
        { to: token, data: encodeFunctionData({ abi: Abis.tip20, functionName: 'approve', args: [escrow, tiny] }) },
        escrowCall(escrow, 'topUp', [channelId, tiny]),
      ])
      const credential = await method.createCredential({
        challenge: Challenge.fromResponseList(await app.request(`${base}/session`)).find((ch) => ch.intent === 'session')!,
        context: { action: 'topUp', channelId, transaction: tinyTransaction, additionalDepositRaw: tiny.toString() },
      } as never)
      const refused = await app.request(`${base}/session`, { method: 'POST', headers: { authorization: credential } })
      expect(refused.status).toBe(402)
      const problem = (await refused.json()) as { type: string; detail: string }
      expect(problem.type).toBe('https://paymentauth.org/problems/payment-insufficient')
      expect(problem.detail).toBe(
        `a fee-sponsored top-up must add at least the price 1000; this one adds ${tiny} (nothing was sent; add more, or pay your own fee)`,
      )
      expect(await balances(sponsor.address)).toEqual(sponsorBeforeTiny)
      expect((await getChannel(rpcUrl, escrow, channelId)).deposit).toBe(1_000_000n)
    }

    // A sponsored top-up of this channel: approve + topUp, co-signed; again only the amount leaves.
    const amount = 500_000n
    const transaction = await sponsoredTransaction(rpcUrl, payer, [
      { to: token, data: encodeFunctionData({ abi: Abis.tip20, functionName: 'approve', args: [escrow, amount] }) },
      escrowCall(escrow, 'topUp', [channelId, amount]),
    ])
    const topUp = await method.createCredential({
      challenge: Challenge.fromResponseList(await app.request(`${base}/session`)).find((ch) => ch.intent === 'session')!,
      context: { action: 'topUp', channelId, transaction, additionalDepositRaw: amount.toString() },
    } as never)
    expect(Credential.deserialize(topUp).payload).toMatchObject({ action: 'topUp' })
    const response = await app.request(`${base}/session`, { method: 'POST', headers: { authorization: topUp } })
    expect(response.status).toBe(204)
    expect((await getChannel(rpcUrl, escrow, channelId)).deposit).toBe(1_500_000n)
    const payerEnd = await balances(payer.address)
    expect(payerAfter.path - payerEnd.path).toBe(amount)
    expect(payerEnd.alpha).toBe(payerBefore.alpha)
    expect((await balances(sponsor.address)).alpha).toBeLessThan(sponsorAfter.alpha)
  })

  test('S20: one sponsored transaction per sender in flight: a second concurrent sponsored open is refused 409, and goes through once the first settled', async () => {
    const payer = await fundedAccount(rpcUrl, { funder: 5, amount: '5' })
    const first = await sponsoredOpen(rpcUrl, escrow, payer, payee.address, await challengeOf())
    const second = await sponsoredOpen(rpcUrl, escrow, payer, payee.address, await challengeOf())
    const opens = [first, second]
    const responses = await Promise.all(opens.map((o) => app.request(`${base}/session`, { headers: { authorization: o.authorization } })))
    expect(responses.map((r) => r.status).sort()).toEqual([200, 409])
    const refused = responses.findIndex((r) => r.status === 409)
    const lost = opens[refused]!
    expect((await responses[refused]!.json()).detail).toMatch(/another sponsored payment from .* is awaiting settlement/)
    expect((await getChannel(rpcUrl, escrow, lost.channelId)).deposit).toBe(0n)
    expect((await getChannel(rpcUrl, escrow, opens[1 - refused]!.channelId)).deposit).toBe(100_000n)
    // The first settled: the refused credential now opens its channel.
    const again = await app.request(`${base}/session`, { headers: { authorization: lost.authorization } })
    expect(again.status).toBe(200)
    expect((await getChannel(rpcUrl, escrow, lost.channelId)).deposit).toBe(100_000n)
  })

  test('S20: a sponsored transaction on a server without feePayer is refused, naming why', async () => {
    const plain = tempoSession({ rpcUrl, chainId: localChainId, escrow, account: payee, currency: token, feeToken: alphaUsd })
    const pay = mpp({ secret, methods: [plain], intents: [sessionIntent] })
    const other = new Hono()
    other.get('/session', pay.charge({ amount: '0.001' }), (c) => c.json({ ok: true }))
    const payer = await fundedAccount(rpcUrl, { funder: 5, amount: '5' })
    const { channelId, authorization } = await sponsoredOpen(
      rpcUrl,
      escrow,
      payer,
      payee.address,
      challengesOf(await other.request(`${base}/session`)).find((c) => c.intent === 'session')!,
    )
    const response = await other.request(`${base}/session`, { headers: { authorization } })
    expect(response.status).toBe(402)
    expect((await response.json()).detail).toMatch(/asks for a fee payer, but this server does not sponsor fees/)
    expect((await getChannel(rpcUrl, escrow, channelId)).deposit).toBe(0n)
  })
})
