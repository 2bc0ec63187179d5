/**
 * Every ledger test runs against both databases the ledger supports: PGlite (embedded, in memory)
 * and a real PostgreSQL server (started once per run by test/setup/postgres.ts). Each `open()` is a
 * fresh, empty database: a new PGlite, or a new database on the server, dropped at `close()`.
 */
import { PGlite } from '@electric-sql/pglite'
import postgres from 'postgres'
import { expect, inject } from 'vitest'
import { createLedger, type Ledger, type LedgerOptions } from '../../src/accounts/ledger.js'
import { fromPglite, fromPostgres, type SqlClient } from '../../src/accounts/sql.js'

export const CURRENCY = '0x20c0000000000000000000000000000000000001'

export type TestDatabase = {
  /** The first connection (pool) to the database. */
  sql: SqlClient
  /** Another connection pool to the same database (Postgres); PGlite has one connection, so the same one. */
  another(): SqlClient
  /** Postgres only: the database's URL, and statements run as the server's superuser. */
  admin?: { url: string; query(text: string): Promise<unknown> }
  close(): Promise<void>
}

export type Backend = { name: 'pglite' | 'postgres'; open(): Promise<TestDatabase> }

const quiet = { onnotice: () => {} }

export const backends: Backend[] = [
  {
    name: 'pglite',
    async open() {
      const db = new PGlite()
      await db.waitReady
      const sql = fromPglite(db)
      return { sql, another: () => sql, close: () => db.close() }
    },
  },
  {
    name: 'postgres',
    async open() {
      const serverUrl = inject('postgresUrl')
      const name = `mpp_test_${crypto.randomUUID().replaceAll('-', '')}`
      const root = postgres(serverUrl, { max: 1, ...quiet })
      await root.unsafe(`create database ${name}`)
      const url = new URL(serverUrl)
      url.pathname = `/${name}`
      const pools: postgres.Sql[] = []
      const pool = () => {
        const client = postgres(url.toString(), { max: 10, connect_timeout: 5, ...quiet })
        pools.push(client)
        return fromPostgres(client)
      }
      return {
        sql: pool(),
        another: pool,
        admin: { url: url.toString(), query: (text: string) => root.unsafe(text) },
        async close() {
          await Promise.all(pools.map((client) => client.end({ timeout: 1 })))
          await root.unsafe(`drop database if exists ${name} with (force)`)
          await root.end({ timeout: 1 })
        },
      }
    },
  },
]

/** A migrated ledger on `sql`. */
export async function openLedger(sql: SqlClient, options: Partial<LedgerOptions> = {}): Promise<Ledger> {
  const ledger = createLedger({ sql, currency: CURRENCY, ...options })
  await ledger.migrate()
  return ledger
}

/** A fresh payer address (an account owner), mixed case as a client might write it. */
export function newOwner(): string {
  const hex = [...crypto.getRandomValues(new Uint8Array(20))].map((byte) => byte.toString(16).padStart(2, '0')).join('')
  return `0x${hex.slice(0, 20).toUpperCase()}${hex.slice(20)}`
}

/** A fresh payment reference (a transaction hash). */
export function newReference(): string {
  return `0x${[...crypto.getRandomValues(new Uint8Array(32))].map((byte) => byte.toString(16).padStart(2, '0')).join('')}`
}

export function holdRequest(key: string, realm: string, amount: bigint, extra: { holdId?: string; ttlMs?: number; description?: string } = {}) {
  return {
    key,
    realm,
    amount,
    currency: CURRENCY,
    holdId: extra.holdId ?? `hold_${crypto.randomUUID()}`,
    ttlMs: extra.ttlMs ?? 60_000,
    ...(extra.description === undefined ? {} : { description: extra.description }),
  }
}

/** The books balance: sum zero, nothing negative, every book equal to its entries, held = open holds. */
export async function expectBalanced(ledger: Ledger): Promise<void> {
  expect(await ledger.audit()).toEqual({ sum: 0n, negativeBalances: 0, mismatchedBooks: 0, unbalancedMovements: 0, mismatchedHolds: 0 })
}
