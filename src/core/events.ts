/**
 * What the core tells an operator through `onEvent`: every step a payment takes. Events never
 * carry a credential, a receipt, a signature or a secret.
 */
import type { ProblemKind } from '../protocol/problem.js'

/** The payment pipeline's own steps (the transport adds the path). */
export type SettleEvent =
  | { type: 'verified'; challengeId: string; method: string; payer?: string; credentialType: string }
  | { type: 'settled'; challengeId: string; method: string; reference: string; payer?: string; recovered: boolean }
  | { type: 'released'; challengeId: string; method: string; reason: string }
  | { type: 'settlement-unknown'; challengeId: string; method: string; reference: string }
  | { type: 'settlement-failed'; challengeId: string; method: string; detail: string; afterHandler: boolean }
  | { type: 'replayed'; challengeId: string; method: string }

/** Every event `onEvent` receives. `error` is an operator's fault (e.g. a price function that returned no price). */
export type PaymentEvent =
  | { type: 'challenge'; path: string; challengeIds: string[] }
  | { type: 'rejected'; path: string; reason: ProblemKind; detail: string; status: number; challengeId?: string }
  | { type: 'error'; path: string; detail: string; error: unknown }
  | ({ path: string } & SettleEvent)

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
