/**
 * Ordering and exactly-once. Given a credential whose binding the middleware has checked, this
 * claims the challenge, asks the method to verify, claims every key the method names, settles
 * before or after the handler, and releases or keeps claims so that a payment is never doubled,
 * never lost, and never delivered without being paid.
 *
 * Ownership. Each attempt draws a random owner token and holds the challenge claim under it; a
 * retry may take the claim over once its lease has run out (or its outcome is unknown), which
 * swaps in the retry's token. Every write to the challenge is a compare-and-swap on this
 * attempt's token, so an attempt that was taken over can change nothing: not release, not
 * settle, not store an answer, not deliver. The payment keys (transaction hash, signature) are
 * held under the claim's keys token, kept in the challenge record and inherited by whoever takes
 * the claim over; they are written only right after a successful compare-and-swap on the
 * challenge (released after it, settled after it), so only the attempt that owns the claim at
 * that moment touches them.
 */
import type { Credential, PaymentMethod, Settled, Verified } from './method.js'
import { SettlementUnknownError } from './method.js'
import { base64url, bytesFromBase64url } from './protocol/encoding.js'
import { PaymentError, unavailable } from './protocol/problem.js'
import type { ChargeRequest } from './method.js'
import { type ClaimRecord, type ClaimStore, StoreUnavailableError } from './stores/store.js'

export type SettleTiming = 'before' | 'after'

export type SettleEvent =
  | { type: 'verified'; challengeId: string; method: string; payer?: string; credentialType: string }
  | { type: 'settled'; challengeId: string; method: string; reference: string; payer?: string; recovered: boolean }
  | { type: 'released'; challengeId: string; method: string; reason: string }
  | { type: 'settlement-unknown'; challengeId: string; method: string; reference: string }
  | { type: 'settlement-failed'; challengeId: string; method: string; detail: string; afterHandler: boolean }
  | { type: 'replayed'; challengeId: string; method: string }

/** What the handler sees while it runs (the receipt is not known yet under `after`). */
export type Payment = {
  verified: Verified
  settled: Settled | undefined
}

export type SettleParameters = {
  store: ClaimStore
  method: PaymentMethod
  credential: Credential
  request: ChargeRequest
  expires: Date
  timing: SettleTiming
  /** Identifies this exact credential (hash of its payload), to recognise a retry of it. */
  fingerprint: string
  /**
   * The request's `Idempotency-Key` (C10). With one, the paid answer is kept with the claim, and
   * a retry of the same credential with the same key gets that answer again instead of a
   * refusal — a client whose connection dropped after paying still receives what it paid for.
   */
  idempotencyKey?: string
  /**
   * Most bytes of a paid answer kept for an `Idempotency-Key` replay (default
   * {@link maxReplayBytes}). The answer streams to the client as it comes; a copy is kept only
   * while it stays within this bound.
   */
  maxReplayBytes?: number
  /** How long one holder may own a claim before a retry may take over (ms). */
  leaseMs: number
  /** Runs the route handler; resolves its response. */
  handler: (payment: Payment) => Promise<Response>
  /** Adds the receipt to a 2xx response. */
  withReceipt: (response: Response, payment: { verified: Verified; settled: Settled }) => Response
  emit: (event: SettleEvent) => void
  now?: () => number
}

type StoredResponse = { status: number; headers: [string, string][]; body: string }
/** `keys`: the token the claim's payment keys are held under (inherited on takeover). */
type ChallengeData = { fp: string; keys: string; verified?: Verified; idem?: string; response?: StoredResponse }

/** Paid answers larger than this are not kept for idempotent replay (default). */
export const maxReplayBytes = 64 * 1024

/**
 * Sent with every paid answer to a request with an `Idempotency-Key`: the most bytes of a body
 * kept for replay. A body that ends within it is kept; a longer one is streamed through and not
 * kept (the headers left before its length was known).
 */
export const replayLimitHeader = 'Idempotency-Replay-Limit'
/** `unavailable` when the answer is known, before its body, not to be kept (too long, an event stream). */
export const replayHeader = 'Idempotency-Replay'

// Claims outlive the challenge a little so clock skew between instances cannot reopen one.
const graceMs = 60_000

/** Lets the method free what it reserved for a payment that was given up (see `release`). */
function forget(method: PaymentMethod, verified: Verified): void {
  try {
    method.release?.(verified)
  } catch {
    // Freeing a reservation never changes a payment's outcome.
  }
}

/** Two random tokens: this attempt's, and the keys' (for a claim this attempt opens). */
function tokens(): [string, string] {
  const bytes = crypto.getRandomValues(new Uint8Array(32))
  return [base64url(bytes.subarray(0, 16)), base64url(bytes.subarray(16))]
}

function replay(stored: StoredResponse): Response {
  const headers = new Headers(stored.headers)
  headers.set('Idempotent-Replayed', 'true')
  return new Response(bytesFromBase64url(stored.body) as Uint8Array<ArrayBuffer>, { status: stored.status, headers })
}

export async function settle(p: SettleParameters): Promise<Response> {
  const now = p.now ?? Date.now
  const { store, method } = p
  const id = p.credential.challenge.id
  const challengeKey = `mpp:challenge:${id}`
  const challengeExpires = p.expires.getTime() + graceMs
  let lease = now() + p.leaseMs
  // Who this attempt is, and whom the claim's keys belong to (the claim's, once taken over).
  const [owner, newKeys] = tokens()
  let keysOwner = newKeys
  let tookOver = false
  let claimedKeys: string[] = []
  /** Verified by this attempt and not settled yet: what the method may have reserved for it. */
  let unsettled: Verified | undefined
  const base = { challengeId: id, method: method.name }

  const guard = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run()
    } catch (error) {
      if (error instanceof StoreUnavailableError)
        throw unavailable('the payment store is unreachable; nothing was charged, retry shortly', error)
      throw error
    }
  }

  /** Claims live until the challenge and the payment can no longer be used, plus the grace. */
  const claimExpiry = (verified: Verified | undefined) => Math.max(challengeExpires, (verified?.validUntil ?? 0) + graceMs)

  const dataOf = (more: Omit<ChallengeData, 'fp' | 'keys'> = {}): ChallengeData => ({ fp: p.fingerprint, keys: keysOwner, ...more })

  /**
   * A zero-amount challenge's claims (the challenge and any payment keys) count against the
   * store's free budget (proofs cost nothing).
   */
  const claimClass = /^0+$/.test(p.request.amount) ? 'free' : 'paid'
  const setChallenge = (state: ClaimRecord['state'], data: ChallengeData, nextLease?: number): ClaimRecord => ({
    state,
    expires: claimExpiry(data.verified),
    ...(nextLease !== undefined && { lease: nextLease }),
    owner,
    data: JSON.stringify(data),
    class: claimClass,
  })

  /**
   * Gives every claim back: nothing was charged, the credential may be used again. The challenge
   * first: only while this attempt still owns it are the keys its to free (whoever took the
   * claim over holds them now); once it is gone nobody can take it over any more.
   */
  const releaseAll = async (reason: string) => {
    let takenOver = false
    await guard(async () => {
      if (!(await store.transition(challengeKey, 'pending', null, owner))) {
        takenOver = true
        return
      }
      for (const key of claimedKeys) await store.transition(key, 'pending', null, keysOwner)
    }).catch(() => {})
    claimedKeys = []
    // Taken over: the payment is its new holder's to settle or give up, not this attempt's.
    if (takenOver) return
    if (unsettled) forget(method, unsettled)
    unsettled = undefined
    p.emit({ type: 'released', ...base, reason })
  }

  /**
   * Marks the payment done: `lost` when this attempt was taken over meanwhile, `keys-lost` when
   * a payment key is no longer this claim's (the store lost it): then it must not deliver.
   */
  const markSettled = async (data: ChallengeData): Promise<'settled' | 'lost' | 'keys-lost'> => {
    return guard(async () => {
      const won = await store.transition(challengeKey, 'pending', setChallenge('settled', data), owner)
      if (!won) return 'lost'
      // Settled is final: nobody can take the claim over any more, so the keys are this claim's.
      const done: ClaimRecord = { state: 'settled', expires: claimExpiry(data.verified), class: claimClass }
      for (const key of claimedKeys) {
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
  }

  const lostClaim = () =>
    new PaymentError('invalid-challenge', 'this credential was taken over by another attempt; no second delivery is made')

  // 1. Claim the challenge, or find out why it is taken.
  let recovering: Verified | undefined
  const fresh = setChallenge('pending', dataOf(), lease)
  let won = await guard(() => store.claim(challengeKey, fresh))
  if (!won) {
    const record = await guard(() => store.get(challengeKey))
    if (!record) won = await guard(() => store.claim(challengeKey, fresh))
    else {
      const data = JSON.parse(record.data ?? '{}') as Partial<ChallengeData>
      if (record.state === 'settled' && data.response && p.idempotencyKey !== undefined && data.idem === p.idempotencyKey && data.fp === p.fingerprint) {
        p.emit({ type: 'replayed', ...base })
        return replay(data.response)
      }
      if (record.state === 'settled' || data.fp !== p.fingerprint)
        throw new PaymentError('invalid-challenge', 'this challenge has already been used; request a new one')
      const abandoned = record.state === 'unknown' || (record.lease ?? 0) <= now()
      // A record without an owner cannot be compared-and-swapped, so it is never taken over.
      if (!abandoned || record.owner === undefined || data.keys === undefined)
        throw new PaymentError('invalid-challenge', 'a payment with this credential is already in progress', { retryAfter: 1 })
      // Taking over swaps in this attempt's token: the one it replaces can change nothing now.
      const nextLease = now() + p.leaseMs
      const took = await guard(() =>
        store.transition(challengeKey, record.state, { ...record, state: 'pending', lease: nextLease, owner }, record.owner!),
      )
      if (!took)
        throw new PaymentError('invalid-challenge', 'a payment with this credential is already in progress', { retryAfter: 1 })
      lease = nextLease
      keysOwner = data.keys
      tookOver = true
      won = true
      recovering = data.verified
      if (recovering) claimedKeys = [...recovering.claims]
    }
  }
  if (!won) throw new PaymentError('invalid-challenge', 'a payment with this credential is already in progress', { retryAfter: 1 })

  // 2. A retry after an unknown outcome: finish that settlement, deliver once.
  if (recovering) {
    const verified = recovering
    let settled: Settled
    try {
      settled = await method.recover(verified)
    } catch (error) {
      throw await onSettleError(error, verified, false)
    }
    return deliverSettled(verified, settled, true)
  }

  // 3. Verify (no side effects) and claim what must pay once.
  let verified: Verified
  try {
    verified = await method.verify({ credential: p.credential, request: p.request, expires: p.expires, settle: p.timing })
    unsettled = verified
    if (p.timing === 'after' && verified.status === 'ready' && !(method.deferrable ?? ['transaction']).includes(verified.type))
      throw new PaymentError('bad-request', `a ${verified.type} credential cannot be settled after the handler on this route`)
    if (p.timing === 'after' && verified.status === 'settled' && verified.type !== 'proof')
      throw new PaymentError(
        'verification-failed',
        `this route charges only when it succeeds, so it accepts credentials it settles itself; a ${verified.type} credential was already settled by the client`,
      )
    for (const key of verified.claims) {
      const mine: ClaimRecord = { state: 'pending', expires: claimExpiry(verified), owner: keysOwner, class: claimClass }
      const ok = await guard(
        async () =>
          (await store.claim(key, mine)) ||
          // A claim taken over may find keys its earlier holder claimed: they are this claim's.
          (tookOver && (await store.transition(key, 'pending', mine, keysOwner))),
      )
      if (!ok) throw new PaymentError('verification-failed', 'this payment has already been used for another request')
      claimedKeys.push(key)
    }
  } catch (error) {
    await releaseAll(error instanceof PaymentError ? error.detail : 'verification error')
    throw error
  }
  p.emit({ type: 'verified', ...base, credentialType: verified.type, ...(verified.payer && { payer: verified.payer }) })

  // 4. Keep what recovery needs before anything leaves for the chain (or, for a payment the
  // client already settled, before it is recorded): a retry on any instance can then finish it.
  let kept: boolean
  try {
    kept = await guard(() =>
      store.transition(challengeKey, 'pending', setChallenge('pending', dataOf({ verified }), lease), owner),
    )
  } catch (error) {
    // Nothing was sent (or the client's own payment is not yet recorded): give the claims back
    // (best effort), or a retry of this credential would be refused as already used.
    if (verified.status === 'settled') {
      await releaseAll('the payment store failed before the payment was recorded')
      if (error instanceof PaymentError && error.kind === 'payment-unavailable')
        throw unavailable(
          'the payment store is unreachable; your payment is not lost: retry shortly with the same credential to receive the resource',
          error.cause,
        )
      throw error
    }
    await releaseAll('the payment store failed before settlement; nothing was charged')
    throw error
  }
  if (!kept) throw lostClaim()

  // Already settled by the client (push, proof): deliver.
  if (verified.status === 'settled')
    return deliverSettled(verified, { reference: verified.reference, ...(verified.payer && { payer: verified.payer }) }, false)

  // 5a. Settle, then run the handler.
  if (p.timing === 'before') {
    let settled: Settled
    try {
      settled = await method.settle(verified)
    } catch (error) {
      throw await onSettleError(error, verified, false)
    }
    return deliverSettled(verified, settled, false)
  }

  // 5b. Run the handler; settle only when it succeeded.
  const response = await p.handler({ verified, settled: undefined })
  if (response.status < 200 || response.status >= 300) {
    await releaseAll(`the handler answered ${response.status}; nothing was charged`)
    return response
  }
  const withheld = async (refusal: unknown) => {
    await response.body?.cancel().catch(() => {})
    return refusal
  }
  // The handler may have outlived the lease and a retry taken the claim over (and settled it):
  // confirm this attempt still owns it, with a fresh lease, before anything is broadcast.
  let renewed: boolean
  const renewedLease = now() + p.leaseMs
  try {
    renewed = await guard(() =>
      store.transition(challengeKey, 'pending', setChallenge('pending', dataOf({ verified }), renewedLease), owner),
    )
  } catch (error) {
    await releaseAll('the payment store failed before settlement; nothing was charged')
    throw await withheld(error)
  }
  if (!renewed) throw await withheld(lostClaim())
  lease = renewedLease
  let settled: Settled
  try {
    settled = await method.settle(verified)
  } catch (error) {
    throw await withheld(await onSettleError(error, verified, true))
  }
  try {
    await recordSettled(verified, true)
  } catch (error) {
    throw await withheld(error)
  }
  p.emit({ type: 'settled', ...base, reference: settled.reference, ...(settled.payer && { payer: settled.payer }), recovered: false })
  return remember(verified, p.withReceipt(response, { verified, settled }))

  /** Records a payment that happened; throws when this holder lost its claim or the store failed. */
  async function recordSettled(verified: Verified, afterHandler: boolean): Promise<void> {
    let marked: Awaited<ReturnType<typeof markSettled>>
    try {
      marked = await markSettled(dataOf({ verified }))
    } catch (error) {
      // The payment happened; only its record failed. The claim still holds what recovery needs.
      if (error instanceof PaymentError && error.kind === 'payment-unavailable')
        throw unavailable(
          'the payment was made but could not be recorded; retry with the same credential shortly to receive the resource (it will not be charged twice)',
          error.cause,
          // The claim is taken over once this attempt's lease has run out.
          Math.ceil(p.leaseMs / 1000),
        )
      throw error
    }
    if (marked === 'lost') throw lostClaim()
    if (marked === 'keys-lost') {
      const detail = 'this payment has already been used for another request; no delivery is made'
      p.emit({ type: 'settlement-failed', ...base, detail, afterHandler })
      throw new PaymentError('verification-failed', detail)
    }
  }

  async function deliverSettled(verified: Verified, settled: Settled, recovered: boolean): Promise<Response> {
    await recordSettled(verified, false)
    p.emit({ type: 'settled', ...base, reference: settled.reference, ...(settled.payer && { payer: settled.payer }), recovered })
    const response = await p.handler({ verified, settled })
    if (response.status < 200 || response.status >= 300) return response
    return remember(verified, p.withReceipt(response, { verified, settled }))
  }

  /**
   * Keeps a delivered answer with its claim when the client sent an Idempotency-Key. The body is
   * never held back: it streams through as the handler produces it, and a copy is kept only while
   * it stays within the replay limit. A body that ends within it is stored (a compare-and-swap on
   * the settled claim) before the stream closes; a longer one, a body that fails, or one the client
   * cancelled is not kept. The store write is best effort and never breaks the answer.
   */
  async function remember(verified: Verified, response: Response): Promise<Response> {
    if (p.idempotencyKey === undefined) return response
    const limit = p.maxReplayBytes ?? maxReplayBytes
    const idem = p.idempotencyKey
    const headers = new Headers(response.headers)
    headers.set(replayLimitHeader, String(limit))
    const answer = (body: BodyInit | null) => new Response(body, { status: response.status, statusText: response.statusText, headers })

    const keep = async (bytes: Uint8Array): Promise<void> => {
      const stored: StoredResponse = {
        status: response.status,
        headers: [...response.headers].filter(([name]) => name !== 'set-cookie'),
        body: base64url(bytes),
      }
      const data = dataOf({ verified, idem, response: stored })
      // Best effort: without it, a retry is refused as "already used", as it would be without a key.
      // A compare-and-swap on this attempt's token: an attempt taken over stores nothing.
      await store.transition(challengeKey, 'settled', setChallenge('settled', data), owner).catch(() => false)
    }

    const length = response.headers.get('content-length')
    const type = response.headers.get('content-type') ?? ''
    if (limit === 0 || (length !== null && !(Number(length) <= limit)) || /^\s*text\/event-stream\b/i.test(type)) {
      headers.set(replayHeader, 'unavailable')
      return answer(response.body)
    }
    if (!response.body) {
      await keep(new Uint8Array(0)).catch(() => {})
      return answer(null)
    }

    const source = response.body.getReader()
    let copy: Uint8Array[] | undefined = []
    let copied = 0
    let cancelled = false
    const body = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          let read: ReadableStreamReadResult<Uint8Array>
          try {
            read = await source.read()
          } catch (error) {
            copy = undefined
            controller.error(error)
            return
          }
          // Cancelled meanwhile (the read ended because the client went away): nothing to forward.
          if (cancelled) return
          if (read.done) {
            if (copy) {
              const bytes = new Uint8Array(copied)
              let at = 0
              for (const chunk of copy) {
                bytes.set(chunk, at)
                at += chunk.byteLength
              }
              copy = undefined
              // The answer is whole: kept even if the client leaves while it is written.
              await keep(bytes).catch(() => {})
            }
            if (!cancelled) controller.close()
            return
          }
          const chunk = read.value
          if (copy) {
            if (!(chunk instanceof Uint8Array) || copied + chunk.byteLength > limit) copy = undefined
            else {
              copy.push(chunk.slice())
              copied += chunk.byteLength
            }
          }
          controller.enqueue(chunk)
        },
        cancel(reason) {
          // The client went away: what it got is partial, so nothing is kept.
          cancelled = true
          copy = undefined
          return source.cancel(reason)
        },
      },
      // Reads ahead up to the limit even before the client reads (a short answer is kept even
      // when the client is gone by then), and no further: a long body flows at the client's pace.
      { highWaterMark: limit, size: (chunk) => (chunk instanceof Uint8Array ? chunk.byteLength : 1) },
    )
    return answer(body)
  }

  /** Sorts a settlement failure: definite (release), unknown (keep for recovery), store down. */
  async function onSettleError(error: unknown, verified: Verified, afterHandler: boolean): Promise<unknown> {
    if (error instanceof PaymentError && error.kind !== 'payment-unavailable') {
      await releaseAll(error.detail)
      p.emit({ type: 'settlement-failed', ...base, detail: error.detail, afterHandler })
      if (afterHandler && error.status !== 402)
        return new PaymentError('settlement-failed', `the handler succeeded but settlement failed: ${error.detail}`)
      return error
    }
    if (error instanceof PaymentError && !(error.cause instanceof SettlementUnknownError)) {
      // Unavailable before anything was sent: nothing charged.
      await releaseAll(error.detail)
      return error
    }
    // Outcome unknown: keep the claim, so that a retry of this credential finds the payment.
    await guard(() =>
      store.transition(challengeKey, 'pending', setChallenge('unknown', dataOf({ verified })), owner),
    ).catch(() => {})
    p.emit({ type: 'settlement-unknown', ...base, reference: verified.reference })
    return unavailable(
      'the payment was sent but its outcome is not known yet; retry with the same credential to complete it (it will not be charged twice)',
      error,
    )
  }
}
