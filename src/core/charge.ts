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
import { type Claim, type Marked, openClaim } from './claim.js'
import type { Attempt, Delivery } from './intent.js'

/** Settles one charge credential and runs the paid work once. Throws `PaymentError` to refuse. */
export async function payCharge<Result>(attempt: Attempt<Result>): Promise<Delivery<Result>> {
  const claim = openClaim({
    store: attempt.store,
    challengeId: attempt.credential.challenge.id,
    fingerprint: attempt.fingerprint,
    idempotencyKey: attempt.replay ? attempt.idempotencyKey : undefined,
    expires: attempt.expires,
    leaseMs: attempt.leaseMs,
    claimClass: /^0+$/.test(attempt.offer.request.amount) ? 'free' : 'paid',
  })
  const charge = new ChargeAttempt(attempt, claim)
  const acquired = await claim.acquire()
  if (acquired.kind === 'replay') return charge.replayed(acquired.answer)
  if (acquired.kind === 'recovering') return charge.deliverSettled(acquired.verified, await charge.recover(acquired.verified), true)
  const verified = await charge.verifyAndClaim()
  await charge.keepForRecovery(verified)
  // Already settled by the client (push, proof): deliver.
  if (verified.status === 'settled') return charge.deliverSettled(verified, settledByClient(verified), false)
  if (attempt.timing === 'before') return charge.deliverSettled(verified, await charge.settle(verified), false)
  return charge.runThenSettle(verified)
}

/** One attempt's stages; each a short step over the claim. */
class ChargeAttempt<Result> {
  private readonly method: PaymentMethod
  private readonly event: { challengeId: string; method: string; intent: string }
  /** What the work is shown (`c.get('payment')`); updated in place once the payment settles. */
  private payment: PaymentInfo | undefined
  /** Verified by this attempt and not settled yet: what the method may have reserved for it. */
  private unsettled: Verified | undefined
  /** How long the last settle (or recover) call took, ms (for `onEvent`). */
  private settleMs: number | undefined

  constructor(
    private readonly attempt: Attempt<Result>,
    private readonly claim: Claim,
  ) {
    this.method = attempt.offer.paymentMethod
    this.event = { challengeId: attempt.credential.challenge.id, method: this.method.name, intent: attempt.offer.intent }
  }

  replayed(answer: unknown): Delivery<Result> {
    this.attempt.emit({ type: 'replayed', ...this.event })
    return { result: this.attempt.replay!.restore(answer), succeeded: true, receipt: undefined, replayed: true }
  }

  /** Verifies without side effects and claims every key that must pay once; gives all back on refusal. */
  async verifyAndClaim(): Promise<Verified> {
    const { credential, offer, expires, timing } = this.attempt
    let verified: Verified
    try {
      verified = await this.method.verify({ credential, request: offer.request, expires, settle: timing })
      this.unsettled = verified
      if (timing === 'after') refuseUndeferrable(this.method, verified)
      await this.claim.claimKeys(verified)
    } catch (error) {
      await this.release(error instanceof PaymentError ? error.detail : 'verification error')
      throw error
    }
    this.attempt.emit({ type: 'verified', ...this.event, credentialType: verified.type, ...(verified.payer && { payer: verified.payer }) })
    return verified
  }

  /** Keeps what recovery needs before anything leaves for the chain (or before a client-settled payment is recorded). */
  async keepForRecovery(verified: Verified): Promise<void> {
    let kept: boolean
    try {
      kept = await this.claim.keep(verified)
    } catch (error) {
      // Nothing was sent (or the client's own payment is not recorded yet): give the claims back.
      if (verified.status === 'settled') {
        await this.release('the payment store failed before the payment was recorded')
        if (error instanceof PaymentError && error.kind === 'payment-unavailable')
          throw unavailable(
            'the payment store is unreachable; your payment is not lost: retry shortly with the same credential to receive the resource',
            error.cause,
          )
        throw error
      }
      await this.release('the payment store failed before settlement; nothing was charged')
      throw error
    }
    if (!kept) throw lostClaim()
  }

  settle(verified: Verified): Promise<Settled> {
    return this.sortFailure(() => this.method.settle(verified), verified, false)
  }

  recover(verified: Verified): Promise<Settled> {
    return this.sortFailure(() => this.method.recover(verified), verified, false)
  }

  /** Records the settled payment, runs the work, and delivers its result with the receipt. */
  async deliverSettled(verified: Verified, settled: Settled, recovered: boolean): Promise<Delivery<Result>> {
    await this.recordSettled(verified, false)
    this.emitSettled(settled, recovered)
    const receipt = this.settledPayment(verified, settled)
    const outcome = await this.attempt.run(this.paymentFor(verified))
    if (!outcome.succeeded) return { result: outcome.result, succeeded: false, receipt, replayed: false }
    return { result: outcome.result, succeeded: true, receipt, replayed: false, ...this.keeper(verified) }
  }

  /** `settle: 'after'`: runs the work, and settles only when it succeeded; releases otherwise. */
  async runThenSettle(verified: Verified): Promise<Delivery<Result>> {
    const outcome = await this.attempt.run(this.paymentFor(verified))
    if (!outcome.succeeded) {
      await this.release(`${outcome.failure ?? 'the paid work did not succeed'}; nothing was charged`)
      return { result: outcome.result, succeeded: false, receipt: undefined, replayed: false }
    }
    await this.confirmStillHeld(verified)
    const settled = await this.sortFailure(() => this.method.settle(verified), verified, true)
    await this.recordSettled(verified, true)
    this.emitSettled(settled, false)
    const receipt = this.settledPayment(verified, settled)
    return { result: outcome.result, succeeded: true, receipt, replayed: false, ...this.keeper(verified) }
  }

  /**
   * The work may have outlived the lease and a retry taken the claim over (and settled it):
   * confirm this attempt still holds it, with a fresh lease, before anything is broadcast.
   */
  private async confirmStillHeld(verified: Verified): Promise<void> {
    let held: boolean
    try {
      held = await this.claim.renew(verified)
    } catch (error) {
      await this.release('the payment store failed before settlement; nothing was charged')
      throw error
    }
    if (!held) throw lostClaim()
  }

  /** Records a payment that happened; throws when this attempt lost its claim or a key, or the store failed. */
  private async recordSettled(verified: Verified, afterWork: boolean): Promise<void> {
    let marked: Marked
    try {
      marked = await this.claim.markSettled(verified)
    } catch (error) {
      // The payment happened; only its record failed. The claim still holds what recovery needs.
      if (error instanceof PaymentError && error.kind === 'payment-unavailable')
        throw unavailable(
          'the payment was made but could not be recorded; retry with the same credential shortly to receive the resource (it will not be charged twice)',
          error.cause,
          // The claim is taken over once this attempt's lease has run out.
          Math.ceil(this.attempt.leaseMs / 1000),
        )
      throw error
    }
    this.unsettled = undefined
    if (marked === 'lost') throw lostClaim()
    if (marked === 'keys-lost') {
      const detail = 'this payment has already been used for another request; no delivery is made'
      this.attempt.emit({ type: 'settlement-failed', ...this.event, detail, afterHandler: afterWork })
      throw new PaymentError('verification-failed', detail)
    }
  }

  /** Shows the work the settled payment and its receipt (the same receipt is delivered). */
  private settledPayment(verified: Verified, settled: Settled): Receipt {
    const payment = this.paymentFor(verified)
    const receipt = payment.receipt?.reference === settled.reference ? payment.receipt : receiptOf(this.method.name, settled.reference, this.attempt.externalId)
    Object.assign(payment, { settled: true, receipt, reference: settled.reference, payer: settled.payer ?? verified.payer })
    return receipt
  }

  private paymentFor(verified: Verified): PaymentInfo {
    this.payment ??= paymentInfoOf(this.attempt.offer, this.attempt.credential, verified)
    return this.payment
  }

  private emitSettled(settled: Settled, recovered: boolean): void {
    const { amount, currency } = this.attempt.offer.request
    this.attempt.emit({
      type: 'settled',
      ...this.event,
      reference: settled.reference,
      ...(settled.payer && { payer: settled.payer }),
      recovered,
      amount,
      currency,
      ...(this.settleMs !== undefined && { durationMs: this.settleMs }),
    })
  }

  /** With an Idempotency-Key, the transport may keep the delivered answer with the settled claim. */
  private keeper(verified: Verified): Pick<Delivery<Result>, 'keep'> {
    const { idempotencyKey, replay } = this.attempt
    if (idempotencyKey === undefined || !replay) return {}
    return { keep: (answer) => this.claim.remember(verified, idempotencyKey, answer) }
  }

  /** Gives every claim back and lets the method free what it reserved. */
  private async release(reason: string): Promise<void> {
    // Taken over: the payment is its new holder's to settle or give up, not this attempt's.
    if (!(await this.claim.release())) return
    if (this.unsettled) forget(this.method, this.unsettled)
    this.unsettled = undefined
    this.attempt.emit({ type: 'released', ...this.event, reason })
  }

  /** Sorts a settlement failure: definite (release), unknown (keep for recovery), store down. */
  private async sortFailure(run: () => Promise<Settled>, verified: Verified, afterWork: boolean): Promise<Settled> {
    const started = Date.now()
    try {
      const settled = await run()
      this.settleMs = Date.now() - started
      return settled
    } catch (error) {
      const durationMs = Date.now() - started
      if (error instanceof PaymentError && error.kind !== 'payment-unavailable') {
        await this.release(error.detail)
        this.attempt.emit({ type: 'settlement-failed', ...this.event, detail: error.detail, afterHandler: afterWork, durationMs })
        if (afterWork && error.status !== 402) throw new PaymentError('settlement-failed', `the handler succeeded but settlement failed: ${error.detail}`)
        throw error
      }
      if (error instanceof PaymentError && !(error.cause instanceof SettlementUnknownError)) {
        // Unavailable before anything was sent: nothing charged.
        await this.release(error.detail)
        throw error
      }
      // Outcome unknown: keep the claim, so that a retry of this credential finds the payment.
      await this.claim.markUnknown(verified)
      this.attempt.emit({ type: 'settlement-unknown', ...this.event, reference: verified.reference, durationMs })
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

export function receiptOf(method: string, reference: string, externalId: string | undefined): Receipt {
  return { status: 'success', method, timestamp: rfc3339(new Date()), reference, ...(externalId !== undefined && { externalId }) }
}
