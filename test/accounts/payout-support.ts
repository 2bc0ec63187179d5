/**
 * Ledgers for the payout and hub tests: a migrated PGlite ledger on which a realm can be given
 * earnings (a top-up, a hold and its capture, as a paid call would) or an account with a balance.
 */
import { PGlite } from '@electric-sql/pglite'
import { afterAll } from 'vitest'
import type { Ledger } from '../../src/accounts/ledger.js'
import { fromPglite, type SqlClient } from '../../src/accounts/sql.js'
import { holdRequest, newOwner, newReference, openLedger } from './support.js'

export type Accounts = {
  ledger: Ledger
  /** A new account with `balance`, and its API key for `realm`. */
  account(realm: string, balance: bigint): Promise<string>
  /** `realm` earns `amount`: a user's call is held and captured. */
  earn(realm: string, amount: bigint): Promise<void>
}

const open: PGlite[] = []
afterAll(async () => {
  await Promise.all(open.splice(0).map((db) => db.close()))
})

/** A fresh, migrated ledger on PGlite (no platform fee, so earnings are what the calls paid). */
export async function pgliteAccounts(currency: string): Promise<Accounts> {
  const db = new PGlite()
  await db.waitReady
  open.push(db)
  return accountsOn(fromPglite(db), currency)
}

/** A migrated ledger on `sql` (any database), with the same helpers. */
export async function accountsOn(sql: SqlClient, currency: string): Promise<Accounts> {
  const ledger = await openLedger(sql, { currency })
  const account = async (realm: string, balance: bigint) => {
    const topUp = await ledger.topUp({ owner: newOwner(), amount: balance, reference: newReference(), realm })
    return topUp.apiKey as string
  }
  return {
    ledger,
    account,
    async earn(realm, amount) {
      const key = await account(realm, amount)
      const hold = await ledger.hold({ ...holdRequest(key, realm, amount), currency })
      await ledger.capture(hold.holdId)
    },
  }
}
