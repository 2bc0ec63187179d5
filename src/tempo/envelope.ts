/**
 * Reading a signed Tempo transaction (0x76 envelope) without recovering its sender. ox's
 * `TxEnvelopeTempo.deserialize` recovers the sender eagerly (~1.8 ms); a payment the node is
 * about to check needs the fields, not the sender.
 *
 * Two readers:
 * - `readPlainPayment`: the shape every plain payment has (13 fields, no fee payer, no access or
 *   authorization list, no key authorization, a 65-byte secp256k1 signature), read straight
 *   from the hex, in strictly canonical RLP only. Then the received bytes are the canonical
 *   encoding: they are what is broadcast and hashed, with nothing re-encoded.
 * - `decodeEnvelope`: any other 0x76 envelope, through ox, with the signature cut off first so
 *   that nothing is recovered.
 * Anything `readPlainPayment` does not take goes to `decodeEnvelope`; anything that does not decode
 * there is refused by ox.
 */
import { SignatureEnvelope, TxEnvelopeTempo } from 'ox/tempo'
import type { Address, Hex } from 'viem'

export type Envelope = TxEnvelopeTempo.TxEnvelopeTempo

type RlpItem = { start: number; content: number; end: number; list: boolean }

/** Byte `at` of 0x-prefixed hex (NaN past the end). */
function byteAt(hex: string, at: number): number {
  return 2 + at * 2 + 2 <= hex.length ? parseInt(hex.slice(2 + at * 2, 4 + at * 2), 16) : Number.NaN
}

/**
 * The item at byte `at`: where its content starts and where it ends. With `strict`, only the
 * canonical (shortest) encoding is accepted: a single byte below 0x80 stands for itself, and
 * lengths have no leading zero bytes and use the long form only above 55.
 */
function itemAt(hex: string, at: number, strict: boolean): RlpItem | undefined {
  const prefix = byteAt(hex, at)
  if (Number.isNaN(prefix)) return undefined
  if (prefix < 0x80) return { start: at, content: at, end: at + 1, list: false }
  const list = prefix >= 0xc0
  const base = list ? 0xc0 : 0x80
  if (prefix - base <= 55) {
    const length = prefix - base
    if (strict && !list && length === 1 && byteAt(hex, at + 1) < 0x80) return undefined
    return { start: at, content: at + 1, end: at + 1 + length, list }
  }
  const lengthBytes = prefix - base - 55
  let length = 0
  for (let i = 1; i <= lengthBytes; i++) length = length * 256 + byteAt(hex, at + i)
  if (!Number.isFinite(length)) return undefined
  if (strict && (byteAt(hex, at + 1) === 0 || length <= 55)) return undefined
  return { start: at, content: at + 1 + lengthBytes, end: at + 1 + lengthBytes + length, list }
}

/** The items of the list at byte `at` (which must end exactly at `end`), or undefined. */
function listItems(hex: string, list: RlpItem, strict: boolean): RlpItem[] | undefined {
  const items: RlpItem[] = []
  for (let at = list.content; at < list.end; ) {
    const item = itemAt(hex, at, strict)
    if (!item || item.end > list.end) return undefined
    items.push(item)
    at = item.end
  }
  return items
}

/** The top-level items after the type byte; undefined unless `raw` is exactly one list. */
function topLevelItems(raw: string, strict: boolean): RlpItem[] | undefined {
  const size = (raw.length - 2) / 2
  const list = itemAt(raw, 1, strict)
  if (!list?.list || list.end !== size) return undefined
  return listItems(raw, list, strict)
}

/** The RLP header of a list whose payload is `bytes` long. */
function rlpListHeader(bytes: number): string {
  if (bytes <= 55) return (0xc0 + bytes).toString(16)
  let hex = bytes.toString(16)
  if (hex.length % 2) hex = `0${hex}`
  return (0xf7 + hex.length / 2).toString(16) + hex
}

/** The received encoding without its last item (the sender signature): what the sender signed, for a 0x76 envelope without fee payer. */
function unsignedOf(raw: string, items: RlpItem[]): Hex {
  const fields = raw.slice(items[0]!.start * 2 + 2, items[items.length - 1]!.start * 2 + 2)
  return `0x76${rlpListHeader(fields.length / 2)}${fields}` as Hex
}

/**
 * Any signed 0x76 envelope, decoded by ox without recovering its sender: the signature (the last
 * top-level item) is decoded on its own and the rest as an unsigned envelope. Anything unusual
 * (no signature, a malformed list) goes to ox as it is, to be refused there.
 */
export function decodeEnvelope(raw: Hex): { tx: Envelope; unsigned?: Hex } {
  const items = topLevelItems(raw, false)
  // 13 fields unsigned; then the sender signature, or a key authorization (a list) and then it.
  const last = items && items.length >= 14 ? items[items.length - 1]! : undefined
  if (!items || !last || last.list) return { tx: TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized) }
  const unsigned = unsignedOf(raw, items)
  const tx = TxEnvelopeTempo.deserialize(unsigned as TxEnvelopeTempo.Serialized)
  const signature = SignatureEnvelope.deserialize(`0x${raw.slice(last.content * 2 + 2, last.end * 2 + 2)}` as Hex)
  return { tx: { ...tx, signature }, unsigned }
}

/** An integer field: canonical (no leading zero byte), as a bigint; undefined when empty. */
function integer(raw: string, item: RlpItem): bigint | undefined | null {
  if (item.list) return null
  if (item.end === item.content) return undefined
  // A one-byte integer stands for itself, but zero is the empty string.
  if (item.content === item.start) return byteAt(raw, item.start) === 0 ? null : BigInt(byteAt(raw, item.start))
  if (byteAt(raw, item.content) === 0) return null
  return BigInt(`0x${raw.slice(item.content * 2 + 2, item.end * 2 + 2)}`)
}

/** A byte-string field as hex (`0x` when empty), or null for a list. */
function bytes(raw: string, item: RlpItem): Hex | null {
  if (item.list) return null
  return `0x${raw.slice(item.content * 2 + 2, item.end * 2 + 2)}` as Hex
}

const emptyList = (item: RlpItem) => item.list && item.end === item.content
const emptyString = (item: RlpItem) => !item.list && item.end === item.content

/**
 * The common plain payment, read straight from the hex: undefined unless `raw` (lower-case) is
 * a 0x76 envelope in strictly canonical RLP with exactly the 13 fields and a 65-byte
 * secp256k1 signature whose v is 27 or 28, no fee-payer slot, no access or authorization list,
 * and calls of exactly [to, value, data].
 */
export function readPlainPayment(raw: Hex): { tx: Envelope; unsigned: Hex } | undefined {
  if (!raw.startsWith('0x76')) return undefined
  const items = topLevelItems(raw, true)
  if (items?.length !== 14) return undefined
  const [chainId, maxPriorityFee, maxFee, gas, calls, accessList, nonceKey, nonce, validBefore, validAfter, feeToken, feePayer, authorizations, signature] =
    items as [RlpItem, RlpItem, RlpItem, RlpItem, RlpItem, RlpItem, RlpItem, RlpItem, RlpItem, RlpItem, RlpItem, RlpItem, RlpItem, RlpItem]
  if (!calls.list || !emptyList(accessList) || !emptyString(feePayer) || !emptyList(authorizations)) return undefined
  if (signature.list || signature.end - signature.content !== 65) return undefined
  const numbers = [chainId, maxPriorityFee, maxFee, gas, nonceKey, nonce, validBefore, validAfter].map((item) => integer(raw, item))
  if (numbers.some((value) => value === null)) return undefined
  const [chain, priorityFee, feeCap, gasLimit, key, sequence, before, after] = numbers as (bigint | undefined)[]
  if (chain === undefined || chain > BigInt(Number.MAX_SAFE_INTEGER)) return undefined
  if ((before ?? 0n) > 0xffffffffffffn || (after ?? 0n) > 0xffffffffffffn) return undefined
  // What ox's own checks refuse goes to ox, to be refused in its words.
  if (chain === 0n || (before !== undefined && after !== undefined && before <= after)) return undefined
  if (priorityFee !== undefined && feeCap !== undefined && priorityFee > feeCap) return undefined
  if ((feeCap ?? 0n) >= 2n ** 256n || (priorityFee ?? 0n) >= 2n ** 256n) return undefined
  const token = bytes(raw, feeToken)
  if (token === null || (token !== '0x' && token.length !== 42)) return undefined

  const callItems = listItems(raw, calls, true)
  if (!callItems || callItems.length === 0) return undefined
  const decodedCalls: NonNullable<Envelope['calls']>[number][] = []
  for (const call of callItems) {
    const parts = call.list ? listItems(raw, call, true) : undefined
    if (parts?.length !== 3) return undefined
    const to = bytes(raw, parts[0]!)
    const value = integer(raw, parts[1]!)
    const data = bytes(raw, parts[2]!)
    if (to === null || value === null || data === null || (to !== '0x' && to.length !== 42)) return undefined
    decodedCalls.push({
      ...(to !== '0x' && { to: to as Address }),
      ...(value !== undefined && { value }),
      ...(data !== '0x' && { data }),
    })
  }

  // ox (and so the reference client) writes v as 27 or 28; the other spellings are left to ox.
  const v = byteAt(raw, signature.content + 64)
  if (v !== 27 && v !== 28) return undefined
  const r = BigInt(`0x${raw.slice(signature.content * 2 + 2, signature.content * 2 + 66)}`)
  const s = BigInt(`0x${raw.slice(signature.content * 2 + 66, signature.content * 2 + 130)}`)

  const tx = {
    type: 'tempo',
    chainId: Number(chain),
    calls: decodedCalls,
    ...(gasLimit !== undefined && { gas: gasLimit }),
    ...(feeCap !== undefined && { maxFeePerGas: feeCap }),
    ...(priorityFee !== undefined && { maxPriorityFeePerGas: priorityFee }),
    nonceKey: key ?? 0n,
    nonce: sequence ?? 0n,
    ...(before !== undefined && { validBefore: Number(before) }),
    ...(after !== undefined && { validAfter: Number(after) }),
    ...(token !== '0x' && { feeToken: token as Address }),
    signature: { type: 'secp256k1', signature: { r, s, yParity: v - 27 } },
  } as unknown as Envelope
  return { tx, unsigned: unsignedOf(raw, items) }
}
