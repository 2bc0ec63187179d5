/**
 * The Tempo charge request: what a route charges, in the wire form the mppx client reads
 * (`draft-tempo-charge`: base-unit amounts, `methodDetails` with chainId, feePayer, memo,
 * splits, supportedModes), and the transfers that pay it.
 */
import { type Address, getAddress, type Hex } from 'viem'
import * as z from 'zod/mini'
import type { ChargeRequest, RouteCharge } from '../method.js'

export type Mode = 'pull' | 'push'

/** A split as configured, already in base units. */
export type Split = { amount: bigint; recipient: Address; memo?: Hex }

/** One transfer a payment must contain: exactly `amount` of the currency to `recipient`. */
export type ExpectedTransfer = {
  recipient: Address
  amount: bigint
  /** When set, the transfer must carry exactly this memo; otherwise any memo or none. */
  memo?: Hex
  /** `primary` for the route's recipient, `split N` for the others (used in refusal details). */
  label: string
}

export type RequestShape = {
  chainId: number
  currency: Address
  recipient: Address
  decimals: number
  splits: Split[]
  memo?: Hex
  feePayer: boolean
  modes: readonly Mode[]
}

const decimalPattern = /^(0|[1-9]\d*)(\.\d+)?$/

/** Decimal token units → base units, exactly (never rounds: extra precision is an error). */
export function toBaseUnits(value: string, decimals: number, what: string): bigint {
  if (typeof value !== 'string' || !decimalPattern.test(value))
    throw new Error(`${what} must be a non-negative decimal string such as "0.01", got ${JSON.stringify(value)}.`)
  const [whole = '0', fraction = ''] = value.split('.')
  if (fraction.length > decimals) throw new Error(`${what} ${value} has more than ${decimals} decimal places (the token's precision).`)
  return BigInt(whole) * 10n ** BigInt(decimals) + BigInt(fraction.padEnd(decimals, '0') || '0')
}

/** Builds the wire request for one route charge. Throws a plain `Error` saying what to fix. */
export function buildRequest(shape: RequestShape, charge: RouteCharge): ChargeRequest {
  if (!charge || typeof charge !== 'object') throw new Error('tempo: request() needs { amount: "0.01" }.')
  const amount = toBaseUnits(charge.amount, shape.decimals, 'tempo: amount')
  const splitTotal = shape.splits.reduce((sum, split) => sum + split.amount, 0n)
  if (amount === 0n && shape.splits.length > 0)
    throw new Error('tempo: a zero amount cannot be split; use a tempo() method without `splits` for free (proof) routes.')
  if (shape.splits.length > 0 && splitTotal >= amount)
    throw new Error(
      `tempo: splits total ${splitTotal} base units, which is not below the charged amount ${amount}; ` +
        'lower the splits or raise the amount so the primary recipient keeps a positive remainder.',
    )
  // A route that charges only on success settles the payment itself, after its handler: only
  // pull credentials can wait for that (a pushed payment has already landed). Proofs settle nothing.
  const modes = charge.settle === 'after' && amount > 0n ? shape.modes.filter((mode) => mode === 'pull') : shape.modes
  if (modes.length === 0)
    throw new Error("tempo: a route with settle: 'after' needs pull payments, and this tempo() method accepts only push; add 'pull' to modes.")
  const bothModes = modes.includes('pull') && modes.includes('push')
  const methodDetails: Record<string, unknown> = { chainId: shape.chainId }
  if (shape.feePayer) methodDetails.feePayer = true
  if (shape.memo) methodDetails.memo = shape.memo
  if (shape.splits.length > 0)
    methodDetails.splits = shape.splits.map((split) => ({
      amount: split.amount.toString(),
      recipient: split.recipient,
      ...(split.memo && { memo: split.memo }),
    }))
  if (!bothModes) methodDetails.supportedModes = [...modes]
  return {
    amount: amount.toString(),
    currency: shape.currency,
    recipient: shape.recipient,
    ...(charge.description !== undefined && { description: String(charge.description) }),
    ...(charge.externalId !== undefined && { externalId: String(charge.externalId) }),
    methodDetails,
  }
}

const address = z.string().check(z.regex(/^0x[0-9a-fA-F]{40}$/))
const bytes32 = z.string().check(z.regex(/^0x[0-9a-fA-F]{64}$/))
const baseUnits = z.string().check(z.regex(/^(0|[1-9]\d*)$/))

const wireRequest = z.object({
  amount: baseUnits,
  currency: address,
  recipient: address,
  methodDetails: z.object({
    chainId: z.number().check(z.int(), z.positive()),
    feePayer: z.optional(z.boolean()),
    memo: z.optional(bytes32),
    splits: z.optional(z.array(z.object({ amount: baseUnits, recipient: address, memo: z.optional(bytes32) }))),
    supportedModes: z.optional(z.array(z.enum(['pull', 'push'])).check(z.minLength(1))),
  }),
})

/** The route's request (our own, HMAC-bound), read back into typed values. */
export type ParsedRequest = {
  amount: bigint
  currency: Address
  recipient: Address
  chainId: number
  feePayer: boolean
  modes: readonly Mode[]
  transfers: ExpectedTransfer[]
}

// A route's request object is built once and passed to every verify: parse it once.
const parsedRequests = new WeakMap<ChargeRequest, ParsedRequest>()

export function parseRequest(request: ChargeRequest): ParsedRequest {
  let parsed = parsedRequests.get(request)
  if (!parsed) {
    parsed = parseWireRequest(request)
    parsedRequests.set(request, parsed)
  }
  return parsed
}

function parseWireRequest(request: ChargeRequest): ParsedRequest {
  const parsed = wireRequest.safeParse(request)
  if (!parsed.success) throw new Error(`tempo: the route's charge request is not a Tempo charge request: ${parsed.error.message}`)
  const { amount, currency, recipient, methodDetails } = parsed.data
  const total = BigInt(amount)
  const splits = methodDetails.splits ?? []
  const splitTotal = splits.reduce((sum, split) => sum + BigInt(split.amount), 0n)
  const transfers: ExpectedTransfer[] =
    total === 0n
      ? []
      : [
          {
            recipient: getAddress(recipient),
            amount: total - splitTotal,
            ...(methodDetails.memo && { memo: methodDetails.memo as Hex }),
            label: 'primary',
          },
          ...splits.map((split, index) => ({
            recipient: getAddress(split.recipient),
            amount: BigInt(split.amount),
            ...(split.memo && { memo: split.memo as Hex }),
            label: `split ${index}`,
          })),
        ]
  return {
    amount: total,
    currency: getAddress(currency),
    recipient: getAddress(recipient),
    chainId: methodDetails.chainId,
    feePayer: methodDetails.feePayer === true,
    modes: methodDetails.supportedModes ?? ['pull', 'push'],
    transfers,
  }
}
