/**
 * 6. API keys (issue #15): requests per second of a route priced with `accounts().charge` and paid
 * by an API key from a prepaid balance (hold, handler, capture), on PGlite and on a real Postgres
 * server, each server in its own process, measured side by side in one run against:
 *
 * - bare Hono (the same JSON route, no payment): autocannon, rounds in alternating order, as in
 *   section 1;
 * - the ledger's own limit: hold + capture pairs straight on the same ledger in the same server
 *   process (the two `Meter` calls the route makes, no HTTP), as many at a time as autocannon's
 *   connections, in the same rounds;
 * - per-call MPP: a pull payment per request on the local chain (section 3's paid request), one
 *   request at a time from one client, against API-key requests one at a time from the same client.
 *   Per-call payments cannot be driven by autocannon (each needs a fresh challenge and a signed
 *   transaction, and the chain is their bottleneck), so this comparison is sequential.
 *
 * The Postgres server is Debian's `postgresql`, started as the test setup starts it
 * (test/setup/postgres.ts: initdb + pg_ctl on a free port, no durability).
 */
import postgres from 'postgres'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { fundedAccount } from '../scripts/local-chain.js'
import { startPostgresServer } from '../test/setup/postgres.js'
import { route } from './config.js'
import { challenge, pay, payerFor } from './paid.js'
import { type LedgerLoop, type RunningServer, startServer } from './processes.js'
import { check, measure, median, type Throughput, type ThroughputOptions } from './throughput.js'

export type Database = 'pglite' | 'postgres'
export const databases: readonly Database[] = ['pglite', 'postgres']

/** A ratio: the median and the spread (lowest and highest round, or quartiles of samples). */
export type Spread = { median: number; low: number; high: number }

export type AccountResults = {
  options: ThroughputOptions
  /** Per round: bare Hono, and per database the API-key route and the ledger loop. */
  bare: Throughput[]
  key: Record<Database, Throughput[]>
  ledger: Record<Database, (LedgerLoop & { rate: number })[]>
  /** Per database: API-key req/s ÷ bare Hono req/s, round by round. */
  vsBare: Record<Database, Spread>
  /** Per database: API-key req/s ÷ hold + capture pairs/s straight on the ledger, round by round. */
  vsLedger: Record<Database, Spread>
  /** One request at a time: per sample, per-call MPP paid request time ÷ API-key request time (= API-key req/s ÷ MPP req/s). */
  vsMpp: Record<Database, Spread>
  sequential: { samples: number; warmup: number; mppMs: number; keyMs: Record<Database, number> }
  /** Medians over rounds. */
  summary: { bareRps: number; keyRps: Record<Database, number>; keyCpu: Record<Database, number>; ledgerRate: Record<Database, number> }
}

const spreadOf = (ratios: number[], quartiles = false): Spread => {
  const sorted = [...ratios].sort((a, b) => a - b)
  if (!quartiles) return { median: median(sorted), low: sorted[0]!, high: sorted[sorted.length - 1]! }
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.round(q * (sorted.length - 1)))]!
  return { median: median(sorted), low: at(0.25), high: at(0.75) }
}

async function keyRequest(url: string, apiKey: string): Promise<void> {
  const response = await fetch(url + route, { headers: { authorization: `Bearer ${apiKey}` } })
  const body = await response.text()
  if (response.status !== 200) throw new Error(`bench: API-key request answered ${response.status}: ${body.slice(0, 300)}`)
}

export async function accountThroughput(
  chainUrl: string,
  options: ThroughputOptions & { samples: number; warmup: number; funder: number },
  log: (line: string) => void,
): Promise<AccountResults> {
  const recipient = privateKeyToAccount(generatePrivateKey()).address
  const pg = await startPostgresServer()
  const servers: RunningServer[] = []
  const start = async (...args: Parameters<typeof startServer>) => {
    const server = await startServer(...args)
    servers.push(server)
    return server
  }
  try {
    const admin = postgres(pg.url, { max: 1, onnotice: () => {} })
    await admin.unsafe('create database mpp_bench')
    await admin.end({ timeout: 1 })
    const pgUrl = new URL(pg.url)
    pgUrl.pathname = '/mpp_bench'
    const base = { rpcUrl: chainUrl, recipient, method: 'tempo' as const }
    const bare = await start({ ...base, kind: 'bare' })
    const key: Record<Database, RunningServer> = {
      pglite: await start({ ...base, kind: 'account', database: 'pglite' }),
      postgres: await start({ ...base, kind: 'account', database: pgUrl.toString() }),
    }
    const mpp = await start({ ...base, kind: 'ours' })
    const bearer = (db: Database) => ({ authorization: `Bearer ${key[db].apiKey!}` })
    await check('bare', bare.url, 200)
    for (const db of databases) {
      await check(`API key on ${db}`, key[db].url, 200, bearer(db))
      await check(`no key on ${db}`, key[db].url, 402)
    }

    // Rounds: every kind once per round, in alternating order.
    type Kind = 'bare' | `key:${Database}` | `ledger:${Database}`
    const kinds: Kind[] = ['bare', 'key:pglite', 'ledger:pglite', 'key:postgres', 'ledger:postgres']
    const results: Pick<AccountResults, 'bare' | 'key' | 'ledger'> = {
      bare: [],
      key: { pglite: [], postgres: [] },
      ledger: { pglite: [], postgres: [] },
    }
    for (let round = 0; round < options.rounds; round++) {
      for (const kind of round % 2 === 0 ? kinds : [...kinds].reverse()) {
        if (kind === 'bare') {
          const r = await measure('bare', bare, 200, options)
          results.bare.push(r)
          log(`  round ${round + 1} bare            ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50} ms  p99 ${r.p99} ms`)
          continue
        }
        const db = kind.split(':')[1] as Database
        if (kind.startsWith('key:')) {
          const r = await measure(`API key on ${db}`, key[db], 200, options, bearer(db))
          results.key[db].push(r)
          log(
            `  round ${round + 1} API key, ${db.padEnd(8)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50} ms  p99 ${r.p99} ms  ${r.cpuPerRequest.toFixed(0)} µs server CPU/req`,
          )
        } else {
          await key[db].ledger(options.warmSeconds, options.connections)
          const loop = await key[db].ledger(options.seconds, options.connections)
          const rate = loop.pairs / loop.seconds
          results.ledger[db].push({ ...loop, rate })
          log(
            `  round ${round + 1} ledger, ${db.padEnd(9)} ${rate.toFixed(0).padStart(6)} hold + capture pairs/s  ${(loop.cpu / loop.pairs).toFixed(0)} µs server CPU/pair`,
          )
        }
      }
    }

    // One request at a time, one client: per-call MPP against API keys, order rotating per sample.
    const account = await fundedAccount(chainUrl, { funder: options.funder })
    const payer = payerFor(chainUrl, account, 'pull')
    const times = { mpp: [] as number[], pglite: [] as number[], postgres: [] as number[] }
    const order = ['mpp', 'pglite', 'postgres'] as const
    for (let i = -options.warmup; i < options.samples; i++) {
      const credential = await payer.createCredential(await challenge(mpp.url))
      const runs = {
        mpp: () => pay(mpp.url, credential, 'ours', 'pull'),
        pglite: () => keyRequest(key.pglite.url, key.pglite.apiKey!),
        postgres: () => keyRequest(key.postgres.url, key.postgres.apiKey!),
      }
      const measured: Partial<Record<(typeof order)[number], number>> = {}
      for (let k = 0; k < order.length; k++) {
        const kind = order[(k + i + options.warmup) % order.length]!
        const t0 = performance.now()
        await runs[kind]()
        measured[kind] = performance.now() - t0
      }
      if (i < 0) continue
      for (const kind of order) times[kind].push(measured[kind]!)
    }
    log(
      `  one at a time (${options.samples} samples): per-call MPP paid ${median(times.mpp).toFixed(2)} ms, API key on PGlite ${median(times.pglite).toFixed(2)} ms, on Postgres ${median(times.postgres).toFixed(2)} ms`,
    )

    // The books after the run: balanced, nothing left held, the balance never ran out.
    for (const db of databases) {
      const balance = await key[db].balance()
      if (balance.sum !== '0' || balance.held !== '0' || BigInt(balance.available) <= 0n)
        throw new Error(`bench: the ${db} ledger after the run: ${JSON.stringify(balance)}`)
    }

    const perRound = (db: Database, of: (i: number) => number) => results.key[db].map((_, i) => of(i))
    const byDb = <T>(f: (db: Database) => T) => ({ pglite: f('pglite'), postgres: f('postgres') })
    return {
      options,
      ...results,
      vsBare: byDb((db) => spreadOf(perRound(db, (i) => results.key[db][i]!.rps / results.bare[i]!.rps))),
      vsLedger: byDb((db) => spreadOf(perRound(db, (i) => results.key[db][i]!.rps / results.ledger[db][i]!.rate))),
      vsMpp: byDb((db) =>
        spreadOf(
          times.mpp.map((mppMs, k) => mppMs / times[db][k]!),
          true,
        ),
      ),
      sequential: { samples: options.samples, warmup: options.warmup, mppMs: median(times.mpp), keyMs: byDb((db) => median(times[db])) },
      summary: {
        bareRps: median(results.bare.map((r) => r.rps)),
        keyRps: byDb((db) => median(results.key[db].map((r) => r.rps))),
        keyCpu: byDb((db) => median(results.key[db].map((r) => r.cpuPerRequest))),
        ledgerRate: byDb((db) => median(results.ledger[db].map((r) => r.rate))),
      },
    }
  } finally {
    await Promise.all(servers.map((s) => s.stop()))
    await pg.stop()
  }
}
