/**
 * The Durable Object claim store in the real Workers runtime: the worker in claim-worker.ts is
 * bundled by esbuild into memory and run by Miniflare (workerd, offline).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { durableObjectStore } from '../../src/stores/durable-object.js'
import { StoreUnavailableError } from '../../src/stores/store.js'
import { claimStoreContract } from './contract.js'
import { type Binding, type ClaimWorker, startClaimWorker } from './durable-object-worker.js'

let worker: ClaimWorker

beforeAll(async () => {
  worker = await startClaimWorker()
})

afterAll(async () => {
  await worker?.dispose()
})

const remote = (binding: Binding, extra: { shards?: number; timeout?: number } = {}) => worker.remote(binding, extra)

// Each call crosses into workerd: on a loaded two-core machine a round trip has taken longer than
// the contract's default 300 ms record life, so the expiry tests give records a life that the
// calls made before it ends cannot outrun.
claimStoreContract('durable-object (SQLite-backed, 16 shards)', () => remote('SQLITE'), { shortLife: 1500 })
claimStoreContract('durable-object (KV-backed, 1 shard)', () => remote('KV', { shards: 1 }), { concurrency: 300, shortLife: 1500 })

describe('durable-object store', () => {
  test('refuses construction without a namespace binding or with bad shards/timeout', () => {
    expect(() => durableObjectStore({} as never)).toThrow(/`namespace` must be the Durable Object namespace binding/)
    const namespace = { idFromName: () => ({}), get: () => ({ fetch: async () => new Response() }) }
    expect(() => durableObjectStore({ namespace, shards: 0 })).toThrow(/`shards` must be a positive integer/)
    expect(() => durableObjectStore({ namespace, shards: 2.5 })).toThrow(/`shards`/)
    expect(() => durableObjectStore({ namespace, timeout: -1 })).toThrow(/`timeout` must be a positive number/)
  })

  test('routes keys over the shards by name, each key always to the same object', async () => {
    const names: string[] = []
    const namespace = {
      idFromName: (name: string) => {
        names.push(name)
        return { toString: () => name }
      },
      get: () => ({ fetch: async () => Response.json({ ok: true, record: null }) }),
    }
    const store = durableObjectStore({ namespace, shards: 8, name: 'claims' })
    for (let i = 0; i < 200; i++) await store.claim(`key-${i}`, { state: 'pending', expires: Date.now() + 1000 })
    const used = new Set(names)
    expect(used.size).toBe(8)
    for (const name of used) expect(name).toMatch(/^claims:[0-7]$/)
    names.length = 0
    await store.get('key-7')
    await store.get('key-7')
    expect(names[0]).toBe(names[1])
  })

  test('fails closed when the object throws (StoreUnavailableError, in the Workers runtime)', async () => {
    const store = remote('BROKEN')
    const record = { state: 'pending' as const, expires: Date.now() + 60_000 }
    await expect(store.claim('k', record)).rejects.toThrow(StoreUnavailableError)
    await expect(store.claim('k', record)).rejects.toThrow(/^durable object store: claim failed: /)
    await expect(store.transition('k', 'pending', null, 'me')).rejects.toThrow(StoreUnavailableError)
    await expect(store.get('k')).rejects.toThrow(StoreUnavailableError)
  })

  test('fails closed on a non-200 answer, a bad body, a thrown fetch or a timeout', async () => {
    const namespaceAnswering = (fetch: () => Promise<Response>) => ({
      idFromName: (name: string) => ({ toString: () => name }),
      get: () => ({ fetch }),
    })
    const record = { state: 'pending' as const, expires: Date.now() + 60_000 }
    const notFound = durableObjectStore({ namespace: namespaceAnswering(async () => new Response('no', { status: 404 })) })
    await expect(notFound.claim('k', record)).rejects.toThrow(/claim answered HTTP 404/)
    const garbage = durableObjectStore({ namespace: namespaceAnswering(async () => Response.json({ yes: 1 })) })
    await expect(garbage.claim('k', record)).rejects.toThrow(/claim answered without ok/)
    await expect(garbage.get('k')).rejects.toThrow(/get answered a malformed record/)
    const offline = durableObjectStore({
      namespace: namespaceAnswering(async () => {
        throw new TypeError('Network connection lost.')
      }),
    })
    await expect(offline.transition('k', 'pending', null, 'me')).rejects.toThrow('durable object store: transition failed: Network connection lost.')
    const hanging = durableObjectStore({ namespace: namespaceAnswering(() => new Promise<Response>(() => {})), timeout: 100 })
    const started = Date.now()
    await expect(hanging.get('k')).rejects.toThrow('durable object store: get did not answer within 100 ms')
    expect(Date.now() - started).toBeLessThan(1_000)
  })

  test('the object answers 400 to malformed operations; the client refuses a bad record before sending', async () => {
    type Stub = { fetch(url: string, init: { method: string; body: string }): Promise<Response> }
    const namespace = (await worker.mf.getDurableObjectNamespace('SQLITE')) as unknown as {
      idFromName(name: string): unknown
      get(id: unknown): Stub
    }
    const stub = namespace.get(namespace.idFromName('hono-mpp:claims:0'))
    for (const body of [
      'not json',
      JSON.stringify({ op: 'claim', key: 'k', record: { state: 'paid', expires: 1 } }),
      JSON.stringify({ op: 'claim', key: '', record: { state: 'pending', expires: 1 } }),
      JSON.stringify({ op: 'transition', key: 'k', from: 'pending', next: { state: 'settled' } }),
      // Without an owner a transition would compare nothing: refused, not run unguarded.
      JSON.stringify({ op: 'transition', key: 'k', from: 'pending', next: null }),
      JSON.stringify({ op: 'transition', key: 'k', from: 'pending', next: null, owner: 7 }),
      JSON.stringify({ op: 'drop', key: 'k' }),
    ]) {
      const response = await stub.fetch('https://claim-store.hono-mpp/', { method: 'POST', body })
      expect(response.status).toBe(400)
      await response.arrayBuffer()
    }
    const response = await worker.mf.dispatchFetch('http://worker/op', {
      method: 'POST',
      body: JSON.stringify({ binding: 'SQLITE', op: 'claim', key: 'k', record: { state: 'paid', expires: 1 } }),
    })
    expect(((await response.json()) as { error: { name: string } }).error.name).toBe('TypeError')
  })

  test('an alarm deletes expired records nobody touches again', async () => {
    const store = remote('INSPECT', { shards: 1 })
    const keys = async () => (await (await worker.mf.dispatchFetch('http://worker/keys')).json()) as string[]
    const short = `alarm:${crypto.randomUUID()}`
    const long = `alarm:${crypto.randomUUID()}`
    expect(await store.claim(short, { state: 'settled', expires: Date.now() + 300 })).toBe(true)
    expect(await store.claim(long, { state: 'settled', expires: Date.now() + 600_000 })).toBe(true)
    expect(await keys()).toEqual(expect.arrayContaining([`claim:${short}`, `claim:${long}`]))
    const deadline = Date.now() + 10_000
    while ((await keys()).includes(`claim:${short}`)) {
      if (Date.now() > deadline) throw new Error('the expired record was not swept by the alarm within 10 s')
      await new Promise((r) => setTimeout(r, 100))
    }
    // The live record stays, and a fresh claim of the swept key wins.
    expect(await keys()).toContain(`claim:${long}`)
    expect(await store.claim(short, { state: 'pending', expires: Date.now() + 60_000 })).toBe(true)
  })
})
