/**
 * One payment's claims in the store: the challenge (with what recovery needs) and the keys the
 * method says must pay once (transaction hashes, payloads). Every change is a compare-and-swap
 * on this attempt's lease, so an attempt that lost its claim (its lease ran out and a retry took
 * over) can no longer change anything.
 */
import type { Verified } from '../method.js'
import { PaymentError, unavailable } from '../protocol/problem.js'
import { type ClaimRecord, type ClaimState, type ClaimStore, StoreUnavailableError } from '../stores/store.js'

/** What the challenge's claim keeps: the credential it is held for, and what recovery or replay needs. */
export type ChallengeData = {
  /** The fingerprint of the credential that holds the challenge. */
  fp: string
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
  now?: () => number
}

export type Claim = ReturnType<typeof openClaim>

/** The claims of one attempt at one credential. */
export function openClaim(parameters: ClaimParameters) {
  const { store, fingerprint, leaseMs } = parameters
  const now = parameters.now ?? Date.now
  const challengeKey = `mpp:challenge:${parameters.challengeId}`
  const challengeExpires = parameters.expires.getTime() + graceMs
  let lease = now() + leaseMs
  let keys: string[] = []

  /** Claims live until the challenge and the payment can no longer be used, plus the grace. */
  const expiry = (verified: Verified | undefined) => Math.max(challengeExpires, (verified?.validUntil ?? 0) + graceMs)
  const record = (state: ClaimState, data: ChallengeData, withLease?: number): ClaimRecord => ({
    state,
    expires: expiry(data.verified),
    ...(withLease !== undefined && { lease: withLease }),
    data: JSON.stringify(data),
  })
  const inProgress = () => new PaymentError('invalid-challenge', 'a payment with this credential is already in progress', { retryAfter: 1 })

  return {
    /** Takes the challenge, or finds out why it is taken (used, in progress, recoverable, replayable). */
    async acquire(): Promise<Acquired> {
      const fresh = record('pending', { fp: fingerprint }, lease)
      if (await guarded(() => store.claim(challengeKey, fresh))) return { kind: 'fresh' }
      const current = await guarded(() => store.get(challengeKey))
      if (!current) {
        if (await guarded(() => store.claim(challengeKey, fresh))) return { kind: 'fresh' }
        throw inProgress()
      }
      const data = JSON.parse(current.data ?? '{}') as ChallengeData
      if (current.state === 'settled' && data.response !== undefined && parameters.idempotencyKey !== undefined && data.idem === parameters.idempotencyKey && data.fp === fingerprint)
        return { kind: 'replay', answer: data.response }
      if (current.state === 'settled' || data.fp !== fingerprint)
        throw new PaymentError('invalid-challenge', 'this challenge has already been used; request a new one')
      const abandoned = current.state === 'unknown' || (current.lease ?? 0) <= now()
      if (!abandoned) throw inProgress()
      const nextLease = now() + leaseMs
      const took = await guarded(() => store.transition(challengeKey, current.state, { ...current, state: 'pending', lease: nextLease }, current.lease))
      if (!took) throw inProgress()
      lease = nextLease
      if (!data.verified) return { kind: 'fresh' }
      keys = [...data.verified.claims]
      return { kind: 'recovering', verified: data.verified }
    },

    /** Claims every key the method named; refuses a payment one of them already paid. */
    async claimKeys(verified: Verified): Promise<void> {
      for (const key of verified.claims) {
        const won = await guarded(() => store.claim(key, { state: 'pending', expires: expiry(verified) }))
        if (!won) throw new PaymentError('verification-failed', 'this payment has already been used for another request')
        keys.push(key)
      }
    },

    /** Keeps what recovery needs before anything leaves for the chain; false when this attempt lost the claim. */
    keep(verified: Verified): Promise<boolean> {
      return guarded(() => store.transition(challengeKey, 'pending', record('pending', { fp: fingerprint, verified }, lease), lease))
    },

    /** Records the payment as done; false when this attempt lost the claim meanwhile. */
    async markSettled(verified: Verified): Promise<boolean> {
      return guarded(async () => {
        const won = await store.transition(challengeKey, 'pending', record('settled', { fp: fingerprint, verified }), lease)
        if (!won) return false
        for (const key of keys) await store.transition(key, 'pending', { state: 'settled', expires: expiry(verified) })
        return true
      })
    },

    /** The outcome of a broadcast is not known: keep the claim so that a retry can finish it. */
    async markUnknown(verified: Verified): Promise<void> {
      await guarded(() => store.transition(challengeKey, 'pending', record('unknown', { fp: fingerprint, verified }), lease)).catch(() => {})
    },

    /** Gives every claim back (best effort): nothing was charged, the credential may be used again. */
    async release(): Promise<void> {
      await guarded(async () => {
        for (const key of keys) await store.transition(key, 'pending', null)
        await store.transition(challengeKey, 'pending', null, lease)
      }).catch(() => {})
      keys = []
    },

    /** Keeps a delivered answer with the settled claim, for a retry with the same Idempotency-Key (best effort). */
    async remember(verified: Verified, idempotencyKey: string, answer: unknown): Promise<void> {
      const data: ChallengeData = { fp: fingerprint, verified, idem: idempotencyKey, response: answer }
      await store.transition(challengeKey, 'settled', record('settled', data)).catch(() => false)
    },
  }
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
