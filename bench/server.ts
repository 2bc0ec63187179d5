/**
 * One server under test, in its own process (forked by bench/processes.ts, compiled by
 * bench/build.ts), so it never shares an event loop with autocannon. Configured by the
 * BENCH_SERVER env (JSON); tells the parent its port over IPC, answers `cpu` with its own CPU
 * time (so the parent can divide CPU by requests served) and `timings` with where a paid
 * request's time went (ours only: the method's verify and settle, and the whole request).
 *
 * Kinds: `bare` (a Hono JSON route, the ceiling), `static402` (a recorded 402 of ours served
 * with no work), `forward` (takes a pull credential and broadcasts its transaction, unchecked;
 * its `/ping` answers an empty 200: one HTTP round trip),
 * `ours` (hono-mpp), `mppx` (mppx/hono), `account` (the route priced by `accounts().charge` on a
 * ledger in PGlite or Postgres; it tops up one account at start and hands its API key to the parent
 * in the `ready` message, and answers `ledger` by running hold + capture pairs straight on its
 * ledger, no HTTP: the ledger's own limit).
 */

import { PGlite } from '@electric-sql/pglite'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { Mppx as MppxServer, tempo as mppxTempo } from 'mppx/hono'
import postgres from 'postgres'
import { createClient, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { localChain, pathUsd } from '../scripts/local-chain.js'
import { accounts, createLedger, fromPglite, fromPostgres, type Ledger } from '../src/accounts/index.js'
import type { PaymentMethod } from '../src/index.js'
import { mpp } from '../src/index.js'
import { decodeJson } from '../src/protocol/encoding.js'
import { accountBalance, amount, amountBaseUnits, realm, route, type ServerConfig, secret } from './config.js'
import { ourMethod } from './method.js'

/** Milliseconds per paid request (ours: the method's verify and settle; every kind: each JSON-RPC fetch). */
export type Timings = { request: number[]; verify: number[]; settle: number[]; rpc: number[] }
const timings: Timings = { request: [], verify: [], settle: [], rpc: [] }
const reset = () => Object.assign(timings, { request: [], verify: [], settle: [], rpc: [] })

// Every JSON-RPC call the server makes, timed: the node's share of a paid request.
const globalFetch = globalThis.fetch
globalThis.fetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
  const start = performance.now()
  try {
    return await globalFetch(input, init)
  } finally {
    timings.rpc.push(performance.now() - start)
  }
}) as typeof globalThis.fetch

/** The same method, its verify and settle timed. */
function timed(method: PaymentMethod): PaymentMethod {
  const wrap =
    <A extends unknown[], R>(run: (...args: A) => Promise<R>, slot: 'verify' | 'settle') =>
    async (...args: A): Promise<R> => {
      const start = performance.now()
      try {
        return await run(...args)
      } finally {
        timings[slot].push(performance.now() - start)
      }
    }
  return Object.assign(Object.create(method) as PaymentMethod, {
    verify: wrap(method.verify.bind(method), 'verify'),
    settle: wrap(method.settle.bind(method), 'settle'),
  })
}

/** `account` servers: the ledger and the API key of the account topped up at start. */
let account: { ledger: Ledger; apiKey: string } | undefined

async function openLedger(database: string): Promise<Ledger> {
  if (database === 'pglite') {
    const db = new PGlite()
    await db.waitReady
    return createLedger({ sql: fromPglite(db), currency: pathUsd })
  }
  // postgres.js's default pool (10 connections).
  return createLedger({ sql: fromPostgres(postgres(database, { onnotice: () => {} })), currency: pathUsd })
}

/**
 * Hold + capture pairs straight on the ledger (the `Meter` calls `accounts().charge` makes, no
 * HTTP, no handler), `concurrency` at a time for `seconds`: the most the route could reach.
 */
async function ledgerLoop(seconds: number, concurrency: number): Promise<{ pairs: number; seconds: number; cpu: number }> {
  const { ledger, apiKey } = account!
  const cpuBefore = process.cpuUsage()
  const start = performance.now()
  const deadline = start + seconds * 1000
  let pairs = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const holdId = `hold_${crypto.randomUUID()}`
        await ledger.hold({ key: apiKey, realm, amount: amountBaseUnits, currency: pathUsd, holdId, description: route, ttlMs: 120_000 })
        await ledger.capture(holdId)
        pairs++
      }
    }),
  )
  const cpu = process.cpuUsage(cpuBefore)
  return { pairs, seconds: (performance.now() - start) / 1000, cpu: cpu.user + cpu.system }
}

async function app(config: ServerConfig): Promise<Hono> {
  const app = new Hono()
  const content = (c: { json: (body: unknown) => Response }) => c.json({ content: 'paid content', at: 1 })
  if (config.kind === 'account') {
    const ledger = await openLedger(config.database ?? 'pglite')
    await ledger.migrate()
    const owner = privateKeyToAccount(generatePrivateKey()).address
    const { apiKey } = await ledger.topUp({ owner, amount: accountBalance, reference: `bench:${crypto.randomUUID()}`, realm })
    account = { ledger, apiKey: apiKey! }
    const acct = accounts({ ledger, realm, secret, methods: [ourMethod(config)] })
    app.get(
      route,
      acct.charge({ amount }, (c) => content(c)),
    )
    return app
  }
  if (config.kind === 'bare') {
    app.get(route, (c) => content(c))
    return app
  }
  if (config.kind === 'forward') {
    // One HTTP round trip and nothing else: what any hop costs on this machine.
    app.get('/ping', (c) => c.text(''))
    // The same request a paid one is, the same single node call, and no payment logic at all.
    app.get(route, async (c) => {
      const token = (c.req.header('authorization') ?? '').slice('Payment '.length)
      const credential = decodeJson(token) as { payload: { signature: string } }
      const answer = await globalThis.fetch(config.rpcUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_sendRawTransactionSync', params: [credential.payload.signature] }),
      })
      const body = (await answer.json()) as { result?: { status?: string } }
      if (body.result?.status !== '0x1') return c.json({ error: 'broadcast failed' }, 502)
      return content(c)
    })
    return app
  }
  const feePayer = config.feePayerKey ? privateKeyToAccount(config.feePayerKey) : undefined
  if (config.kind === 'ours' || config.kind === 'static402') {
    const method = timed(ourMethod({ ...config, ...(feePayer && { feePayer }) }))
    const pay = mpp({ secret, realm, methods: [method] })
    if (config.form === 'middleware') app.get(route, pay.charge({ amount }), (c) => content(c))
    else
      app.get(
        route,
        pay.charge({ amount }, (c) => content(c)),
      )
    if (config.kind === 'ours') return app
    // Record one 402 and serve its bytes from a plain route: what answering costs with no work.
    const recorded = await app.request(`http://${realm}${route}`)
    const body = await recorded.text()
    const headers = Object.fromEntries(recorded.headers)
    const floor = new Hono()
    floor.get(route, () => new Response(body, { status: 402, headers }))
    return floor
  }
  // The reference: one viem client, built once (a fresh client per request would be unfair to it).
  const client = createClient({ chain: localChain(config.rpcUrl), transport: http(config.rpcUrl) })
  const mppx = MppxServer.create({
    secretKey: secret,
    realm,
    methods: [
      mppxTempo.charge({
        getClient: () => client,
        currency: pathUsd,
        recipient: config.recipient,
        ...(feePayer && { feePayer }),
      }),
    ],
  })
  app.get(route, mppx.charge({ amount }), (c) => content(c))
  return app
}

const config = JSON.parse(process.env.BENCH_SERVER ?? '{}') as ServerConfig
const built = await app(config)
// Paid requests (those with a credential) are timed whole, from the adapter's call to the Response.
const fetch = (request: Request) => {
  if (!request.headers.get('authorization')) return built.fetch(request)
  const start = performance.now()
  return Promise.resolve(built.fetch(request)).finally(() => {
    timings.request.push(performance.now() - start)
  })
}
const server = serve({ fetch, hostname: '127.0.0.1', port: 0 }, (info) => {
  process.send?.({ type: 'ready', port: info.port, ...(account && { apiKey: account.apiKey }) })
})
process.on('message', (message: { type?: string; seconds?: number; concurrency?: number }) => {
  if (message.type === 'ledger')
    void ledgerLoop(message.seconds!, message.concurrency!).then(
      (loop) => process.send?.({ type: 'ledger', loop }),
      (error: unknown) => process.send?.({ type: 'ledger', loop: { error: String(error) } }),
    )
  if (message.type === 'balance')
    void account!.ledger.audit().then(async (audit) => {
      const view = await account!.ledger.account((await account!.ledger.authenticate(account!.apiKey, realm)).accountId, { limit: 1 })
      process.send?.({ type: 'balance', balance: { available: view!.balance.toString(), held: view!.held.toString(), sum: audit.sum.toString() } })
    })
  if (message.type === 'cpu') process.send?.({ type: 'cpu', usage: process.cpuUsage() })
  if (message.type === 'timings') {
    process.send?.({ type: 'timings', timings: { ...timings } })
    reset()
  }
  if (message.type === 'stop') server.close(() => process.exit(0))
})
process.on('disconnect', () => process.exit(0))
