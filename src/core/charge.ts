/**
 * The `charge` intent's settlement, as named stages over the attempt's `Claim`: acquire the
 * challenge, verify (no side effects) and claim what must pay once, keep what recovery needs,
 * then settle before the work or after it succeeded, and deliver once. A payment is never
 * doubled, never lost, and never delivered without being paid.
 */
import type { PaymentMethod, Settled, Verified } from '../method.js'
import { SettlementUnknownError } from '../method.js'
import { PaymentError, unavailable } from '../protocol/problem.js'
import { type Receipt, rfc3339 } from '../protocol/receipt.js'
import { type PaymentInfo, paymentInfoOf } from './binding.js'
import { type Marked, openClaim } from './claim.js'
import type { Attempt, Delivery, Intent } from './intent.js'

/** The `charge` intent: one payment per credential, settled before or after the work. */
export const chargeIntent: Intent = { name: 'charge', pay: (attempt) => payCharge(attempt) }

/** Settles one charge credential and runs the paid work once: its stages, each a short step over the claim. Throws `PaymentError` to refuse. */
async function payCharge<Result>(attempt: Attempt<Result>): Promise<Delivery<Result>> {
  const claim = openClaim({
    store: attempt.store,
    challengeId: attempt.credential.challenge.id,
    fingerprint: attempt.fingerprint,
    idempotencyKey: attempt.replay ? attempt.idempotencyKey : undefined,
    expires: attempt.expires,
    leaseMs: attempt.leaseMs,
    claimClass: /^0+$/.test(attempt.offer.request.amount) ? 'free' : 'paid',
  })
  const method = attempt.offer.paymentMethod
  const event = { challengeId: attempt.credential.challenge.id, method: method.name, intent: attempt.offer.intent }
  /** What the work is shown (`c.get('payment')`); updated in place once the payment settles. */
  let payment: PaymentInfo | undefined
  /** Verified by this attempt and not settled yet: what the method may have reserved for it. */
  let unsettled: Verified | undefined
  /** How long the last settle (or recover) call took, ms (for `onEvent`). */
  let settleMs: number | undefined

  const acquired = await claim.acquire()
  if (acquired.kind === 'replay') return replayed(acquired.answer)
  if (acquired.kind === 'recovering') return deliverSettled(acquired.verified, await recover(acquired.verified), true)
  const verified = await verifyAndClaim()
  await keepForRecovery(verified)
  // Already settled by the client (push, proof): deliver.
  if (verified.status === 'settled') return deliverSettled(verified, settledByClient(verified), false)
  if (attempt.timing === 'before') return deliverSettled(verified, await settle(verified), false)
  return runThenSettle(verified)

  function replayed(answer: unknown): Delivery<Result> {
    // The transport may refuse to serve it (another request under the same Idempotency-Key).
    const result = attempt.replay!.restore(answer)
    attempt.emit({ type: 'replayed', ...event })
    return { result, succeeded: true, receipt: undefined, replayed: true }
  }

  /** Verifies without side effects and claims every key that must pay once; gives all back on refusal. */
  async function verifyAndClaim(): Promise<Verified> {
    const { credential, offer, expires, timing } = attempt
    let verified: Verified
    try {
      verified = await method.verify({ credential, request: offer.request, expires, settle: timing })
      unsettled = verified
      if (timing === 'after') refuseUndeferrable(method, verified)
      await claim.claimKeys(verified)
    } catch (error) {
      await release(error instanceof PaymentError ? error.detail : 'verification error')
      throw error
    }
    attempt.emit({ type: 'verified', ...event, credentialType: verified.type, ...(verified.payer && { payer: verified.payer }) })
    return verified
  }

  /** Keeps what recovery needs before anything leaves for the chain (or before a client-settled payment is recorded). */
  async function keepForRecovery(verified: Verified): Promise<void> {
    let kept: boolean
    try {
      kept = await claim.keep(verified)
    } catch (error) {
      // Nothing was sent (or the client's own payment is not recorded yet): give the claims back.
      if (verified.status === 'settled') {
        await release('the payment store failed before the payment was recorded')
        if (error instanceof PaymentError && error.kind === 'payment-unavailable')
          throw unavailable(
            'the payment store is unreachable; your payment is not lost: retry shortly with the same credential to receive the resource',
            error.cause,
          )
        throw error
      }
      await release('the payment store failed before settlement; nothing was charged')
      throw error
    }
    if (!kept) throw lostClaim()
  }

  function settle(verified: Verified): Promise<Settled> {
    return sortFailure(() => method.settle(verified), verified, false)
  }

  function recover(verified: Verified): Promise<Settled> {
    return sortFailure(() => method.recover(verified), verified, false)
  }

  /** Records the settled payment, runs the work, and delivers its result with the receipt. */
  async function deliverSettled(verified: Verified, settled: Settled, recovered: boolean): Promise<Delivery<Result>> {
    await recordSettled(verified, false)
    emitSettled(settled, recovered)
    const receipt = settledPayment(verified, settled)
    const outcome = await attempt.run(paymentFor(verified))
    if (!outcome.succeeded) return { result: outcome.result, succeeded: false, receipt, replayed: false }
    emitDelivered()
    return { result: outcome.result, succeeded: true, receipt, replayed: false, ...keeper(verified) }
  }

  /** `settle: 'after'`: runs the work, and settles only when it succeeded; releases otherwise. */
  async function runThenSettle(verified: Verified): Promise<Delivery<Result>> {
    const outcome = await attempt.run(paymentFor(verified))
    if (!outcome.succeeded) {
      await release(`${outcome.failure ?? 'the paid work did not succeed'}; nothing was charged`)
      return { result: outcome.result, succeeded: false, receipt: undefined, replayed: false }
    }
    await confirmStillHeld(verified)
    const settled = await sortFailure(() => method.settle(verified), verified, true)
    await recordSettled(verified, true)
    emitSettled(settled, false)
    const receipt = settledPayment(verified, settled)
    emitDelivered()
    return { result: outcome.result, succeeded: true, receipt, replayed: false, ...keeper(verified) }
  }

  /**
   * The work may have outlived the lease and a retry taken the claim over (and settled it):
   * confirm this attempt still holds it, with a fresh lease, before anything is broadcast.
   */
  async function confirmStillHeld(verified: Verified): Promise<void> {
    let held: boolean
    try {
      held = await claim.renew(verified)
    } catch (error) {
      await release('the payment store failed before settlement; nothing was charged')
      throw error
    }
    if (!held) throw lostClaim()
  }

  /** Records a payment that happened; throws when this attempt lost its claim or a key, or the store failed. */
  async function recordSettled(verified: Verified, afterWork: boolean): Promise<void> {
    let marked: Marked
    try {
      marked = await claim.markSettled(verified)
    } catch (error) {
      // The payment happened; only its record failed. The claim still holds what recovery needs.
      if (error instanceof PaymentError && error.kind === 'payment-unavailable')
        throw unavailable(
          'the payment was made but could not be recorded; retry with the same credential shortly to receive the resource (it will not be charged twice)',
          error.cause,
          // The claim is taken over once this attempt's lease has run out.
          Math.ceil(attempt.leaseMs / 1000),
        )
      throw error
    }
    unsettled = undefined
    if (marked === 'lost') throw lostClaim()
    if (marked === 'keys-lost') {
      const detail = 'this payment has already been used for another request; no delivery is made'
      attempt.emit({ type: 'settlement-failed', ...event, detail, afterHandler: afterWork })
      throw new PaymentError('verification-failed', detail)
    }
  }

  /** Shows the work the settled payment and its receipt (the same receipt is delivered). */
  function settledPayment(verified: Verified, settled: Settled): Receipt {
    const payment = paymentFor(verified)
    const receipt = payment.receipt?.reference === settled.reference ? payment.receipt : receiptOf(method.name, settled.reference, attempt.externalId)
    Object.assign(payment, { settled: true, receipt, reference: settled.reference, payer: settled.payer ?? verified.payer })
    return receipt
  }

  function paymentFor(verified: Verified): PaymentInfo {
    payment ??= paymentInfoOf(attempt.offer, attempt.credential, verified)
    return payment
  }

  function emitSettled(settled: Settled, recovered: boolean): void {
    const { amount, currency } = attempt.offer.request
    attempt.emit({
      type: 'settled',
      ...event,
      reference: settled.reference,
      ...(settled.payer && { payer: settled.payer }),
      recovered,
      amount,
      currency,
      ...(settleMs !== undefined && { durationMs: settleMs }),
    })
  }

  /** The work succeeded and its result leaves with the receipt (the transport attaches it to a successful answer only). */
  function emitDelivered(): void {
    const { amount, currency } = attempt.offer.request
    attempt.emit({ type: 'delivered', ...event, amount, currency })
  }

  /** With an Idempotency-Key, the transport may keep the delivered answer with the settled claim. */
  function keeper(verified: Verified): Pick<Delivery<Result>, 'keep'> {
    const { idempotencyKey, replay } = attempt
    if (idempotencyKey === undefined || !replay) return {}
    return { keep: (answer) => claim.remember(verified, idempotencyKey, answer) }
  }

  /** Gives every claim back and lets the method free what it reserved. */
  async function release(reason: string): Promise<void> {
    // Taken over: the payment is its new holder's to settle or give up, not this attempt's.
    if (!(await claim.release())) return
    if (unsettled) forget(method, unsettled)
    unsettled = undefined
    attempt.emit({ type: 'released', ...event, reason })
  }

  /** Sorts a settlement failure: definite (release), unknown (keep for recovery), store down. */
  async function sortFailure(run: () => Promise<Settled>, verified: Verified, afterWork: boolean): Promise<Settled> {
    const started = Date.now()
    try {
      const settled = await run()
      settleMs = Date.now() - started
      return settled
    } catch (error) {
      const durationMs = Date.now() - started
      if (error instanceof PaymentError && error.kind !== 'payment-unavailable') {
        await release(error.detail)
        attempt.emit({ type: 'settlement-failed', ...event, detail: error.detail, afterHandler: afterWork, durationMs })
        if (afterWork && error.status !== 402) throw new PaymentError('settlement-failed', `the handler succeeded but settlement failed: ${error.detail}`)
        throw error
      }
      if (error instanceof PaymentError && !(error.cause instanceof SettlementUnknownError)) {
        // Unavailable before anything was sent: nothing charged.
        await release(error.detail)
        throw error
      }
      // Outcome unknown: keep the claim, so that a retry of this credential finds the payment.
      await claim.markUnknown(verified)
      attempt.emit({ type: 'settlement-unknown', ...event, reference: verified.reference, durationMs })
      throw unavailable(
        'the payment was sent but its outcome is not known yet; retry with the same credential to complete it (it will not be charged twice)',
        error,
      )
    }
  }
}

/** `settle: 'after'` waits for the work: only credentials the method settles itself can wait. */
function refuseUndeferrable(method: PaymentMethod, verified: Verified): void {
  if (verified.status === 'ready' && !(method.deferrable ?? ['transaction']).includes(verified.type))
    throw new PaymentError('bad-request', `a ${verified.type} credential cannot be settled after the handler on this route`)
  if (verified.status === 'settled' && verified.type !== 'proof')
    throw new PaymentError(
      'verification-failed',
      `this route charges only when it succeeds, so it accepts credentials it settles itself; a ${verified.type} credential was already settled by the client`,
    )
}

function settledByClient(verified: Verified): Settled {
  return { reference: verified.reference, ...(verified.payer && { payer: verified.payer }) }
}

function lostClaim(): PaymentError {
  return new PaymentError('invalid-challenge', 'this credential was taken over by another attempt; no second delivery is made')
}

/** Lets the method free what it reserved for a payment that was given up. */
function forget(method: PaymentMethod, verified: Verified): void {
  try {
    method.release?.(verified)
  } catch {
    // Freeing a reservation never changes a payment's outcome.
  }
}

function receiptOf(method: string, reference: string, externalId: string | undefined): Receipt {
  return { status: 'success', method, timestamp: rfc3339(new Date()), reference, ...(externalId !== undefined && { externalId }) }
}
