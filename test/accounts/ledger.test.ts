/**
 * The accounts ledger (#15), one behaviour at a time, on PGlite and on a real Postgres server:
 * top-ups credited once per payment, keys (random, hashed, realm-scoped, revocable, limited,
 * expiring), holds captured or released exactly once, earnings less the platform fee, payouts'
 * bookkeeping, service tokens, the sweeper, and a database that is down. After each scenario the
 * books sum to zero and nothing is negative.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest'
import { createLedger, type Ledger, LedgerError } from '../../src/accounts/ledger.js'
import { MeterError, MeterUnavailableError } from '../../src/accounts/meter.js'
import { migrations } from '../../src/accounts/migrations.js'
import { fromPglite } from '../../src/accounts/sql.js'
import { ConfigurationError } from '../../src/protocol/errors.js'
import { backends, CURRENCY, expectBalanced, holdRequest, newOwner, newReference, openLedger, type TestDatabase } from './support.js'

/** What `promise` rejected with (undefined when it resolved), caught at once (no unhandled rejection). */
function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (caught: unknown) => caught,
  )
}

async function refusal(promise: Promise<unknown>): Promise<MeterError> {
  const error = await failure(promise)
  expect(error).toBeInstanceOf(MeterError)
  return error as MeterError
}

async function sha256Hex(value: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(value)))
  return [...digest].map((byte) => byte.toString(16).padStart(2, '0')).join('')
}

describe.each(backends)('ledger on $name', (backend) => {
  let db: TestDatabase
  let ledger: Ledger

  beforeAll(async () => {
    db = await backend.open()
    ledger = await openLedger(db.sql, { platformFeeBps: 250, operator: '0x00000000000000000000000000000000000000Fe' })
  })
  afterAll(async () => {
    await db?.close()
  })

  /** A funded account with its first key for `realm`. */
  async function funded(realm: string, amount: bigint) {
    const owner = newOwner()
    const top = await ledger.topUp({ owner, amount, reference: newReference(), realm })
    expect(top.apiKey).toBeDefined()
    return { owner, accountId: top.accountId, key: top.apiKey!, keyId: top.keyId! }
  }

  test('migrations run twice and concurrently, on two connection pools, without error', async () => {
    const fresh = await backend.open()
    try {
      const a = createLedger({ sql: fresh.sql, currency: CURRENCY })
      const b = createLedger({ sql: fresh.another(), currency: CURRENCY })
      await Promise.all([a.migrate(), b.migrate(), a.migrate(), b.migrate()])
      await a.migrate()
      const versions = await fresh.sql.query<{ version: number }>('select version from mpp_schema_migrations order by version')
      expect(versions.map((row) => Number(row.version))).toEqual(migrations.map((migration) => migration.version))
      await expectBalanced(a)
      // A ledger opened on this database in another currency is a misconfiguration.
      await expect(createLedger({ sql: fresh.sql, currency: '0x20c0000000000000000000000000000000000002' }).migrate()).rejects.toThrow(ConfigurationError)
    } finally {
      await fresh.close()
    }
  })

  test('a database migrated by an older version is brought up to date, its money intact', async () => {
    const fresh = await backend.open()
    try {
      // As the first release left it: only migration 1, and a funded account in it.
      await fresh.sql.transaction(async (tx) => {
        await tx.query('create table mpp_schema_migrations (version integer primary key, name text not null, applied_at timestamptz not null default now())')
        for (const statement of migrations[0]!.statements) await tx.query(statement)
        await tx.query("insert into mpp_schema_migrations (version, name) values (1, 'ledger')")
        await tx.query("insert into mpp_meta (key, value) values ('currency', $1)", [CURRENCY])
        await tx.query("insert into mpp_accounts (id, owner) values ('acct_old', '0x00000000000000000000000000000000000000cc')")
        await tx.query("insert into mpp_books (id, kind) values ('acct:acct_old', 'available'), ('held:acct_old', 'held')")
        await tx.query("insert into mpp_movements (id, kind, account_id) values ('topup:old', 'topup', 'acct_old')")
        await tx.query("update mpp_books set balance = balance + 500 where id = 'acct:acct_old'")
        await tx.query("update mpp_books set balance = balance - 500 where id = 'world'")
        await tx.query("insert into mpp_entries (movement_id, book_id, amount) values ('topup:old', 'acct:acct_old', 500), ('topup:old', 'world', -500)")
      })
      const upgraded = await openLedger(fresh.sql)
      const versions = await fresh.sql.query<{ version: number }>('select version from mpp_schema_migrations order by version')
      expect(versions.map((row) => Number(row.version))).toEqual(migrations.map((migration) => migration.version))
      const { apiKey } = await upgraded.createKey('acct_old', 'upgrade.example')
      const hold = await upgraded.hold(holdRequest(apiKey, 'upgrade.example', 200n))
      expect(hold.balance).toBe(300n)
      expect(await upgraded.capture(hold.holdId)).toEqual({ balance: 300n })
      await expectBalanced(upgraded)
    } finally {
      await fresh.close()
    }
  })

  test('a top-up credits the verified payer once per reference; the first top-up for a realm issues a key', async () => {
    const owner = newOwner()
    const reference = newReference()
    const first = await ledger.topUp({ owner, amount: 1_000_000n, reference, realm: 'api.example' })
    expect(first).toMatchObject({ balance: 1_000_000n, credited: true })
    expect(first.apiKey).toMatch(/^mpp_live_[A-Za-z0-9_-]{43}$/)
    expect(first.keyId).toMatch(/^key_/)

    // The same payment again (a retry, a replay, another case of the hash): nothing moves, no key.
    const replay = await ledger.topUp({
      owner: owner.toLowerCase(),
      amount: 1_000_000n,
      reference: reference.toUpperCase().replace('0X', '0x'),
      realm: 'api.example',
    })
    expect(replay).toEqual({ accountId: first.accountId, balance: 1_000_000n, credited: false })

    // The owner's address in another case is the same account; a second top-up brings no new key.
    const second = await ledger.topUp({ owner: owner.toUpperCase().replace('0X', '0x'), amount: 500n, reference: newReference(), realm: 'api.example' })
    expect(second).toEqual({ accountId: first.accountId, balance: 1_000_500n, credited: true })
    expect(await ledger.accountOf(owner.toLowerCase())).toEqual({ accountId: first.accountId })
    expect(await ledger.accountOf(newOwner())).toBeUndefined()

    // Asked for one, or a first top-up at another realm: a key.
    const asked = await ledger.topUp({ owner, amount: 1n, reference: newReference(), realm: 'api.example', newKey: true, label: 'laptop' })
    expect(asked.apiKey).toBeDefined()
    const otherRealm = await ledger.topUp({ owner, amount: 1n, reference: newReference(), realm: 'mcp.example' })
    expect(otherRealm.apiKey).toBeDefined()
    const keys = await ledger.listKeys(first.accountId)
    expect(keys.map((key) => [key.realm, key.label])).toEqual([
      ['api.example', null],
      ['api.example', 'laptop'],
      ['mcp.example', null],
    ])
    expect(new Set([first.apiKey, asked.apiKey, otherRealm.apiKey]).size).toBe(3)
    await expectBalanced(ledger)
  })

  test('a top-up of nothing, or without a payer or reference, is refused', async () => {
    for (const bad of [
      { owner: newOwner(), amount: 0n, reference: newReference(), realm: 'r' },
      { owner: newOwner(), amount: -5n, reference: newReference(), realm: 'r' },
      { owner: '', amount: 5n, reference: newReference(), realm: 'r' },
      { owner: newOwner(), amount: 5n, reference: '', realm: 'r' },
    ])
      await expect(ledger.topUp(bad)).rejects.toThrow(LedgerError)
    await expectBalanced(ledger)
  })

  test('keys are stored only as their SHA-256, shown once, and authenticate for their realm', async () => {
    const { key, keyId, accountId, owner } = await funded('keys.example', 100n)
    const rows = await db.sql.query<Record<string, unknown>>('select * from mpp_api_keys where id = $1', [keyId])
    expect(rows).toHaveLength(1)
    expect(JSON.stringify(rows[0])).not.toContain(key.slice('mpp_live_'.length))
    expect(rows[0]!.hash).toBe(await sha256Hex(key))
    const info = await ledger.authenticate(key, 'keys.example')
    expect(info).toMatchObject({ id: keyId, accountId, owner: owner.toLowerCase(), realm: 'keys.example', revokedAt: null, limit: null, spent: 0n })
    expect(key.startsWith(info.prefix)).toBe(true)
    expect(info.prefix.length).toBeLessThan(20)
  })

  test('unknown, malformed, revoked, expired and other-realm keys are refused with their reason, and nothing moves', async () => {
    const { key, keyId, accountId } = await funded('refuse.example', 1_000n)
    const expiring = await ledger.createKey(accountId, 'refuse.example', { expiresAt: new Date(Date.now() - 1_000) })
    const revoked = await ledger.createKey(accountId, 'refuse.example')
    expect(await ledger.revokeKey(accountId, revoked.key.id)).toBe(true)
    expect(await ledger.revokeKey(accountId, revoked.key.id)).toBe(false)
    const unknown = `mpp_live_${'A'.repeat(43)}`
    const cases: [string, string, string][] = [
      [unknown, 'refuse.example', 'invalid-key'],
      ['not-a-key', 'refuse.example', 'invalid-key'],
      [`${key}x`, 'refuse.example', 'invalid-key'],
      [revoked.apiKey, 'refuse.example', 'key-revoked'],
      [expiring.apiKey, 'refuse.example', 'key-expired'],
      [key, 'other.example', 'wrong-server'],
    ]
    for (const [candidate, realm, reason] of cases) {
      for (const error of [await refusal(ledger.authenticate(candidate, realm)), await refusal(ledger.hold(holdRequest(candidate, realm, 10n)))]) {
        expect(error.reason).toBe(reason)
        expect(error.message).not.toContain(candidate)
        if (candidate.length > 30) expect(error.message).not.toContain(candidate.slice(9, 30))
      }
    }
    // Another account's key is refused for this one's management.
    const stranger = await funded('refuse.example', 1n)
    expect(await ledger.revokeKey(stranger.accountId, keyId)).toBe(false)
    expect(await ledger.setKeyLimit(stranger.accountId, keyId, 5n)).toBeUndefined()
    const view = await ledger.account(accountId)
    expect(view).toMatchObject({ balance: 1_000n, held: 0n })
    await expectBalanced(ledger)
  })

  test('hold, capture: the balance pays the realm its earnings less the platform fee, which goes to the operator', async () => {
    const realm = 'capture.example'
    const { key, accountId, keyId } = await funded(realm, 10_000n)
    const feesBefore = (await ledger.fees()).accrued
    const hold = await ledger.hold(holdRequest(key, realm, 4_000n, { description: 'GET /metered' }))
    expect(hold).toMatchObject({ accountId, keyId, amount: 4_000n, balance: 6_000n })
    expect(await ledger.account(accountId)).toMatchObject({ balance: 6_000n, held: 4_000n })
    expect(await ledger.capture(hold.holdId)).toEqual({ balance: 6_000n })
    // Idempotent: a second capture moves nothing; a release after the capture does nothing.
    expect(await ledger.capture(hold.holdId)).toEqual({ balance: 6_000n })
    expect(await ledger.release(hold.holdId)).toEqual({ balance: 6_000n })
    expect(await ledger.account(accountId)).toMatchObject({ balance: 6_000n, held: 0n })
    // 2.5 % of 4 000 = 100 to the operator, 3 900 to the realm.
    expect(await ledger.earnings(realm)).toEqual({ realm, accrued: 3_900n, paidOut: 0n, pending: 0n })
    expect((await ledger.fees()).accrued - feesBefore).toBe(100n)
    expect((await ledger.fees()).operator).toBe('0x00000000000000000000000000000000000000fe')
    const [info] = await ledger.listKeys(accountId)
    expect(info).toMatchObject({ spent: 4_000n, reserved: 0n })
    expect(info!.lastUsedAt).toBeInstanceOf(Date)
    await expectBalanced(ledger)
  })

  test('hold, release: the amount returns; a capture after the release is refused (hold-released) and moves nothing; a replayed hold id holds once', async () => {
    const realm = 'release.example'
    const { key, accountId } = await funded(realm, 1_000n)
    const request = holdRequest(key, realm, 300n)
    const hold = await ledger.hold(request)
    expect(await ledger.hold(request)).toMatchObject({ holdId: hold.holdId, amount: 300n, balance: 700n })
    expect(await ledger.release(hold.holdId)).toEqual({ balance: 1_000n })
    expect(await ledger.release(hold.holdId)).toEqual({ balance: 1_000n })
    await expect(ledger.capture(hold.holdId)).rejects.toMatchObject({ name: 'LedgerError', code: 'hold-released' })
    expect(await ledger.earnings(realm)).toMatchObject({ accrued: 0n })
    // The same hold id for another amount is a conflict, not a second hold.
    await expect(ledger.hold({ ...request, amount: 301n })).rejects.toThrow(LedgerError)
    await expect(ledger.capture('hold_never_made')).rejects.toMatchObject({ code: 'unknown-hold' })
    const view = await ledger.account(accountId)
    expect(view).toMatchObject({ balance: 1_000n, held: 0n })
    expect(view!.keys[0]).toMatchObject({ spent: 0n, reserved: 0n })
    await expectBalanced(ledger)
  })

  test('a balance that does not cover the price is refused with the balance; a key over its limit with what remains', async () => {
    const realm = 'limits.example'
    const { key, accountId, keyId } = await funded(realm, 500n)
    const poor = await refusal(ledger.hold(holdRequest(key, realm, 501n)))
    expect(poor).toMatchObject({ reason: 'insufficient-balance', balance: 500n })
    const limited = await ledger.setKeyLimit(accountId, keyId, 250n)
    expect(limited).toMatchObject({ id: keyId, limit: 250n })
    const first = await ledger.hold(holdRequest(key, realm, 200n))
    const over = await refusal(ledger.hold(holdRequest(key, realm, 51n)))
    expect(over).toMatchObject({ reason: 'key-limit-exceeded', remaining: 50n })
    await ledger.capture(first.holdId)
    // Captured spending still counts against the limit; lifting the limit lifts the refusal.
    expect((await refusal(ledger.hold(holdRequest(key, realm, 51n)))).reason).toBe('key-limit-exceeded')
    await ledger.hold(holdRequest(key, realm, 50n))
    await ledger.setKeyLimit(accountId, keyId, null)
    await ledger.hold(holdRequest(key, realm, 51n))
    expect(await ledger.account(accountId)).toMatchObject({ balance: 199n, held: 101n })
    await expectBalanced(ledger)
  })

  test('setKeyLabel names a key of the account only; a label the database cannot store is invalid-request', async () => {
    const realm = 'labels.example'
    const mine = await funded(realm, 1n)
    const theirs = await funded(realm, 1n)
    expect(await ledger.setKeyLabel(mine.accountId, mine.keyId, 'laptop')).toBe(true)
    expect(await ledger.setKeyLabel(mine.accountId, theirs.keyId, 'taken')).toBe(false)
    expect(await ledger.setKeyLabel(mine.accountId, 'key\u0000x', 'x')).toBe(false)
    await expect(ledger.setKeyLabel(mine.accountId, mine.keyId, 'a\u0000b')).rejects.toMatchObject({ name: 'LedgerError', code: 'invalid-request' })
    expect((await ledger.listKeys(mine.accountId))[0]!.label).toBe('laptop')
    expect((await ledger.listKeys(theirs.accountId))[0]!.label).toBeNull()
    expect(await ledger.setKeyLabel(mine.accountId, mine.keyId, null)).toBe(true)
    expect((await ledger.listKeys(mine.accountId))[0]!.label).toBeNull()
  })

  test("a hold in another currency is the server's misconfiguration", async () => {
    const { key } = await funded('currency.example', 10n)
    await expect(ledger.hold({ ...holdRequest(key, 'currency.example', 1n), currency: '0x20c0000000000000000000000000000000000009' })).rejects.toThrow(
      ConfigurationError,
    )
  })

  test("the account's ledger is paged, newest first, with a cursor", async () => {
    const realm = 'paging.example'
    const { key, accountId } = await funded(realm, 1_000n)
    const hold = await ledger.hold(holdRequest(key, realm, 10n, { description: 'GET /metered' }))
    await ledger.capture(hold.holdId)
    // top-up (1 entry), hold (2), capture (1 on the held book): 4 entries.
    const first = await ledger.account(accountId, { limit: 3 })
    expect(first!.entries.map((entry) => [entry.kind, entry.book, entry.amount])).toEqual([
      ['capture', 'held', -10n],
      ['hold', 'held', 10n],
      ['hold', 'available', -10n],
    ])
    expect(first!.entries[0]).toMatchObject({ description: 'GET /metered', realm, movementId: `capture:${hold.holdId}` })
    expect(first!.next).toBeDefined()
    const second = await ledger.account(accountId, { limit: 3, cursor: first!.next! })
    expect(second!.entries.map((entry) => [entry.kind, entry.amount])).toEqual([['topup', 1_000n]])
    expect(second!.next).toBeUndefined()
    expect(await ledger.account('acct_unknown')).toBeUndefined()
    await expect(ledger.account(accountId, { cursor: 'nonsense' })).rejects.toThrow(LedgerError)
  })

  test('payouts: intent moves the earnings out of reach, completion pays them out once, cancellation returns them', async () => {
    const realm = 'payout.example'
    const to = '0x00000000000000000000000000000000000000AA'
    await expect(ledger.beginPayout({ realm, to })).rejects.toMatchObject({ code: 'nothing-accrued' })
    const { key } = await funded(realm, 100_000n)
    for (const amount of [40_000n, 40_000n]) await ledger.capture((await ledger.hold(holdRequest(key, realm, amount))).holdId)
    // 80 000 less 2.5 % = 78 000.
    expect(await ledger.earnings(realm)).toMatchObject({ accrued: 78_000n })
    await expect(ledger.beginPayout({ realm, to, amount: 78_001n })).rejects.toMatchObject({ code: 'insufficient-earnings' })

    const partial = await ledger.beginPayout({ realm, to, amount: 8_000n })
    expect(partial).toMatchObject({ realm, to: to.toLowerCase(), amount: 8_000n, status: 'pending', txHash: null })
    const rest = await ledger.beginPayout({ realm, to, id: 'po_fixed' })
    expect(rest).toMatchObject({ id: 'po_fixed', amount: 70_000n, status: 'pending' })
    // Beginning the same payout id again (a retry after a crash) returns the same intent.
    expect(await ledger.beginPayout({ realm, to, id: 'po_fixed' })).toEqual(rest)
    expect(await ledger.earnings(realm)).toEqual({ realm, accrued: 0n, paidOut: 0n, pending: 78_000n })
    expect((await ledger.pendingPayouts(realm)).map((payout) => payout.id).sort()).toEqual([partial.id, 'po_fixed'].sort())
    await expect(ledger.beginPayout({ realm, to })).rejects.toMatchObject({ code: 'nothing-accrued' })

    const txHash = newReference()
    const paid = await ledger.completePayout('po_fixed', txHash)
    expect(paid).toMatchObject({ status: 'paid', txHash, amount: 70_000n })
    expect(await ledger.completePayout('po_fixed', txHash)).toEqual(paid)
    await expect(ledger.cancelPayout('po_fixed')).rejects.toMatchObject({ code: 'payout-paid' })

    expect(await ledger.cancelPayout(partial.id)).toMatchObject({ status: 'cancelled' })
    expect(await ledger.cancelPayout(partial.id)).toMatchObject({ status: 'cancelled' })
    await expect(ledger.completePayout(partial.id, newReference())).rejects.toMatchObject({ code: 'payout-cancelled' })
    await expect(ledger.completePayout('po_unknown', newReference())).rejects.toMatchObject({ code: 'unknown-payout' })
    expect(await ledger.earnings(realm)).toEqual({ realm, accrued: 8_000n, paidOut: 70_000n, pending: 0n })
    expect(await ledger.pendingPayouts(realm)).toEqual([])
    expect(await ledger.payout('po_fixed')).toEqual(paid)
    await expectBalanced(ledger)
  })

  test('a database too slow to answer within timeoutMs: MeterUnavailableError, and the hold that lands late is given back', async () => {
    const realm = 'slow.example'
    const { key, accountId } = await funded(realm, 1_000n)
    const impatient = createLedger({ sql: db.another(), currency: CURRENCY, timeoutMs: 300 })
    // Another session keeps the account's balance locked (PGlite: any open transaction blocks it).
    let open!: () => void
    const gate = new Promise<void>((resolve) => (open = resolve))
    let locked!: () => void
    const lockTaken = new Promise<void>((resolve) => (locked = resolve))
    const blocker = db.sql.transaction(async (tx) => {
      await tx.query('select balance from mpp_books where id = $1 for update', [`acct:${accountId}`])
      locked()
      await gate
    })
    await lockTaken
    const request = holdRequest(key, realm, 100n)
    const error = await failure(impatient.hold(request))
    expect(error).toBeInstanceOf(MeterUnavailableError)
    expect((error as Error).message).toMatch(/did not answer within 300 ms/)
    expect((error as Error).message).not.toContain(key)
    open()
    await blocker
    // The hold landed after its caller answered 503: it is released, nothing is spent.
    await vi.waitFor(
      async () => {
        const rows = await db.sql.query<{ status: string }>('select status from mpp_holds where id = $1', [request.holdId])
        expect(rows.map((row) => row.status)).toEqual(['released'])
      },
      { timeout: 20_000, interval: 50 },
    )
    expect(await ledger.account(accountId)).toMatchObject({ balance: 1_000n, held: 0n })
    // A retry of that hold id is refused rather than answered with a released hold.
    await expect(ledger.hold(request)).rejects.toMatchObject({ code: 'hold-released' })
    await expectBalanced(ledger)
  })

  test('service tokens are hashed, scoped to a realm and revocable', async () => {
    const { token, id } = await ledger.createServiceToken('hub.example', 'server one')
    expect(token).toMatch(/^mpp_svc_[A-Za-z0-9_-]{43}$/)
    const rows = await db.sql.query<Record<string, unknown>>('select * from mpp_service_tokens where id = $1', [id])
    expect(JSON.stringify(rows[0])).not.toContain(token.slice('mpp_svc_'.length))
    expect(await ledger.authenticateService(token)).toEqual({ id, realm: 'hub.example' })
    expect((await refusal(ledger.authenticateService(`mpp_svc_${'B'.repeat(43)}`))).reason).toBe('invalid-key')
    expect((await refusal(ledger.authenticateService('mpp_live_whatever'))).reason).toBe('invalid-key')
    expect(await ledger.revokeServiceToken(id)).toBe(true)
    expect(await ledger.revokeServiceToken(id)).toBe(false)
    const error = await refusal(ledger.authenticateService(token))
    expect(error.reason).toBe('key-revoked')
    expect(error.message).not.toContain(token)
  })

  test('the sweeper releases expired holds, and only those', async () => {
    const realm = 'sweep.example'
    const { key, accountId } = await funded(realm, 1_000n)
    const short = await ledger.hold(holdRequest(key, realm, 100n, { ttlMs: 1_000 }))
    const long = await ledger.hold(holdRequest(key, realm, 200n, { ttlMs: 3_600_000 }))
    const later = new Date(Date.now() + 60_000)
    expect(await ledger.sweep(later)).toBeGreaterThanOrEqual(1)
    expect(await ledger.account(accountId)).toMatchObject({ balance: 800n, held: 200n })
    // The swept hold stays released: a late capture is refused and moves nothing; the live hold still captures.
    await expect(ledger.capture(short.holdId)).rejects.toMatchObject({ code: 'hold-released' })
    expect(await ledger.capture(long.holdId)).toEqual({ balance: 800n })
    expect(await ledger.earnings(realm)).toMatchObject({ accrued: 195n })
    expect(await ledger.sweep(later)).toBe(0)
    const view = await ledger.account(accountId)
    expect(view!.entries.some((entry) => entry.kind === 'expire' && entry.amount === 100n)).toBe(true)
    await expectBalanced(ledger)
  })

  test('extend keeps a hold open past its first expiry: the sweeper skips it until the new expiry; a swept hold cannot be extended', async () => {
    const realm = 'extend.example'
    const { key, accountId } = await funded(realm, 1_000n)
    const hold = await ledger.hold(holdRequest(key, realm, 100n, { ttlMs: 1_000 }))
    const { expiresAt } = await ledger.extend(hold.holdId, 3_600_000)
    expect(expiresAt.getTime()).toBeGreaterThan(Date.now() + 3_000_000)
    // Past the first expiry, before the extended one: nothing to release.
    expect(await ledger.sweep(new Date(Date.now() + 60_000))).toBe(0)
    expect(await ledger.account(accountId)).toMatchObject({ balance: 900n, held: 100n })
    // An extension never moves the expiry earlier.
    expect((await ledger.extend(hold.holdId, 1_000)).expiresAt.getTime()).toBe(expiresAt.getTime())
    expect(await ledger.capture(hold.holdId)).toEqual({ balance: 900n })
    // Captured: extending is harmless and moves nothing.
    await ledger.extend(hold.holdId, 1_000)

    const lost = await ledger.hold(holdRequest(key, realm, 50n, { ttlMs: 1_000 }))
    expect(await ledger.sweep(new Date(Date.now() + 60_000))).toBe(1)
    await expect(ledger.extend(lost.holdId, 60_000)).rejects.toMatchObject({ code: 'hold-released' })
    await expect(ledger.capture(lost.holdId)).rejects.toMatchObject({ code: 'hold-released' })
    await expect(ledger.extend('hold_never_made', 60_000)).rejects.toMatchObject({ code: 'unknown-hold' })
    expect(await ledger.account(accountId)).toMatchObject({ balance: 900n, held: 0n })
    await expectBalanced(ledger)
  })

  test('sweepers and extensions racing for the same holds: each hold is either released once or kept open, never both', async () => {
    const realm = 'extend-race.example'
    const { key, accountId } = await funded(realm, 10_000n)
    const holds = await Promise.all(Array.from({ length: 20 }, () => ledger.hold(holdRequest(key, realm, 10n, { ttlMs: 1_000 }))))
    const later = new Date(Date.now() + 30_000)
    const results = await Promise.all([
      ledger.sweep(later),
      ledger.sweep(later),
      ...holds.map((hold) =>
        ledger.extend(hold.holdId, 3_600_000).then(
          () => 'extended' as const,
          (error: LedgerError) => error.code,
        ),
      ),
    ])
    const released = (results[0] as number) + (results[1] as number)
    const outcomes = results.slice(2)
    expect(outcomes.every((outcome) => outcome === 'extended' || outcome === 'hold-released')).toBe(true)
    // An extended hold is open (no sweeper released it after it was listed); a released one was
    // released by exactly one sweeper and its extension was refused.
    const extended = outcomes.filter((outcome) => outcome === 'extended').length
    expect(released).toBe(20 - extended)
    expect((await ledger.account(accountId))!.held).toBe(BigInt(extended) * 10n)
    expect(await ledger.sweep(later)).toBe(0)
    for (const [i, hold] of holds.entries())
      if (outcomes[i] === 'extended') expect(await ledger.capture(hold.holdId)).toBeDefined()
      else await expect(ledger.capture(hold.holdId)).rejects.toMatchObject({ code: 'hold-released' })
    await expectBalanced(ledger)
  })
})

describe.each(backends)('a database that is down, on $name', (backend) => {
  test('every operation answers MeterUnavailableError (not a MeterError), and nothing moves', async () => {
    // PGlite: a database on disk, closed under the ledger, then reopened to look. Postgres: the
    // database stops accepting connections and every session is cut off, then it comes back.
    const dir = backend.name === 'pglite' ? await mkdtemp(join(tmpdir(), 'mpp-pglite-')) : undefined
    const pglite = dir ? new PGlite(dir) : undefined
    const db = pglite ? undefined : await backend.open()
    try {
      const ledger = await openLedger(pglite ? fromPglite(pglite) : db!.sql)
      const owner = newOwner()
      const realm = 'down.example'
      const top = await ledger.topUp({ owner, amount: 1_000n, reference: newReference(), realm })
      const key = top.apiKey!
      const open = await ledger.hold(holdRequest(key, realm, 100n))
      const name = db?.admin ? new URL(db.admin.url).pathname.slice(1) : ''
      if (pglite) await pglite.close()
      else {
        await db!.admin!.query(`alter database ${name} allow_connections false`)
        await db!.admin!.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = '${name}' and pid <> pg_backend_pid()`)
      }
      const attempts = [
        ledger.hold(holdRequest(key, realm, 100n)),
        ledger.capture(open.holdId),
        ledger.release(open.holdId),
        ledger.authenticate(key, realm),
        ledger.topUp({ owner, amount: 5n, reference: newReference(), realm }),
        ledger.account(top.accountId),
        ledger.sweep(new Date(Date.now() + 3_600_000)),
        ledger.audit(),
      ].map(failure)
      for (const attempt of attempts) {
        const error = await attempt
        expect(error).toBeInstanceOf(MeterUnavailableError)
        expect(error).not.toBeInstanceOf(MeterError)
        expect(String((error as Error).message)).not.toContain(key)
      }
      // Back up: the hold made before the outage is still open, and nothing else moved.
      let reopened: PGlite | undefined
      if (pglite) reopened = new PGlite(dir!)
      else await db!.admin!.query(`alter database ${name} allow_connections true`)
      try {
        const again = await openLedger(reopened ? fromPglite(reopened) : db!.another())
        const view = await again.account(top.accountId)
        expect(view).toMatchObject({ balance: 900n, held: 100n })
        expect(view!.entries).toHaveLength(3)
        await expectBalanced(again)
      } finally {
        await reopened?.close()
      }
    } finally {
      await db?.close()
      if (dir) await rm(dir, { recursive: true, force: true })
    }
  })
})
