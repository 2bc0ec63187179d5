/**
 * What the session intent asks of the chain, all off the hot path: reading a channel from the
 * escrow (at open, top-up and `sync`), broadcasting the client's signed open and top-up
 * transactions, and signing and sending the payee's own `settle` / `close` transactions.
 *
 * The payee's transactions use Tempo's expiring nonces (`nonceKey` = 2^256−1, `validBefore`
 * a few seconds ahead): once `validBefore` has passed, a transaction that did not land never
 * can, which is what lets a settlement whose outcome was unknown be signed again without
 * risking a second one (see settle.ts).
 */
import { SignatureEnvelope, TxEnvelopeTempo } from 'ox/tempo'
import {
  type Address,
  decodeFunctionResult,
  encodeEventTopics,
  encodeFunctionData,
  getAddress,
  type Hex,
  keccak256,
  type LocalAccount,
  maxUint256,
  pad,
} from 'viem'
import { type Receipt, readReceipt } from '../receipt.js'
import { type Rpc, RpcAnswerError } from '../rpc.js'
import { escrowAbi } from './escrow-artifact.js'

/** A channel as the escrow holds it. */
export type OnChainChannel = {
  finalized: boolean
  /** Unix seconds; 0 when no forced close was requested. */
  closeRequestedAt: bigint
  payer: Address
  payee: Address
  token: Address
  authorizedSigner: Address
  deposit: bigint
  settled: bigint
}

export const zeroAddress: Address = '0x0000000000000000000000000000000000000000'

/** `getChannel(channelId)`; a channel that was never opened reads with a zero payer. */
export async function readChannel(rpc: Rpc, escrow: Address, channelId: Hex): Promise<OnChainChannel> {
  const data = encodeFunctionData({ abi: escrowAbi, functionName: 'getChannel', args: [channelId] })
  const result = await rpc.request<Hex>('eth_call', [{ to: escrow, data }, 'latest'])
  const channel = decodeFunctionResult({ abi: escrowAbi, functionName: 'getChannel', data: result }) as unknown as OnChainChannel
  return {
    finalized: channel.finalized,
    closeRequestedAt: BigInt(channel.closeRequestedAt),
    payer: getAddress(channel.payer),
    payee: getAddress(channel.payee),
    token: getAddress(channel.token),
    authorizedSigner: getAddress(channel.authorizedSigner),
    deposit: BigInt(channel.deposit),
    settled: BigInt(channel.settled),
  }
}

/** Node messages that mean "this exact transaction was sent before". */
export const alreadySent =
  /already known|already imported|known transaction|already exists|already in (the )?pool|nonce too low|replay|already (been )?used|duplicate/i

export type Broadcast =
  /** Landed (success or reverted): the receipt. */
  | { kind: 'landed'; receipt: Receipt }
  /** The node refused it: it never landed. */
  | { kind: 'refused'; reason: string }
  /** The node has it already (an earlier send); its receipt may be looked up. */
  | { kind: 'known' }

/**
 * Sends a signed transaction and waits for its receipt (`eth_sendRawTransactionSync`). Throws
 * the RPC's transport error when the outcome is not known.
 */
export async function broadcast(rpc: Rpc, raw: Hex): Promise<Broadcast> {
  try {
    return { kind: 'landed', receipt: readReceipt(await rpc.request('eth_sendRawTransactionSync', [raw])) }
  } catch (error) {
    if (error instanceof RpcAnswerError) {
      if (alreadySent.test(error.reason)) return { kind: 'known' }
      if (error.code !== 4 && !/timeout|timed out|not (yet )?(mined|included)/i.test(error.reason)) return { kind: 'refused', reason: error.reason }
    }
    throw error
  }
}

/** The receipt of `hash`, or undefined while the node knows none. */
export async function receiptOf(rpc: Rpc, hash: Hex): Promise<Receipt | undefined> {
  const raw = await rpc.request('eth_getTransactionReceipt', [hash])
  return raw === null || raw === undefined ? undefined : readReceipt(raw)
}

export const hashOf = (raw: Hex): Hex => keccak256(raw)

export type PayeeCall = { functionName: 'settle' | 'close'; channelId: Hex; cumulativeAmount: bigint; signature: Hex }

export type PayeeSigner = {
  account: LocalAccount
  chainId: number
  escrow: Address
  feeToken: Address
  gas: bigint
}

/**
 * Signs the payee's `settle` or `close` call as a Tempo transaction with an expiring nonce,
 * valid until `validBefore` (unix seconds). The fee cap is twice the node's gas price.
 */
export async function signPayeeCall(rpc: Rpc, signer: PayeeSigner, call: PayeeCall, validBefore: number): Promise<Hex> {
  if (!signer.account.sign) throw new Error('tempoSession: `account` must be able to sign hashes (a local account such as privateKeyToAccount(...))')
  const gasPrice = BigInt(await rpc.request<Hex>('eth_gasPrice', []))
  const data = encodeFunctionData({ abi: escrowAbi, functionName: call.functionName, args: [call.channelId, call.cumulativeAmount, call.signature] })
  const envelope = TxEnvelopeTempo.from({
    chainId: signer.chainId,
    calls: [{ to: signer.escrow, data }],
    gas: signer.gas,
    maxFeePerGas: gasPrice * 2n + 1_000_000_000n,
    maxPriorityFeePerGas: 1_000_000_000n,
    nonceKey: maxUint256,
    nonce: 0n,
    validBefore,
    feeToken: signer.feeToken,
  } as unknown as TxEnvelopeTempo.TxEnvelopeTempo)
  const signature = await signer.account.sign({ hash: TxEnvelopeTempo.getSignPayload(envelope) })
  return TxEnvelopeTempo.serialize(envelope, { signature: SignatureEnvelope.from(parseSignature(signature)) }) as Hex
}

function parseSignature(signature: Hex) {
  const r = BigInt(`0x${signature.slice(2, 66)}`)
  const s = BigInt(`0x${signature.slice(66, 130)}`)
  const v = Number.parseInt(signature.slice(130, 132), 16)
  return { r, s, yParity: v >= 27 ? v - 27 : v }
}

/**
 * The channels of `payee` whose payer asked for a forced close (`CloseRequested` logs of the
 * escrow) in blocks `fromBlock` through the head, and the block to read from next time. Two
 * calls: the head, then the logs up to it (so nothing between two looks is missed or read twice).
 */
export async function closeRequests(
  rpc: Rpc,
  escrow: Address,
  payee: Address,
  fromBlock: bigint | 'lookback',
  lookback: bigint,
): Promise<{ channels: Hex[]; nextBlock: bigint }> {
  const head = BigInt(await rpc.request<string>('eth_blockNumber', []))
  const from = fromBlock === 'lookback' ? (head > lookback ? head - lookback : 0n) : fromBlock
  if (from > head) return { channels: [], nextBlock: from }
  const [topic] = encodeEventTopics({ abi: escrowAbi, eventName: 'CloseRequested' })
  const logs = await rpc.request<{ topics: Hex[]; removed?: boolean }[]>('eth_getLogs', [
    {
      address: escrow,
      fromBlock: `0x${from.toString(16)}`,
      toBlock: `0x${head.toString(16)}`,
      topics: [topic, null, null, pad(payee.toLowerCase() as Hex, { size: 32 })],
    },
  ])
  if (!Array.isArray(logs)) throw new Error('eth_getLogs answered something other than a list')
  const channels = new Set<Hex>()
  for (const log of logs) {
    const id = log?.topics?.[1]
    if (!log.removed && typeof id === 'string' && /^0x[0-9a-fA-F]{64}$/.test(id)) channels.add(id.toLowerCase() as Hex)
  }
  return { channels: [...channels], nextBlock: head + 1n }
}
