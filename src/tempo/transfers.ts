/**
 * Transfers: what a transaction's calls or a receipt's logs move, and whether that is exactly
 * what the route charges. Both sides reduce to "effects" (token, from, to, amount, memo) matched
 * one-to-one against the expected transfers, in any order (a bipartite matching, so an
 * ambiguous order can never make a valid payment fail or an invalid one pass).
 */
import { type Address, decodeFunctionData, encodeFunctionData, type Hex, isAddressEqual } from 'viem'
import { PaymentError } from '../protocol/problem.js'
import { tip20 } from './abi.js'
import type { ExpectedTransfer } from './request.js'

export type TransferEffect = {
  token: Address
  from?: Address
  to: Address
  amount: bigint
  memo?: Hex
  /** Where it came from, for refusal details: `call 0`, `log 3`. */
  origin: string
}

export type Call = { to?: Address | string; value?: bigint; data?: Hex }

// TIP-20 selectors and event topics (keccak256 of the signatures in abi.ts).
const transferSelector = '0xa9059cbb' // transfer(address,uint256)
const transferWithMemoSelector = '0x95777d59' // transferWithMemo(address,uint256,bytes32)
const transferTopic = '0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef' // Transfer(address,address,uint256)
const transferWithMemoTopic = '0x57bc7354aa85aed339e000bccffabbc529466af35f0772c8f8ee1145927de7f0' // TransferWithMemo(address,address,uint256,bytes32)
const lowerHex = /^0x[0-9a-f]*$/
const addressPadding = '0'.repeat(24)

/**
 * A transfer call in its one canonical encoding, read straight from the hex (the common case,
 * without an ABI decode and re-encode); anything else is left to the full decoder below.
 */
function canonicalTransferCall(data: Hex): { to: Address; amount: bigint; memo?: Hex } | undefined {
  const hex = data.toLowerCase()
  const words = hex.startsWith(transferSelector) ? 2 : hex.startsWith(transferWithMemoSelector) ? 3 : 0
  if (words === 0 || hex.length !== 10 + 64 * words || !lowerHex.test(hex) || !hex.startsWith(addressPadding, 10)) return undefined
  const amount = BigInt(`0x${hex.slice(74, 138)}`)
  return { to: `0x${hex.slice(34, 74)}` as Address, amount, ...(words === 3 && { memo: `0x${hex.slice(138)}` as Hex }) }
}

/** An address topic: 12 zero bytes, then the address. */
function topicAddress(topic: unknown): Address | undefined {
  return typeof topic === 'string' && topic.length === 66 && topic.startsWith(addressPadding, 2) ? (`0x${topic.slice(26)}`.toLowerCase() as Address) : undefined
}

/**
 * Decodes a transaction's calls. Every call must be a canonical `transfer`/`transferWithMemo` on
 * `currency`, without value: nothing else may run before, between or after the payment.
 */
export function transfersFromCalls(calls: readonly Call[], currency: Address): TransferEffect[] {
  return calls.map((call, index) => {
    const where = `call ${index}`
    if (!call.to || !isAddressEqual(call.to as Address, currency))
      throw new PaymentError(
        'verification-failed',
        `${where} targets ${call.to ?? 'nothing'}, not the currency ${currency}; a payment transaction may only contain transfers of the currency`,
      )
    if (call.value !== undefined && call.value !== 0n) throw new PaymentError('verification-failed', `${where} carries a value; payment calls must not`)
    const data = call.data ?? '0x'
    const transfer = canonicalTransferCall(data)
    if (transfer) return { token: currency, ...transfer, origin: where }
    let decoded: ReturnType<typeof decodeFunctionData<typeof tip20>>
    try {
      decoded = decodeFunctionData({ abi: tip20, data })
    } catch {
      throw new PaymentError('verification-failed', `${where} is not a TIP-20 call (selector ${data.slice(0, 10)})`)
    }
    if (decoded.functionName !== 'transfer' && decoded.functionName !== 'transferWithMemo')
      throw new PaymentError(
        'verification-failed',
        `${where} calls ${decoded.functionName}; a payment transaction may only contain transfer/transferWithMemo calls`,
      )
    // Trailing or padded calldata decodes to the same arguments: insist on the canonical bytes.
    const canonical = encodeFunctionData({ abi: tip20, functionName: decoded.functionName, args: decoded.args } as never)
    if (canonical.toLowerCase() !== data.toLowerCase()) throw new PaymentError('verification-failed', `${where} calldata is not canonically encoded`)
    const [to, amount, memo] = decoded.args as readonly [Address, bigint, Hex?]
    return { token: currency, to, amount, ...(memo !== undefined && { memo }), origin: where }
  })
}

type RpcLog = { address?: unknown; topics?: unknown; data?: unknown; logIndex?: unknown }

/**
 * The transfers a receipt's logs record, emitted BY `currency` (a look-alike contract's logs
 * are ignored). A `transferWithMemo` emits a Transfer and then a TransferWithMemo with the same
 * parties and amount: the pair is one transfer, carrying the memo.
 */
export function transfersFromLogs(logs: readonly RpcLog[], currency: Address): TransferEffect[] {
  type Parsed = { kind: 'transfer' | 'memo'; from: Address; to: Address; amount: bigint; memo?: Hex; index: number }
  const parsed: Parsed[] = []
  logs.forEach((log, position) => {
    if (typeof log.address !== 'string' || !isAddressEqual(log.address as Address, currency)) return
    // Exactly the shapes the token emits; anything else (Approval, malformed) is not a transfer.
    const topics = Array.isArray(log.topics) ? (log.topics as unknown[]) : []
    const data = typeof log.data === 'string' ? log.data : ''
    const topic = typeof topics[0] === 'string' ? topics[0].toLowerCase() : ''
    const memo = topic === transferWithMemoTopic
    if ((topic !== transferTopic && !memo) || topics.length !== (memo ? 4 : 3) || data.length !== 66 || !lowerHex.test(data.toLowerCase())) return
    const from = topicAddress(topics[1])
    const to = topicAddress(topics[2])
    if (!from || !to) return
    if (memo && !(typeof topics[3] === 'string' && topics[3].length === 66 && lowerHex.test(topics[3].toLowerCase()))) return
    const index = typeof log.logIndex === 'string' && /^0x[0-9a-fA-F]+$/.test(log.logIndex) ? Number(BigInt(log.logIndex)) : position
    const amount = BigInt(data)
    parsed.push(
      memo ? { kind: 'memo', from, to, amount, memo: (topics[3] as string).toLowerCase() as Hex, index } : { kind: 'transfer', from, to, amount, index },
    )
  })
  parsed.sort((a, b) => a.index - b.index)
  const effects: TransferEffect[] = []
  for (let i = 0; i < parsed.length; i++) {
    const log = parsed[i] as Parsed
    const next = parsed[i + 1]
    const pair =
      next !== undefined &&
      log.kind !== next.kind &&
      next.index === log.index + 1 &&
      isAddressEqual(log.from, next.from) &&
      isAddressEqual(log.to, next.to) &&
      log.amount === next.amount
    const withMemo = pair ? (log.kind === 'memo' ? log : next) : log
    effects.push({
      token: currency,
      from: log.from,
      to: log.to,
      amount: log.amount,
      ...(withMemo.memo !== undefined && { memo: withMemo.memo }),
      origin: `log ${log.index}`,
    })
    if (pair) i++
  }
  return effects
}

function fits(expected: ExpectedTransfer, effect: TransferEffect): boolean {
  return (
    isAddressEqual(expected.recipient, effect.to) &&
    expected.amount === effect.amount &&
    (expected.memo === undefined || effect.memo?.toLowerCase() === expected.memo.toLowerCase())
  )
}

/** Maximum bipartite matching (Kuhn): expected index → effect index, or -1. */
function match(expected: readonly ExpectedTransfer[], effects: readonly TransferEffect[], fixed?: [number, number]): number[] {
  const owner = new Array<number>(effects.length).fill(-1)
  const assigned = new Array<number>(expected.length).fill(-1)
  if (fixed) {
    owner[fixed[1]] = fixed[0]
    assigned[fixed[0]] = fixed[1]
  }
  const augment = (e: number, seen: boolean[]): boolean => {
    for (let f = 0; f < effects.length; f++) {
      if (seen[f] || !fits(expected[e] as ExpectedTransfer, effects[f] as TransferEffect)) continue
      seen[f] = true
      const current = owner[f] as number
      if (fixed && f === fixed[1]) continue
      if (current === -1 || augment(current, seen)) {
        owner[f] = e
        assigned[e] = f
        return true
      }
    }
    return false
  }
  for (let e = 0; e < expected.length; e++) {
    if (assigned[e] !== -1) continue
    augment(e, new Array<boolean>(effects.length).fill(false))
  }
  return assigned
}

export type MatchOptions = {
  /** The token, named in refusals. */
  currency?: Address
  /** Every effect must be used (pull: nothing besides the payment). */
  exact?: boolean
  /** At least one matched effect must satisfy this (push: the challenge's memo). */
  bound?: { test: (effect: TransferEffect) => boolean; refusal: string }
}

/**
 * Checks that `effects` pay exactly `expected`. Throws a `PaymentError` naming the first
 * transfer that is missing and why (too little → `payment-insufficient`).
 */
export function assertTransfers(expected: readonly ExpectedTransfer[], effects: readonly TransferEffect[], options: MatchOptions = {}): void {
  if (options.exact && effects.length !== expected.length)
    throw new PaymentError(
      'verification-failed',
      `the transaction has ${effects.length} transfer call(s); this route expects exactly ${expected.length} (the payment${expected.length > 1 ? ' and its splits' : ''}, nothing else)`,
    )
  const assigned = match(expected, effects)
  const missing = assigned.indexOf(-1)
  if (missing !== -1) throw refusal(expected[missing] as ExpectedTransfer, effects, assigned, options.currency)
  if (!options.bound) return
  if (assigned.some((f) => options.bound?.test(effects[f] as TransferEffect))) return
  // Another complete matching may use a bound effect: try each bound effect in each slot it fits.
  for (let f = 0; f < effects.length; f++) {
    if (!options.bound.test(effects[f] as TransferEffect)) continue
    for (let e = 0; e < expected.length; e++) {
      if (!fits(expected[e] as ExpectedTransfer, effects[f] as TransferEffect)) continue
      if (match(expected, effects, [e, f]).every((x) => x !== -1)) return
    }
  }
  throw new PaymentError('verification-failed', options.bound.refusal)
}

function refusal(expected: ExpectedTransfer, effects: readonly TransferEffect[], assigned: number[], currency: Address | undefined): PaymentError {
  const used = new Set(assigned)
  const toRecipient = effects.filter((effect, f) => !used.has(f) && isAddressEqual(effect.to, expected.recipient))
  const what = `the ${expected.label} transfer of ${expected.amount} base units to ${expected.recipient}`
  const less = toRecipient.find((effect) => effect.amount < expected.amount)
  if (less) return new PaymentError('payment-insufficient', `${what} is missing: ${less.origin} pays only ${less.amount} base units`)
  const more = toRecipient.find((effect) => effect.amount > expected.amount)
  if (more) return new PaymentError('verification-failed', `${what} is missing: ${more.origin} pays ${more.amount} base units, not exactly ${expected.amount}`)
  const memo = toRecipient.find((effect) => effect.amount === expected.amount)
  if (memo && expected.memo)
    return new PaymentError('verification-failed', `${what} must carry the memo ${expected.memo}; ${memo.origin} carries ${memo.memo ?? 'none'}`)
  return new PaymentError('verification-failed', `${what} is missing: nothing pays that recipient in ${currency ?? 'the currency'}`)
}
