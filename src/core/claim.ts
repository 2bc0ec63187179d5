/**
 * One payment's claims in the store: the challenge (with what recovery needs) and the keys the
 * method says must pay once (transaction hashes, payloads).
 *
 * Ownership. Each attempt draws a random owner token and holds the challenge claim under it; a
 * retry may take the claim over once its lease has run out (or its outcome is unknown), which
 * swaps in the retry's token. Every write to the challenge is a compare-and-swap on this
 * attempt's token, so an attempt that was taken over can change nothing: not release, not
 * settle, not store an answer. The payment keys are held under the claim's keys token, kept in
 * the challenge record and inherited by whoever takes the claim over; they are written only
 * right after a successful compare-and-swap on the challenge, so only the attempt that owns the
 * claim at that moment touches them.
 */
import type { Verified } from '../method.js'
import { base64url } from '../protocol/encoding.js'
import { PaymentError, unavailable } from '../protocol/problem.js'
import { type ClaimClass, type ClaimRecord, type ClaimState, type ClaimStore, StoreUnavailableError } from '../stores/store.js'

/** What the challenge's claim keeps: the credential it is held for, and what recovery or replay needs. */
export type ChallengeData = {
  /** The fingerprint of the credential that holds the challenge. */
  fp: string
  /** The token the claim's payment keys are held under (inherited on takeover). */
  keys: string
  verified?: Verified
  /** Idempotency-Key of the delivered answer, and the answer as the transport kept it. */
  idem?: string
  response?: unknown
}

/** How an attempt came to hold the challenge. */
export type Acquired =
  | { kind: 'fresh' }
  /** A retry after an unknown outcome, or of an attempt that died: finish that payment. */
  | { kind: 'recovering'; verified: Verified }
  /** A retry of a delivered payment with the same Idempotency-Key: answer it again. */
  | { kind: 'replay'; answer: unknown }

/** How recording a settled payment went: `lost` (taken over meanwhile), `keys-lost` (a payment key is no longer this claim's). */
export type Marked = 'settled' | 'lost' | 'keys-lost'

// Claims outlive the challenge a little so clock skew between instances cannot reopen one.
const graceMs = 60_000

export type ClaimParameters = {
  store: ClaimStore
  challengeId: string
  fingerprint: string
  idempotencyKey: string | undefined
  /** The challenge's expiry. */
  expires: Date
  leaseMs: number
  /** `free` for a zero-amount challenge (proofs cost nothing): its claims count against the store's free budget. */
  claimClass: ClaimClass
  now?: () => number
}

export type Claim = ReturnType<typeof openClaim>

/** The claims of one attempt at one credential. */
export function openClaim(parameters: ClaimParameters) {
  const { store, fingerprint, leaseMs, claimClass } = parameters
  const now = parameters.now ?? Date.now
  const challengeKey = `mpp:challenge:${parameters.challengeId}`
  const challengeExpires = parameters.expires.getTime() + graceMs
  // Who this attempt is, and whom the claim's keys belong to (the claim's, once taken over).
  const [owner, newKeysOwner] = tokens()
  let keysOwner = newKeysOwner
  let tookOver = false
  let lease = now() + leaseMs
  let keys: string[] = []

  /** Claims live until the challenge and the payment can no longer be used, plus the grace. */
  const expiry = (verified: Verified | undefined) => Math.max(challengeExpires, (verified?.validUntil ?? 0) + graceMs)
  const data = (more: Omit<ChallengeData, 'fp' | 'keys'> = {}): ChallengeData => ({ fp: fingerprint, keys: keysOwner, ...more })
  const record = (state: ClaimState, content: ChallengeData, withLease?: number): ClaimRecord => ({
    state,
    expires: expiry(content.verified),
    ...(withLease !== undefined && { lease: withLease }),
    owner,
    data: JSON.stringify(content),
    class: claimClass,
  })
  const inProgress = () => new PaymentError('invalid-challenge', 'a payment with this credential is already in progress', { retryAfter: 1 })

  return {
    /** Takes the challenge, or finds out why it is taken (used, in progress, recoverable, replayable). */
    async acquire(): Promise<Acquired> {
      const fresh = record('pending', data(), lease)
      if (await guarded(() => store.claim(challengeKey, fresh))) return { kind: 'fresh' }
      const current = await guarded(() => store.get(challengeKey))
      if (!current) {
        if (await guarded(() => store.claim(challengeKey, fresh))) return { kind: 'fresh' }
        throw inProgress()
      }
      const held = JSON.parse(current.data ?? '{}') as Partial<ChallengeData>
      if (
        current.state === 'settled' &&
        held.response !== undefined &&
        parameters.idempotencyKey !== undefined &&
        held.idem === parameters.idempotencyKey &&
        held.fp === fingerprint
      )
        return { kind: 'replay', answer: held.response }
      if (current.state === 'settled' || held.fp !== fingerprint)
        throw new PaymentError('invalid-challenge', 'this challenge has already been used; request a new one')
      const abandoned = current.state === 'unknown' || (current.lease ?? 0) <= now()
      // A record without an owner cannot be compared-and-swapped, so it is never taken over.
      if (!abandoned || current.owner === undefined || held.keys === undefined) throw inProgress()
      // Taking over swaps in this attempt's token: the one it replaces can change nothing now.
      const nextLease = now() + leaseMs
      const took = await guarded(() => store.transition(challengeKey, current.state, { ...current, state: 'pending', lease: nextLease, owner }, current.owner!))
      if (!took) throw inProgress()
      lease = nextLease
      keysOwner = held.keys
      tookOver = true
      if (!held.verified) return { kind: 'fresh' }
      keys = [...held.verified.claims]
      return { kind: 'recovering', verified: held.verified }
    },

    /** Claims every key the method named, under the claim's keys token; refuses a payment one of them already paid. */
    async claimKeys(verified: Verified): Promise<void> {
      const mine: ClaimRecord = { state: 'pending', expires: expiry(verified), owner: keysOwner, class: claimClass }
      for (const key of verified.claims) {
        const won = await guarded(
          async () =>
            (await store.claim(key, mine)) ||
            // A claim taken over may find keys its earlier holder claimed: they are this claim's.
            (tookOver && (await store.transition(key, 'pending', mine, keysOwner))),
        )
        if (!won) throw new PaymentError('verification-failed', 'this payment has already been used for another request')
        keys.push(key)
      }
    },

    /** Keeps what recovery needs before anything leaves for the chain; false when this attempt lost the claim. */
    keep(verified: Verified): Promise<boolean> {
      return guarded(() => store.transition(challengeKey, 'pending', record('pending', data({ verified }), lease), owner))
    },

    /** Confirms this attempt still holds the claim, with a fresh lease (after long work); false when it was taken over. */
    async renew(verified: Verified): Promise<boolean> {
      const renewed = now() + leaseMs
      const held = await guarded(() => store.transition(challengeKey, 'pending', record('pending', data({ verified }), renewed), owner))
      if (held) lease = renewed
      return held
    },

    /** Records the payment as done. */
    markSettled(verified: Verified): Promise<Marked> {
      return guarded(async () => {
        const won = await store.transition(challengeKey, 'pending', record('settled', data({ verified })), owner)
        if (!won) return 'lost'
        // Settled is final: nobody can take the claim over any more, so the keys are this claim's.
        const done: ClaimRecord = { state: 'settled', expires: expiry(verified), class: claimClass }
        for (const key of keys) {
          let kept: boolean
          try {
            kept = await store.transition(key, 'pending', done, keysOwner)
          } catch (error) {
            // Unanswered: the key is then still `pending` under this claim's token, which nobody
            // can use or change now that the challenge is settled; it refuses every other use
            // just as `settled` does.
            if (error instanceof StoreUnavailableError) continue
            throw error
          }
          if (!kept) return 'keys-lost'
        }
        return 'settled'
      })
    },

    /** The outcome of a broadcast is not known: keep the claim so that a retry can finish it. */
    async markUnknown(verified: Verified): Promise<void> {
      await guarded(() => store.transition(challengeKey, 'pending', record('unknown', data({ verified })), owner)).catch(() => {})
    },

    /**
     * Gives every claim back (best effort): nothing was charged, the credential may be used
     * again. The challenge first: only while this attempt still owns it are the keys its to
     * free. Resolves false when the claim was taken over (its new holder settles or gives up).
     */
    async release(): Promise<boolean> {
      let released = true
      await guarded(async () => {
        if (!(await store.transition(challengeKey, 'pending', null, owner))) {
          released = false
          return
        }
        for (const key of keys) await store.transition(key, 'pending', null, keysOwner)
      }).catch(() => {})
      keys = []
      return released
    },

    /** Keeps a delivered answer with the settled claim, for a retry with the same Idempotency-Key (best effort). */
    async remember(verified: Verified, idempotencyKey: string, answer: unknown): Promise<void> {
      await store.transition(challengeKey, 'settled', record('settled', data({ verified, idem: idempotencyKey, response: answer })), owner).catch(() => false)
    },
  }
}

/** Two random tokens: this attempt's, and the keys' (for a claim this attempt opens). */
function tokens(): [string, string] {
  const bytes = crypto.getRandomValues(new Uint8Array(32))
  return [base64url(bytes.subarray(0, 16)), base64url(bytes.subarray(16))]
}

/** A store that cannot answer fails the payment closed: 503, nothing charged, retry. */
async function guarded<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run()
  } catch (error) {
    if (error instanceof StoreUnavailableError) throw unavailable('the payment store is unreachable; nothing was charged, retry shortly', error)
    throw error
  }
}
