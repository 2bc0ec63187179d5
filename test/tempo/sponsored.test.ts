/**
 * Sponsored pull payments (T3): the server's account pays the fee. Limits are enforced before
 * co-signing, one simulation guards the sponsor against reverts, and the payer pays only the
 * amount.
 */
import { TxEnvelopeTempo } from 'ox/tempo'
import { type Address, type Hex, keccak256 } from 'viem'
import { generatePrivateKey } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, balanceOf, fundedAccount, pathUsd } from '../../scripts/local-chain.js'
import { type RpcProxy, startRpcProxy } from '../../scripts/rpc-proxy.js'
import { SettlementUnknownError, type Verified } from '../../src/method.js'
import { feeInBaseUnits } from '../../src/tempo/fee-payer.js'
import { type FeePayerConfig, type TempoConfig, tempo } from '../../src/tempo/index.js'
import { challengeFor, craft, fresh, mppxCredential, refusal, scriptedTransport, transferCall } from './helpers.js'

const funder = 3
let rpcUrl: string
let proxy: RpcProxy
let payer: Awaited<ReturnType<typeof fundedAccount>>
let sponsor: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  proxy = await startRpcProxy(rpcUrl)
  payer = await fundedAccount(rpcUrl, { funder, amount: '50' })
  sponsor = await fundedAccount(rpcUrl, { funder, amount: '20', tokens: [alphaUsd] })
})
afterAll(() => proxy.close())

function setup(feePayer: Partial<FeePayerConfig> = {}, config: Partial<TempoConfig> = {}) {
  const recipient = fresh()
  const m = tempo({
    rpcUrl: proxy.url,
    chainId: 31337,
    recipient,
    feePayer: { account: sponsor, feeToken: alphaUsd, ...feePayer },
    ...config,
  } as TempoConfig)
  const request = m.request({ amount: '0.01' })
  const challenge = challengeFor(request)
  return { recipient, m, request, challenge, expires: new Date(challenge.expires) }
}

const payWith = (s: ReturnType<typeof setup>, raw: Hex) =>
  s.m.verify({
    credential: { challenge: s.challenge, payload: { type: 'transaction', signature: raw } },
    request: s.request,
    expires: s.expires,
    settle: 'before',
  })

describe('sponsored pull', () => {
  test('T3: the mppx client pays in sponsored mode; the payer pays only the amount, the sponsor the fee; ≤ 2 RPC calls', async () => {
    const s = setup()
    expect(s.request.methodDetails).toMatchObject({ feePayer: true, supportedModes: ['pull'] })
    const credential = await mppxCredential(rpcUrl, payer, s.challenge, 'pull')
    expect((credential.payload as { signature: Hex }).signature.startsWith('0x78')).toBe(true)
    const before = {
      payerPath: await balanceOf(rpcUrl, payer.address, pathUsd),
      payerAlpha: await balanceOf(rpcUrl, payer.address, alphaUsd),
      sponsorAlpha: await balanceOf(rpcUrl, sponsor.address, alphaUsd),
    }
    proxy.reset()
    const verified = await s.m.verify({ credential, request: s.request, expires: s.expires, settle: 'before' })
    // First payment: the simulation and the sponsor's balance (cached afterwards), side by side.
    expect(proxy.counts.get('eth_call')).toBe(2)
    const settled = await s.m.settle(JSON.parse(JSON.stringify(verified)) as Verified)
    expect(proxy.counts.get('eth_sendRawTransactionSync')).toBe(1)
    expect(settled.reference).toBe(verified.reference)
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
    expect(await balanceOf(rpcUrl, payer.address, pathUsd)).toBe(before.payerPath - 10_000n)
    expect(await balanceOf(rpcUrl, payer.address, alphaUsd)).toBe(before.payerAlpha)
    const sponsorPaid = before.sponsorAlpha - (await balanceOf(rpcUrl, sponsor.address, alphaUsd))
    expect(sponsorPaid).toBeGreaterThan(0n)
    const tx = TxEnvelopeTempo.deserialize((credential.payload as { signature: Hex }).signature as TxEnvelopeTempo.Serialized)
    expect(sponsorPaid).toBeLessThanOrEqual(feeInBaseUnits(tx.gas as bigint, tx.maxFeePerGas as bigint))

    // Next payment, balance cached: simulation + broadcast.
    const c2 = challengeFor(s.request)
    const credential2 = await mppxCredential(rpcUrl, payer, c2, 'pull')
    proxy.reset()
    const v2 = await s.m.verify({ credential: credential2, request: s.request, expires: new Date(c2.expires), settle: 'before' })
    await s.m.settle(v2)
    expect(proxy.counts.get('eth_call')).toBe(1)
    expect(proxy.total()).toBe(2)
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(20_000n)
  })

  test('T3: the final hash is that of the co-signed transaction; both hand-off forms claim the same signature key', async () => {
    const s = setup()
    const key = payer.privateKey
    const now = Math.floor(Date.now() / 1000)
    const common = { calls: [transferCall(pathUsd, s.recipient, 10_000n)], validBefore: now + 20, validAfter: now - 77 }
    const as76 = craft(key, { ...common, sponsor: 'sponsored' })
    const as78 = craft(key, { ...common, sponsor: 'envelope78' })
    expect(as76).not.toBe(as78)
    const a = await payWith(s, as76)
    const b = await payWith(s, as78)
    expect(a.claims).toEqual(b.claims)
    expect(a.reference).not.toBe(keccak256(as76))
    expect(a.reference).toBe(keccak256((a.data as { raw: Hex }).raw))
  })

  describe('T3: limits are enforced before co-signing, and say which', () => {
    test('gas', async () => {
      const s = setup({ maxGas: 500_000n })
      const error = await refusal(payWith(s, craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' })))
      expect(error.detail).toMatch(/declares 800000 gas; the fee sponsor allows at most 500000/)
    })
    test('fee per gas', async () => {
      const s = setup({ maxFeePerGas: 20_000_000_000n })
      const error = await refusal(payWith(s, craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' })))
      expect(error.detail).toMatch(/offers 40000000000 per gas; the fee sponsor allows at most 20000000000/)
    })
    test('total fee, in fee-token base units', async () => {
      const s = setup({ maxTotalFee: 30_000n, maxInFlight: 100_000n })
      const error = await refusal(payWith(s, craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' })))
      // 800 000 gas × 40 gwei-equivalent = 32 000 base units (0.032 USD).
      expect(error.detail).toMatch(/may cost up to 32000 fee-token base units; the fee sponsor allows at most 30000 per payment/)
    })
    test('no RPC call is made for a transaction over the limits', async () => {
      const s = setup({ maxGas: 500_000n })
      proxy.reset()
      await refusal(payWith(s, craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' })))
      expect(proxy.total()).toBe(0)
    })
  })

  test('T3: the in-flight budget refuses (503) until earlier sponsored payments settle', async () => {
    const s = setup({ maxTotalFee: 40_000n, maxInFlight: 40_000n })
    const first = await payWith(s, craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' }))
    // Another payer: the first one's own second payment would wait for its first (409).
    const other = await fundedAccount(rpcUrl, { funder, amount: '1', tokens: [pathUsd] })
    const second = craft(other.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' })
    const error = await refusal(payWith(s, second))
    expect(error.kind).toBe('payment-unavailable')
    expect(error.detail).toMatch(/too many payments awaiting settlement/)
    await s.m.settle(first)
    expect((await payWith(s, second)).status).toBe('ready')
  })

  test('T3: a transaction verified again (a retry) does not count its own reservation twice, and giving the copy up does not free the original', async () => {
    const s = setup({ maxTotalFee: 40_000n, maxInFlight: 40_000n })
    const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' })
    const first = await payWith(s, raw)
    const again = await payWith(s, raw)
    expect(again.reference).toBe(first.reference)
    const other = await fundedAccount(rpcUrl, { funder, amount: '1', tokens: [pathUsd] })
    const next = () => payWith(s, craft(other.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' }))
    // The copy given up (its claim refused, say), the original still holds its share.
    s.m.release?.(again)
    expect((await refusal(next())).detail).toMatch(/too many payments awaiting settlement/)
    // Both given up, the budget is whole again: another payment fits.
    s.m.release?.(first)
    expect((await next()).status).toBe('ready')
  })

  test('T3: a sponsored transaction that reverts on chain counts its fee against the cached sponsor balance at once', async () => {
    // The node answers: the sponsor holds 50 000 base units; the broadcast reverts having cost
    // 30 000 in fees. The next payment (worst case 32 000) no longer fits, without a re-read.
    const { transport, calls } = scriptedTransport(rpcUrl, async (method, params, forward) => {
      const call = params[0] as { data?: string } | string
      if (method === 'eth_call' && typeof call === 'object' && call.data?.startsWith('0x70a08231')) return `0x${50_000n.toString(16).padStart(64, '0')}`
      if (method === 'eth_call') return '0x'
      if (method === 'eth_sendRawTransactionSync')
        return {
          transactionHash: keccak256(params[0] as Hex),
          status: '0x0',
          from: payer.address,
          gasUsed: `0x${(750_000n).toString(16)}`,
          effectiveGasPrice: `0x${(40_000_000_000n).toString(16)}`,
          logs: [],
        }
      return forward()
    })
    const s = setup({}, { rpcUrl: undefined, transport })
    const first = await payWith(s, craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' }))
    const failed = await refusal(s.m.settle(first))
    expect(failed.kind).toBe('settlement-failed')
    const reads = calls.filter((method) => method === 'eth_call').length
    // Another payer: this one's failed transaction has used up its own window.
    const error = await refusal(payWith(s, craft(generatePrivateKey(), { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' })))
    expect(error.detail).toMatch(/balance is too low to sponsor this payment/)
    // Decided from the cache: at most the simulation ran, the balance was not read again.
    expect(calls.filter((method) => method === 'eth_call').length - reads).toBeLessThanOrEqual(1)
  })

  test("T3 T4: a sponsored broadcast whose outcome never becomes known holds its sender until it can no longer land, then counts as lost in the sender's window", async () => {
    let clock = Date.now()
    const { transport } = scriptedTransport(rpcUrl, async (method, params, forward) => {
      const call = params[0] as { data?: string } | string
      if (method === 'eth_call' && typeof call === 'object' && call.data?.startsWith('0x70a08231')) return `0x${(10n ** 12n).toString(16).padStart(64, '0')}`
      if (method === 'eth_call') return '0x'
      if (method === 'eth_sendRawTransactionSync') throw new Error('connection reset')
      return forward()
    })
    const s = setup({}, { rpcUrl: undefined, transport, now: () => clock })
    const key = generatePrivateKey()
    const pay = (privateKey: Hex = key) =>
      payWith(s, craft(privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78', validBefore: Math.floor(clock / 1000) + 25 }))
    const first = await pay()
    expect(await s.m.settle(first).catch((e: unknown) => e)).toBeInstanceOf(SettlementUnknownError)
    // It may still land: the sender's next sponsored payment waits for it.
    const waiting = await refusal(pay())
    expect(waiting.kind).toBe('payment-in-progress')
    expect(waiting.retryAfter).toBe(1)
    // Past its validBefore and the grace for clock skew, it counts as its worst-case fee (32 000)
    // lost: with the default bound (maxTotalFee, 50 000), another one no longer fits the window.
    clock += 25_000 + 15_000 + 1_000
    const error = await refusal(pay())
    expect(error.kind).toBe('verification-failed')
    expect(error.detail).toMatch(
      /already paid 32000 fee-token base units for this payer's failed transactions in the last 3600 s and sponsors at most 50000 per payer/,
    )
    expect(error.retryAfter).toBeGreaterThan(3_500)
    // Other payers are served.
    expect((await pay(generatePrivateKey())).status).toBe('ready')
  })

  test('T3: a sponsor whose fee-token balance is too low refuses (503); the balance is re-read at most every 30 s, and a cached refusal costs no call', async () => {
    const poorSponsor = await fundedAccount(rpcUrl, { funder, amount: '0.001', tokens: [alphaUsd] })
    let clock = Date.now()
    const s = setup({ account: poorSponsor }, { now: () => clock })
    const raw = () =>
      craft(payer.privateKey, {
        calls: [transferCall(pathUsd, s.recipient, 10_000n)],
        sponsor: 'envelope78',
        validBefore: Math.floor(clock / 1000) + 25,
      })
    proxy.reset()
    const error = await refusal(payWith(s, raw()))
    expect(error.kind).toBe('payment-unavailable')
    expect(error.detail).toMatch(/balance is too low to sponsor this payment/)
    expect(error.detail).not.toMatch(/0x[0-9a-f]{64}/i)
    expect(proxy.counts.get('eth_call')).toBe(2)
    // Topped up, but the cached balance still says no until it expires.
    const { fund } = await import('../../scripts/local-chain.js')
    await fund(rpcUrl, poorSponsor.address, { funder, amount: '5', tokens: [alphaUsd] })
    proxy.reset()
    await refusal(payWith(s, raw()))
    expect(proxy.total()).toBe(0)
    clock += 30_001
    expect((await payWith(s, raw())).status).toBe('ready')
  })

  test('T3: a transaction that would revert is refused by the simulation; the sponsor pays nothing', async () => {
    const s = setup()
    const broke = await fundedAccount(rpcUrl, { funder, amount: '0.001', tokens: [pathUsd] })
    const sponsorBefore = await balanceOf(rpcUrl, sponsor.address, alphaUsd)
    proxy.reset()
    const error = await refusal(payWith(s, craft(broke.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' })))
    expect(error.kind).toBe('verification-failed')
    expect(error.detail).toMatch(/would fail, so the fee sponsor will not send it/)
    expect(proxy.counts.get('eth_sendRawTransactionSync')).toBeUndefined()
    expect(await balanceOf(rpcUrl, sponsor.address, alphaUsd)).toBe(sponsorBefore)
  })

  test('T2 T3: a forged sender in the 0x78 hand-off is refused before any RPC call', async () => {
    const s = setup()
    proxy.reset()
    const raw = craft(generatePrivateKey(), { calls: [transferCall(pathUsd, s.recipient, 10_000n)], claimedSender: payer.address })
    const error = await refusal(payWith(s, raw))
    expect(error.detail).toMatch(/names sender .* but the signature is from/)
    expect(proxy.total()).toBe(0)
  })

  test('a self-paid transaction on a sponsored route is accepted as is (no simulation, no co-signature)', async () => {
    const s = setup()
    const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
    proxy.reset()
    const verified = await payWith(s, raw)
    expect(proxy.total()).toBe(0)
    expect(verified.reference).toBe(keccak256(raw))
    await s.m.settle(verified)
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
  })

  test('T4: a dropped sponsored broadcast is recovered on another instance, charged once', async () => {
    const s = setup()
    const credential = await mppxCredential(rpcUrl, payer, s.challenge, 'pull')
    const verified = await s.m.verify({ credential, request: s.request, expires: s.expires, settle: 'before' })
    proxy.inject({ method: 'eth_sendRawTransactionSync', action: 'drop' })
    expect(await s.m.settle(verified).catch((e: unknown) => e)).toBeInstanceOf(SettlementUnknownError)
    const other = setup()
    const settled = await other.m.recover(JSON.parse(JSON.stringify(verified)) as Verified)
    expect(settled.reference).toBe(verified.reference)
    expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
  })

  test('the recipient address in the sponsored request is the configured one', () => {
    const s = setup()
    expect(s.request.recipient).toBe(s.recipient as Address)
  })
})
