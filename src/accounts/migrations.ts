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
  {
    version: 2,
    name: 'hold-and-settle-in-one-statement',
    // The hot path (a hold, then its capture or release) as one statement each: one round trip,
    // and the account's rows are locked only for the statement, not across several round trips.
    // The same rules as the multi-statement path: lock order hold → key → books sorted by id;
    // every debit is conditional; a refusal undoes what the statement did before returning it.
    statements: [
      `create or replace function mpp_hold(
        p_hash text, p_realm text, p_hold_id text, p_amount numeric, p_description text, p_expires_at timestamptz, p_now timestamptz
      ) returns table (outcome text, account_id text, key_id text, owner text, key_hash text, balance text, remaining text)
      language plpgsql as $$
      #variable_conflict use_column
      declare
        k record;
        h record;
        bal numeric;
        revoked boolean;
        rest numeric;
      begin
        select k2.id, k2.account_id, a.owner, k2.realm, k2.hash, k2.expires_at, k2.revoked_at into k
          from mpp_api_keys k2 join mpp_accounts a on a.id = k2.account_id where k2.hash = p_hash;
        if not found then
          return query select 'invalid-key'::text, null::text, null::text, null::text, null::text, null::text, null::text;
          return;
        end if;
        if k.revoked_at is not null then
          return query select 'key-revoked'::text, null::text, null::text, null::text, k.hash, null::text, null::text;
          return;
        end if;
        if k.expires_at is not null and k.expires_at <= p_now then
          return query select 'key-expired'::text, null::text, null::text, null::text, k.hash, null::text, null::text;
          return;
        end if;
        if k.realm <> p_realm then
          return query select 'wrong-server'::text, null::text, null::text, null::text, k.hash, null::text, null::text;
          return;
        end if;
        insert into mpp_holds (id, account_id, key_id, realm, amount, status, description, expires_at)
          values (p_hold_id, k.account_id, k.id, p_realm, p_amount, 'open', p_description, p_expires_at)
          on conflict (id) do nothing;
        if not found then
          select h2.key_id, h2.amount, h2.status into h from mpp_holds h2 where h2.id = p_hold_id;
          select b.balance into bal from mpp_books b where b.id = 'acct:' || k.account_id;
          if h.key_id <> k.id or h.amount <> p_amount then
            return query select 'hold-conflict'::text, k.account_id, k.id, k.owner, k.hash, null::text, null::text;
          elsif h.status = 'released' then
            return query select 'hold-released'::text, k.account_id, k.id, k.owner, k.hash, null::text, null::text;
          else
            return query select 'replayed'::text, k.account_id, k.id, k.owner, k.hash, bal::text, null::text;
          end if;
          return;
        end if;
        update mpp_api_keys set reserved = reserved + p_amount, last_used_at = now()
          where id = k.id and revoked_at is null and (spend_limit is null or spent + reserved + p_amount <= spend_limit);
        if not found then
          delete from mpp_holds where id = p_hold_id;
          select (k3.revoked_at is not null), greatest(coalesce(k3.spend_limit, 0) - k3.spent - k3.reserved, 0) into revoked, rest
            from mpp_api_keys k3 where k3.id = k.id;
          if revoked then
            return query select 'key-revoked'::text, null::text, null::text, null::text, k.hash, null::text, null::text;
          else
            return query select 'key-limit-exceeded'::text, k.account_id, k.id, k.owner, k.hash, null::text, rest::text;
          end if;
          return;
        end if;
        insert into mpp_movements (id, kind, account_id, key_id, realm, description)
          values ('hold:' || p_hold_id, 'hold', k.account_id, k.id, p_realm, p_description);
        if p_amount > 0 then
          update mpp_books set balance = mpp_books.balance - p_amount where id = 'acct:' || k.account_id and mpp_books.balance >= p_amount
            returning mpp_books.balance into bal;
          if not found then
            delete from mpp_movements where id = 'hold:' || p_hold_id;
            update mpp_api_keys set reserved = reserved - p_amount where id = k.id;
            delete from mpp_holds where id = p_hold_id;
            select b.balance into bal from mpp_books b where b.id = 'acct:' || k.account_id;
            return query select 'insufficient-balance'::text, k.account_id, k.id, k.owner, k.hash, bal::text, null::text;
            return;
          end if;
          update mpp_books set balance = mpp_books.balance + p_amount where id = 'held:' || k.account_id;
          insert into mpp_entries (movement_id, book_id, amount)
            values ('hold:' || p_hold_id, 'acct:' || k.account_id, -p_amount), ('hold:' || p_hold_id, 'held:' || k.account_id, p_amount);
        else
          select b.balance into bal from mpp_books b where b.id = 'acct:' || k.account_id;
        end if;
        return query select 'held'::text, k.account_id, k.id, k.owner, k.hash, bal::text, null::text;
      end
      $$`,
      `create or replace function mpp_settle(p_hold_id text, p_outcome text, p_fee_bps integer, p_fees_book text, p_kind text)
      returns table (outcome text, balance text)
      language plpgsql as $$
      #variable_conflict use_column
      declare
        h record;
        fee numeric;
        acct text;
        bal numeric;
      begin
        update mpp_holds set status = p_outcome, settled_at = now() where id = p_hold_id and status = 'open'
          returning mpp_holds.account_id, mpp_holds.key_id, mpp_holds.realm, mpp_holds.amount, mpp_holds.description into h;
        if not found then
          select h2.account_id into acct from mpp_holds h2 where h2.id = p_hold_id;
          if not found then
            return query select 'unknown-hold'::text, null::text;
            return;
          end if;
          select b.balance into bal from mpp_books b where b.id = 'acct:' || acct;
          return query select 'unchanged'::text, bal::text;
          return;
        end if;
        if p_outcome = 'captured' then
          update mpp_api_keys set reserved = reserved - h.amount, spent = spent + h.amount where id = h.key_id;
        else
          update mpp_api_keys set reserved = reserved - h.amount where id = h.key_id;
        end if;
        insert into mpp_movements (id, kind, account_id, key_id, realm, description)
          values ((case when p_outcome = 'captured' then 'capture:' else 'release:' end) || p_hold_id, p_kind, h.account_id, h.key_id, h.realm, h.description);
        if h.amount > 0 then
          if p_outcome = 'captured' then
            fee := div(h.amount * p_fee_bps, 10000);
            -- Books in id order: 'earnings:…' < 'fees:…' < 'held:…'.
            if h.amount - fee > 0 then
              update mpp_books set balance = mpp_books.balance + (h.amount - fee) where id = 'earnings:' || h.realm;
              insert into mpp_entries (movement_id, book_id, amount) values ('capture:' || p_hold_id, 'earnings:' || h.realm, h.amount - fee);
            end if;
            if fee > 0 then
              update mpp_books set balance = mpp_books.balance + fee where id = p_fees_book;
              insert into mpp_entries (movement_id, book_id, amount) values ('capture:' || p_hold_id, p_fees_book, fee);
            end if;
            update mpp_books set balance = mpp_books.balance - h.amount where id = 'held:' || h.account_id;
            insert into mpp_entries (movement_id, book_id, amount) values ('capture:' || p_hold_id, 'held:' || h.account_id, -h.amount);
          else
            -- 'acct:…' < 'held:…'.
            update mpp_books set balance = mpp_books.balance + h.amount where id = 'acct:' || h.account_id;
            update mpp_books set balance = mpp_books.balance - h.amount where id = 'held:' || h.account_id;
            insert into mpp_entries (movement_id, book_id, amount)
              values ('release:' || p_hold_id, 'acct:' || h.account_id, h.amount), ('release:' || p_hold_id, 'held:' || h.account_id, -h.amount);
          end if;
        end if;
        select b.balance into bal from mpp_books b where b.id = 'acct:' || h.account_id;
        return query select 'settled'::text, bal::text;
      end
      $$`,
    ],
  },
  {
    version: 3,
    name: 'hold-expiry-is-checked-when-released',
    // A hold is kept open while its call runs by pushing `expires_at` forward (`ledger.extend`).
    // The sweeper's release is conditional on the hold being due at that very moment: the row is
    // locked, its expiry checked, and only then released, so a hold extended after the sweeper
    // listed it is not released, and an extension that comes after the release finds it released.
    // (mpp_settle, used by capture and release, is unchanged, so instances still running the
    // previous version keep working during a rolling upgrade.)
    statements: [
      `create or replace function mpp_expire(p_hold_id text, p_now timestamptz)
      returns table (outcome text, balance text)
      language plpgsql as $$
      #variable_conflict use_column
      begin
        perform 1 from mpp_holds h where h.id = p_hold_id and h.status = 'open' and h.expires_at <= p_now for update;
        if not found then
          return query select 'unchanged'::text, null::text;
          return;
        end if;
        return query select s.outcome, s.balance from mpp_settle(p_hold_id, 'released', 0, '', 'expire') s;
      end
      $$`,
    ],
  },
]
