/**
 * The accounts ledger (#15) under concurrency, on PGlite and on a real Postgres server (where "two
 * instances" are two ledgers on two connection pools): holds are atomic, a raced top-up credits
 * once, a hold raced to capture and release settles once, two sweepers release each expired hold
 * once, a key's limit holds, a payout begins and completes once. After every scenario the books
 * sum to zero, nothing is negative, and every book equals its entries.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import type { Ledger } from '../../src/accounts/ledger.js'
import { MeterError } from '../../src/accounts/meter.js'
import { backends, expectBalanced, holdRequest, newOwner, newReference, openLedger, type TestDatabase } from './support.js'

/** Settles every promise; returns the values and the reasons of the rejections. */
async function outcomes<T>(promises: Promise<T>[]): Promise<{ values: T[]; errors: unknown[] }> {
  const settled = await Promise.allSettled(promises)
  return {
    values: settled.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : [])),
    errors: settled.flatMap((result) => (result.status === 'rejected' ? [result.reason] : [])),
  }
}

function reasons(errors: unknown[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const error of errors) {
    const reason = error instanceof MeterError ? error.reason : `${(error as Error)?.name}: ${(error as Error)?.message}`
    counts[reason] = (counts[reason] ?? 0) + 1
  }
  return counts
}

describe.each(backends)('ledger under concurrency on $name', (backend) => {
  let db: TestDatabase
  /** Two instances of the ledger, as two app servers would have (two pools on Postgres). */
  let a: Ledger
  let b: Ledger

  beforeAll(async () => {
    db = await backend.open()
    a = await openLedger(db.sql, { platformFeeBps: 100 })
    b = await openLedger(db.another(), { platformFeeBps: 100 })
  })
  afterAll(async () => {
    await db?.close()
  })

  async function funded(realm: string, amount: bigint) {
    const top = await a.topUp({ owner: newOwner(), amount, reference: newReference(), realm })
    return { accountId: top.accountId, key: top.apiKey!, keyId: top.keyId! }
  }

  test('1 000 concurrent holds against a balance covering exactly 100: exactly 100 succeed, and their captures empty it', async () => {
    const realm = 'thousand.example'
    const price = 10_000n
    const { key, accountId } = await funded(realm, 100n * price)
    const { values: holds, errors } = await outcomes(Array.from({ length: 1_000 }, () => a.hold(holdRequest(key, realm, price))))
    expect(holds).toHaveLength(100)
    expect(reasons(errors)).toEqual({ 'insufficient-balance': 900 })
    for (const error of errors) expect((error as MeterError).balance).toBeGreaterThanOrEqual(0n)
    expect(await a.account(accountId)).toMatchObject({ balance: 0n, held: 100n * price })
    await expectBalanced(a)

    const captures = await Promise.all(holds.map((hold) => a.capture(hold.holdId)))
    expect(captures.every((capture) => capture.balance === 0n)).toBe(true)
    expect(await a.account(accountId)).toMatchObject({ balance: 0n, held: 0n })
    // 1 % platform fee: 99 % of 1 000 000 to the realm.
    expect(await a.earnings(realm)).toMatchObject({ accrued: 990_000n })
    const [info] = await a.listKeys(accountId)
    expect(info).toMatchObject({ spent: 100n * price, reserved: 0n })
    await expectBalanced(a)
  })

  test('1 000 concurrent holds split across two ledger instances: still exactly 100', async () => {
    const realm = 'two-instances.example'
    const price = 7n
    const { key, accountId } = await funded(realm, 100n * price)
    const { values: holds, errors } = await outcomes(Array.from({ length: 1_000 }, (_, i) => (i % 2 ? a : b).hold(holdRequest(key, realm, price))))
    expect(holds).toHaveLength(100)
    expect(reasons(errors)).toEqual({ 'insufficient-balance': 900 })
    // Settled from either instance, half captured, half released.
    await Promise.all(holds.map((hold, i) => (i % 2 ? b.capture(hold.holdId) : a.release(hold.holdId))))
    expect(await b.account(accountId)).toMatchObject({ balance: 50n * price, held: 0n })
    await expectBalanced(b)
  })

  test('a top-up replayed and raced (the same reference, at once, on both instances) credits once and issues one key', async () => {
    const owner = newOwner()
    const reference = newReference()
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).topUp({ owner, amount: 5_000n, reference, realm: 'race.example' })))
    expect(results.filter((result) => result.credited)).toHaveLength(1)
    expect(results.filter((result) => result.apiKey !== undefined)).toHaveLength(1)
    expect(new Set(results.map((result) => result.accountId)).size).toBe(1)
    const accountId = results[0]!.accountId
    expect(await a.account(accountId)).toMatchObject({ balance: 5_000n })
    // A first top-up raced with different payments: one account, every payment, one key.
    const other = newOwner()
    const firsts = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).topUp({ owner: other, amount: 100n, reference: newReference(), realm: 'race.example' })),
    )
    expect(firsts.every((result) => result.credited)).toBe(true)
    expect(new Set(firsts.map((result) => result.accountId)).size).toBe(1)
    expect(firsts.filter((result) => result.apiKey !== undefined)).toHaveLength(1)
    expect(await a.account(firsts[0]!.accountId)).toMatchObject({ balance: 1_000n })
    expect(await a.listKeys(firsts[0]!.accountId)).toHaveLength(1)
    await expectBalanced(a)
  })

  test('one hold raced to capture and release, and re-held with its id, settles exactly once', async () => {
    const realm = 'settle-race.example'
    const { key, accountId } = await funded(realm, 10_000n)
    for (let round = 0; round < 5; round++) {
      const request = holdRequest(key, realm, 1_000n)
      const replays = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).hold(request)))
      expect(new Set(replays.map((hold) => hold.holdId)).size).toBe(1)
      // A capture that loses to a release is refused (hold-released), never silently taken as charged.
      const outcomes = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (i % 3 === 0 ? a.capture(request.holdId) : i % 3 === 1 ? b.release(request.holdId) : b.capture(request.holdId)).then(
            () => 'ok',
            (error: { code?: string }) => error.code,
          ),
        ),
      )
      const rows = await db.sql.query<{ status: string }>('select status from mpp_holds where id = $1', [request.holdId])
      expect(['captured', 'released']).toContain(rows[0]!.status)
      const captures = outcomes.filter((_, i) => i % 3 !== 1)
      expect(new Set(captures)).toEqual(new Set([rows[0]!.status === 'captured' ? 'ok' : 'hold-released']))
      const movements = await db.sql.query<{ id: string }>('select id from mpp_movements where id in ($1, $2, $3)', [
        `hold:${request.holdId}`,
        `capture:${request.holdId}`,
        `release:${request.holdId}`,
      ])
      expect(movements).toHaveLength(2)
    }
    const view = await a.account(accountId)
    const captured = 10_000n - view!.balance
    expect(view!.held).toBe(0n)
    expect(captured % 1_000n).toBe(0n)
    expect(view!.keys[0]!.spent).toBe(captured)
    await expectBalanced(a)
  })

  test('two sweepers at once release each expired hold once, while captures race them', async () => {
    const realm = 'sweepers.example'
    const { key, accountId } = await funded(realm, 100_000n)
    const holds = await Promise.all(Array.from({ length: 60 }, () => a.hold(holdRequest(key, realm, 1_000n, { ttlMs: 1_000 }))))
    const live = await a.hold(holdRequest(key, realm, 500n, { ttlMs: 3_600_000 }))
    const later = new Date(Date.now() + 60_000)
    const captured = holds.slice(0, 20)
    // A capture that loses its race to a sweeper is refused as released, never taken as charged.
    const [swept1, swept2, ...captures] = await Promise.all([
      a.sweep(later),
      b.sweep(later),
      ...captured.map((hold) =>
        b.capture(hold.holdId).then(
          () => 'ok',
          (error: { code?: string }) => error.code,
        ),
      ),
    ])
    const statusOf = new Map(
      await Promise.all(
        captured.map(async (hold) => {
          const rows = await db.sql.query<{ status: string }>('select status from mpp_holds where id = $1', [hold.holdId])
          return [hold.holdId, rows[0]?.status] as const
        }),
      ),
    )
    expect(captures.map((outcome, i) => [outcome, statusOf.get(captured[i]!.holdId)])).toEqual(
      captures.map((outcome) => (outcome === 'ok' ? ['ok', 'captured'] : ['hold-released', 'released'])),
    )
    const statuses = await db.sql.query<{ status: string; count: number }>(
      'select status, count(*)::int as count from mpp_holds where account_id = $1 group by status order by status',
      [accountId],
    )
    const byStatus = Object.fromEntries(statuses.map((row) => [row.status, Number(row.count)]))
    expect(byStatus.open).toBe(1)
    expect((byStatus.captured ?? 0) + (byStatus.released ?? 0)).toBe(60)
    // Every release was done by exactly one sweeper.
    expect((swept1 as number) + (swept2 as number)).toBe(byStatus.released)
    expect(byStatus.released).toBeGreaterThanOrEqual(40)
    const view = await a.account(accountId)
    expect(view).toMatchObject({ held: 500n, balance: 100_000n - 500n - BigInt(byStatus.captured ?? 0) * 1_000n })
    expect(await a.sweep(later)).toBe(0)
    await a.release(live.holdId)
    await expectBalanced(a)
  })

  test("a key's spend limit holds under concurrency", async () => {
    const realm = 'key-limit.example'
    const { key, accountId, keyId } = await funded(realm, 1_000_000n)
    await a.setKeyLimit(accountId, keyId, 10n * 100n)
    const { values, errors } = await outcomes(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).hold(holdRequest(key, realm, 100n))))
    expect(values).toHaveLength(10)
    expect(reasons(errors)).toEqual({ 'key-limit-exceeded': 190 })
    // Released holds free the limit again; captured ones do not.
    await Promise.all(values.map((hold, i) => (i < 5 ? a.capture(hold.holdId) : a.release(hold.holdId))))
    const again = await outcomes(Array.from({ length: 50 }, () => b.hold(holdRequest(key, realm, 100n))))
    expect(again.values).toHaveLength(5)
    expect(await a.listKeys(accountId)).toMatchObject([{ spent: 500n, reserved: 500n, limit: 1_000n }])
    expect(await a.account(accountId)).toMatchObject({ balance: 1_000_000n - 1_000n, held: 500n })
    await expectBalanced(a)
  })

  test('payouts raced: one intent takes the earnings, one completion pays them out', async () => {
    const realm = 'payout-race.example'
    const { key } = await funded(realm, 10_000n)
    await a.capture((await a.hold(holdRequest(key, realm, 10_000n))).holdId)
    const to = '0x00000000000000000000000000000000000000Bb'
    const begun = await outcomes(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).beginPayout({ realm, to })))
    expect(begun.values).toHaveLength(1)
    expect(begun.errors.map((error) => (error as { code?: string }).code)).toEqual(Array(9).fill('nothing-accrued'))
    const payout = begun.values[0]!
    expect(payout.amount).toBe(9_900n)
    const txHash = newReference()
    const completed = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).completePayout(payout.id, txHash)))
    expect(completed.every((record) => record.status === 'paid' && record.txHash === txHash)).toBe(true)
    const movements = await db.sql.query('select id from mpp_movements where id = $1', [`payout-paid:${payout.id}`])
    expect(movements).toHaveLength(1)
    expect(await a.earnings(realm)).toEqual({ realm, accrued: 0n, paidOut: 9_900n, pending: 0n })
    await expectBalanced(a)
  })
})
