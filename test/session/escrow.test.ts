/**
 * Our session escrow contract (contracts/TempoSessionEscrow.sol) on the real local chain: the
 * contract-backed channel of draft-tempo-session-00 with pathUSD. Rejections are read by
 * simulating the call and naming the contract's custom error; successes are sent as Tempo
 * transactions and checked through balances, channel state and events.
 *
 * The forced-close test moves the chain's clock by more than the 15-minute grace period, which
 * would break every other test's transaction validity window, so it runs on a chain of its own.
 */
import { SessionLegacy } from 'mppx/tempo'
import {
  type Address,
  encodeAbiParameters,
  type Hex,
  hashTypedData,
  keccak256,
  type Log,
  numberToHex,
  parseEventLogs,
  parseSignature,
  serializeCompactSignature,
  serializeSignature,
  signatureToCompactSignature,
  toHex,
} from 'viem'
import { readContract } from 'viem/actions'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { balanceOf, fundedAccount, type LocalChain, localChainId, startLocalChain } from '../../scripts/local-chain.js'
import {
  approveCall,
  client,
  deployEscrow,
  escrowAbi,
  escrowCall,
  getChannel,
  keyOnly,
  openCalls,
  revertOf,
  send,
  signVoucher,
  token,
  voucherDomain,
  voucherTypes,
} from './support.js'

const zero = '0x0000000000000000000000000000000000000000' as Address
const secp256k1n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n
const salt = () => toHex(crypto.getRandomValues(new Uint8Array(32)))
const events = (logs: Log[], eventName: string) =>
  parseEventLogs({ abi: escrowAbi, logs })
    .filter((e) => e.eventName === eventName)
    .map((e) => e.args as Record<string, unknown>)

type Payer = Awaited<ReturnType<typeof fundedAccount>>

/** Opens a channel from `payer` to `payee` as the reference client does; returns its id. */
async function open(rpcUrl: string, escrow: Address, payer: Payer, payee: Address, deposit: bigint, authorizedSigner: Address = zero) {
  const s = salt()
  const channelId = (await readContract(client(rpcUrl), {
    address: escrow,
    abi: escrowAbi,
    functionName: 'computeChannelId',
    args: [payer.address, payee, token, s, authorizedSigner],
  })) as Hex
  const receipt = await send(rpcUrl, payer, openCalls(escrow, payee, deposit, s, authorizedSigner))
  return { channelId, salt: s, receipt }
}

describe('session escrow on the shared local chain', () => {
  const rpcUrl = inject('rpcUrl')
  let escrow: Address
  let payer: Payer
  let payee: Payer

  beforeAll(async () => {
    escrow = await deployEscrow(rpcUrl, { funder: 4 })
    payer = await fundedAccount(rpcUrl, { funder: 4 })
    payee = await fundedAccount(rpcUrl, { funder: 4 })
  })

  test('S1: the channel id is keccak256(abi.encode(payer, payee, token, salt, authorizedSigner, escrow, chainId)), as the contract and the reference client compute it', async () => {
    const s = salt()
    const signer = keyOnly().address
    const expected = keccak256(
      encodeAbiParameters(
        [{ type: 'address' }, { type: 'address' }, { type: 'address' }, { type: 'bytes32' }, { type: 'address' }, { type: 'address' }, { type: 'uint256' }],
        [payer.address, payee.address, token, s, signer, escrow, BigInt(localChainId)],
      ),
    )
    const onChain = await readContract(client(rpcUrl), {
      address: escrow,
      abi: escrowAbi,
      functionName: 'computeChannelId',
      args: [payer.address, payee.address, token, s, signer],
    })
    expect(onChain).toBe(expected)
    const reference = SessionLegacy.Session.Channel.computeId({
      payer: payer.address,
      payee: payee.address,
      token,
      salt: s,
      authorizedSigner: signer,
      escrowContract: escrow,
      chainId: localChainId,
    })
    expect(reference).toBe(expected)
  })

  test('S2: open pulls the deposit from the caller, who becomes the payer, stores the channel and emits ChannelOpened; the same id cannot be opened twice', async () => {
    const before = await balanceOf(rpcUrl, payer.address)
    const { channelId, salt: s, receipt } = await open(rpcUrl, escrow, payer, payee.address, 3_000_000n)
    expect(await balanceOf(rpcUrl, payer.address)).toBe(before - 3_000_000n)
    expect(await getChannel(rpcUrl, escrow, channelId)).toEqual({
      finalized: false,
      closeRequestedAt: 0n,
      payer: payer.address,
      payee: payee.address,
      token,
      authorizedSigner: zero,
      deposit: 3_000_000n,
      settled: 0n,
    })
    expect(events(receipt.logs, 'ChannelOpened')).toEqual([
      { channelId, payer: payer.address, payee: payee.address, token, authorizedSigner: zero, salt: s, deposit: 3_000_000n },
    ])
    expect(await revertOf(rpcUrl, payer.address, escrow, 'open', [payee.address, token, 1n, s, zero])).toBe('ChannelAlreadyExists')
    expect(await revertOf(rpcUrl, payer.address, escrow, 'open', [zero, token, 1n, salt(), zero])).toBe('InvalidPayee')
    // Without an approval the pull fails and nothing is opened.
    expect(await revertOf(rpcUrl, keyOnly().address, escrow, 'open', [payee.address, token, 1n, salt(), zero])).toBe('TransferFailed')
  })

  test('S3: vouchers are EIP-712 over domain {"Tempo Stream Channel", "1", chainId, escrow} and Voucher(bytes32 channelId,uint128 cumulativeAmount); the reference client signs the same bytes and its voucher settles', async () => {
    const channelId = salt()
    const domain = voucherDomain(escrow)
    const read = (functionName: string, args: readonly unknown[] = []) =>
      readContract(client(rpcUrl), { address: escrow, abi: escrowAbi, functionName, args } as never) as Promise<unknown>
    expect(await read('VOUCHER_TYPEHASH')).toBe(keccak256(toHex('Voucher(bytes32 channelId,uint128 cumulativeAmount)')))
    expect(await read('getVoucherDigest', [channelId, 1234n])).toBe(
      hashTypedData({ domain, types: voucherTypes, primaryType: 'Voucher', message: { channelId, cumulativeAmount: 1234n } }),
    )
    const [fields, name, version, chainId, verifyingContract] = (await read('eip712Domain')) as [Hex, string, string, bigint, Address]
    expect({ fields, name, version, chainId, verifyingContract }).toEqual({
      fields: '0x0f',
      name: 'Tempo Stream Channel',
      version: '1',
      chainId: BigInt(localChainId),
      verifyingContract: escrow,
    })

    // The reference client's voucher: identical bytes (RFC 6979), 65 bytes with v 27/28, redeemable on chain.
    const opened = await open(rpcUrl, escrow, payer, payee.address, 1_000_000n)
    const ours = await signVoucher(payer, escrow, opened.channelId, 250_000n)
    const reference = await SessionLegacy.Session.Voucher.signVoucher(
      client(rpcUrl, payer) as never,
      payer,
      { channelId: opened.channelId, cumulativeAmount: 250_000n },
      escrow,
      localChainId,
    )
    expect(reference).toBe(ours)
    expect((reference.length - 2) / 2).toBe(65)
    expect([27, 28]).toContain(Number.parseInt(reference.slice(-2), 16))
    const before = await balanceOf(rpcUrl, payee.address)
    await send(rpcUrl, payee, [escrowCall(escrow, 'settle', [opened.channelId, 250_000n, reference])])
    expect(await balanceOf(rpcUrl, payee.address)).toBe(before + 250_000n)
  })

  test('S4: settle by the payee pays exactly cumulativeAmount minus settled; an equal or lower voucher, one above the deposit, or a caller other than the payee reverts', async () => {
    const { channelId } = await open(rpcUrl, escrow, payer, payee.address, 1_000_000n)
    const v300 = await signVoucher(payer, escrow, channelId, 300_000n)
    const v700 = await signVoucher(payer, escrow, channelId, 700_000n)

    expect(await revertOf(rpcUrl, payer.address, escrow, 'settle', [channelId, 300_000n, v300])).toBe('NotPayee')
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    const first = await send(rpcUrl, payee, [escrowCall(escrow, 'settle', [channelId, 300_000n, v300])])
    expect(await balanceOf(rpcUrl, payee.address)).toBe(payeeBefore + 300_000n)
    expect(events(first.logs, 'Settled')).toEqual([
      { channelId, payer: payer.address, payee: payee.address, cumulativeAmount: 300_000n, deltaPaid: 300_000n, newSettled: 300_000n },
    ])

    // Cumulative, not delta: the 700k voucher pays 400k more.
    await send(rpcUrl, payee, [escrowCall(escrow, 'settle', [channelId, 700_000n, v700])])
    expect(await balanceOf(rpcUrl, payee.address)).toBe(payeeBefore + 700_000n)
    expect((await getChannel(rpcUrl, escrow, channelId)).settled).toBe(700_000n)

    // Replays of settled vouchers, and a voucher beyond the deposit, move nothing.
    expect(await revertOf(rpcUrl, payee.address, escrow, 'settle', [channelId, 700_000n, v700])).toBe('AmountNotIncreasing')
    expect(await revertOf(rpcUrl, payee.address, escrow, 'settle', [channelId, 300_000n, v300])).toBe('AmountNotIncreasing')
    const over = await signVoucher(payer, escrow, channelId, 1_000_001n)
    expect(await revertOf(rpcUrl, payee.address, escrow, 'settle', [channelId, 1_000_001n, over])).toBe('AmountExceedsDeposit')
    expect(await revertOf(rpcUrl, payee.address, escrow, 'settle', [salt(), 1n, v300])).toBe('ChannelNotFound')
  })

  test('S5: a voucher must recover to the channel signer with a low s: another key, a high-s twin, another escrow or chain, or a wrong amount revert; the compact 64-byte form is accepted', async () => {
    const { channelId } = await open(rpcUrl, escrow, payer, payee.address, 1_000_000n)
    const amount = 100_000n
    const stranger = keyOnly()
    const revert = (signature: Hex, cumulativeAmount = amount) => revertOf(rpcUrl, payee.address, escrow, 'settle', [channelId, cumulativeAmount, signature])

    expect(await revert(await signVoucher(stranger, escrow, channelId, amount))).toBe('InvalidSignature')
    expect(await revert(await signVoucher(payer, keyOnly().address, channelId, amount))).toBe('InvalidSignature')
    expect(await revert(await signVoucher(payer, escrow, channelId, amount, 4217))).toBe('InvalidSignature')
    const good = await signVoucher(payer, escrow, channelId, amount)
    expect(await revert(good, amount + 1n)).toBe('InvalidSignature')

    // The malleable twin (r, n - s, flipped v) recovers the same key; the contract must refuse it.
    const { r, s, yParity } = parseSignature(good)
    const highS = serializeSignature({ r, s: numberToHex(secp256k1n - BigInt(s), { size: 32 }), yParity: yParity === 0 ? 1 : 0 })
    expect(await revert(highS)).toBe('InvalidSignature')
    expect(await revert(`${good.slice(0, 130)}00` as Hex)).toBe('InvalidSignature')
    expect(await revert(`${good}00` as Hex)).toBe('InvalidSignature')

    const compact = serializeCompactSignature(signatureToCompactSignature(parseSignature(good)))
    expect((compact.length - 2) / 2).toBe(64)
    const before = await balanceOf(rpcUrl, payee.address)
    await send(rpcUrl, payee, [escrowCall(escrow, 'settle', [channelId, amount, compact])])
    expect(await balanceOf(rpcUrl, payee.address)).toBe(before + amount)
  })

  test('S5: with an authorised signer, its vouchers settle and the payer’s own signature does not', async () => {
    const hot = keyOnly()
    const { channelId } = await open(rpcUrl, escrow, payer, payee.address, 1_000_000n, hot.address)
    expect((await getChannel(rpcUrl, escrow, channelId)).authorizedSigner).toBe(hot.address)
    const byPayer = await signVoucher(payer, escrow, channelId, 200_000n)
    expect(await revertOf(rpcUrl, payee.address, escrow, 'settle', [channelId, 200_000n, byPayer])).toBe('InvalidSignature')
    const before = await balanceOf(rpcUrl, payee.address)
    await send(rpcUrl, payee, [escrowCall(escrow, 'settle', [channelId, 200_000n, await signVoucher(hot, escrow, channelId, 200_000n)])])
    expect(await balanceOf(rpcUrl, payee.address)).toBe(before + 200_000n)
  })

  test('S6: topUp by the payer adds to the deposit and emits TopUp; anyone else reverts; the new deposit backs a larger voucher', async () => {
    const { channelId } = await open(rpcUrl, escrow, payer, payee.address, 500_000n)
    expect(await revertOf(rpcUrl, payee.address, escrow, 'topUp', [channelId, 1n])).toBe('NotPayer')
    const before = await balanceOf(rpcUrl, payer.address)
    const receipt = await send(rpcUrl, payer, [approveCall(escrow, 250_000n), escrowCall(escrow, 'topUp', [channelId, 250_000n])])
    expect(await balanceOf(rpcUrl, payer.address)).toBe(before - 250_000n)
    expect(events(receipt.logs, 'TopUp')).toEqual([
      { channelId, payer: payer.address, payee: payee.address, additionalDeposit: 250_000n, newDeposit: 750_000n },
    ])
    expect((await getChannel(rpcUrl, escrow, channelId)).deposit).toBe(750_000n)
    await send(rpcUrl, payee, [escrowCall(escrow, 'settle', [channelId, 750_000n, await signVoucher(payer, escrow, channelId, 750_000n)])])
    expect((await getChannel(rpcUrl, escrow, channelId)).settled).toBe(750_000n)
  })

  test('S7: cooperative close by the payee pays the final voucher minus settled, refunds the rest to the payer and finalizes; nothing works on the channel afterwards', async () => {
    const { channelId, salt: s } = await open(rpcUrl, escrow, payer, payee.address, 1_000_000n)
    await send(rpcUrl, payee, [escrowCall(escrow, 'settle', [channelId, 100_000n, await signVoucher(payer, escrow, channelId, 100_000n)])])
    const final = await signVoucher(payer, escrow, channelId, 400_000n)
    expect(await revertOf(rpcUrl, payer.address, escrow, 'close', [channelId, 400_000n, final])).toBe('NotPayee')
    expect(await revertOf(rpcUrl, payee.address, escrow, 'close', [channelId, 400_000n, await signVoucher(keyOnly(), escrow, channelId, 400_000n)])).toBe(
      'InvalidSignature',
    )

    const payerBefore = await balanceOf(rpcUrl, payer.address)
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    const receipt = await send(rpcUrl, payee, [escrowCall(escrow, 'close', [channelId, 400_000n, final])])
    expect(await balanceOf(rpcUrl, payee.address)).toBe(payeeBefore + 300_000n)
    expect(await balanceOf(rpcUrl, payer.address)).toBe(payerBefore + 600_000n)
    expect(events(receipt.logs, 'ChannelClosed')).toEqual([
      { channelId, payer: payer.address, payee: payee.address, settledToPayee: 400_000n, refundedToPayer: 600_000n },
    ])
    expect(await getChannel(rpcUrl, escrow, channelId)).toMatchObject({ finalized: true, deposit: 1_000_000n, settled: 400_000n })

    const higher = await signVoucher(payer, escrow, channelId, 900_000n)
    expect(await revertOf(rpcUrl, payee.address, escrow, 'settle', [channelId, 900_000n, higher])).toBe('ChannelFinalized')
    expect(await revertOf(rpcUrl, payee.address, escrow, 'close', [channelId, 900_000n, higher])).toBe('ChannelFinalized')
    expect(await revertOf(rpcUrl, payer.address, escrow, 'topUp', [channelId, 1n])).toBe('ChannelFinalized')
    expect(await revertOf(rpcUrl, payer.address, escrow, 'requestClose', [channelId])).toBe('ChannelFinalized')
    expect(await revertOf(rpcUrl, payer.address, escrow, 'withdraw', [channelId])).toBe('ChannelFinalized')
    // Reopening the same id would make its old vouchers redeemable again.
    expect(await revertOf(rpcUrl, payer.address, escrow, 'open', [payee.address, token, 1n, s, zero])).toBe('ChannelAlreadyExists')
  })

  test('S7: a close at or below what was settled needs no signature and refunds the whole unsettled deposit', async () => {
    const { channelId } = await open(rpcUrl, escrow, payer, payee.address, 800_000n)
    await send(rpcUrl, payee, [escrowCall(escrow, 'settle', [channelId, 200_000n, await signVoucher(payer, escrow, channelId, 200_000n)])])
    const payerBefore = await balanceOf(rpcUrl, payer.address)
    const payeeBefore = await balanceOf(rpcUrl, payee.address)
    await send(rpcUrl, payee, [escrowCall(escrow, 'close', [channelId, 200_000n, '0x'])])
    expect(await balanceOf(rpcUrl, payer.address)).toBe(payerBefore + 600_000n)
    expect(await balanceOf(rpcUrl, payee.address)).toBe(payeeBefore)
  })
})

describe('session escrow forced close (a chain of its own, whose clock the test moves)', () => {
  let chain: LocalChain
  let escrow: Address
  let payer: Payer
  let payee: Payer

  beforeAll(async () => {
    chain = await startLocalChain()
    escrow = await deployEscrow(chain.rpcUrl, { funder: 0 })
    payer = await fundedAccount(chain.rpcUrl, { funder: 1 })
    payee = await fundedAccount(chain.rpcUrl, { funder: 2 })
  })
  afterAll(async () => {
    await chain?.stop()
  })

  const rpc = (method: string, params: unknown[] = []) => client(chain.rpcUrl).request({ method, params } as never)
  const latest = async () => BigInt(((await rpc('eth_getBlockByNumber', ['latest', false])) as { timestamp: Hex }).timestamp)

  test('S8: requestClose by the payer starts a 15-minute grace period in which the payee can still settle; withdraw refunds the rest only after it; topUp cancels a request', async () => {
    const url = chain.rpcUrl
    expect(await readContract(client(url), { address: escrow, abi: escrowAbi, functionName: 'CLOSE_GRACE_PERIOD' })).toBe(900n)
    const { channelId } = await open(url, escrow, payer, payee.address, 1_000_000n)
    expect(await revertOf(url, payee.address, escrow, 'requestClose', [channelId])).toBe('NotPayer')
    expect(await revertOf(url, payer.address, escrow, 'withdraw', [channelId])).toBe('CloseNotReady')

    // A top-up cancels a pending request.
    await send(url, payer, [escrowCall(escrow, 'requestClose', [channelId])])
    const cancelled = await send(url, payer, [approveCall(escrow, 1n), escrowCall(escrow, 'topUp', [channelId, 1n])])
    expect(events(cancelled.logs, 'CloseRequestCancelled')).toEqual([{ channelId, payer: payer.address, payee: payee.address }])
    expect((await getChannel(url, escrow, channelId)).closeRequestedAt).toBe(0n)

    const requested = await send(url, payer, [escrowCall(escrow, 'requestClose', [channelId])])
    const requestedAt = (await getChannel(url, escrow, channelId)).closeRequestedAt
    expect(requestedAt).toBeGreaterThan(0n)
    expect(events(requested.logs, 'CloseRequested')).toEqual([{ channelId, payer: payer.address, payee: payee.address, closeGraceEnd: requestedAt + 900n }])

    // Within the grace period: the payee settles, the payer cannot withdraw (not even one second early).
    await send(url, payee, [escrowCall(escrow, 'settle', [channelId, 300_000n, await signVoucher(payer, escrow, channelId, 300_000n)])])
    await rpc('evm_setNextBlockTimestamp', [Number(requestedAt + 899n)])
    await rpc('evm_mine')
    expect(await latest()).toBe(requestedAt + 899n)
    expect(await revertOf(url, payer.address, escrow, 'withdraw', [channelId])).toBe('CloseNotReady')

    await rpc('evm_increaseTime', [60])
    await rpc('evm_mine')
    expect(await revertOf(url, payee.address, escrow, 'withdraw', [channelId])).toBe('NotPayer')
    const before = await balanceOf(url, payer.address)
    const withdrawn = await send(url, payer, [escrowCall(escrow, 'withdraw', [channelId])])
    expect(await balanceOf(url, payer.address)).toBe(before + 700_001n)
    expect(events(withdrawn.logs, 'ChannelClosed')).toEqual([
      { channelId, payer: payer.address, payee: payee.address, settledToPayee: 300_000n, refundedToPayer: 700_001n },
    ])
    expect((await getChannel(url, escrow, channelId)).finalized).toBe(true)
  })
})
