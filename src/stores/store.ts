/**
 * The claim store: the only place hono-mpp keeps state. A claim is a key (a challenge id, a
 * transaction hash) that one caller wins atomically and that lives until `expires`.
 *
 * States:
 * - `pending`: won by a caller that is verifying or settling right now (its lease runs until
 *   `lease`; a holder that dies simply lets the lease run out).
 * - `unknown`: a broadcast whose outcome is not known (timeout, dropped connection). A retry may
 *   take it over to look the transaction up, re-broadcast or refuse.
 * - `settled`: paid and delivered once; refused forever after (until it expires).
 * A released claim is removed, so the key can be claimed again.
 *
 * Ownership: a record names its `owner`, an opaque random token, and every `transition` names
 * the owner it expects. A holder whose claim was taken over (its lease ran out and a retry
 * took it) no longer matches, so it can change nothing: not release, not settle, not store.
 * A record without an owner (a settled payment key) can never change again.
 *
 * Backends: `memory` (one process), `redis` (many processes), `durable-object` (Workers).
 */
import { BaseError } from '../protocol/errors.js'

export type ClaimState = 'pending' | 'unknown' | 'settled'

/**
 * Which budget a claim counts against. `free`: the claim of a zero-amount challenge (a proof
 * credential costs its sender nothing); `paid` (also when absent): everything else. A bounded
 * store keeps separate budgets, so a flood of free proofs cannot crowd out paid claims, nor the
 * reverse.
 */
export type ClaimClass = 'free' | 'paid'

export type ClaimRecord = {
  state: ClaimState
  /** Epoch milliseconds after which the record is forgotten (and the key free again). */
  expires: number
  /** Epoch milliseconds until which a `pending` holder owns the claim; after it a retry may take it over. */
  lease?: number
  /** The holder's token (random, never derived from time): what `transition` compares. */
  owner?: string
  /** Opaque data the settlement layer keeps with the claim (JSON). */
  data?: string
  /** The budget the claim counts against (absent: `paid`). Part of the record like the rest. */
  class?: ClaimClass
}

export interface ClaimStore {
  /**
   * Stores `record` under `key` only when no live record is there (absent, released or
   * expired). Resolves `true` for exactly one of any number of concurrent callers.
   */
  claim(key: string, record: ClaimRecord): Promise<boolean>
  /**
   * Replaces the live record under `key` with `next` only when its state is `from` and its
   * `owner` is exactly `owner` (the caller still holds it; a record without an owner never
   * matches), in one atomic step. `next === null` releases the claim (removes it). Resolves
   * whether the swap happened.
   */
  transition(key: string, from: ClaimState, next: ClaimRecord | null, owner: string): Promise<boolean>
  /** The live record under `key`, if any. */
  get(key: string): Promise<ClaimRecord | undefined>
}

export const claimClasses: readonly ClaimClass[] = ['free', 'paid']

/** Thrown by a store that cannot answer; the middleware fails closed with a 503. */
export class StoreUnavailableError extends BaseError {
  override name = 'StoreUnavailableError'
}

/** Serialises a record for backends that keep strings (Redis, Durable Objects). */
export function encodeRecord(record: ClaimRecord): string {
  return JSON.stringify(record)
}

export function decodeRecord(value: string | null | undefined): ClaimRecord | undefined {
  if (!value) return undefined
  const parsed = JSON.parse(value) as ClaimRecord
  return parsed
}
