/**
 * The small interface a payment method implements. The middleware and the settlement layer
 * speak only this; Tempo (`hono-mpp/tempo`) is one implementation, a fake in-memory method in
 * the tests is another.
 *
 * Contract:
 * - `request()` describes what a route charges, in the method's wire form. It runs at
 *   construction for static amounts and throws a plain `Error` saying what to fix.
 * - `verify()` checks a credential WITHOUT side effects (reads from the chain are fine) and
 *   says which keys must be claimed once (transaction hashes, ...).
 * - `settle()` makes the payment happen (broadcast). It throws `PaymentError` when the payment
 *   definitely did not happen, and `SettlementUnknownError` when it may have.
 * - `recover()` finishes a settlement whose outcome was unknown, from the data `verify()` gave.
 */
import { BaseError } from './protocol/errors.js'
import type { PaymentError } from './protocol/problem.js'
import type { ChargeRequest, Credential } from './protocol/types.js'

export type { ChargeRequest, Credential, EchoedChallenge } from './protocol/types.js'

/** What a route charges, as the route author wrote it (decimal amount in token units). */
export type RouteCharge = {
  /** Decimal string in the token's units, e.g. "0.01". */
  amount: string
  description?: string
  externalId?: string
  /**
   * `after`: the route settles only when its handler succeeded, so the method must advertise
   * only credential types it settles itself (`deferrable`, e.g. Tempo pull), never ones the
   * client has already settled (push).
   */
  settle?: 'before' | 'after'
}

export type VerifyParameters = {
  credential: Credential
  /** The request this route charges now; equal to the echoed one (checked before). */
  request: ChargeRequest
  /** Challenge expiry (the binding was checked, so it is the server's own). */
  expires: Date
  /** Settle after the handler: the method must refuse payload types that are already settled. */
  settle: 'before' | 'after'
}

export type Verified = {
  /** `settled`: the client settled already (push hash, proof): nothing left to broadcast. */
  status: 'ready' | 'settled'
  /** Credential type, for events and the context: e.g. "transaction", "hash", "proof". */
  type: string
  /** The paying address or identity, as recovered by the method (never copied from input). */
  payer?: string
  /** The receipt reference, known before settlement (e.g. transaction hash). */
  reference: string
  /** Keys (already namespaced by the method) that must each pay exactly once. */
  claims: string[]
  /** Epoch ms after which this payment can no longer settle (e.g. `validBefore`). */
  validUntil: number
  /** JSON-serialisable data `settle`/`recover` need; kept in the claim while pending. */
  data?: unknown
}

export type Settled = {
  reference: string
  payer?: string
}

export interface PaymentMethod {
  /** Lowercase method name, e.g. "tempo". */
  readonly name: string
  /** The intent this method implements (`charge`; a method per intent). */
  readonly intent: string
  /** Builds the challenge `request` for a route. Throws on misconfiguration. */
  request(charge: RouteCharge): ChargeRequest
  /** Checks a credential without side effects. Throws `PaymentError` to refuse. */
  verify(parameters: VerifyParameters): Promise<Verified>
  /** Settles a verified payment. Throws `PaymentError` (did not happen) or `SettlementUnknownError`. */
  settle(verified: Verified): Promise<Settled>
  /** Settles again after an unknown outcome: look up, re-broadcast, or refuse. */
  recover(verified: Verified): Promise<Settled>
  /**
   * Optional: the payment was given up unsettled (replay refused, handler failed, store down).
   * A method that reserves something while it verifies (Tempo: the fee sponsor's in-flight
   * budget) frees it here; otherwise each abandoned payment would hold it until it expires.
   */
  release?(verified: Verified): void
  /** Optional: payload types accepted under `settle: 'after'` (default: `['transaction']`). */
  readonly deferrable?: readonly string[]
}

/** The outcome of a broadcast is not known: the claim stays recoverable, the client retries. */
export class SettlementUnknownError extends BaseError {
  override name = 'SettlementUnknownError'
}

export type { PaymentError }
