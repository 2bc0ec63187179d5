/**
 * The accounts ledger on Postgres (issue #15): prepaid balances, API keys, holds, earnings and
 * payouts, in double entry. It implements the `Meter` contract in process; the hub and the HTTP
 * routes are built on top of it.
 *
 * Every movement of money (top-up, hold, capture, release, payout) is a balanced set of entries
 * under one idempotency id (`mpp_movements.id`), so a retry or a race moves money at most once; the
 * books always sum to zero and no book but the outside world ('world') goes negative (a CHECK
 * constraint, and every debit is a conditional UPDATE). Rows are locked in one global order
 * (hold or payout row, key row, books sorted by id) so concurrent movements cannot deadlock.
 *
 * The same SQL runs on PGlite (embedded) and on a Postgres server, through a `SqlClient`.
 */
import { ConfigurationError } from '../protocol/errors.js'
import { type Hold, type HoldRequest, type Meter, MeterError, MeterUnavailableError } from './meter.js'
import { MIGRATION_LOCK_KEY, migrations } from './migrations.js'
import type { SqlClient } from './sql.js'

export type LedgerOptions = {
  /** The database: `fromPglite(new PGlite())` or `fromPostgres(postgres(url))`. */
  sql: SqlClient
  /** The token every amount is in (its address); a hold in another currency is refused. */
  currency: string
  /** The operator's cut of each capture, in basis points (0–10 000). Default 0. */
  platformFeeBps?: number
  /** Who the platform fees belong to (e.g. the operator's address). Default 'operator'. */
  operator?: string
  /** The visible start of every API key. Default 'mpp_live_'. */
  keyPrefix?: string
  /**
   * How long `authenticate`, `hold`, `capture` and `release` wait for the database before throwing
   * `MeterUnavailableError` (a 503: the work does not run). A hold that lands after its caller gave
   * up is released at once. Default: no limit (the driver's own timeouts apply).
   */
  timeoutMs?: number
}

/** A refusal of a ledger operation other than a key that cannot pay (those are `MeterError`s). */
export type LedgerErrorCode =
  | 'invalid-request'
  | 'unknown-account'
  | 'unknown-hold'
  | 'hold-conflict'
  | 'hold-released'
  | 'nothing-accrued'
  | 'insufficient-earnings'
  | 'unknown-payout'
  | 'payout-cancelled'
  | 'payout-paid'

export class LedgerError extends Error {
  override name = 'LedgerError'
  readonly code: LedgerErrorCode
  constructor(code: LedgerErrorCode, message: string) {
    super(message)
    this.code = code
  }
}

/** An API key as listed (never the key itself: it is shown once, at creation). */
export type KeyInfo = {
  id: string
  accountId: string
  /** The account's owner (the address that paid its top-ups). */
  owner: string
  /** The server (realm) the key is valid for. */
  realm: string
  /** The first characters of the key, to recognise it in a list. */
  prefix: string
  label: string | null
  createdAt: Date
  lastUsedAt: Date | null
  expiresAt: Date | null
  revokedAt: Date | null
  /** Captured through this key (base units). */
  spent: bigint
  /** Held by this key's open holds (base units). */
  reserved: bigint
  /** The most `spent + reserved` may reach; null = no limit. */
  limit: bigint | null
}

export type TopUpRequest = {
  /** The verified payer's address: it owns the account. */
  owner: string
  /** Base units, > 0. */
  amount: bigint
  /** The payment's reference (e.g. its transaction hash): credited at most once. */
  reference: string
  /** The server the top-up was paid at: a new key is for this realm. */
  realm: string
  /** Issue a new key even if the account already has one for this realm. */
  newKey?: boolean
  /** A label for a new key. */
  label?: string
}

export type TopUpResult = {
  accountId: string
  /** The available balance after the top-up (base units). */
  balance: bigint
  /** false: this reference was already credited (a replay); nothing moved. */
  credited: boolean
  /** A fresh key, shown once: on the account's first top-up for this realm, or when `newKey`. */
  apiKey?: string
  keyId?: string
}

export type LedgerEntry = {
  id: string
  /** The movement (idempotency id) the entry belongs to: 'topup:…', 'hold:…', 'capture:…', … */
  movementId: string
  kind: string
  /** Which of the account's books: its available balance or its held amount. */
  book: 'available' | 'held'
  /** Signed, base units. */
  amount: bigint
  keyId: string | null
  realm: string | null
  reference: string | null
  description: string | null
  createdAt: Date
}

export type AccountView = {
  accountId: string
  owner: string
  /** Available (base units). */
  balance: bigint
  /** Reserved by open holds (base units). */
  held: bigint
  keys: KeyInfo[]
  /** The account's ledger, newest first. */
  entries: LedgerEntry[]
  /** Pass as `cursor` for the next (older) page; undefined on the last page. */
  next: string | undefined
}

export type PayoutStatus = 'pending' | 'paid' | 'cancelled'

export type PayoutRecord = {
  id: string
  realm: string
  to: string
  amount: bigint
  status: PayoutStatus
  txHash: string | null
  createdAt: Date
  settledAt: Date | null
}

export type Earnings = {
  realm: string
  /** Captured, less fees, not yet in a payout (base units). */
  accrued: bigint
  /** In payouts that are paid out. */
  paidOut: bigint
  /** In payouts begun but not yet completed or cancelled. */
  pending: bigint
}

export type Audit = {
  /** Sum of every book's balance: always 0. */
  sum: bigint
  /** Books other than the outside world with a balance below 0: always 0. */
  negativeBalances: number
  /** Books whose balance differs from the sum of their entries: always 0. */
  mismatchedBooks: number
  /** Movements whose entries do not sum to zero: always 0. */
  unbalancedMovements: number
  /** Accounts whose held book differs from the sum of their open holds: always 0. */
  mismatchedHolds: number
}

export interface Ledger extends Meter {
  /** Applies pending migrations (idempotent; safe when many instances start at once). */
  migrate(): Promise<void>
  topUp(request: TopUpRequest): Promise<TopUpResult>
  /** The key's details when it may be used at `realm`; throws `MeterError` otherwise. */
  authenticate(key: string, realm: string): Promise<KeyInfo>
  createKey(accountId: string, realm: string, options?: { label?: string; limit?: bigint | null; expiresAt?: Date }): Promise<{ apiKey: string; key: KeyInfo }>
  listKeys(accountId: string): Promise<KeyInfo[]>
  /** true when the key was active and is now revoked. */
  revokeKey(accountId: string, keyId: string): Promise<boolean>
  /** The key with its new limit; undefined when the account has no such key. */
  setKeyLimit(accountId: string, keyId: string, limit: bigint | null): Promise<KeyInfo | undefined>
  /** Names the key (null: no label); false when the account has no such key. */
  setKeyLabel(accountId: string, keyId: string, label: string | null): Promise<boolean>
  accountOf(owner: string): Promise<{ accountId: string } | undefined>
  /**
   * The account, its keys and a page of its entries, newest first. `realm`: only that server's
   * entries (and those of no server), as one server shows its user; without it, all.
   */
  account(accountId: string, page?: { cursor?: string; limit?: number; realm?: string }): Promise<AccountView | undefined>
  earnings(realm: string): Promise<Earnings>
  /** The operator's accrued platform fees. */
  fees(): Promise<{ operator: string; accrued: bigint }>
  beginPayout(request: { realm: string; to: string; amount?: bigint; id?: string }): Promise<PayoutRecord>
  completePayout(id: string, txHash: string): Promise<PayoutRecord>
  cancelPayout(id: string): Promise<PayoutRecord>
  pendingPayouts(realm?: string): Promise<PayoutRecord[]>
  payout(id: string): Promise<PayoutRecord | undefined>
  createServiceToken(realm: string, label?: string): Promise<{ token: string; id: string }>
  authenticateService(token: string): Promise<{ id: string; realm: string }>
  revokeServiceToken(id: string): Promise<boolean>
  /** Releases holds that expired by `now` (and were not extended since); returns how many this call released. */
  sweep(now?: Date): Promise<number>
  audit(): Promise<Audit>
}

const SERVICE_PREFIX = 'mpp_svc_'
const MAX_TEXT = 512

type KeyRow = {
  id: string
  account_id: string
  owner: string
  realm: string
  hash: string
  prefix: string
  label: string | null
  created_at: Date | string
  last_used_at: Date | string | null
  expires_at: Date | string | null
  revoked_at: Date | string | null
  spent: string
  reserved: string
  spend_limit: string | null
}

const KEY_COLUMNS = `k.id, k.account_id, a.owner, k.realm, k.hash, k.prefix, k.label, k.created_at, k.last_used_at, k.expires_at,
  k.revoked_at, k.spent::text as spent, k.reserved::text as reserved, k.spend_limit::text as spend_limit`

type PayoutRow = {
  id: string
  realm: string
  to_address: string
  amount: string
  status: PayoutStatus
  tx_hash: string | null
  created_at: Date | string
  settled_at: Date | string | null
}

const PAYOUT_COLUMNS = 'id, realm, to_address, amount::text as amount, status, tx_hash, created_at, settled_at'

type Leg = { book: string; amount: bigint }

/** A debit the book could not cover (rolls its transaction back). */
class Uncovered extends Error {
  constructor(readonly book: string) {
    super(`book ${book} cannot cover the debit`)
  }
}

export function createLedger(options: LedgerOptions): Ledger {
  const { sql } = options
  if (!sql || typeof sql.query !== 'function' || typeof sql.transaction !== 'function')
    throw new ConfigurationError('createLedger: `sql` must be a SqlClient, e.g. fromPglite(new PGlite()) or fromPostgres(postgres(url)).')
  if (typeof options.currency !== 'string' || options.currency.trim() === '')
    throw new ConfigurationError("createLedger: `currency` is required (the token's address every amount is in).")
  const currency = options.currency.trim().toLowerCase()
  const feeBps = options.platformFeeBps ?? 0
  if (!Number.isInteger(feeBps) || feeBps < 0 || feeBps > 10_000)
    throw new ConfigurationError(`createLedger: \`platformFeeBps\` must be an integer from 0 to 10000 (basis points), got ${String(feeBps)}.`)
  const operator = normalizeAddress(options.operator ?? 'operator')
  const feesBook = `fees:${operator}`
  const keyPrefix = options.keyPrefix ?? 'mpp_live_'
  const timeoutMs = options.timeoutMs
  if (timeoutMs !== undefined && (!Number.isFinite(timeoutMs) || timeoutMs <= 0))
    throw new ConfigurationError(`createLedger: \`timeoutMs\` must be a positive number of milliseconds, got ${String(timeoutMs)}.`)
  if (!/^[a-z][a-z0-9_]{1,31}$/.test(keyPrefix) || keyPrefix.startsWith(SERVICE_PREFIX))
    throw new ConfigurationError('createLedger: `keyPrefix` must be 2–32 lowercase letters, digits or _ (e.g. "mpp_live_"), and not the service-token prefix.')

  /**
   * Database failures become `MeterUnavailableError` (503); refusals pass through. With `late`,
   * the operation is bounded by `timeoutMs`, and `late` runs if it completes after the caller gave up.
   */
  async function run<T>(fn: () => Promise<T>, late?: (value: T) => void): Promise<T> {
    try {
      if (late === undefined || timeoutMs === undefined) return await fn()
      const operation = fn()
      let timer: ReturnType<typeof setTimeout> | undefined
      let gaveUp = false
      const expired = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          gaveUp = true
          reject(new MeterUnavailableError(`The accounts database did not answer within ${timeoutMs} ms.`))
        }, timeoutMs)
      })
      operation.then(
        (value) => {
          if (gaveUp) late(value)
        },
        () => undefined,
      )
      try {
        return await Promise.race([operation, expired])
      } finally {
        clearTimeout(timer)
      }
    } catch (error) {
      if (error instanceof MeterError || error instanceof MeterUnavailableError || error instanceof LedgerError || error instanceof ConfigurationError)
        throw error
      throw new MeterUnavailableError('The accounts database is unavailable.', { cause: error })
    }
  }

  /** Records movement `id` and applies its legs, or returns false when it already happened. */
  async function post(
    tx: SqlClient,
    id: string,
    meta: { kind: string; accountId?: string; keyId?: string; realm?: string; reference?: string; description?: string },
    legs: Leg[],
  ): Promise<Map<string, bigint> | false> {
    const recorded = await tx.query(
      `insert into mpp_movements (id, kind, account_id, key_id, realm, reference, description) values ($1, $2, $3, $4, $5, $6, $7)
       on conflict (id) do nothing returning id`,
      [id, meta.kind, meta.accountId ?? null, meta.keyId ?? null, meta.realm ?? null, meta.reference ?? null, meta.description ?? null],
    )
    if (recorded.length === 0) return false
    const live = legs.filter((leg) => leg.amount !== 0n).sort((a, b) => (a.book < b.book ? -1 : a.book > b.book ? 1 : 0))
    if (live.reduce((sum, leg) => sum + leg.amount, 0n) !== 0n) throw new Error(`ledger: movement ${meta.kind} is not balanced`)
    const balances = new Map<string, bigint>()
    for (const leg of live) {
      const rows = await tx.query<{ balance: string }>(
        `update mpp_books set balance = balance + $2::numeric where id = $1 and (kind = 'external' or balance + $2::numeric >= 0)
         returning balance::text as balance`,
        [leg.book, leg.amount.toString()],
      )
      if (rows.length === 0) throw new Uncovered(leg.book)
      balances.set(leg.book, BigInt(rows[0]!.balance))
    }
    if (live.length > 0) {
      const params: unknown[] = [id]
      const values = live.map((leg) => {
        params.push(leg.book, leg.amount.toString())
        return `($1, $${params.length - 1}, $${params.length}::numeric)`
      })
      await tx.query(`insert into mpp_entries (movement_id, book_id, amount) values ${values.join(', ')}`, params)
    }
    return balances
  }

  async function balanceOf(tx: SqlClient, accountId: string): Promise<bigint> {
    const rows = await tx.query<{ balance: string }>('select balance::text as balance from mpp_books where id = $1', [`acct:${accountId}`])
    return rows[0] ? BigInt(rows[0].balance) : 0n
  }

  async function findKey(tx: SqlClient, key: string): Promise<KeyRow> {
    if (typeof key !== 'string' || !key.startsWith(keyPrefix) || key.length > 200) throw refuse('invalid-key')
    const hash = await sha256Hex(key)
    const rows = await tx.query<KeyRow>(`select ${KEY_COLUMNS} from mpp_api_keys k join mpp_accounts a on a.id = k.account_id where k.hash = $1`, [hash])
    const row = rows[0]
    if (!row || !constantTimeEqual(row.hash, hash)) throw refuse('invalid-key')
    return row
  }

  function usable(row: KeyRow, realm: string, now: number): void {
    if (row.revoked_at !== null) throw refuse('key-revoked')
    if (row.expires_at !== null && toDate(row.expires_at).getTime() <= now) throw refuse('key-expired')
    if (row.realm !== realm) throw refuse('wrong-server')
  }

  async function insertKey(
    tx: SqlClient,
    account: { id: string; owner: string },
    realm: string,
    options: { label?: string | undefined; limit?: bigint | null | undefined; expiresAt?: Date | undefined },
  ): Promise<{ apiKey: string; key: KeyInfo }> {
    const apiKey = keyPrefix + randomToken()
    const hash = await sha256Hex(apiKey)
    const id = `key_${randomId()}`
    const prefix = apiKey.slice(0, keyPrefix.length + 6)
    await tx.query(`insert into mpp_books (id, kind) values ($1, 'earnings') on conflict (id) do nothing`, [`earnings:${realm}`])
    const rows = await tx.query<Omit<KeyRow, 'owner'>>(
      `insert into mpp_api_keys as k (id, account_id, realm, hash, prefix, label, spend_limit, expires_at)
       values ($1, $2, $3, $4, $5, $6, $7::numeric, $8::timestamptz)
       returning k.id, k.account_id, k.realm, k.hash, k.prefix, k.label, k.created_at, k.last_used_at, k.expires_at, k.revoked_at,
         k.spent::text as spent, k.reserved::text as reserved, k.spend_limit::text as spend_limit`,
      [
        id,
        account.id,
        realm,
        hash,
        prefix,
        options.label ?? null,
        options.limit == null ? null : options.limit.toString(),
        options.expiresAt?.toISOString() ?? null,
      ],
    )
    return { apiKey, key: keyInfo({ ...rows[0]!, owner: account.owner }) }
  }

  async function getAccount(tx: SqlClient, accountId: string): Promise<{ id: string; owner: string }> {
    const rows = await tx.query<{ id: string; owner: string }>('select id, owner from mpp_accounts where id = $1', [text(accountId, 'accountId')])
    if (!rows[0]) throw new LedgerError('unknown-account', 'No such account.')
    return rows[0]
  }

  /** Settles an open hold once: 'capture' spends it (earnings less fee), 'release' returns it. */
  async function settle(holdId: string, outcome: 'captured' | 'released', kind: string): Promise<{ balance: bigint; settled: boolean }> {
    // One statement (mpp_settle, migration 2): conditional on the hold still being open.
    const rows = await sql.query<{ outcome: string; balance: string | null }>('select outcome, balance from mpp_settle($1, $2, $3, $4, $5)', [
      holdId,
      outcome,
      feeBps,
      feesBook,
      kind,
    ])
    const row = rows[0]
    if (!row || row.outcome === 'unknown-hold') throw new LedgerError('unknown-hold', 'No such hold.')
    return { balance: BigInt(row.balance ?? '0'), settled: row.outcome === 'settled' }
  }

  async function holdStatus(holdId: string): Promise<string | undefined> {
    const rows = await sql.query<{ status: string }>('select status from mpp_holds where id = $1', [holdId])
    return rows[0]?.status
  }

  async function getPayout(tx: SqlClient, id: string): Promise<PayoutRecord | undefined> {
    const rows = await tx.query<PayoutRow>(`select ${PAYOUT_COLUMNS} from mpp_payouts where id = $1`, [id])
    return rows[0] ? payoutRecord(rows[0]) : undefined
  }

  const ledger: Ledger = {
    async migrate() {
      await run(() =>
        sql.transaction(async (tx) => {
          await tx.query('select pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY])
          await tx.query(
            'create table if not exists mpp_schema_migrations (version integer primary key, name text not null, applied_at timestamptz not null default now())',
          )
          const applied = new Set((await tx.query<{ version: number }>('select version from mpp_schema_migrations')).map((row) => Number(row.version)))
          for (const migration of migrations) {
            if (applied.has(migration.version)) continue
            for (const statement of migration.statements) await tx.query(statement)
            await tx.query('insert into mpp_schema_migrations (version, name) values ($1, $2)', [migration.version, migration.name])
          }
          await tx.query(`insert into mpp_meta (key, value) values ('currency', $1) on conflict (key) do nothing`, [currency])
          const stored = await tx.query<{ value: string }>(`select value from mpp_meta where key = 'currency'`)
          if (stored[0]?.value !== currency)
            throw new ConfigurationError(
              `createLedger: this database's ledger is in currency ${stored[0]?.value}, not ${currency}; use the same \`currency\` or another database.`,
            )
          await tx.query(`insert into mpp_books (id, kind) values ($1, 'fees') on conflict (id) do nothing`, [feesBook])
        }),
      )
    },

    async topUp(request) {
      const owner = normalizeAddress(text(request.owner, 'owner'))
      const reference = normalizeAddress(text(request.reference, 'reference'))
      const realm = text(request.realm, 'realm')
      const amount = positive(request.amount, 'amount')
      const label = optionalText(request.label, 'label')
      return run(() =>
        sql.transaction(async (tx) => {
          const created = await tx.query<{ id: string }>('insert into mpp_accounts (id, owner) values ($1, $2) on conflict (owner) do nothing returning id', [
            `acct_${randomId()}`,
            owner,
          ])
          if (created[0]) {
            await tx.query(`insert into mpp_books (id, kind) values ($1, 'available'), ($2, 'held')`, [`acct:${created[0].id}`, `held:${created[0].id}`])
          }
          // Serialises top-ups of one account (a first top-up issues exactly one key).
          const locked = await tx.query<{ id: string }>('select id from mpp_accounts where owner = $1 for update', [owner])
          const accountId = locked[0]!.id
          const moved = await post(tx, `topup:${reference}`, { kind: 'topup', accountId, realm, reference }, [
            { book: 'world', amount: -amount },
            { book: `acct:${accountId}`, amount },
          ])
          if (moved === false) return { accountId, balance: await balanceOf(tx, accountId), credited: false }
          const result: TopUpResult = { accountId, balance: moved.get(`acct:${accountId}`)!, credited: true }
          const existing = await tx.query('select 1 from mpp_api_keys where account_id = $1 and realm = $2 limit 1', [accountId, realm])
          if (request.newKey || existing.length === 0) {
            const { apiKey, key } = await insertKey(tx, { id: accountId, owner }, realm, { label })
            result.apiKey = apiKey
            result.keyId = key.id
          }
          return result
        }),
      )
    },

    async authenticate(key, realm) {
      return run(
        async () => {
          const row = await findKey(sql, key)
          usable(row, realm, Date.now())
          return keyInfo(row)
        },
        () => undefined,
      )
    },

    async hold(request: HoldRequest): Promise<Hold> {
      if (typeof request.currency !== 'string' || request.currency.trim().toLowerCase() !== currency)
        throw new ConfigurationError(
          `ledger: a price in ${String(request.currency)} cannot be held by a ledger in ${currency}; price in the ledger's currency.`,
        )
      const holdId = text(request.holdId, 'holdId')
      const realm = text(request.realm, 'realm')
      const amount = nonNegative(request.amount, 'amount')
      const now = Date.now()
      const expiresAt = expiryAfter(request.ttlMs, now)
      if (typeof request.key !== 'string' || !request.key.startsWith(keyPrefix) || request.key.length > 200) throw refuse('invalid-key')
      const hash = await sha256Hex(request.key)
      return run(
        async () => {
          // One statement (mpp_hold, migration 2): validate the key, record the hold, reserve it
          // against the key's limit and the balance, or undo and say why.
          const rows = await sql.query<{
            outcome: string
            account_id: string | null
            key_id: string | null
            owner: string | null
            key_hash: string | null
            balance: string | null
            remaining: string | null
          }>('select * from mpp_hold($1, $2, $3, $4::numeric, $5, $6::timestamptz, $7::timestamptz)', [
            hash,
            realm,
            holdId,
            amount.toString(),
            note(request.description),
            expiresAt,
            new Date(now).toISOString(),
          ])
          const row = rows[0]
          if (!row || row.key_hash === null || !constantTimeEqual(row.key_hash, hash)) throw refuse('invalid-key')
          switch (row.outcome) {
            case 'held':
            case 'replayed':
              return { holdId, accountId: row.account_id!, keyId: row.key_id!, owner: row.owner!, amount, balance: BigInt(row.balance ?? '0') }
            case 'key-revoked':
            case 'key-expired':
            case 'wrong-server':
              throw refuse(row.outcome)
            case 'key-limit-exceeded':
              throw new MeterError('key-limit-exceeded', 'The price exceeds what this API key may still spend (its spend limit).', {
                remaining: BigInt(row.remaining ?? '0'),
              })
            case 'insufficient-balance':
              throw new MeterError('insufficient-balance', "The account's balance does not cover the price.", { balance: BigInt(row.balance ?? '0') })
            case 'hold-conflict':
              throw new LedgerError('hold-conflict', 'This hold id is already used by another hold.')
            case 'hold-released':
              throw new LedgerError('hold-released', 'This hold was already released; make a new one.')
            default:
              throw refuse('invalid-key')
          }
        },
        // Its caller answered 503 and will not run the work: give the amount back.
        () => void ledger.release(holdId).catch(() => undefined),
      )
    },

    async capture(holdId) {
      const id = text(holdId, 'holdId')
      const { balance, settled } = await run(
        () => settle(id, 'captured', 'capture'),
        () => undefined,
      )
      // Already settled: a repeated capture is fine, but a hold the sweeper released (its ttl ran
      // out and nobody extended it) was not charged, and the caller must know.
      if (!settled && (await run(() => holdStatus(id))) === 'released')
        throw new LedgerError(
          'hold-released',
          'This hold was released (by its caller, or by the sweeper once it expired) before it was captured; nothing was charged.',
        )
      return { balance }
    },

    async extend(holdId, ttlMs) {
      const id = text(holdId, 'holdId')
      const expiresAt = expiryAfter(ttlMs, Date.now())
      return run(async () => {
        // Only ever later, and only while open: the sweeper's release (mpp_expire) locks the row
        // and re-checks the expiry, so an extension and a release never both win.
        const rows = await sql.query<{ expires_at: Date | string }>(
          `update mpp_holds set expires_at = greatest(expires_at, $2::timestamptz) where id = $1 and status = 'open' returning expires_at`,
          [id, expiresAt],
        )
        if (rows[0]) return { expiresAt: toDate(rows[0].expires_at) }
        const status = await holdStatus(id)
        if (status === undefined) throw new LedgerError('unknown-hold', 'No such hold.')
        if (status === 'released') throw new LedgerError('hold-released', 'This hold was already released (it expired); nothing will be charged for it.')
        // Captured: there is nothing left to keep open.
        return { expiresAt: new Date(Date.now()) }
      })
    },

    async release(holdId) {
      const { balance } = await run(
        () => settle(text(holdId, 'holdId'), 'released', 'release'),
        () => undefined,
      )
      return { balance }
    },

    async createKey(accountId, realm, options = {}) {
      const limit = options.limit == null ? null : nonNegative(options.limit, 'limit')
      text(realm, 'realm')
      const label = optionalText(options.label, 'label')
      return run(() => sql.transaction(async (tx) => insertKey(tx, await getAccount(tx, accountId), realm, { label, limit, expiresAt: options.expiresAt })))
    },

    async listKeys(accountId) {
      if (!storableId(accountId)) return []
      return run(async () => {
        const rows = await sql.query<KeyRow>(
          `select ${KEY_COLUMNS} from mpp_api_keys k join mpp_accounts a on a.id = k.account_id where k.account_id = $1 order by k.created_at, k.id`,
          [accountId],
        )
        return rows.map(keyInfo)
      })
    },

    async revokeKey(accountId, keyId) {
      if (!storableId(accountId) || !storableId(keyId)) return false
      return run(async () => {
        const rows = await sql.query('update mpp_api_keys set revoked_at = now() where id = $1 and account_id = $2 and revoked_at is null returning id', [
          keyId,
          accountId,
        ])
        return rows.length > 0
      })
    },

    async setKeyLimit(accountId, keyId, limit) {
      const value = limit === null ? null : nonNegative(limit, 'limit')
      if (!storableId(accountId) || !storableId(keyId)) return undefined
      return run(async () => {
        const rows = await sql.query<{ id: string }>('update mpp_api_keys set spend_limit = $3::numeric where id = $1 and account_id = $2 returning id', [
          keyId,
          accountId,
          value === null ? null : value.toString(),
        ])
        if (!rows[0]) return undefined
        const keys = await sql.query<KeyRow>(`select ${KEY_COLUMNS} from mpp_api_keys k join mpp_accounts a on a.id = k.account_id where k.id = $1`, [keyId])
        return keys[0] ? keyInfo(keys[0]) : undefined
      })
    },

    async setKeyLabel(accountId, keyId, label) {
      const value = optionalText(label, 'label') ?? null
      if (!storableId(accountId) || !storableId(keyId)) return false
      return run(
        async () =>
          (await sql.query('update mpp_api_keys set label = $3 where id = $1 and account_id = $2 returning id', [keyId, accountId, value])).length > 0,
      )
    },

    async accountOf(owner) {
      const normalized = normalizeAddress(text(owner, 'owner'))
      return run(async () => {
        const rows = await sql.query<{ id: string }>('select id from mpp_accounts where owner = $1', [normalized])
        return rows[0] ? { accountId: rows[0].id } : undefined
      })
    },

    async account(accountId, page = {}) {
      const limit = Math.min(Math.max(Math.trunc(page.limit ?? 50), 1), 500)
      const cursor = page.cursor === undefined ? undefined : isEntryId(page.cursor) ? page.cursor : undefined
      if (page.cursor !== undefined && cursor === undefined) throw new LedgerError('invalid-request', 'The cursor is not one this ledger gave.')
      return run(() =>
        sql.transaction(async (tx) => {
          const accounts = await tx.query<{ id: string; owner: string }>('select id, owner from mpp_accounts where id = $1', [accountId])
          const account = accounts[0]
          if (!account) return undefined
          const books = await tx.query<{ id: string; balance: string }>('select id, balance::text as balance from mpp_books where id in ($1, $2)', [
            `acct:${accountId}`,
            `held:${accountId}`,
          ])
          const balanceOfBook = (id: string) => BigInt(books.find((book) => book.id === id)?.balance ?? '0')
          const keys = await tx.query<KeyRow>(
            `select ${KEY_COLUMNS} from mpp_api_keys k join mpp_accounts a on a.id = k.account_id where k.account_id = $1 order by k.created_at, k.id`,
            [accountId],
          )
          const rows = await tx.query<{
            id: string
            movement_id: string
            book_id: string
            amount: string
            created_at: Date | string
            kind: string
            key_id: string | null
            realm: string | null
            reference: string | null
            description: string | null
          }>(
            `select e.id::text as id, e.movement_id, e.book_id, e.amount::text as amount, e.created_at, m.kind, m.key_id, m.realm, m.reference, m.description
             from mpp_entries e join mpp_movements m on m.id = e.movement_id
             where e.book_id in ($1, $2) and ($3::bigint is null or e.id < $3::bigint)
               and ($5::text is null or m.realm is null or m.realm = $5::text)
             order by e.id desc limit $4`,
            [`acct:${accountId}`, `held:${accountId}`, cursor ?? null, limit + 1, page.realm ?? null],
          )
          const more = rows.length > limit
          const entries = rows.slice(0, limit).map(
            (row): LedgerEntry => ({
              id: row.id,
              movementId: row.movement_id,
              kind: row.kind,
              book: row.book_id.startsWith('held:') ? 'held' : 'available',
              amount: BigInt(row.amount),
              keyId: row.key_id,
              realm: row.realm,
              reference: row.reference,
              description: row.description,
              createdAt: toDate(row.created_at),
            }),
          )
          return {
            accountId: account.id,
            owner: account.owner,
            balance: balanceOfBook(`acct:${accountId}`),
            held: balanceOfBook(`held:${accountId}`),
            keys: keys.map(keyInfo),
            entries,
            next: more ? entries[entries.length - 1]?.id : undefined,
          }
        }),
      )
    },

    async earnings(realm) {
      text(realm, 'realm')
      return run(async () => {
        const rows = await sql.query<{ accrued: string; paid: string; pending: string }>(
          `select coalesce((select balance from mpp_books where id = $1), 0)::text as accrued,
             coalesce((select sum(amount) from mpp_payouts where realm = $2 and status = 'paid'), 0)::text as paid,
             coalesce((select sum(amount) from mpp_payouts where realm = $2 and status = 'pending'), 0)::text as pending`,
          [`earnings:${realm}`, realm],
        )
        const row = rows[0]!
        return { realm, accrued: BigInt(row.accrued), paidOut: BigInt(row.paid), pending: BigInt(row.pending) }
      })
    },

    async fees() {
      return run(async () => {
        const rows = await sql.query<{ balance: string }>('select balance::text as balance from mpp_books where id = $1', [feesBook])
        return { operator, accrued: BigInt(rows[0]?.balance ?? '0') }
      })
    },

    async beginPayout(request) {
      const realm = text(request.realm, 'realm')
      const to = normalizeAddress(text(request.to, 'to'))
      const wanted = request.amount === undefined ? undefined : positive(request.amount, 'amount')
      const id = request.id === undefined ? `po_${randomId()}` : text(request.id, 'id')
      return run(() =>
        sql.transaction(async (tx) => {
          // The earnings book's lock orders concurrent payouts of one realm.
          const books = await tx.query<{ balance: string }>('select balance::text as balance from mpp_books where id = $1 for update', [`earnings:${realm}`])
          const existing = await getPayout(tx, id)
          if (existing) return existing
          const accrued = BigInt(books[0]?.balance ?? '0')
          if (accrued === 0n) throw new LedgerError('nothing-accrued', `Nothing has accrued for ${realm} to pay out.`)
          const amount = wanted ?? accrued
          if (amount > accrued) throw new LedgerError('insufficient-earnings', `Only ${accrued} has accrued for ${realm}; cannot pay out ${amount}.`)
          const rows = await tx.query<PayoutRow>(
            `insert into mpp_payouts (id, realm, to_address, amount, status) values ($1, $2, $3, $4::numeric, 'pending') returning ${PAYOUT_COLUMNS}`,
            [id, realm, to, amount.toString()],
          )
          await tx.query(`insert into mpp_books (id, kind) values ($1, 'payout')`, [`payout:${id}`])
          await post(tx, `payout:${id}`, { kind: 'payout', realm, reference: id }, [
            { book: `earnings:${realm}`, amount: -amount },
            { book: `payout:${id}`, amount },
          ])
          return payoutRecord(rows[0]!)
        }),
      )
    },

    async completePayout(id, txHash) {
      text(id, 'id')
      const hash = normalizeAddress(text(txHash, 'txHash'))
      return run(() =>
        sql.transaction(async (tx) => {
          const rows = await tx.query<PayoutRow>(
            `update mpp_payouts set status = 'paid', tx_hash = $2, settled_at = now() where id = $1 and status = 'pending' returning ${PAYOUT_COLUMNS}`,
            [id, hash],
          )
          const payout = rows[0]
          if (!payout) {
            const existing = await getPayout(tx, id)
            if (!existing) throw new LedgerError('unknown-payout', 'No such payout.')
            if (existing.status === 'cancelled') throw new LedgerError('payout-cancelled', 'This payout was cancelled; it cannot be completed.')
            return existing
          }
          await post(tx, `payout-paid:${id}`, { kind: 'payout-paid', realm: payout.realm, reference: hash }, [
            { book: `payout:${id}`, amount: -BigInt(payout.amount) },
            { book: 'world', amount: BigInt(payout.amount) },
          ])
          return payoutRecord(payout)
        }),
      )
    },

    async cancelPayout(id) {
      text(id, 'id')
      return run(() =>
        sql.transaction(async (tx) => {
          const rows = await tx.query<PayoutRow>(
            `update mpp_payouts set status = 'cancelled', settled_at = now() where id = $1 and status = 'pending' returning ${PAYOUT_COLUMNS}`,
            [id],
          )
          const payout = rows[0]
          if (!payout) {
            const existing = await getPayout(tx, id)
            if (!existing) throw new LedgerError('unknown-payout', 'No such payout.')
            if (existing.status === 'paid') throw new LedgerError('payout-paid', 'This payout was paid out; it cannot be cancelled.')
            return existing
          }
          await post(tx, `payout-cancel:${id}`, { kind: 'payout-cancel', realm: payout.realm, reference: id }, [
            { book: `earnings:${payout.realm}`, amount: BigInt(payout.amount) },
            { book: `payout:${id}`, amount: -BigInt(payout.amount) },
          ])
          return payoutRecord(payout)
        }),
      )
    },

    async pendingPayouts(realm) {
      return run(async () => {
        const rows = await sql.query<PayoutRow>(
          `select ${PAYOUT_COLUMNS} from mpp_payouts where status = 'pending' and ($1::text is null or realm = $1) order by created_at, id`,
          [realm ?? null],
        )
        return rows.map(payoutRecord)
      })
    },

    async payout(id) {
      if (!storableId(id)) return undefined
      return run(() => getPayout(sql, id))
    },

    async createServiceToken(realm, label) {
      text(realm, 'realm')
      optionalText(label, 'label')
      const token = SERVICE_PREFIX + randomToken()
      const hash = await sha256Hex(token)
      const id = `svc_${randomId()}`
      await run(() =>
        sql.query('insert into mpp_service_tokens (id, realm, hash, prefix, label) values ($1, $2, $3, $4, $5)', [
          id,
          realm,
          hash,
          token.slice(0, SERVICE_PREFIX.length + 6),
          label ?? null,
        ]),
      )
      return { token, id }
    },

    async authenticateService(token) {
      if (typeof token !== 'string' || !token.startsWith(SERVICE_PREFIX) || token.length > 200) throw refuse('invalid-key')
      const hash = await sha256Hex(token)
      return run(async () => {
        const rows = await sql.query<{ id: string; realm: string; hash: string; revoked_at: unknown }>(
          'select id, realm, hash, revoked_at from mpp_service_tokens where hash = $1',
          [hash],
        )
        const row = rows[0]
        if (!row || !constantTimeEqual(row.hash, hash)) throw refuse('invalid-key')
        if (row.revoked_at !== null) throw refuse('key-revoked')
        return { id: row.id, realm: row.realm }
      })
    },

    async revokeServiceToken(id) {
      if (!storableId(id)) return false
      return run(
        async () => (await sql.query('update mpp_service_tokens set revoked_at = now() where id = $1 and revoked_at is null returning id', [id])).length > 0,
      )
    },

    async sweep(now = new Date()) {
      let released = 0
      const batch = 100
      for (;;) {
        const due = await run(() =>
          sql.query<{ id: string }>(`select id from mpp_holds where status = 'open' and expires_at <= $1::timestamptz order by expires_at, id limit $2`, [
            now.toISOString(),
            batch,
          ]),
        )
        for (const { id } of due) {
          // The release is conditional on the hold still being open AND still due (mpp_expire,
          // migration 3): two sweepers, a late capture or an extension racing for it settle it
          // exactly once, and a hold extended since it was listed stays open.
          const rows = await run(() => sql.query<{ outcome: string }>('select outcome from mpp_expire($1, $2::timestamptz)', [id, now.toISOString()]))
          if (rows[0]?.outcome === 'settled') released++
        }
        if (due.length < batch) return released
      }
    },

    async audit() {
      return run(async () => {
        const rows = await sql.query<{ sum: string; negative: number; mismatched: number; unbalanced: number; holds: number }>(
          `select
             (select coalesce(sum(balance), 0) from mpp_books)::text as sum,
             (select count(*) from mpp_books where kind <> 'external' and balance < 0)::int as negative,
             (select count(*) from mpp_books b
                where b.balance <> coalesce((select sum(e.amount) from mpp_entries e where e.book_id = b.id), 0))::int as mismatched,
             (select count(*) from (select movement_id from mpp_entries group by movement_id having sum(amount) <> 0) u)::int as unbalanced,
             (select count(*) from mpp_books b where b.kind = 'held'
                and b.balance <> coalesce((select sum(h.amount) from mpp_holds h where 'held:' || h.account_id = b.id and h.status = 'open'), 0))::int as holds`,
        )
        const row = rows[0]!
        return {
          sum: BigInt(row.sum),
          negativeBalances: Number(row.negative),
          mismatchedBooks: Number(row.mismatched),
          unbalancedMovements: Number(row.unbalanced),
          mismatchedHolds: Number(row.holds),
        }
      })
    },
  }
  return ledger
}

const REFUSALS = {
  'invalid-key': 'The API key is not valid.',
  'key-revoked': 'The API key was revoked.',
  'key-expired': 'The API key has expired.',
  'wrong-server': 'The API key is for another server.',
} as const

function refuse(reason: keyof typeof REFUSALS): MeterError {
  return new MeterError(reason, REFUSALS[reason])
}

function keyInfo(row: KeyRow): KeyInfo {
  return {
    id: row.id,
    accountId: row.account_id,
    owner: row.owner,
    realm: row.realm,
    prefix: row.prefix,
    label: row.label,
    createdAt: toDate(row.created_at),
    lastUsedAt: row.last_used_at === null ? null : toDate(row.last_used_at),
    expiresAt: row.expires_at === null ? null : toDate(row.expires_at),
    revokedAt: row.revoked_at === null ? null : toDate(row.revoked_at),
    spent: BigInt(row.spent),
    reserved: BigInt(row.reserved),
    limit: row.spend_limit === null ? null : BigInt(row.spend_limit),
  }
}

function payoutRecord(row: PayoutRow): PayoutRecord {
  return {
    id: row.id,
    realm: row.realm,
    to: row.to_address,
    amount: BigInt(row.amount),
    status: row.status,
    txHash: row.tx_hash,
    createdAt: toDate(row.created_at),
    settledAt: row.settled_at === null ? null : toDate(row.settled_at),
  }
}

function toDate(value: Date | string): Date {
  return value instanceof Date ? value : new Date(value)
}

// Postgres text cannot hold a NUL character: such a value is the caller's mistake, not an outage.
function text(value: unknown, name: string): string {
  if (typeof value !== 'string' || value.trim() === '' || value.length > MAX_TEXT || value.includes('\u0000'))
    throw new LedgerError('invalid-request', `\`${name}\` must be a non-empty string of at most ${MAX_TEXT} characters, without NUL characters.`)
  return value.trim()
}

function optionalText(value: unknown, name: string): string | undefined {
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'string' || value.length > MAX_TEXT || value.includes('\u0000'))
    throw new LedgerError('invalid-request', `\`${name}\` must be a string of at most ${MAX_TEXT} characters, without NUL characters.`)
  return value
}

/** An id the ledger could have issued (others name nothing here: looked up, they are simply not found). */
/** An entry id (the ledger's page cursor): a Postgres bigint. */
export function isEntryId(value: unknown): value is string {
  return typeof value === 'string' && /^\d{1,19}$/.test(value) && BigInt(value) <= 9_223_372_036_854_775_807n
}

function storableId(value: unknown): value is string {
  return typeof value === 'string' && value !== '' && value.length <= MAX_TEXT && !value.includes('\u0000')
}

/** A note of what was bought: kept as far as the database can store it. */
function note(value: unknown): string | null {
  if (typeof value !== 'string') return null
  return value.replaceAll('\u0000', '').slice(0, MAX_TEXT)
}

/** `now + ttlMs` as an instant both JavaScript and Postgres can hold. */
function expiryAfter(ttlMs: unknown, now: number): string {
  const at = typeof ttlMs === 'number' && Number.isFinite(ttlMs) && ttlMs > 0 ? new Date(now + ttlMs) : undefined
  if (!at || Number.isNaN(at.getTime()))
    throw new LedgerError('invalid-request', '`ttlMs` must be a positive number of milliseconds that ends at a representable date.')
  return at.toISOString()
}

function positive(value: unknown, name: string): bigint {
  if (typeof value !== 'bigint' || value <= 0n) throw new LedgerError('invalid-request', `\`${name}\` must be a bigint above 0 (base units).`)
  return value
}

function nonNegative(value: unknown, name: string): bigint {
  if (typeof value !== 'bigint' || value < 0n) throw new LedgerError('invalid-request', `\`${name}\` must be a bigint of at least 0 (base units).`)
  return value
}

/** Hex addresses and hashes are compared case-insensitively: stored lowercase. */
function normalizeAddress(value: string): string {
  const trimmed = value.trim()
  return /^0x[0-9a-f]+$/i.test(trimmed) ? trimmed.toLowerCase() : trimmed
}

function randomId(): string {
  return crypto.randomUUID().replaceAll('-', '')
}

/** 256 random bits, base64url without padding (43 characters). */
function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32))
  let binary = ''
  for (const byte of bytes) binary += String.fromCharCode(byte)
  return btoa(binary).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '')
}

async function sha256Hex(value: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(value)))
  let hex = ''
  for (const byte of digest) hex += byte.toString(16).padStart(2, '0')
  return hex
}

function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false
  let difference = 0
  for (let i = 0; i < a.length; i++) difference |= a.charCodeAt(i) ^ b.charCodeAt(i)
  return difference === 0
}
