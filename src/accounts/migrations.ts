/**
 * The ledger's schema, as versioned migrations applied in order by `ledger.migrate()`. A migration
 * is never edited once released: a change is a new version. Each statement runs on its own (the
 * `SqlClient` runs one statement per call) inside one transaction per `migrate()`.
 *
 * Money is `numeric(78,0)` (any uint256 amount of base units); every table is prefixed `mpp_` so the
 * ledger can share a database with the application.
 */

export type Migration = { version: number; name: string; statements: readonly string[] }

/** A constant key for `pg_advisory_xact_lock`: one migrator at a time, across every instance. */
export const MIGRATION_LOCK_KEY = 7_150_015_001

export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: 'ledger',
    statements: [
      // Settings the ledger was created with (its currency); a ledger opened with another refuses.
      `create table mpp_meta (key text primary key, value text not null)`,
      // One account per owner (the address that paid its top-ups).
      `create table mpp_accounts (
        id text primary key,
        owner text not null unique,
        created_at timestamptz not null default now()
      )`,
      // Double-entry books: an account's available balance ('acct:<id>') and held amount
      // ('held:<id>'), a realm's earnings ('earnings:<realm>'), the operator's fees ('fees:<op>'),
      // each payout in flight ('payout:<id>'), and the outside world ('world', the only external
      // book, which may go negative). The balances always sum to zero.
      `create table mpp_books (
        id text primary key,
        kind text not null check (kind in ('external', 'available', 'held', 'earnings', 'fees', 'payout')),
        balance numeric(78,0) not null default 0,
        constraint mpp_books_non_negative check (kind = 'external' or balance >= 0)
      )`,
      // A movement is a balanced set of entries; its id is the idempotency id ('topup:<ref>',
      // 'hold:<id>', 'capture:<id>', 'release:<id>', 'payout:<id>', ...): it happens at most once.
      `create table mpp_movements (
        id text primary key,
        kind text not null,
        account_id text,
        key_id text,
        realm text,
        reference text,
        description text,
        created_at timestamptz not null default now()
      )`,
      `create table mpp_entries (
        id bigint generated always as identity primary key,
        movement_id text not null references mpp_movements (id),
        book_id text not null references mpp_books (id),
        amount numeric(78,0) not null check (amount <> 0),
        created_at timestamptz not null default now()
      )`,
      `create index mpp_entries_book on mpp_entries (book_id, id)`,
      `create index mpp_entries_movement on mpp_entries (movement_id)`,
      // API keys: only the SHA-256 of the key is stored; 'reserved' is what open holds took,
      // 'spent' what captures took; a limit bounds spent + reserved.
      `create table mpp_api_keys (
        id text primary key,
        account_id text not null references mpp_accounts (id),
        realm text not null,
        hash text not null unique,
        prefix text not null,
        label text,
        spend_limit numeric(78,0) check (spend_limit >= 0),
        spent numeric(78,0) not null default 0 check (spent >= 0),
        reserved numeric(78,0) not null default 0 check (reserved >= 0),
        created_at timestamptz not null default now(),
        last_used_at timestamptz,
        expires_at timestamptz,
        revoked_at timestamptz
      )`,
      `create index mpp_api_keys_account on mpp_api_keys (account_id, realm)`,
      `create table mpp_holds (
        id text primary key,
        account_id text not null references mpp_accounts (id),
        key_id text not null references mpp_api_keys (id),
        realm text not null,
        amount numeric(78,0) not null check (amount >= 0),
        status text not null check (status in ('open', 'captured', 'released')),
        description text,
        created_at timestamptz not null default now(),
        expires_at timestamptz not null,
        settled_at timestamptz
      )`,
      `create index mpp_holds_expiry on mpp_holds (expires_at) where status = 'open'`,
      `create table mpp_payouts (
        id text primary key,
        realm text not null,
        to_address text not null,
        amount numeric(78,0) not null check (amount > 0),
        status text not null check (status in ('pending', 'paid', 'cancelled')),
        tx_hash text,
        created_at timestamptz not null default now(),
        settled_at timestamptz
      )`,
      `create index mpp_payouts_realm on mpp_payouts (realm, status)`,
      `create table mpp_service_tokens (
        id text primary key,
        realm text not null,
        hash text not null unique,
        prefix text not null,
        label text,
        created_at timestamptz not null default now(),
        revoked_at timestamptz
      )`,
      `insert into mpp_books (id, kind) values ('world', 'external')`,
    ],
  },
]
