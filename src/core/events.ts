/**
 * What the core tells an operator through `onEvent`: every step a payment takes. Events never
 * carry a credential, a receipt, a signature or a secret.
 */
import type { ProblemKind } from '../protocol/problem.js'

/**
 * The payment pipeline's own steps (the transport adds where). `intent` names the intent that
 * settled it (`charge`); `durationMs` is how long the method's settle (or recovery) call took,
 * on the events that follow one; `amount` (base units) and `currency` are what was charged.
 */
export type SettleEvent =
  | { type: 'verified'; challengeId: string; method: string; intent?: string; payer?: string; credentialType: string }
  | {
      type: 'settled'
      challengeId: string
      method: string
      intent?: string
      reference: string
      payer?: string
      recovered: boolean
      amount?: string
      currency?: string
      durationMs?: number
    }
  | { type: 'released'; challengeId: string; method: string; intent?: string; reason: string }
  | { type: 'settlement-unknown'; challengeId: string; method: string; intent?: string; reference: string; durationMs?: number }
  | { type: 'settlement-failed'; challengeId: string; method: string; intent?: string; detail: string; afterHandler: boolean; durationMs?: number }
  | { type: 'replayed'; challengeId: string; method: string; intent?: string }
  /** The paid work's result was handed back with the receipt: once per payment (a replayed answer is `replayed`). */
  | { type: 'delivered'; challengeId: string; method: string; intent?: string; amount: string; currency: string }

/**
 * Where an event happened: the request's `path`, and the `route` it matched as the app declared
 * it (`/articles/:id`, Hono's `routePath`), whose values are bounded (a metrics label).
 */
export type EventWhere = { path: string; route?: string }

/** Every event `onEvent` receives. `error` is an operator's fault (e.g. a price function that returned no price). */
export type PaymentEvent =
  | ({ type: 'challenge'; challengeIds: string[] } & EventWhere)
  | ({ type: 'rejected'; reason: ProblemKind; detail: string; status: number; challengeId?: string } & EventWhere)
  | ({ type: 'error'; detail: string; error: unknown } & EventWhere)
  | (EventWhere & SettleEvent)

export type PaymentEventListener = (event: PaymentEvent) => void

/** Calls the listener; a failing listener never changes a payment's outcome. */
export function eventEmitter(listener: PaymentEventListener | undefined): PaymentEventListener {
  if (!listener) return () => {}
  return (event) => {
    try {
      listener(event)
    } catch {
      // Ignored: observability must not decide a payment.
    }
  }
}

/**
 * One listener from several (`onEvent: combineListeners(metrics.onEvent, tracing, mine)`): each
 * is called in order, and one that throws neither stops the others nor reaches the payment.
 */
export function combineListeners(...listeners: (PaymentEventListener | undefined)[]): PaymentEventListener {
  const called = listeners.filter((listener): listener is PaymentEventListener => typeof listener === 'function').map(eventEmitter)
  return (event) => {
    for (const listener of called) listener(event)
  }
}
