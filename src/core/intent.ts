/**
 * The intent seam. The core binds a credential to its challenge, then hands the attempt to the
 * intent its offer names (`charge` here; `session` and others plug in the same way) or, for a
 * credential of another authorization scheme (an API key as `Bearer`), to that scheme's
 * handler. Each settles in its own way; all run the paid work through the transport's one
 * callback and return what to deliver.
 */

import type { Receipt } from '../protocol/receipt.js'
import type { Credential } from '../protocol/types.js'
import type { ClaimStore } from '../stores/store.js'
import type { PaymentInfo } from './binding.js'
import type { SettleEvent } from './events.js'
import type { Offer, SettleTiming } from './offer.js'

/**
 * What the transport's work gave: the result, whether it counts as a success (HTTP 2xx; MCP not
 * `isError`), and when it does not, what happened, in a few words ("the handler answered 500").
 */
export type Outcome<Result> = { succeeded: boolean; result: Result; failure?: string }

/** The transport's callback: runs the paid work with what it is shown. */
export type RunPaid<Result> = (payment: PaymentInfo) => Promise<Outcome<Result>>

/** How a transport gives back an answer it kept for an idempotent retry (see `Delivery.keep`). */
export type ReplayHooks<Result> = {
  /**
   * A kept answer as a result again; throws a `PaymentError` to refuse it when the retry is not
   * the request it answered (MCP: the same operation with other arguments).
   */
  restore(answer: unknown): Result
}

/** Everything an intent needs for one attempt at a bound credential. */
export type Attempt<Result> = {
  offer: Offer
  credential: Credential
  /** The challenge's expiry (the binding was checked: it is the server's own). */
  expires: Date
  timing: SettleTiming
  /** Identifies this exact credential, to recognise a retry of it. */
  fingerprint: string
  /** The client's `Idempotency-Key`, when the transport has one (C10). */
  idempotencyKey: string | undefined
  externalId: string | undefined
  store: ClaimStore
  leaseMs: number
  emit: (event: SettleEvent) => void
  run: RunPaid<Result>
  replay: ReplayHooks<Result> | undefined
  /** What the request is: `METHOD path?query` on HTTP (the operation on MCP), and whether it has a body. */
  target: string
  hasBody: boolean
  /**
   * The transport's answer for a payment-only request that serves no content (HTTP: 204), e.g. a
   * session voucher top-up or close. Undefined on transports that have none (MCP).
   */
  acknowledge: (() => Result) | undefined
}

/** What to deliver: the result, with the receipt to attach when it was paid now. */
export type Delivery<Result> = {
  result: Result
  /** Whether the work succeeded (a replayed answer did). */
  succeeded: boolean
  /** The payment's receipt when it settled now (undefined: nothing was charged, or a replayed answer that carries its own). */
  receipt: Receipt | undefined
  replayed: boolean
  /**
   * With an Idempotency-Key: stores the answer as delivered (receipt attached), in the form the
   * transport's `restore` reads, for a retry of the same credential with the same key.
   */
  keep?: (answer: unknown) => Promise<void>
}

/** An MPP intent: settles the credentials of the methods whose `intent` is its name. */
export interface Intent {
  readonly name: string
  /**
   * Optional: whether a credential whose challenge was bound to the request `bound` may pay the
   * request `current` (both `METHOD path?query` on HTTP; `hasBody`: whether `current` has a body)
   * although the target or the body digest differs. Without it only the exact request matches.
   * The session intent lets a bodiless HEAD or POST to the same URL carry a voucher or a close.
   */
  sameTarget?(bound: string, current: string, credential: Credential, hasBody: boolean): boolean
  pay<Result>(attempt: Attempt<Result>): Promise<Delivery<Result>>
}

/** A credential that is not a Payment credential: what its scheme's handler is given. */
export type TokenAttempt<Result> = {
  /** The authorization scheme as configured (`Bearer`). */
  scheme: string
  token: string
  /** What the route charges now, one offer per method (the handler picks what it bills). */
  offers: readonly Offer[]
  timing: SettleTiming
  externalId: string | undefined
  /** What is charged, as refusals name it ("this route", "tools/call summarize"). */
  subject: string
  /** The realm, target (`METHOD path?query`, or the MCP operation) and body digest of this request. */
  where: { realm: string; target: string; digest: string | undefined }
  /** The client's `Idempotency-Key`, when the transport supports replay (then `replay` is set). */
  idempotencyKey: string | undefined
  replay: ReplayHooks<Result> | undefined
  /** The core's claim store (e.g. to keep an answer for an idempotent retry), and its lease. */
  store: ClaimStore
  leaseMs: number
  emit: (event: SettleEvent) => void
  run: RunPaid<Result>
}

/** A handler for another authorization scheme the same priced routes accept (e.g. prepaid API keys). */
export interface CredentialScheme {
  /** The scheme as it appears in `Authorization: <scheme> <token>` (case-insensitive), e.g. `Bearer`. */
  readonly scheme: string
  /**
   * Optional: a request header the token is also read from, its whole value being the token
   * (e.g. `X-API-Key`), for clients that can set a header but not `Authorization`.
   */
  readonly header?: string
  /** Throws a `PaymentError` to refuse; otherwise runs the work and returns what to deliver. */
  pay<Result>(attempt: TokenAttempt<Result>): Promise<Delivery<Result>>
}
