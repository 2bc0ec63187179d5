/**
 * The hub over real HTTP: a hub app on a real ledger, served on a port, and `remoteMeter()`
 * billing keys through it exactly as the in-process ledger would: holds, captures, releases,
 * refusals with their reasons and numbers, service tokens (wrong, revoked, another realm's),
 * lost answers retried without moving money twice, and a hub that is down.
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { freePort } from '../../scripts/local-chain.js'
import { hub, remoteMeter } from '../../src/accounts/hub.js'
import { LedgerError } from '../../src/accounts/ledger.js'
import { type HoldRequest, type Meter, MeterError, MeterUnavailableError } from '../../src/accounts/meter.js'
import { ConfigurationError } from '../../src/protocol/errors.js'
import { type Accounts, accountsOn } from './payout-support.js'
import { backends, expectBalanced, type TestDatabase } from './support.js'

const operatorSecret = 'hub-operator-secret-0123456789abcdefghij'
const currency = '0x20c0000000000000000000000000000000000000'
let counter = 0

// Every case on both databases: PGlite and a real PostgreSQL server.
describe.each(backends)('hub + remoteMeter on $name', (backend) => {
  let database: TestDatabase
  let funded: Accounts
  let server: Server
  let url: string

  beforeAll(async () => {
    database = await backend.open()
    funded = await accountsOn(database.sql, currency)
    const app = new Hono().route('/hub', hub({ ledger: funded.ledger, operatorSecret }))
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server
    await new Promise<void>((resolve) => server.once('listening', () => resolve()))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hub`
  })
  afterEach(async () => {
    await expectBalanced(funded.ledger)
  })
  afterAll(async () => {
    server?.closeAllConnections()
    server?.close()
    await database?.close()
  })

  const operator = (path: string, init: RequestInit = {}) =>
    fetch(`${url}/operator${path}`, {
      ...init,
      headers: { authorization: `Bearer ${operatorSecret}`, 'content-type': 'application/json', ...(init.headers as Record<string, string>) },
    })

  /** A realm with a service token (issued over the operator route) and a meter for it. */
  async function server_(options: { fetch?: (request: Request) => Promise<Response>; retries?: number } = {}) {
    const realm = `svc-${Date.now()}-${counter++}.example`
    const issued = await operator('/service-tokens', { method: 'POST', body: JSON.stringify({ realm, label: 'test' }) })
    expect(issued.status).toBe(201)
    const { token, id } = (await issued.json()) as { token: string; id: string }
    const meter = remoteMeter({
      url,
      token,
      ...(options.fetch && { fetch: options.fetch }),
      ...(options.retries !== undefined && { retries: options.retries }),
    })
    return { realm, token, id, meter }
  }

  const holdId = () => `h-${Date.now()}-${counter++}`
  const request = (key: string, realm: string, amount: bigint, id = holdId()): HoldRequest => ({ key, realm, amount, currency, holdId: id, ttlMs: 60_000 })

  async function refusedBy(promise: Promise<unknown>): Promise<MeterError> {
    const error = await promise.then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(MeterError)
    return error as MeterError
  }

  test('hold → capture moves the price from the balance to the server’s earnings; hold → release gives it back', async () => {
    const s = await server_()
    const key = await funded.account(s.realm, 1_000n)
    const hold = await s.meter.hold(request(key, s.realm, 300n))
    expect(hold).toMatchObject({ amount: 300n, balance: 700n })
    expect(await s.meter.capture(hold.holdId)).toEqual({ balance: 700n })
    const second = await s.meter.hold(request(key, s.realm, 200n))
    expect(second.balance).toBe(500n)
    expect(await s.meter.release(second.holdId)).toEqual({ balance: 700n })
    // Idempotent: capturing or releasing again changes nothing; a captured hold stays captured.
    expect(await s.meter.capture(hold.holdId)).toEqual({ balance: 700n })
    expect(await s.meter.release(hold.holdId)).toEqual({ balance: 700n })
    const earnings = await fetch(`${url}/earnings`, { headers: { authorization: `Bearer ${s.token}` } })
    const body = (await earnings.json()) as { accrued: string }
    expect(BigInt(body.accrued) > 0n && BigInt(body.accrued) <= 300n).toBe(true)
  })

  test('refusals come back as MeterError with the same reason and numbers', async () => {
    const s = await server_()
    const key = await funded.account(s.realm, 100n)
    const poor = await refusedBy(s.meter.hold(request(key, s.realm, 101n)))
    expect(poor.reason).toBe('insufficient-balance')
    expect(poor.balance).toBe(100n)
    const wrong = await refusedBy(s.meter.hold(request(`${key}x`, s.realm, 1n)))
    expect(wrong.reason).toBe('invalid-key')
    expect(wrong.message).not.toContain(key)
    // The hub answers a problem JSON naming the reason, never the key.
    const raw = await fetch(`${url}/holds`, {
      method: 'POST',
      headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ key, amount: '101', currency, holdId: holdId(), ttlMs: 1000 }),
    })
    expect(raw.status).toBe(402)
    expect(raw.headers.get('content-type')).toMatch(/application\/problem\+json/)
    const problem = (await raw.json()) as Record<string, unknown>
    expect(problem).toMatchObject({ status: 402, reason: 'insufficient-balance', balance: '100' })
    expect(JSON.stringify(problem)).not.toContain(key)
  })

  test('authenticate checks a key without holding anything: revoked, another realm’s and unknown keys come back as MeterError', async () => {
    const s = await server_()
    const other = await server_()
    const key = await funded.account(s.realm, 1_000n)
    const info = await funded.ledger.authenticate(key, s.realm)
    await expect(s.meter.authenticate!(key, s.realm)).resolves.toBeUndefined()
    expect((await refusedBy(other.meter.authenticate!(key, other.realm))).reason).toBe('wrong-server')
    expect((await refusedBy(s.meter.authenticate!(`${key}x`, s.realm))).reason).toBe('invalid-key')
    await funded.ledger.revokeKey(info.accountId, info.id)
    expect((await refusedBy(s.meter.authenticate!(key, s.realm))).reason).toBe('key-revoked')
    expect((await funded.ledger.account(info.accountId))!.balance).toBe(1_000n)
  })

  test('a service token cannot hold the keys of a realm it does not serve, nor touch another server’s holds', async () => {
    const a = await server_()
    const b = await server_()
    const keyOfA = await funded.account(a.realm, 1_000n)
    // B names A's realm in its request: the hub uses the token's realm, not the request's.
    const refused = await refusedBy(b.meter.hold(request(keyOfA, a.realm, 10n)))
    expect(refused.reason).toBe('wrong-server')
    const id = holdId()
    const hold = await a.meter.hold(request(keyOfA, a.realm, 100n, id))
    expect(hold.balance).toBe(900n)
    // B releasing (or capturing) the same hold id does not reach A's hold: for B there is no such hold.
    await expect(b.meter.release(id)).rejects.toMatchObject({ name: 'LedgerError', code: 'unknown-hold' })
    await expect(b.meter.capture(id)).rejects.toMatchObject({ name: 'LedgerError', code: 'unknown-hold' })
    expect(await a.meter.capture(id)).toEqual({ balance: 900n })
  })

  test('a wrong or revoked service token cannot bill: MeterUnavailableError, and the hub answers 401 problem JSON', async () => {
    const s = await server_()
    const key = await funded.account(s.realm, 1_000n)
    const forged = remoteMeter({ url, token: `${s.token}x` })
    await expect(forged.hold(request(key, s.realm, 1n))).rejects.toBeInstanceOf(MeterUnavailableError)
    const direct = await fetch(`${url}/holds`, { method: 'POST', headers: { authorization: `Bearer ${s.token}x` }, body: '{}' })
    expect(direct.status).toBe(401)
    expect(await direct.json()).toMatchObject({ reason: 'invalid-service-token' })

    const before = await s.meter.hold(request(key, s.realm, 1n))
    const revoked = await operator(`/service-tokens/${s.id}`, { method: 'DELETE' })
    expect(revoked.status).toBe(204)
    expect((await operator(`/service-tokens/${s.id}`, { method: 'DELETE' })).status).toBe(404)
    const error = await s.meter.hold(request(key, s.realm, 1n)).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(MeterUnavailableError)
    expect(String((error as Error).message)).toMatch(/invalid-service-token/)
    expect(String((error as Error).message)).not.toContain(s.token)
    await expect(s.meter.capture(before.holdId)).rejects.toBeInstanceOf(MeterUnavailableError)
  })

  test('operator routes need the operator secret', async () => {
    const s = await server_()
    for (const authorization of ['', `Bearer ${s.token}`, 'Bearer nope']) {
      const refused = await fetch(`${url}/operator/service-tokens`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(authorization && { authorization }) },
        body: JSON.stringify({ realm: s.realm }),
      })
      expect(refused.status).toBe(401)
      expect(await refused.json()).toMatchObject({ reason: 'invalid-operator-secret' })
    }
  })

  test('a capture whose answer is lost is retried and captures once', async () => {
    let lose = 1
    const s = await server_({
      fetch: async (req) => {
        const response = await fetch(req)
        // The hub did the capture; the answer never reaches the server.
        if (req.url.endsWith('/capture') && lose-- > 0) throw new TypeError('fetch failed: socket hang up')
        return response
      },
    })
    const key = await funded.account(s.realm, 1_000n)
    const hold = await s.meter.hold(request(key, s.realm, 250n))
    expect(await s.meter.capture(hold.holdId)).toEqual({ balance: 750n })
    expect(lose).toBe(-1)
    // Nothing else moved: a fresh hold still sees 750.
    expect((await s.meter.hold(request(key, s.realm, 1n))).balance).toBe(749n)
  })

  test('a hold retried after a lost answer is the same hold, not a second one', async () => {
    let lose = 1
    const s = await server_({
      fetch: async (req) => {
        const response = await fetch(req)
        if (req.url.endsWith('/holds') && lose-- > 0) throw new TypeError('fetch failed')
        return response
      },
    })
    const key = await funded.account(s.realm, 1_000n)
    const hold = await s.meter.hold(request(key, s.realm, 100n))
    expect(hold.balance).toBe(900n)
    expect(await s.meter.release(hold.holdId)).toEqual({ balance: 1_000n })
  })

  test('hub down, 5xx or silent: MeterUnavailableError', async () => {
    const key = 'any-key'
    const down = remoteMeter({ url: `http://127.0.0.1:${await freePort()}/hub`, token: 't', retries: 1 })
    await expect(down.hold(request(key, 'r', 1n))).rejects.toBeInstanceOf(MeterUnavailableError)
    await expect(down.capture('h')).rejects.toBeInstanceOf(MeterUnavailableError)
    let calls = 0
    const failing = remoteMeter({
      url,
      token: 't',
      retries: 2,
      fetch: async () => {
        calls++
        return new Response('upstream down', { status: 503 })
      },
    })
    await expect(failing.release('h')).rejects.toBeInstanceOf(MeterUnavailableError)
    expect(calls).toBe(3)
    const silent = remoteMeter({
      url,
      token: 't',
      retries: 0,
      timeoutMs: 200,
      fetch: (req) => new Promise((_, reject) => req.signal.addEventListener('abort', () => reject(req.signal.reason))),
    })
    await expect(silent.hold(request(key, 'r', 1n))).rejects.toBeInstanceOf(MeterUnavailableError)
  })

  test('malformed requests to the hub are 400 problem JSON', async () => {
    const s = await server_()
    const bad = await fetch(`${url}/holds`, {
      method: 'POST',
      headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ key: 'k', amount: '1.5', currency, holdId: 'x', ttlMs: 1 }),
    })
    expect(bad.status).toBe(400)
    expect(await bad.json()).toMatchObject({ reason: 'bad-request' })
  })

  test('misconfiguration throws at construction', () => {
    expect(() => remoteMeter({ url: 'not a url', token: 't' })).toThrow(ConfigurationError)
    expect(() => remoteMeter({ url, token: '' })).toThrow(ConfigurationError)
    expect(() => hub({ ledger: {} as never })).toThrow(ConfigurationError)
    expect(() => hub({ ledger: funded.ledger, operatorSecret: 'short' })).toThrow(ConfigurationError)
  })

  test('the same Meter contract in process and remote: both refuse and bill alike', async () => {
    const s = await server_()
    const local: Meter = funded.ledger
    for (const meter of [local, s.meter]) {
      const key = await funded.account(s.realm, 50n)
      expect((await refusedBy(meter.hold(request(key, s.realm, 51n)))).balance).toBe(50n)
      const hold = await meter.hold(request(key, s.realm, 50n))
      expect(hold.balance).toBe(0n)
      expect(await meter.capture(hold.holdId)).toEqual({ balance: 0n })
      // A released hold's id cannot hold again: the same LedgerError code in process and remote.
      const again = await funded.account(s.realm, 10n)
      const released = await meter.hold(request(again, s.realm, 5n))
      await meter.release(released.holdId)
      const reused = await meter.hold(request(again, s.realm, 5n, released.holdId)).catch((e: unknown) => e)
      expect(reused).toBeInstanceOf(LedgerError)
      expect(reused).toMatchObject({ code: 'hold-released' })
      await expect(meter.capture('never-held')).rejects.toMatchObject({ code: 'unknown-hold' })
    }
  })

  test('extend over the hub keeps a hold open past its ttl; another server cannot extend it; a swept hold refuses extend and capture alike', async () => {
    const a = await server_()
    const b = await server_()
    const key = await funded.account(a.realm, 1_000n)
    const hold = await a.meter.hold({ ...request(key, a.realm, 100n), ttlMs: 1_000 })
    const { expiresAt } = await a.meter.extend(hold.holdId, 3_600_000)
    expect(expiresAt.getTime()).toBeGreaterThan(Date.now() + 3_000_000)
    await expect(b.meter.extend(hold.holdId, 3_600_000)).rejects.toMatchObject({ name: 'LedgerError', code: 'unknown-hold' })
    // Past its first expiry (other tests' open holds may go): this one is kept, and captures.
    await funded.ledger.sweep(new Date(Date.now() + 60_000))
    expect(await a.meter.capture(hold.holdId)).toEqual({ balance: 900n })

    const lost = await a.meter.hold({ ...request(key, a.realm, 50n), ttlMs: 1_000 })
    expect(await funded.ledger.sweep(new Date(Date.now() + 60_000))).toBeGreaterThanOrEqual(1)
    await expect(a.meter.extend(lost.holdId, 60_000)).rejects.toMatchObject({ name: 'LedgerError', code: 'hold-released' })
    await expect(a.meter.capture(lost.holdId)).rejects.toMatchObject({ name: 'LedgerError', code: 'hold-released' })
    expect((await a.meter.hold(request(key, a.realm, 0n))).balance).toBe(900n)
  })
})
