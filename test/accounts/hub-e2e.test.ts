/**
 * The hub model end to end (#15), over real HTTP on the real local chain and a real PGlite ledger:
 * a hub app (`accounts().hub()` plus `accounts().routes({ realm })` per server it bills) and a
 * SEPARATE server app billing keys through `remoteMeter()`. The reference client (mppx) tops up at
 * the hub and receives a key for one server; that server's priced route holds and captures over the
 * hub, a failing handler costs nothing, the server's earnings grow by the price less the platform
 * fee, another server's key is refused 403, a hub that is down is a 503 that runs nothing, and a
 * handler slower than the hold's ttl keeps its hold (it is extended while the handler runs) and is
 * charged once, in process and through the hub.
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { PGlite } from '@electric-sql/pglite'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { Mppx, tempo as mppxTempo } from 'mppx/client'
import { createClient, http } from 'viem'
import { generatePrivateKey, type LocalAccount, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { balanceOf, fundedAccount, localChain } from '../../scripts/local-chain.js'
import { accounts, createLedger, type Ledger, type Meter, remoteMeter } from '../../src/accounts/index.js'
import { fromPglite } from '../../src/accounts/sql.js'
import type { PaymentEvent } from '../../src/index.js'
import { tempo } from '../../src/tempo/index.js'

const operatorSecret = 'hub-e2e-operator-secret-0123456789abcdef'
const hubSecret = 'hub-e2e-hub-secret-0123456789abcdefghijk'
const serverSecret = 'hub-e2e-server-secret-0123456789abcdefgh'
const realmA = 'api-a.hub.test'
const realmB = 'api-b.hub.test'
const feeBps = 500
const price = 10_000n // 0.01 of a 6-decimal token

let rpcUrl: string
let method: ReturnType<typeof tempo>
let db: PGlite
let ledger: Ledger
let hubServer: Server
let hubUrl: string
let hubAccounts: ReturnType<typeof accounts>
/** Where realm A's earnings are paid out. */
const developer = privateKeyToAccount(generatePrivateKey()).address
const servers: Server[] = []

type Problem = { type: string; status: number; detail: string }

async function listen(app: Hono): Promise<{ server: Server; url: string }> {
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server
  await new Promise<void>((resolve) => server.once('listening', () => resolve()))
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

/** Tops up at the hub for `realm` with the reference client over real HTTP; returns the new key. */
async function topUpAtHub(payer: LocalAccount, realm: string, amount: string): Promise<{ apiKey: string; balance: string }> {
  const mppx = Mppx.create({
    polyfill: false,
    methods: [mppxTempo.charge({ account: payer, getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }) })],
    fetch: (input: RequestInfo | URL, init?: RequestInit) => fetch(input, init),
  })
  const paid = await mppx.fetch(`${hubUrl}/servers/${realm}/account/top-up`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ amount }),
  })
  expect(paid.status).toBe(200)
  return (await paid.json()) as { apiKey: string; balance: string }
}

const balanceAtHub = async (realm: string, key: string) =>
  (await (await fetch(`${hubUrl}/servers/${realm}/account`, { headers: { authorization: `Bearer ${key}` } })).json()) as { balance: string; held: string }

/** The hub's scoped id of a server's hold (the hub keeps hold ids in a namespace per realm). */
const hubHoldId = (realm: string, holdId: string) => `${realm.length}:${realm}:${holdId}`

async function expiryOf(holdId: string): Promise<number> {
  const rows = await db.query<{ expires_at: Date }>('select expires_at from mpp_holds where id = $1', [holdId])
  return new Date(rows.rows[0]!.expires_at).getTime()
}

const until = async (condition: () => Promise<boolean> | boolean) => {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 50))
}

/**
 * A handler that outlives its hold's ttl several times over: it runs until the clock is past the
 * hold's first expiry by more than two ttls, running the ledger's sweeper all along. Without the
 * extension the sweeper would release the hold mid-call and the call would not be charged.
 */
async function slowHandler(holdId: string, ttlMs: number): Promise<number> {
  const first = await expiryOf(holdId)
  let swept = 0
  await until(async () => {
    swept += await ledger.sweep()
    return Date.now() > first + 2 * ttlMs
  })
  expect(await expiryOf(holdId)).toBeGreaterThan(first)
  return swept
}

/** A server that bills keys through `meter` (the hub), served on its own port. */
async function paidServer(meter: Meter, options: { realm?: string; holdTtlMs?: number; onEvent?: (event: PaymentEvent) => void } = {}) {
  const realm = options.realm ?? realmA
  const acct = accounts({
    meter,
    realm,
    secret: serverSecret,
    methods: [method],
    topUpUrl: `${hubUrl}/servers/${realm}/account/top-up`,
    ...(options.holdTtlMs !== undefined && { holdTtlMs: options.holdTtlMs }),
    ...(options.onEvent && { onEvent: options.onEvent }),
  })
  const runs = { metered: 0, after: 0, slow: 0, lost: 0 }
  const app = new Hono()
  app.get('/metered', acct.charge({ amount: '0.01' }), (c) => {
    runs.metered++
    return c.json({ by: c.get('payment').payer, via: c.get('payment').credentialType })
  })
  app.post('/metered-after', acct.charge({ amount: '0.01' }), async (c) => {
    runs.after++
    const body = (await c.req.json()) as { fail?: boolean }
    return body.fail ? c.json({ error: 'the handler failed' }, 500) : c.json({ ok: true })
  })
  app.get('/slow', acct.charge({ amount: '0.01' }), async (c) => {
    runs.slow++
    const swept = await slowHandler(hubHoldId(realm, c.get('payment').reference), options.holdTtlMs ?? 120_000)
    return c.json({ swept })
  })
  app.get('/lost', acct.charge({ amount: '0.01' }), async (c) => {
    runs.lost++
    // The hold is gone before the capture (as after a sweep while the hub could not be reached).
    await ledger.release(hubHoldId(realm, c.get('payment').reference))
    return c.json({ ok: true })
  })
  const { server, url } = await listen(app)
  servers.push(server)
  return { url, runs }
}

async function issueServiceToken(realm: string): Promise<string> {
  const issued = await fetch(`${hubUrl}/hub/operator/service-tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${operatorSecret}`, 'content-type': 'application/json' },
    body: JSON.stringify({ realm }),
  })
  expect(issued.status).toBe(201)
  return ((await issued.json()) as { token: string }).token
}

const earningsOf = async (token: string) =>
  BigInt(((await (await fetch(`${hubUrl}/hub/earnings`, { headers: { authorization: `Bearer ${token}` } })).json()) as { accrued: string }).accrued)

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  // The operator's wallet: top-ups are paid to it, and it pays the servers' earnings out.
  const operator = await fundedAccount(rpcUrl, { funder: 7, amount: '1' })
  method = tempo({ rpcUrl, chainId: 31337, recipient: operator.address })
  db = new PGlite()
  await db.waitReady
  ledger = createLedger({ sql: fromPglite(db), currency: method.request({ amount: '1' }).currency, platformFeeBps: feeBps })
  await ledger.migrate()
  // The hub: service tokens, holds over HTTP, and the top-up and key routes of each server it bills.
  hubAccounts = accounts({
    ledger,
    realm: 'hub.test',
    secret: hubSecret,
    methods: [method],
    payouts: {
      wallet: createClient({ account: operator, chain: localChain(rpcUrl), transport: http(rpcUrl) }),
      payoutAddress: { [realmA]: developer },
      receiptTimeoutMs: 20_000,
    },
  })
  const app = new Hono()
  app.route('/hub', hubAccounts.hub({ operatorSecret }))
  app.route(`/servers/${realmA}`, hubAccounts.routes({ realm: realmA }))
  app.route(`/servers/${realmB}`, hubAccounts.routes({ realm: realmB }))
  // Bound before the hub starts, so the routes can name the top-up URL.
  const started = await listen(app)
  hubServer = started.server
  hubUrl = started.url
})

afterAll(async () => {
  for (const server of [...servers, hubServer]) {
    server?.closeAllConnections()
    server?.close()
  }
  await db?.close()
})

async function expectBalanced() {
  expect(await ledger.audit()).toEqual({ sum: 0n, negativeBalances: 0, mismatchedBooks: 0, unbalancedMovements: 0, mismatchedHolds: 0 })
}

describe('a hub and a separate server over real HTTP', () => {
  let payer: LocalAccount
  let tokenA: string
  let keyA: string
  let server: Awaited<ReturnType<typeof paidServer>>

  beforeAll(async () => {
    payer = await fundedAccount(rpcUrl, { funder: 7, amount: '5' })
    tokenA = await issueServiceToken(realmA)
    server = await paidServer(remoteMeter({ url: `${hubUrl}/hub`, token: tokenA }), { holdTtlMs: 1_000 })
  })

  test('a user tops up at the hub (an MPP payment with the reference client) and receives a key for that server', async () => {
    const topUp = await topUpAtHub(payer, realmA, '1.00')
    expect(topUp.balance).toBe('1.00')
    expect(topUp.apiKey).toMatch(/^mpp_live_/)
    keyA = topUp.apiKey
    // The key is scoped to the server whose top-up route issued it.
    expect((await ledger.authenticate(keyA, realmA)).realm).toBe(realmA)
  })

  test('the server’s priced route holds and captures over the hub: the balance goes down by the price, the server’s earnings up by the price less the platform fee', async () => {
    const before = await earningsOf(tokenA)
    const runs = server.runs.metered
    const paid = await fetch(`${server.url}/metered`, { headers: { authorization: `Bearer ${keyA}` } })
    expect(paid.status).toBe(200)
    expect(await paid.json()).toMatchObject({ by: payer.address.toLowerCase(), via: 'api-key' })
    expect(paid.headers.get('payment-receipt')).toBeTruthy()
    expect(server.runs.metered).toBe(runs + 1)
    const again = await fetch(`${server.url}/metered`, { headers: { 'x-api-key': keyA } })
    expect(again.status).toBe(200)
    expect(await balanceAtHub(realmA, keyA)).toMatchObject({ balance: '0.98', held: '0.00' })
    expect((await earningsOf(tokenA)) - before).toBe(2n * (price - (price * BigInt(feeBps)) / 10_000n))
    expect((await ledger.fees()).accrued).toBeGreaterThanOrEqual(2n * ((price * BigInt(feeBps)) / 10_000n))
    await expectBalanced()
  })

  test('a failing handler costs nothing: the hold is released over the hub', async () => {
    const before = await earningsOf(tokenA)
    const balance = (await balanceAtHub(realmA, keyA)).balance
    const runs = server.runs.after
    const failed = await fetch(`${server.url}/metered-after`, {
      method: 'POST',
      headers: { authorization: `Bearer ${keyA}`, 'content-type': 'application/json' },
      body: JSON.stringify({ fail: true }),
    })
    expect(failed.status).toBe(500)
    expect(failed.headers.get('payment-receipt')).toBeNull()
    expect(server.runs.after).toBe(runs + 1)
    expect(await balanceAtHub(realmA, keyA)).toMatchObject({ balance, held: '0.00' })
    expect(await earningsOf(tokenA)).toBe(before)
    await expectBalanced()
  })

  test('a key of another server (topped up at the hub for realm B) is refused 403 wrong-server; nothing runs', async () => {
    const other = await fundedAccount(rpcUrl, { funder: 7, amount: '2' })
    const { apiKey } = await topUpAtHub(other, realmB, '0.50')
    const runs = server.runs.metered
    const refused = await fetch(`${server.url}/metered`, { headers: { authorization: `Bearer ${apiKey}` } })
    expect(refused.status).toBe(403)
    expect(refused.headers.get('content-type')).toMatch(/application\/problem\+json/)
    const problem = (await refused.json()) as Problem
    expect(problem.type).toMatch(/wrong-server$/)
    expect(problem.detail).toMatch(/another server/)
    expect(JSON.stringify(problem)).not.toContain(apiKey)
    expect(server.runs.metered).toBe(runs)
    expect(await balanceAtHub(realmB, apiKey)).toMatchObject({ balance: '0.50' })
  })

  test('a handler slower than the hold’s ttl (1 s): the hold is extended over the hub while it runs, the sweeper leaves it, and the call is charged once', async () => {
    const before = await earningsOf(tokenA)
    const balance = (await balanceAtHub(realmA, keyA)).balance
    const answer = await fetch(`${server.url}/slow`, { headers: { authorization: `Bearer ${keyA}` } })
    expect(answer.status).toBe(200)
    expect(answer.headers.get('payment-receipt')).toBeTruthy()
    expect(((await answer.json()) as { swept: number }).swept).toBe(0)
    expect(await balanceAtHub(realmA, keyA)).toMatchObject({ balance: (Number(balance) - 0.01).toFixed(2), held: '0.00' })
    expect((await earningsOf(tokenA)) - before).toBe(price - (price * BigInt(feeBps)) / 10_000n)
    await expectBalanced()
  })

  test('a hold released before its capture (lost while the hub could not be reached) is not charged: the answer goes out without a receipt, and the event says so', async () => {
    const events: PaymentEvent[] = []
    const lossy = await paidServer(remoteMeter({ url: `${hubUrl}/hub`, token: tokenA }), { onEvent: (event) => events.push(event) })
    const before = await earningsOf(tokenA)
    const balance = (await balanceAtHub(realmA, keyA)).balance
    const answer = await fetch(`${lossy.url}/lost`, { headers: { authorization: `Bearer ${keyA}` } })
    expect(answer.status).toBe(200)
    expect(answer.headers.get('payment-receipt')).toBeNull()
    expect(await balanceAtHub(realmA, keyA)).toMatchObject({ balance, held: '0.00' })
    expect(await earningsOf(tokenA)).toBe(before)
    const failed = events.find((event) => event.type === 'settlement-failed') as { detail?: string } | undefined
    expect(failed?.detail).toMatch(/hold expired before the capture.*nothing was charged/)
    await expectBalanced()
  })

  test('the operator pays realm A’s earnings out on chain through the hub’s operator route (payouts from accounts({ payouts }))', async () => {
    const accrued = await earningsOf(tokenA)
    expect(accrued).toBeGreaterThan(0n)
    const refused = await fetch(`${hubUrl}/hub/operator/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokenA}`, 'content-type': 'application/json' },
      body: JSON.stringify({ realm: realmA }),
    })
    expect(refused.status).toBe(401)
    const paid = await fetch(`${hubUrl}/hub/operator/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${operatorSecret}`, 'content-type': 'application/json' },
      body: JSON.stringify({ realm: realmA }),
    })
    expect(paid.status).toBe(200)
    const payout = (await paid.json()) as { status: string; amount: string; txHash: string }
    expect(payout).toMatchObject({ status: 'paid', amount: accrued.toString() })
    expect(payout.txHash).toMatch(/^0x[0-9a-f]{64}$/)
    expect(await balanceOf(rpcUrl, developer)).toBe(accrued)
    expect(await ledger.earnings(realmA)).toMatchObject({ accrued: 0n, paidOut: accrued, pending: 0n })
    // Nothing left: payout() says so and moves nothing.
    await expect(hubAccounts.payout({ realm: realmA })).rejects.toMatchObject({ name: 'PayoutError', reason: 'nothing-to-pay' })
    await expectBalanced()
  })

  test('the hub down: the server answers 503 problem JSON and the handler does not run', async () => {
    // A hub that is not listening (the same app, stopped): a fresh port nobody answers on.
    const { server: gone, url: goneUrl } = await listen(new Hono())
    gone.closeAllConnections()
    await new Promise<void>((resolve) => gone.close(() => resolve()))
    const down = await paidServer(remoteMeter({ url: `${goneUrl}/hub`, token: tokenA, retries: 1 }))
    const refused = await fetch(`${down.url}/metered`, { headers: { authorization: `Bearer ${keyA}` } })
    expect(refused.status).toBe(503)
    expect(refused.headers.get('content-type')).toMatch(/application\/problem\+json/)
    expect(((await refused.json()) as Problem).detail).toMatch(/unavailable.*nothing was charged/)
    expect(down.runs.metered).toBe(0)
    expect((await balanceAtHub(realmA, keyA)).held).toBe('0.00')
  })
})

describe('in process: a handler slower than the hold’s ttl is charged once', () => {
  test('the hold is extended while the handler runs; the sweeper, run all along, leaves it; the capture charges it', async () => {
    const realm = 'api-local.hub.test'
    const acct = accounts({ ledger, realm, secret: serverSecret, methods: [method], holdTtlMs: 1_000 })
    const app = new Hono()
    let swept = -1
    app.get('/slow', acct.charge({ amount: '0.01' }), async (c) => {
      swept = await slowHandler(c.get('payment').reference, 1_000)
      return c.json({ ok: true })
    })
    const owner = privateKeyToAccount(generatePrivateKey()).address
    const { apiKey, accountId } = await ledger.topUp({ owner, amount: 1_000_000n, reference: `0x${crypto.randomUUID().replaceAll('-', '')}`, realm })
    const before = (await ledger.earnings(realm)).accrued
    const answer = await app.request('/slow', { headers: { authorization: `Bearer ${apiKey}` } })
    expect(answer.status).toBe(200)
    expect(answer.headers.get('payment-receipt')).toBeTruthy()
    expect(swept).toBe(0)
    expect(await ledger.account(accountId)).toMatchObject({ balance: 990_000n, held: 0n })
    expect((await ledger.earnings(realm)).accrued - before).toBe(price - (price * BigInt(feeBps)) / 10_000n)
    await expectBalanced()
  })
})
