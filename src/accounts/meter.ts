/**
 * The contract between the accounts layers (issue #15). `accounts.charge()` bills an API key
 * through a `Meter`: the SQL ledger implements it in process, the hub's remote client implements
 * it over HTTP, so the same route works against either. Money is always an integer of the
 * currency's base units (`bigint`), never a float.
 *
 * A call: `hold` (validate the key for this server, reserve the price atomically), run the work,
 * then `capture` when it succeeded or `release` when it did not. A hold that is neither captured
 * nor released (the process died) is released by the ledger's sweeper after its `ttlMs`; while
 * the work runs, `extend` keeps pushing that expiry forward, so only a dead call's hold expires.
 * Every operation is idempotent on its `holdId`: a retry after a lost answer does not move money
 * twice.
 */

/** Why a key cannot pay. Each becomes a problem JSON naming the reason (never the key itself). */
export type MeterRefusal =
  /** 401: no key with this value exists (or it is malformed). Says nothing about other accounts. */
  | 'invalid-key'
  /** 401: the key was revoked. */
  | 'key-revoked'
  /** 401: the key has expired. */
  | 'key-expired'
  /** 403: the key is valid, but for another server (realm). */
  | 'wrong-server'
  /** 402: the key's own spend limit would be exceeded. */
  | 'key-limit-exceeded'
  /** 402: the account's balance does not cover the price. */
  | 'insufficient-balance'

/** A refusal of the meter: the reason, words for the client, and (402s) the numbers to show. */
export class MeterError extends Error {
  override name = 'MeterError'
  readonly reason: MeterRefusal
  /** The account's available balance (base units), for `insufficient-balance`. */
  readonly balance: bigint | undefined
  /** What the key may still spend (base units), for `key-limit-exceeded`. */
  readonly remaining: bigint | undefined

  constructor(reason: MeterRefusal, message: string, numbers: { balance?: bigint; remaining?: bigint } = {}) {
    super(message)
    this.reason = reason
    this.balance = numbers.balance
    this.remaining = numbers.remaining
  }
}

/** The ledger (or hub) could not answer: the caller answers 503 and runs nothing. */
export class MeterUnavailableError extends Error {
  override name = 'MeterUnavailableError'
}

export type HoldRequest = {
  /** The API key exactly as the client sent it (the meter hashes it; it is never stored or logged). */
  key: string
  /** The server (realm) the key must belong to. */
  realm: string
  /** Base units. */
  amount: bigint
  /** The token the price is in; the ledger refuses a currency other than its own. */
  currency: string
  /** Chosen by the caller, unique per call (e.g. a random id); makes the hold idempotent. */
  holdId: string
  /** What is being bought, for usage and the ledger ("GET /metered", "tools/call summarize"). */
  description?: string
  /** After this long the sweeper releases the hold if it is still open. */
  ttlMs: number
}

export type Hold = {
  holdId: string
  accountId: string
  keyId: string
  /** The account's owner: the address that paid its top-ups. */
  owner: string
  amount: bigint
  /** The account's available balance after the hold. */
  balance: bigint
}

/** What `accounts.charge()` needs from a ledger, local or remote. `capture` of a hold that was released (expired) throws `LedgerError` 'hold-released'. */
export interface Meter {
  /** Validates the key for `realm` and reserves `amount`. Throws `MeterError` or `MeterUnavailableError`. */
  hold(request: HoldRequest): Promise<Hold>
  /** The work succeeded: the held amount is spent (earnings less the platform fee). Idempotent. */
  capture(holdId: string): Promise<{ balance: bigint }>
  /** The work failed: the held amount returns to the balance. Idempotent; a captured hold stays captured. */
  release(holdId: string): Promise<{ balance: bigint }>
  /**
   * The work is still running: keep the hold open for another `ttlMs` from now (its expiry only
   * moves later). `accounts.charge()` calls it every third of the ttl while a handler runs, so
   * the sweeper never releases the hold of a call that is alive, however slow. Throws the
   * ledger's `LedgerError` 'hold-released' when the hold was already released (then `capture`
   * throws it too: nothing is charged), 'unknown-hold' when there is none.
   */
  extend(holdId: string, ttlMs: number): Promise<{ expiresAt: Date }>
  /**
   * Optional: checks that the key may be used at `realm` without holding anything; throws
   * `MeterError` (`invalid-key`, `key-revoked`, `key-expired`, `wrong-server`) when it may not.
   * `accounts.charge()` calls it before answering an Idempotency-Key retry from the kept answer,
   * so a key revoked (or expired) since is refused rather than served. The SQL ledger and
   * `remoteMeter` have it.
   */
  authenticate?(key: string, realm: string): Promise<unknown>
}
