/**
 * hono-mpp/accounts: prepaid balances and API keys on top of the MPP charge (issue #15).
 *
 * `accounts({ ledger, realm, secret, methods })` gives:
 * - `charge({ amount })`: a route (or, through `scheme`, an MCP operation) that an API key pays
 *   from its account (`Authorization: Bearer <key>` or `X-API-Key: <key>`: hold the price, run
 *   the handler, capture on success, release otherwise) and that a wallet still pays per call
 *   with the usual 402 Payment challenge;
 * - `routes()`: the account's own routes: `POST /account/top-up` (an MPP payment of the amount the
 *   payer chooses, credited exactly once to the verified payer's account), `GET /account`, and
 *   `/account/keys` to create, list, limit and revoke keys, authenticated by a key of the account
 *   or by a zero-amount MPP proof signed by the owner's wallet.
 *
 * Money is an integer of the currency's base units (`bigint`); the wire carries decimal strings.
 * API keys never appear in logs, events, error text or kept answers.
 */

import type { Context, MiddlewareHandler } from 'hono'
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { PaymentInfo } from '../core/binding.js'
import type { CredentialScheme, Delivery, TokenAttempt } from '../core/intent.js'
import { type PaymentMethod, SettlementUnknownError, type Verified } from '../method.js'
import { base64url, utf8 } from '../protocol/encoding.js'
import { ConfigurationError } from '../protocol/errors.js'
import { sha256 } from '../protocol/hmac.js'
import { PaymentError, type ProblemKind } from '../protocol/problem.js'
import { rfc3339 } from '../protocol/receipt.js'
import type { ClaimRecord } from '../stores/store.js'
import { type Mpp, type MppOptions, mpp } from '../transports/http.js'
import { type HubEnv, type HubLedger, type HubOptions, hub } from './hub.js'
import { isEntryId, type KeyInfo, type Ledger, LedgerError } from './ledger.js'
import { type Meter, MeterError, type MeterRefusal, MeterUnavailableError } from './meter.js'
import { type PayoutLedger, type PayoutResult, type Payouts, type PayoutsConfig, payouts } from './payout.js'

export {
  type HubEnv,
  type HubLedger,
  type HubOptions,
  hub,
  type RemoteMeterOptions,
  remoteMeter,
  type Service,
} from './hub.js'
export {
  type AccountView,
  type Audit,
  createLedger,
  type Earnings,
  type KeyInfo,
  type Ledger,
  type LedgerEntry,
  LedgerError,
  type LedgerErrorCode,
  type LedgerOptions,
  type PayoutRecord,
  type PayoutStatus,
  type TopUpRequest,
  type TopUpResult,
} from './ledger.js'
export { type Hold, type HoldRequest, type Meter, MeterError, type MeterRefusal, MeterUnavailableError } from './meter.js'
export {
  PayoutError,
  type PayoutErrorReason,
  type PayoutLedger,
  type PayoutResult,
  type Payouts,
  type PayoutsConfig,
  payoutMemo,
  payoutNonceKey,
  payouts,
} from './payout.js'
export { fromPglite, fromPostgres, type PgliteLike, type PostgresLike, type SqlClient } from './sql.js'

/** An API key as the ledger lists it (never the key itself). */
export type AccountKey = KeyInfo

/** What `accounts()` needs of a ledger beyond the `Meter` (the SQL ledger, `createLedger`, has it all; `setKeyLabel` names a first top-up's key). */
export type AccountsLedger = Omit<Meter, 'authenticate'> &
  Pick<Ledger, 'topUp' | 'authenticate' | 'createKey' | 'listKeys' | 'revokeKey' | 'setKeyLimit' | 'accountOf' | 'account'> &
  Partial<Pick<Ledger, 'setKeyLabel'>>

/** Options of `accounts()`: everything `mpp()` takes, plus the ledger (or a remote meter) and the top-up bounds. */
export type AccountsOptions = Omit<MppOptions, 'realm' | 'schemes'> & {
  /** The SQL ledger (`createLedger(...)`): keys are billed in process, and `routes()` is available. */
  ledger?: AccountsLedger
  /** Or only a meter (e.g. a hub's remote client): keys are billed through it; there are no `routes()`. */
  meter?: Meter
  /** This server's name: API keys are scoped to it, and challenges are issued for it. */
  realm: string
  /** `POST /account/top-up` bounds, decimal strings in token units (defaults "0.10" and "100"). */
  topUp?: { min?: string; max?: string }
  /** Where a client tops up, as `insufficient-balance` refusals name it (default "/account/top-up"). */
  topUpUrl?: string
  /** How long a key's hold may stay open before the ledger's sweeper releases it, ms (default 120 000). */
  holdTtlMs?: number
  /** A ledger (or hub) call slower than this answers 503 and runs nothing, ms (default 5 000). */
  timeoutMs?: number
  /** The header an API key is also read from besides `Authorization: Bearer` (default "X-API-Key"). */
  keyHeader?: string
  /**
   * Payouts of earnings (needs `ledger`): the operator's wallet and where each realm's earnings
   * go (`payoutAddress`: one address for this realm, a map realm → address, or a function). The
   * currency is the one the methods charge in. Enables `payout()`, `payouts` and the payout
   * routes of `hub()`.
   */
  payouts?: Omit<PayoutsConfig, 'ledger' | 'currency' | 'payoutAddress'> & { payoutAddress: PayoutsConfig['payoutAddress'] | `0x${string}` }
}

/** What `accounts()` returns. */
export type Accounts = {
  /** Prices a route exactly as `mpp().charge` does; an API key pays it from its account, a wallet per call. */
  charge: Mpp['charge']
  /** The API-key credential scheme, for `mpp({ schemes })` or `mcpPayments({ schemes })` of your own. */
  scheme: CredentialScheme
  /**
   * The mounted routes: top-up, account, keys (needs `ledger`). Keys made here are for this
   * server's realm, or for `realm`: a hub takes the top-ups of the servers it bills and mounts
   * one set per server, e.g. `app.route('/servers/api.example', acct.routes({ realm: 'api.example' }))`.
   */
  routes(options?: { realm?: string }): Hono
  /**
   * The hub (needs `ledger`): `hub({ ledger, operatorSecret, payouts })` over this ledger, with
   * this instance's payouts when configured and `operatorSecret` is given (the payout routes are
   * the operator's). Servers bill their keys through it with `remoteMeter`.
   */
  hub(options?: Omit<HubOptions, 'ledger'>): Hono<HubEnv>
  /** Payouts over this ledger (with `payouts` in the options): `payout()`, `reconcilePayouts()`, `routes({ operatorSecret })`. */
  payouts: Payouts | undefined
  /** Sends a realm's accrued earnings (default: this server's, all of them) on chain to its payout address (needs `payouts`). */
  payout(input?: { realm?: string; amount?: bigint }): Promise<PayoutResult>
  /** The `mpp()` instance behind `charge` (its claim store is shared by the routes). */
  mpp: Mpp
  /** Formats base units as the decimal string the wire carries ("0.99"). */
  format(amount: bigint): string
}

/** Whom a request to the account routes acts for, and how it proved it. */
type Principal = { accountId: string; owner: string; via: 'key' | 'proof'; keyId?: string }

const decimalPattern = /^(0|[1-9]\d*)(\.\d+)?$/

/**
 * Prepaid accounts for a Hono app: an API key pays routes and MCP operations from a balance
 * topped up by MPP payments.
 *
 * @param options.ledger - The SQL ledger (`createLedger({ sql, currency })`), or `options.meter` for a hub.
 * @param options.realm - This server: keys are scoped to it.
 * @param options.secret / options.methods - As `mpp()`: the top-up is an MPP payment, and a route
 *   without a key answers the usual 402 Payment challenge.
 * @throws ConfigurationError on misconfiguration, saying what to fix.
 * @example
 * ```ts
 * const ledger = createLedger({ sql: fromPglite(new PGlite()), currency })
 * await ledger.migrate()
 * const acct = accounts({ ledger, realm: 'api.example.com', secret, methods: [tempo({ recipient, rpcUrl })] })
 * app.route('/', acct.routes())
 * app.get('/metered', acct.charge({ amount: '0.01' }), (c) => c.json({ ok: true }))
 * ```
 */
export function accounts(options: AccountsOptions): Accounts {
  if (!options || typeof options !== 'object') throw new ConfigurationError('accounts: pass an options object with `ledger`, `realm`, `secret` and `methods`.')
  const { ledger } = options
  const meter: Meter | undefined = options.meter ?? ledger
  if (!meter || typeof meter !== 'object')
    throw new ConfigurationError('accounts: pass `ledger` (createLedger({ sql, currency })) or a `meter` with hold, capture, release and extend.')
  const lacking = (['hold', 'capture', 'release', 'extend'] as const).filter((name) => typeof meter[name] !== 'function')
  if (lacking.length > 0)
    throw new ConfigurationError(
      `accounts: the ${options.meter ? '`meter`' : '`ledger`'} has no ${lacking.map((name) => `${name}()`).join(', ')}; a meter needs hold, capture, release and extend (a ledger from createLedger() has them).`,
    )
  if (ledger && options.meter && ledger !== options.meter)
    throw new ConfigurationError('accounts: pass either `ledger` or `meter`, not both (a ledger is its own meter).')
  if (typeof options.realm !== 'string' || options.realm.trim() === '')
    throw new ConfigurationError('accounts: `realm` is required: the name of this server (e.g. "api.example.com"); API keys are scoped to it.')
  const realm = options.realm
  const holdTtlMs = positiveMs(options.holdTtlMs, 120_000, 'holdTtlMs', 1_000)
  const timeoutMs = positiveMs(options.timeoutMs, 5_000, 'timeoutMs', 10)
  const topUpUrl = options.topUpUrl ?? '/account/top-up'
  if (typeof topUpUrl !== 'string' || topUpUrl === '') throw new ConfigurationError('accounts: `topUpUrl` must be a path or URL such as "/account/top-up".')
  const keyHeader = options.keyHeader ?? 'X-API-Key'
  if (typeof keyHeader !== 'string' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(keyHeader) || /^(authorization|payment-receipt)$/i.test(keyHeader))
    throw new ConfigurationError(
      'accounts: `keyHeader` must be an HTTP header name other than Authorization (keys are read there as `Bearer` already) and Payment-Receipt, such as "X-API-Key".',
    )

  const { ledger: _l, meter: _m, topUp: _t, topUpUrl: _u, holdTtlMs: _h, timeoutMs: _o, keyHeader: _k, payouts: payoutOptions, ...mppOptions } = options
  const scheme = keyScheme({ meter, realm, holdTtlMs, timeoutMs, topUpUrl, keyHeader, format: (amount) => format(amount) })
  const pay = mpp({ ...mppOptions, realm, schemes: [scheme] })
  // The units: what one token is in base units, and the currency every method charges in.
  const unit = unitOf(options.methods)
  const format = (amount: bigint) => formatUnits(amount, unit.decimals)
  const bounds = topUpBounds(options.topUp, unit.decimals)

  let paying: Payouts | undefined
  if (payoutOptions) {
    if (!ledger) throw new ConfigurationError('accounts: `payouts` needs `ledger` (the earnings are kept in it); a hub pays out, not a server with a `meter`.')
    for (const method of ['beginPayout', 'completePayout', 'cancelPayout', 'pendingPayouts', 'earnings'] as const)
      if (typeof (ledger as Partial<PayoutLedger>)[method] !== 'function')
        throw new ConfigurationError(`accounts: \`payouts\` needs a ledger with ${method}() (createLedger({ sql, currency })).`)
    const address = payoutOptions.payoutAddress
    paying = payouts({
      ...payoutOptions,
      ledger: ledger as unknown as PayoutLedger,
      currency: unit.currency as `0x${string}`,
      payoutAddress: typeof address === 'string' ? { [realm]: address } : address,
    })
  }
  const built = new Map<string, Hono>()
  return {
    charge: pay.charge,
    scheme,
    mpp: pay,
    format,
    routes(routeOptions = {}) {
      if (!ledger) throw new ConfigurationError('accounts: routes() needs `ledger` (top-ups and keys are kept in it); a `meter` alone only bills keys.')
      const keysFor = routeOptions.realm ?? realm
      if (typeof keysFor !== 'string' || keysFor.trim() === '')
        throw new ConfigurationError('accounts: routes({ realm }) must name the server whose keys these routes issue (e.g. "api.example.com").')
      let routes = built.get(keysFor)
      if (!routes) {
        routes = accountRoutes({ ledger, realm: keysFor, options: mppOptions, store: pay.store, bounds, unit, format, timeoutMs, keyHeader })
        built.set(keysFor, routes)
      }
      return routes
    },
    hub(hubOptions = {}) {
      if (!ledger) throw new ConfigurationError('accounts: hub() needs `ledger` (the hub keeps the accounts); a server with a `meter` calls a hub instead.')
      // This instance's payouts come with the operator routes (they need the operator's secret).
      const withPayouts = paying && hubOptions.operatorSecret !== undefined && hubOptions.payouts === undefined
      return hub({ ...hubOptions, ...(withPayouts && { payouts: paying }), ledger: ledger as unknown as HubLedger })
    },
    payouts: paying,
    payout(input = {}) {
      if (!paying) throw new ConfigurationError('accounts: payout() needs `payouts: { wallet, payoutAddress }` in the options of accounts().')
      return paying.payout({ realm: input.realm ?? realm, ...(input.amount !== undefined && { amount: input.amount }) })
    },
  }
}

// ————————————————————————————————————————— the API-key scheme

type SchemeSettings = {
  meter: Meter
  realm: string
  holdTtlMs: number
  timeoutMs: number
  topUpUrl: string
  keyHeader: string
  format: (amount: bigint) => string
}

/** Kept with an Idempotency-Key claim of a key-paid call. */
type KeptCall = { fp: string; hold: string; response?: unknown }

/**
 * The `Bearer` scheme: hold the price on the key's account, run the work, capture when it
 * succeeded and release otherwise (a thrown handler too). A refusal names its reason, never the
 * key. With an `Idempotency-Key`, a retry of the same request with the same key is answered from
 * the kept answer and charged once.
 */
function keyScheme(settings: SchemeSettings): CredentialScheme {
  const { meter, realm, holdTtlMs, timeoutMs } = settings
  return {
    scheme: 'Bearer',
    header: settings.keyHeader,
    async pay<Result>(attempt: TokenAttempt<Result>): Promise<Delivery<Result>> {
      const offer = attempt.offers[0]
      if (!offer) throw new PaymentError('bad-request', `${attempt.subject} has no price an account can pay`)
      const price = BigInt(offer.request.amount)
      const token = attempt.token
      if (token === '' || token.length > 512) throw keyRefusal('invalid-key', settings, attempt.subject, price)
      const idempotent = attempt.idempotencyKey !== undefined && attempt.replay !== undefined
      let claim: Extract<IdempotentClaim, { kind: 'fresh' }> | undefined
      let holdId = `hold_${randomToken()}`
      if (idempotent) {
        const found = await idempotentClaim(attempt, realm, token)
        if (found.kind === 'replay') {
          // The kept answer is this key's: served again only while the key may still be used here.
          if (meter.authenticate) {
            try {
              await withTimeout(meter.authenticate(token, realm), timeoutMs)
            } catch (error) {
              if (error instanceof MeterError) throw keyRefusal(error.reason, settings, attempt.subject, price, error)
              throw unavailableMeter(error, 'nothing was charged')
            }
          }
          return { result: attempt.replay!.restore(found.answer), succeeded: true, receipt: undefined, replayed: true }
        }
        claim = found
        holdId = found.hold
      }
      const description = attempt.subject === 'this route' ? attempt.where.target : attempt.subject
      const holdFor = (id: string) =>
        withTimeout(
          meter.hold({ key: token, realm, amount: price, currency: offer.request.currency, holdId: id, description, ttlMs: holdTtlMs }),
          timeoutMs,
          // Answered too late: whatever it held goes back at once.
          () => void meter.release(id).catch(() => {}),
        )
      let hold: Awaited<ReturnType<Meter['hold']>>
      try {
        try {
          hold = await holdFor(holdId)
        } catch (error) {
          // Taken over from an attempt whose hold was released meanwhile (its ttl ran out): hold anew.
          if (!claim || (error as { code?: unknown })?.code !== 'hold-released') throw error
          holdId = `hold_${randomToken()}`
          claim.rehold(holdId)
          hold = await holdFor(holdId)
        }
      } catch (error) {
        await claim?.release()
        if (error instanceof MeterError) throw keyRefusal(error.reason, settings, attempt.subject, price, error)
        throw unavailableMeter(error, 'nothing was charged')
      }
      const payment: PaymentInfo = {
        method: 'account',
        intent: 'charge',
        challengeId: holdId,
        amount: offer.request.amount,
        decimalAmount: offer.decimalAmount,
        currency: offer.request.currency,
        recipient: offer.request.recipient,
        payer: hold.owner,
        reference: holdId,
        credentialType: 'api-key',
        settled: false,
        receipt: undefined,
      }
      const event = { challengeId: holdId, method: 'account', intent: 'charge' }
      let outcome: Awaited<ReturnType<typeof attempt.run>>
      // While the handler runs, the hold is kept open (its expiry pushed forward every third of
      // its ttl), so however slow the handler, the sweeper only ever releases a dead call's hold.
      const alive = keepOpen(meter, holdId, holdTtlMs, timeoutMs)
      try {
        outcome = await attempt.run(payment)
      } catch (error) {
        alive.stop()
        await giveBack(meter, holdId, timeoutMs)
        await claim?.release()
        attempt.emit({ type: 'released', ...event, reason: 'the handler threw; nothing was charged' })
        throw error
      }
      alive.stop()
      if (!outcome.succeeded) {
        await giveBack(meter, holdId, timeoutMs)
        await claim?.release()
        attempt.emit({ type: 'released', ...event, reason: `${outcome.failure ?? 'the paid work did not succeed'}; nothing was charged` })
        return { result: outcome.result, succeeded: false, receipt: undefined, replayed: false }
      }
      let captured = true
      try {
        await withTimeout(meter.capture(holdId), timeoutMs)
      } catch (error) {
        // The work is done and is delivered. Whether the capture landed is not known (it may
        // still commit): the hold is captured once, or released by the ledger's sweeper after
        // its ttl; it is never charged twice. No receipt goes out for a charge not confirmed.
        // A hold already released (the ledger could not be reached to keep it open for a whole
        // ttl) is known not to be charged.
        captured = false
        const expired = (error as { code?: unknown })?.code === 'hold-released'
        attempt.emit({
          type: 'settlement-failed',
          ...event,
          detail: expired
            ? 'the hold expired before the capture (the accounts ledger could not be reached to keep it open); nothing was charged'
            : 'the charge could not be confirmed by the accounts ledger; the hold is captured once or released by the sweeper',
          afterHandler: true,
        })
      }
      await claim?.settled()
      if (!captured) return { result: outcome.result, succeeded: true, receipt: undefined, replayed: false, ...(claim && { keep: claim.keep }) }
      Object.assign(payment, { settled: true })
      const receipt = {
        status: 'success' as const,
        method: 'account',
        timestamp: rfc3339(new Date()),
        reference: holdId,
        ...(attempt.externalId !== undefined && { externalId: attempt.externalId }),
      }
      payment.receipt = receipt
      attempt.emit({ type: 'delivered', ...event, amount: offer.request.amount, currency: offer.request.currency })
      return { result: outcome.result, succeeded: true, receipt, replayed: false, ...(claim && { keep: claim.keep }) }
    },
  }
}

type IdempotentClaim =
  | { kind: 'replay'; answer: unknown }
  | { kind: 'fresh'; hold: string; rehold(id: string): void; release(): Promise<void>; settled(): Promise<void>; keep(answer: unknown): Promise<void> }

/** Keeps one answer per (key, Idempotency-Key) in the claim store: served once, charged once. */
async function idempotentClaim<Result>(attempt: TokenAttempt<Result>, realm: string, token: string): Promise<IdempotentClaim> {
  const { store, leaseMs } = attempt
  // The key is never stored: only a hash of it (with the realm) names the claim.
  const name = `mpp:apikey:${hex(sha256(utf8(`${realm}\n${token}\n${attempt.idempotencyKey}`)))}`
  const fp = hex(sha256(utf8(`${attempt.where.target}\n${attempt.where.digest ?? ''}`)))
  const owner = randomToken()
  const expires = Date.now() + 24 * 3600_000
  const record = (state: 'pending' | 'settled', kept: KeptCall, lease?: number): ClaimRecord => ({
    state,
    expires,
    ...(lease !== undefined && { lease }),
    owner,
    data: JSON.stringify(kept),
    class: 'paid',
  })
  const guarded = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run()
    } catch (error) {
      throw unavailableMeter(error, 'nothing was charged')
    }
  }
  let kept: KeptCall = { fp, hold: `hold_${randomToken()}` }
  if (!(await guarded(() => store.claim(name, record('pending', kept, Date.now() + leaseMs))))) {
    const current = await guarded(() => store.get(name))
    const held = current?.data ? (JSON.parse(current.data) as KeptCall) : undefined
    if (!current || !held) throw new PaymentError('payment-in-progress', 'a request with this Idempotency-Key is in progress; retry shortly', { retryAfter: 1 })
    if (held.fp !== fp)
      throw new PaymentError('bad-request', 'this Idempotency-Key was already used with this API key for another request; use a new key for a new request')
    if (current.state === 'settled') {
      if (held.response !== undefined) return { kind: 'replay', answer: held.response }
      throw new PaymentError(
        'payment-in-progress',
        'this request was already served and charged with this Idempotency-Key; its answer was not kept (too large), so it is not served again',
      )
    }
    // A holder that died: take over with its hold id, so whatever it held is held once.
    if ((current.lease ?? 0) > Date.now() || current.owner === undefined)
      throw new PaymentError('payment-in-progress', 'a request with this Idempotency-Key is in progress; retry shortly', { retryAfter: 1 })
    kept = { fp, hold: held.hold }
    const took = await guarded(() => store.transition(name, 'pending', record('pending', kept, Date.now() + leaseMs), current.owner!))
    if (!took) throw new PaymentError('payment-in-progress', 'a request with this Idempotency-Key is in progress; retry shortly', { retryAfter: 1 })
  }
  return {
    kind: 'fresh',
    hold: kept.hold,
    rehold(id) {
      kept = { ...kept, hold: id }
    },
    release: () =>
      store.transition(name, 'pending', null, owner).then(
        () => {},
        () => {},
      ),
    settled: () =>
      store.transition(name, 'pending', record('settled', kept), owner).then(
        () => {},
        () => {},
      ),
    keep: (answer) =>
      store.transition(name, 'settled', record('settled', { ...kept, response: answer }), owner).then(
        () => {},
        () => {},
      ),
  }
}

/**
 * Keeps a hold open while its call runs: every third of the ttl, its expiry is pushed to now +
 * ttl. One extension at a time; a failed one is tried again at the next tick (two more chances
 * before the hold can expire); a hold found released stops it (its capture will say so).
 */
function keepOpen(meter: Meter, holdId: string, ttlMs: number, timeoutMs: number): { stop(): void } {
  let busy = false
  const timer = setInterval(
    () => {
      if (busy) return
      busy = true
      withTimeout(meter.extend(holdId, ttlMs), timeoutMs).then(
        () => {
          busy = false
        },
        (error: unknown) => {
          busy = false
          if ((error as { code?: unknown })?.code === 'hold-released' || (error as { code?: unknown })?.code === 'unknown-hold') clearInterval(timer)
        },
      )
    },
    Math.max(Math.floor(ttlMs / 3), 1),
  )
  return { stop: () => clearInterval(timer) }
}

/** Releases a hold (best effort: the sweeper releases what this cannot). */
async function giveBack(meter: Meter, holdId: string, timeoutMs: number): Promise<void> {
  await withTimeout(meter.release(holdId), timeoutMs).catch(() => {})
}

const refusalWords: Record<Exclude<MeterRefusal, 'insufficient-balance' | 'key-limit-exceeded'>, string> = {
  'invalid-key':
    'the API key is not valid here; send a key issued by this server (Authorization: Bearer <key> or X-API-Key), or pay with one of the offered challenges',
  'key-revoked': 'this API key was revoked; create a new key (POST /account/keys) or pay with one of the offered challenges',
  'key-expired': 'this API key has expired; create a new key (POST /account/keys) or pay with one of the offered challenges',
  'wrong-server': 'this API key was issued for another server; keys are valid only on the server that issued them',
}

/** A meter's refusal as a problem JSON naming the reason (and, for a 402, the numbers). */
function keyRefusal(reason: MeterRefusal, settings: SchemeSettings, subject: string, price: bigint, error?: MeterError): PaymentError {
  const { format, topUpUrl } = settings
  if (reason === 'insufficient-balance') {
    const balance = error?.balance ?? 0n
    return new PaymentError(
      'insufficient-balance',
      `the account's balance is ${format(balance)} and ${subject} costs ${format(price)}; top up at ${topUpUrl}, or pay this call with one of the offered challenges`,
      { members: { balance: format(balance), price: format(price), topUp: topUpUrl } },
    )
  }
  if (reason === 'key-limit-exceeded') {
    const remaining = error?.remaining ?? 0n
    return new PaymentError(
      'key-limit-exceeded',
      `this API key's spend limit leaves ${format(remaining)} and ${subject} costs ${format(price)}; raise the key's limit (PATCH /account/keys/:id) or use another key`,
      { members: { remaining: format(remaining), price: format(price) } },
    )
  }
  return new PaymentError(reason satisfies ProblemKind, refusalWords[reason])
}

function unavailableMeter(error: unknown, consequence: string): PaymentError {
  const slow = error instanceof TimedOut
  return new PaymentError('payment-unavailable', `the accounts ledger is ${slow ? 'not answering in time' : 'unavailable'}; ${consequence}; retry shortly`, {
    retryAfter: 2,
    cause: error instanceof MeterUnavailableError || slow ? error : undefined,
  })
}

// ————————————————————————————————————————— the account routes

type RouteSettings = {
  ledger: AccountsLedger
  realm: string
  options: Omit<MppOptions, 'realm'>
  store: Mpp['store']
  bounds: { min: bigint; max: bigint; minText: string; maxText: string }
  unit: { currency: string; decimals: number }
  format: (amount: bigint) => string
  timeoutMs: number
  keyHeader: string
}

/** A top-up credited by its payment's settlement, for the handler that answers it. */
type Credited = { accountId: string; balance: bigint; credited: boolean; apiKey?: string; keyId?: string; amount: bigint; recovered: boolean; at: number }

function accountRoutes(settings: RouteSettings): Hono {
  const { ledger, realm, format, timeoutMs } = settings
  const call = <T>(promise: Promise<T>) => withTimeout(promise, timeoutMs)
  /** Credits by payment reference; read (once) by the handler of the same attempt. */
  const credits = new Map<string, Credited>()

  /**
   * The top-up's payment methods: each the configured method, except that settling (or
   * recovering) the payment also credits the payer's account, keyed by the payment's reference,
   * before the payment's claim is recorded as settled. A credit that fails leaves the payment
   * recoverable (outcome unknown): a retry of the same credential finds it and credits it then.
   * A payment the client settled itself (a pushed transaction) is credited the same way.
   */
  const crediting = (method: PaymentMethod): PaymentMethod => {
    type Wrapped = { inner: unknown; clientSettled: boolean; amount: string }
    const unwrap = (verified: Verified): Verified => {
      const data = verified.data as Wrapped
      return { ...verified, status: data.clientSettled ? 'settled' : 'ready', data: data.inner }
    }
    const credit = async (verified: Verified, reference: string, payer: string | undefined, recovered: boolean) => {
      const owner = payer ?? verified.payer
      if (!owner) throw new SettlementUnknownError('the payment has no verified payer to credit')
      const amount = BigInt((verified.data as Wrapped).amount)
      let result: Awaited<ReturnType<AccountsLedger['topUp']>>
      try {
        result = await call(ledger.topUp({ owner, amount, reference, realm }))
      } catch (error) {
        // Paid but not credited yet: unknown to the pipeline, so the claim stays recoverable.
        throw new SettlementUnknownError('the payment was made but the account could not be credited yet', { cause: error })
      }
      prune(credits)
      const entry: Credited = { ...result, amount, recovered, at: Date.now() }
      credits.set(reference, entry)
      if (verified.reference !== reference) credits.set(verified.reference, entry)
    }
    const wrapped: PaymentMethod = {
      name: method.name,
      intent: method.intent,
      request: (charge) => method.request(charge),
      async verify(parameters) {
        const verified = await method.verify(parameters)
        if (verified.type === 'proof') throw new PaymentError('verification-failed', 'a top-up needs a payment, not a proof')
        const data: Wrapped = { inner: verified.data, clientSettled: verified.status === 'settled', amount: parameters.request.amount }
        // Settled through `settle` below even when the client already settled it: the credit happens there.
        return { ...verified, status: 'ready', data }
      },
      async settle(verified) {
        const data = verified.data as Wrapped
        const settled = data.clientSettled
          ? { reference: verified.reference, ...(verified.payer && { payer: verified.payer }) }
          : await method.settle(unwrap(verified))
        await credit(verified, settled.reference, settled.payer, false)
        return settled
      },
      async recover(verified) {
        const data = verified.data as Wrapped
        const settled = data.clientSettled
          ? { reference: verified.reference, ...(verified.payer && { payer: verified.payer }) }
          : await method.recover(unwrap(verified))
        await credit(verified, settled.reference, settled.payer, true)
        return settled
      },
      ...(method.release && { release: (verified: Verified) => method.release!(unwrap(verified)) }),
      ...(method.deferrable && { deferrable: method.deferrable }),
    }
    return wrapped
  }

  // The top-up keeps no answer for replay (it may carry a new API key); the credit is once per payment anyway.
  // One claim store with charge(): a payment (e.g. a pushed transaction hash) pays one thing only, a top-up or a call.
  const topUpPay = mpp({
    ...settings.options,
    realm,
    store: settings.store,
    methods: settings.options.methods.map(crediting),
    idempotency: { maxReplayBytes: 0 },
  })
  // Nor is an answer to a proof (POST /account/keys carries a new API key): keys are shown once and
  // stored only as hashes, never in the claim store (Redis, a Durable Object) for a replay.
  const proofPay = mpp({ ...settings.options, realm, store: settings.store, idempotency: { maxReplayBytes: 0 } })
  const proof = proofPay.charge({ amount: '0', description: 'Prove that you own the account (a zero-amount signature, nothing is paid)' })

  const app = new Hono()
  app.onError((error) => {
    if (error instanceof HTTPException) return error.getResponse()
    return problemResponse(refusalOf(error))
  })

  app.post(
    '/account/top-up',
    topUpPay.charge(
      {
        amount: async (c: Context) => {
          const body = await topUpBody(c)
          return checkAmount(body.amount, settings)
        },
        description: `Account top-up: the payer chooses the amount (the JSON body's amount, in token units, from ${settings.bounds.minText} to ${settings.bounds.maxText})`,
      },
      async (c) => {
        const payment = c.get('payment')
        const entry = credits.get(payment.reference)
        credits.delete(payment.reference)
        if (!entry)
          return problemResponse(
            new PaymentError('payment-unavailable', 'the top-up was paid but its credit is not known here; retry with the same credential', { retryAfter: 2 }),
          )
        const body = await topUpBody(c)
        let apiKey = entry.apiKey
        let keyId = entry.keyId
        let note: string | undefined
        // The account's first key here was made with the credit, where the body is not known: it gets its label now.
        if (apiKey !== undefined && keyId !== undefined && body.label !== undefined && ledger.setKeyLabel)
          await call(ledger.setKeyLabel(entry.accountId, keyId, body.label)).catch(() => {
            note = 'the top-up is credited and the key issued, but its label could not be set now; the key is listed without it'
          })
        // Asked for a key, or recovered after an answer that never reached the client (its key unseen).
        const wanted = body.newKey === true || (entry.recovered && !entry.credited && !apiKey && (await neverUsedKeys(entry.accountId).catch(() => false)))
        if (!apiKey && wanted) {
          try {
            const created = await call(ledger.createKey(entry.accountId, realm, { ...(body.label !== undefined && { label: body.label }) }))
            apiKey = created.apiKey
            keyId = created.key.id
          } catch {
            note = 'the top-up is credited, but a new API key could not be created now; create one with POST /account/keys'
          }
        }
        c.header('Cache-Control', 'no-store')
        return c.json({
          accountId: entry.accountId,
          owner: payment.payer,
          balance: format(entry.balance),
          credited: format(entry.credited ? entry.amount : 0n),
          currency: settings.unit.currency,
          reference: payment.reference,
          ...(apiKey !== undefined && { apiKey, keyId }),
          ...(note !== undefined && { note }),
        })
      },
    ),
  )

  /** Whether the account has this key for this server: these routes list, limit and revoke only those (keys are scoped to one server). */
  const keyHere = async (accountId: string, id: string) => (await call(ledger.listKeys(accountId))).some((key) => key.id === id && key.realm === realm)

  const neverUsedKeys = async (accountId: string) =>
    (await call(ledger.listKeys(accountId))).filter((key) => key.realm === realm && key.revokedAt === null).every((key) => key.lastUsedAt === null)

  /** Runs `handler` for the account the request proves: by one of its keys, or by its owner's zero-amount proof. */
  const asOwner =
    (handler: (c: Context, who: Principal) => Promise<Response>): MiddlewareHandler =>
    async (c) => {
      const key = keyOf(c, settings.keyHeader)
      if (key !== undefined) {
        let info: AccountKey
        try {
          info = await call(ledger.authenticate(key, realm))
        } catch (error) {
          return problemResponse(error instanceof MeterError ? keyRefusalOnly(error.reason) : refusalOf(error))
        }
        return handler(c, { accountId: info.accountId, owner: info.owner, via: 'key', keyId: info.id })
      }
      return proof(c, async () => {
        const payer = c.get('payment').payer
        let response: Response
        try {
          const found = payer ? await call(ledger.accountOf(payer)) : undefined
          response = found
            ? await handler(c, { accountId: found.accountId, owner: payer!, via: 'proof' })
            : problemResponse(new PaymentError('no-account', `this address has no account here yet; top up first (POST /account/top-up)`))
        } catch (error) {
          response = error instanceof HTTPException ? error.getResponse() : problemResponse(refusalOf(error))
        }
        c.res = response
      })
    }

  app.get(
    '/account',
    asOwner(async (c, who) => {
      const limit = c.req.query('limit')
      const cursor = c.req.query('cursor')
      if (limit !== undefined && (!/^[1-9]\d{0,2}$/.test(limit) || Number(limit) > 500))
        return problemResponse(new PaymentError('bad-request', '`limit` must be a whole number from 1 to 500'))
      if (cursor !== undefined && !isEntryId(cursor))
        return problemResponse(new PaymentError('bad-request', '`cursor` must be the `next` value of a previous page'))
      // This server's activity only: another server's calls (and their descriptions) are not this server's to show.
      const view = await call(
        ledger.account(who.accountId, { realm, ...(cursor !== undefined && { cursor }), ...(limit !== undefined && { limit: Number(limit) }) }),
      )
      if (!view) return problemResponse(new PaymentError('no-account', 'this account no longer exists'))
      c.header('Cache-Control', 'no-store')
      return c.json({
        accountId: view.accountId,
        owner: view.owner,
        currency: settings.unit.currency,
        balance: format(view.balance),
        held: format(view.held),
        keys: view.keys.filter((key) => key.realm === realm).map((key) => keyJson(key, format)),
        entries: view.entries.map((entry) => ({
          id: entry.id,
          kind: entry.kind,
          book: entry.book,
          amount: format(entry.amount),
          keyId: entry.keyId,
          reference: entry.reference,
          description: entry.description,
          at: entry.createdAt.toISOString(),
        })),
        ...(view.next !== undefined && { next: view.next }),
      })
    }),
  )

  app.post(
    '/account/keys',
    asOwner(async (c, who) => {
      const body = await jsonBody(c, '{"label":"laptop","limit":"5.00"} (both optional)')
      const label = body.label
      if (!isLabel(label)) return problemResponse(new PaymentError('bad-request', labelRule))
      const limit = body.limit === undefined || body.limit === null ? null : parseAmount(body.limit, settings.unit.decimals, 'limit')
      const { apiKey, key } = await call(ledger.createKey(who.accountId, realm, { ...(label !== undefined && { label: label as string }), limit }))
      c.header('Cache-Control', 'no-store')
      return c.json({ apiKey, ...keyJson(key, format) }, 201)
    }),
  )

  app.get(
    '/account/keys',
    asOwner(async (c, who) => {
      const keys = await call(ledger.listKeys(who.accountId))
      c.header('Cache-Control', 'no-store')
      return c.json({ keys: keys.filter((key) => key.realm === realm).map((key) => keyJson(key, format)) })
    }),
  )

  app.patch(
    '/account/keys/:id',
    asOwner(async (c, who) => {
      const body = await jsonBody(c, '{"limit":"5.00"}')
      if (!('limit' in body))
        return problemResponse(new PaymentError('bad-request', 'send {"limit":"5.00"} (a decimal string) or {"limit":null} to remove the limit'))
      const limit = body.limit === null ? null : parseAmount(body.limit, settings.unit.decimals, 'limit')
      const id = c.req.param('id') ?? ''
      if (!(await keyHere(who.accountId, id))) return problemResponse(new PaymentError('bad-request', 'this account has no key with that id'))
      const key = await call(ledger.setKeyLimit(who.accountId, id, limit))
      if (!key) return problemResponse(new PaymentError('bad-request', 'this account has no key with that id'))
      return c.json(keyJson(key, format))
    }),
  )

  app.delete(
    '/account/keys/:id',
    asOwner(async (c, who) => {
      const id = c.req.param('id') ?? ''
      if (!(await keyHere(who.accountId, id))) return problemResponse(new PaymentError('bad-request', 'this account has no key with that id'))
      await call(ledger.revokeKey(who.accountId, id))
      return c.json({ id, revoked: true })
    }),
  )

  return app
}

/** The key a request to the account routes carries (Authorization: Bearer, or the key header). */
function keyOf(c: Context, header: string): string | undefined {
  // Read exactly as a priced route reads it (the scheme, one space, the token), so a header a priced
  // route takes as a key is a key here too, and `Bearer` without one is an invalid key on both.
  const authorization = c.req.header('authorization')
  const space = authorization?.indexOf(' ') ?? -1
  const scheme = authorization === undefined ? undefined : space === -1 ? authorization : authorization.slice(0, space)
  const bearer = scheme?.toLowerCase() === 'bearer' ? (space === -1 ? '' : authorization!.slice(space + 1).trim()) : undefined
  const other = c.req.header(header)?.trim()
  if (bearer !== undefined && other !== undefined && bearer !== other)
    throw new HTTPException(400, {
      res: problemResponse(new PaymentError('bad-request', `the request carries two different API keys (Authorization and ${header}); send one`)),
    })
  return bearer ?? other
}

/** A key refusal on the account routes (no price there). */
function keyRefusalOnly(reason: MeterRefusal): PaymentError {
  if (reason === 'insufficient-balance' || reason === 'key-limit-exceeded') return new PaymentError('invalid-key', refusalWords['invalid-key'])
  return new PaymentError(
    reason,
    refusalWords[reason].replace(', or pay with one of the offered challenges', '').replace(' or pay with one of the offered challenges', ''),
  )
}

function keyJson(key: AccountKey, format: (amount: bigint) => string) {
  return {
    id: key.id,
    prefix: key.prefix,
    label: key.label,
    created: key.createdAt.toISOString(),
    lastUsed: key.lastUsedAt?.toISOString() ?? null,
    expires: key.expiresAt?.toISOString() ?? null,
    revoked: key.revokedAt?.toISOString() ?? null,
    spent: format(key.spent),
    reserved: format(key.reserved),
    limit: key.limit === null ? null : format(key.limit),
  }
}

const labelRule = '`label` must be a string of at most 100 characters, without control characters'

/** A key's label: absent, or short text a list can show (and a database can store). */
function isLabel(value: unknown): value is string | undefined {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  return value === undefined || (typeof value === 'string' && value.length <= 100 && !/[\u0000-\u001f\u007f]/.test(value))
}

type TopUpBody = { amount: unknown; newKey?: unknown; label?: string }

async function topUpBody(c: Context): Promise<TopUpBody> {
  const body = await jsonBody(c)
  if (!isLabel(body.label)) throw badRequest(labelRule)
  if (body.newKey !== undefined && typeof body.newKey !== 'boolean') throw badRequest('`newKey` must be true or false')
  return body as TopUpBody
}

/** The JSON object body; `example`: what a right body looks like, for the refusal. */
async function jsonBody(c: Context, example = '{"amount":"1.00"}'): Promise<Record<string, unknown>> {
  const text = await c.req.text()
  if (text.trim() === '') return {}
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    throw badRequest(`the body must be JSON, e.g. ${example}`)
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw badRequest(`the body must be a JSON object, e.g. ${example}`)
  return body as Record<string, unknown>
}

/** The top-up amount the payer chose, checked against the bounds: the price of this top-up. */
function checkAmount(value: unknown, settings: RouteSettings): string {
  if (value === undefined)
    throw badRequest(`send the amount to top up as a decimal string, e.g. {"amount":"1.00"} (from ${settings.bounds.minText} to ${settings.bounds.maxText})`)
  const amount = parseAmount(value, settings.unit.decimals, 'amount')
  if (amount < settings.bounds.min || amount > settings.bounds.max)
    throw badRequest(`a top-up must be from ${settings.bounds.minText} to ${settings.bounds.maxText}; got ${settings.format(amount)}`)
  return settings.format(amount)
}

function parseAmount(value: unknown, decimals: number, what: string): bigint {
  if (typeof value !== 'string' || !decimalPattern.test(value))
    throw badRequest(`\`${what}\` must be a decimal string such as "1.00"${typeof value === 'number' ? ' (a string, not a number)' : ''}`)
  const [whole, fraction = ''] = value.split('.')
  if (fraction.length > decimals) throw badRequest(`\`${what}\` has more than ${decimals} decimals`)
  if (whole!.length > 30) throw badRequest(`\`${what}\` is too large`)
  return BigInt(whole!) * 10n ** BigInt(decimals) + BigInt(fraction.padEnd(decimals, '0') || '0')
}

function badRequest(detail: string): HTTPException {
  return new HTTPException(400, { res: problemResponse(new PaymentError('bad-request', detail)) })
}

function problemResponse(error: PaymentError): Response {
  const headers: Record<string, string> = { 'content-type': 'application/problem+json', 'cache-control': 'no-store' }
  if (error.retryAfter !== undefined) headers['retry-after'] = String(error.retryAfter)
  return new Response(JSON.stringify(error.toProblem()), { status: error.status, headers })
}

/** A route's failure as a refusal: the ledger's refusals and outages named, anything else a 503. */
function refusalOf(error: unknown): PaymentError {
  if (error instanceof PaymentError) return error
  if (error instanceof MeterError) return keyRefusalOnly(error.reason)
  // The ledger refused what the request named (a value it cannot store or represent): the client's to fix.
  if (error instanceof LedgerError && error.code === 'invalid-request') return new PaymentError('bad-request', error.message)
  if (error instanceof ConfigurationError) throw error
  return unavailableMeter(error, 'nothing was changed')
}

// ————————————————————————————————————————— units, bounds, time

/** What one token is in base units, and the currency: from the first method's challenge request. */
function unitOf(methods: readonly PaymentMethod[]): { currency: string; decimals: number } {
  const method = methods?.[0]
  if (!method || typeof method.request !== 'function')
    throw new ConfigurationError('accounts: `methods` must list at least one payment method, e.g. [tempo({ recipient, rpcUrl })].')
  const one = method.request({ amount: '1' })
  const decimals = one.amount.length - 1
  if (!/^10*$/.test(one.amount)) throw new ConfigurationError(`accounts: cannot tell the decimals of ${one.currency} from method "${method.name}".`)
  for (const other of methods.slice(1))
    if (other.request({ amount: '1' }).currency.toLowerCase() !== one.currency.toLowerCase())
      throw new ConfigurationError('accounts: every method must charge in the same currency (the ledger keeps one); got more than one.')
  return { currency: one.currency, decimals }
}

function topUpBounds(bounds: AccountsOptions['topUp'], decimals: number) {
  const minText = bounds?.min ?? '0.10'
  const maxText = bounds?.max ?? '100'
  const read = (value: string, what: string) => {
    try {
      return parseAmount(value, decimals, what)
    } catch {
      throw new ConfigurationError(`accounts: \`topUp.${what}\` must be a decimal string in token units such as "0.10"; got ${JSON.stringify(value)}.`)
    }
  }
  const min = read(minText, 'min')
  const max = read(maxText, 'max')
  if (min <= 0n || max < min) throw new ConfigurationError(`accounts: \`topUp\` needs 0 < min <= max; got min ${minText}, max ${maxText}.`)
  return { min, max, minText, maxText }
}

/** Base units as a decimal string with at least two decimals ("1.00", "0.015"). */
export function formatUnits(amount: bigint, decimals: number): string {
  const negative = amount < 0n
  const digits = (negative ? -amount : amount).toString().padStart(decimals + 1, '0')
  const whole = digits.slice(0, digits.length - decimals)
  let fraction = digits.slice(digits.length - decimals).replace(/0+$/, '')
  if (fraction.length < 2 && decimals >= 2) fraction = fraction.padEnd(2, '0')
  return `${negative ? '-' : ''}${whole}${fraction ? `.${fraction}` : ''}`
}

// The longest delay a timer can wait: past it, setTimeout/setInterval fire at once (a busy loop of extensions).
const maxTimerMs = 2_147_483_647

function positiveMs(value: number | undefined, fallback: number, what: string, min: number): number {
  const ms = value ?? fallback
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < min || ms > maxTimerMs)
    throw new ConfigurationError(
      `accounts: \`${what}\` must be a number of milliseconds from ${min} to ${maxTimerMs} (about 24 days, the longest a timer waits); got ${String(value)}.`,
    )
  return ms
}

class TimedOut extends Error {
  override name = 'TimedOut'
}

/** The promise, or a `TimedOut` after `ms`; `late` runs with the value if it arrives after all. */
function withTimeout<T>(promise: Promise<T>, ms: number, late?: (value: T) => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  let timedOut = false
  return Promise.race([
    promise.then(
      (value) => {
        if (timedOut) late?.(value)
        return value
      },
      (error: unknown) => {
        throw error
      },
    ),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true
        reject(new TimedOut(`no answer within ${ms} ms`))
      }, ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/** Drops credits nobody came for (their request died between settling and answering). */
function prune(credits: Map<string, Credited>): void {
  if (credits.size < 1000) return
  const old = Date.now() - 10 * 60_000
  for (const [reference, entry] of credits) if (entry.at < old) credits.delete(reference)
}

function randomToken(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(16)))
}

function hex(bytes: Uint8Array): string {
  let out = ''
  for (const byte of bytes) out += byte.toString(16).padStart(2, '0')
  return out
}
