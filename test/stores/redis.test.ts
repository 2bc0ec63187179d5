import { randomUUID } from 'node:crypto'
import { createClient } from 'redis'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { freePort } from '../../scripts/local-chain.js'
import { ioredisCommand, nodeRedisCommand, redisStore } from '../../src/stores/redis.js'
import { StoreUnavailableError } from '../../src/stores/store.js'
import { claimStoreContract } from './contract.js'
import { type RedisServer, startRedisServer } from './redis-server.js'

type Client = ReturnType<typeof createClient>

let server: RedisServer
let client: Client
const clients: Array<{ destroy(): void }> = []

async function connected(url: string, options: Parameters<typeof createClient>[0] = {}): Promise<Client> {
  const c = createClient({ url, ...options })
  c.on('error', () => {}) // connection errors surface through the commands under test
  clients.push(c)
  await c.connect()
  return c
}

beforeAll(async () => {
  server = await startRedisServer()
  client = await connected(server.url)
})

afterAll(async () => {
  for (const c of clients) c.destroy()
  await server?.stop()
})

claimStoreContract('redis', () => redisStore({ command: nodeRedisCommand(client) }), { shortLife: 1000 })

describe('redis store', () => {
  test('refuses construction without a command function or with a bad timeout', () => {
    expect(() => redisStore({} as never)).toThrow(/`command` must be a function/)
    expect(() => redisStore({ command: async () => null, timeout: 0 })).toThrow(/`timeout` must be a positive number/)
    expect(() => redisStore({ command: async () => null, timeout: Number.NaN })).toThrow(/`timeout`/)
  })

  test('claims are SET NX with PXAT at the record expiry, under the prefix', async () => {
    const prefix = `p-${randomUUID()}:`
    const store = redisStore({ command: nodeRedisCommand(client), prefix })
    const expires = Date.now() + 120_000
    expect(await store.claim('k', { state: 'pending', expires, lease: 42, owner: 'me' })).toBe(true)
    expect(await client.sendCommand(['PEXPIRETIME', `${prefix}k`])).toBe(expires)
    expect(JSON.parse(String(await client.sendCommand(['GET', `${prefix}k`])))).toEqual({ state: 'pending', expires, lease: 42, owner: 'me' })
    // transition keeps the absolute expiry of the new record
    const later = expires + 60_000
    expect(await store.transition('k', 'pending', { state: 'unknown', expires: later, owner: 'me' }, 'me')).toBe(true)
    expect(await client.sendCommand(['PEXPIRETIME', `${prefix}k`])).toBe(later)
    // release deletes the key
    expect(await store.transition('k', 'unknown', null, 'me')).toBe(true)
    expect(await client.sendCommand(['EXISTS', `${prefix}k`])).toBe(0)
  })

  test('two prefixes on one Redis keep separate claims', async () => {
    const a = redisStore({ command: nodeRedisCommand(client), prefix: `a-${randomUUID()}:` })
    const b = redisStore({ command: nodeRedisCommand(client), prefix: `b-${randomUUID()}:` })
    const expires = Date.now() + 60_000
    expect(await a.claim('same', { state: 'settled', expires })).toBe(true)
    expect(await b.claim('same', { state: 'settled', expires })).toBe(true)
    expect(await a.claim('same', { state: 'settled', expires })).toBe(false)
  })

  test('two stores (two app instances, two connections) on the same Redis: one winner', async () => {
    const other = await connected(server.url)
    const one = redisStore({ command: nodeRedisCommand(client) })
    const two = redisStore({ command: nodeRedisCommand(other) })
    const key = `shared:${randomUUID()}`
    const expires = Date.now() + 60_000
    const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => (i % 2 ? one : two).claim(key, { state: 'pending', expires, data: String(i) })))
    expect(results.filter(Boolean)).toHaveLength(1)
  })

  test('the ioredis adapter passes the command name and its arguments through call()', async () => {
    const calls: unknown[][] = []
    const fakeIoredis = {
      call: (name: string, ...args: string[]) => {
        calls.push([name, ...args])
        return client.sendCommand([name, ...args])
      },
    }
    const store = redisStore({ command: ioredisCommand(fakeIoredis) })
    const key = `io:${randomUUID()}`
    expect(await store.claim(key, { state: 'settled', expires: Date.now() + 60_000 })).toBe(true)
    // The first command of a store reads the eviction policy, through the same adapter.
    expect(calls[0]).toEqual(['CONFIG', 'GET', 'maxmemory-policy'])
    expect(calls[1]?.slice(0, 2)).toEqual(['SET', `hono-mpp:claim:${key}`])
    expect(calls[1]?.slice(3)).toEqual(['NX', 'PXAT', expect.stringMatching(/^\d+$/)])
    expect((await store.get(key))?.state).toBe('settled')
  })

  test('byte replies (client buffer modes) are read as text', async () => {
    const store = redisStore({
      command: async (args) => {
        const reply = await client.sendCommand(args)
        return typeof reply === 'string' ? new TextEncoder().encode(reply) : reply
      },
    })
    const key = `bytes:${randomUUID()}`
    expect(await store.claim(key, { state: 'unknown', expires: Date.now() + 60_000, data: 'ü' })).toBe(true)
    expect((await store.get(key))?.data).toBe('ü')
  })
})

describe('redis store fails closed (StoreUnavailableError → 503)', () => {
  const record = () => ({ state: 'pending' as const, expires: Date.now() + 60_000 })

  test('when Redis is stopped: a client that does not queue offline errors at once', async () => {
    const doomed = await startRedisServer()
    const c = await connected(doomed.url, { disableOfflineQueue: true, socket: { reconnectStrategy: false } })
    const store = redisStore({ command: nodeRedisCommand(c), timeout: 1000 })
    expect(await store.claim('before', record())).toBe(true)
    await doomed.stop()
    await new Promise((r) => setTimeout(r, 100))
    for (const attempt of [() => store.claim('after', record()), () => store.transition('before', 'pending', null, 'me'), () => store.get('before')]) {
      const started = Date.now()
      const error = await attempt().catch((e: unknown) => e)
      expect(error).toBeInstanceOf(StoreUnavailableError)
      expect((error as Error).message).toMatch(/^redis store: (SET|EVAL|GET) failed: /)
      expect(Date.now() - started).toBeLessThan(900)
    }
  })

  test('when Redis is stopped: a reconnecting client that queues commands hits the timeout', async () => {
    const doomed = await startRedisServer()
    const c = await connected(doomed.url, { socket: { reconnectStrategy: () => 100 } })
    const store = redisStore({ command: nodeRedisCommand(c), timeout: 300 })
    expect(await store.claim('before', record())).toBe(true)
    await doomed.stop()
    const started = Date.now()
    const error = await store.claim('after', record()).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(StoreUnavailableError)
    expect((error as Error).message).toBe('redis store: SET did not answer within 300 ms')
    expect(Date.now() - started).toBeGreaterThanOrEqual(290)
    expect(Date.now() - started).toBeLessThan(2_000)
    c.destroy()
  })

  test('when Redis was never reachable', async () => {
    const nowhere = `redis://127.0.0.1:${await freePort()}`
    const c = createClient({ url: nowhere, socket: { reconnectStrategy: () => 100 } })
    c.on('error', () => {})
    clients.push(c)
    c.connect().catch(() => {})
    const store = redisStore({ command: nodeRedisCommand(c), timeout: 300 })
    await expect(store.claim('k', record())).rejects.toThrow(StoreUnavailableError)
    await expect(store.get('k')).rejects.toThrow(/did not answer within 300 ms|failed/)
    c.destroy()
  })

  test('when a command takes longer than the timeout (server paused)', async () => {
    const admin = await connected(server.url)
    const paused = await connected(server.url)
    const store = redisStore({ command: nodeRedisCommand(paused), timeout: 200 })
    await store.check()
    await admin.sendCommand(['CLIENT', 'PAUSE', '1000', 'ALL'])
    const started = Date.now()
    const error = await store.get(`paused:${randomUUID()}`).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(StoreUnavailableError)
    expect((error as Error).message).toBe('redis store: GET did not answer within 200 ms')
    expect(Date.now() - started).toBeLessThan(800)
    await new Promise((r) => setTimeout(r, 1_000)) // let the pause end before other tests
  })

  test('when the command function throws synchronously or returns an unexpected reply', async () => {
    // (The eviction policy check is off: these commands never reach a Redis.)
    const throwing = redisStore({
      checkEvictionPolicy: false,
      command: () => {
        throw new Error('socket closed')
      },
    })
    await expect(throwing.claim('k', record())).rejects.toThrow('redis store: SET failed: socket closed')
    const odd = redisStore({ command: async () => 'QUEUED', checkEvictionPolicy: false })
    await expect(odd.claim('k', record())).rejects.toThrow(/unexpected SET reply/)
    await expect(odd.transition('k', 'pending', null, 'me')).rejects.toThrow(/unexpected EVAL reply/)
    const numeric = redisStore({ command: async () => 5, checkEvictionPolicy: false })
    await expect(numeric.get('k')).rejects.toThrow(/unexpected GET reply \(number\)/)
  })

  test('on an error reply (key of another type) and on a corrupt record', async () => {
    const prefix = `odd-${randomUUID()}:`
    const store = redisStore({ command: nodeRedisCommand(client), prefix })
    await client.sendCommand(['LPUSH', `${prefix}list`, 'x'])
    await expect(store.get('list')).rejects.toThrow(/^redis store: GET failed: WRONGTYPE/)
    await expect(store.transition('list', 'pending', null, 'me')).rejects.toThrow(StoreUnavailableError)

    await client.sendCommand(['SET', `${prefix}junk`, 'not json'])
    await expect(store.get('junk')).rejects.toThrow('redis store: corrupt claim record (not JSON)')
    await expect(store.transition('junk', 'pending', null, 'me')).rejects.toThrow(/corrupt claim record/)
    // A claim on it is still refused: corrupt is not free.
    expect(await store.claim('junk', record())).toBe(false)
  })
})

describe('redis store refuses a Redis that may evict claims (maxmemory-policy)', () => {
  let policyServer: RedisServer
  let admin: Client
  const setPolicy = (policy: string) => admin.sendCommand(['CONFIG', 'SET', 'maxmemory-policy', policy])
  const record = () => ({ state: 'pending' as const, expires: Date.now() + 60_000 })
  /** Sends through `client`, counting commands by name; `refuse` names commands answered with an error. */
  const through = (c: Client, refuse: string[] = []) => {
    const sent: string[] = []
    const command = async (args: string[]) => {
      sent.push(args[0] as string)
      if (refuse.includes(args[0] as string)) throw new Error(`ERR unknown command '${args[0]}'`)
      return c.sendCommand(args)
    }
    return { command, sent }
  }

  beforeAll(async () => {
    policyServer = await startRedisServer()
    admin = await connected(policyServer.url)
  })

  afterAll(async () => {
    await policyServer?.stop()
  })

  test('refuses construction with a checkEvictionPolicy that is not a boolean', () => {
    expect(() => redisStore({ command: async () => null, checkEvictionPolicy: 'no' as never })).toThrow(/`checkEvictionPolicy` must be true or false/)
  })

  test('noeviction passes: the policy is read once, before the first command, and not again', async () => {
    await setPolicy('noeviction')
    const { command, sent } = through(admin)
    const store = redisStore({ command, prefix: `ok-${randomUUID()}:` })
    expect(await store.claim('k', record())).toBe(true)
    expect(await store.get('k')).toBeDefined()
    await store.check()
    expect(sent).toEqual(['CONFIG', 'SET', 'GET'])
  })

  test.each(['allkeys-lru', 'volatile-lru', 'allkeys-random', 'volatile-ttl'])('%s is refused, by check() and by every command', async (policy) => {
    await setPolicy(policy)
    const { command, sent } = through(admin)
    const store = redisStore({ command, prefix: `evict-${randomUUID()}:` })
    const reason = new RegExp(`maxmemory-policy ${policy}, which may evict live claims .* Set it to noeviction`)
    await expect(store.check()).rejects.toThrow(reason)
    await expect(store.claim('k', record())).rejects.toThrow(StoreUnavailableError)
    await expect(store.get('k')).rejects.toThrow(reason)
    await expect(store.transition('k', 'pending', null, 'me')).rejects.toThrow(reason)
    expect(sent.every((name) => name === 'CONFIG')).toBe(true)
    await setPolicy('noeviction')
  })

  test('where CONFIG is disabled (managed Redis) the policy is read from INFO', async () => {
    const { command, sent } = through(admin, ['CONFIG'])
    await setPolicy('allkeys-lfu')
    const refused = redisStore({ command, prefix: `info-${randomUUID()}:` })
    await expect(refused.check()).rejects.toThrow(/maxmemory-policy allkeys-lfu/)
    expect(sent).toEqual(['CONFIG', 'INFO'])
    await setPolicy('noeviction')
    const store = redisStore({ command, prefix: `info-${randomUUID()}:` })
    expect(await store.claim('k', record())).toBe(true)
  })

  test('a RESP3 client (CONFIG GET answers a map) is read too', async () => {
    const resp3 = await connected(policyServer.url, { RESP: 3 })
    await setPolicy('allkeys-lru')
    await expect(redisStore({ command: nodeRedisCommand(resp3) }).check()).rejects.toThrow(/allkeys-lru/)
    await setPolicy('noeviction')
    await expect(redisStore({ command: nodeRedisCommand(resp3) }).check()).resolves.toBeUndefined()
  })

  test('when neither CONFIG nor INFO answers, the store refuses and says how to go on; checkEvictionPolicy: false skips the check', async () => {
    const { command } = through(admin, ['CONFIG', 'INFO'])
    const store = redisStore({ command, prefix: `blind-${randomUUID()}:` })
    await expect(store.check()).rejects.toThrow(
      /cannot read maxmemory-policy \(CONFIG GET: .*unknown command 'CONFIG'.*; INFO: .*unknown command 'INFO'.*\)\. .*pass checkEvictionPolicy: false/,
    )
    await expect(store.claim('k', record())).rejects.toThrow(StoreUnavailableError)
    const unchecked = redisStore({ command, prefix: `blind-${randomUUID()}:`, checkEvictionPolicy: false })
    expect(await unchecked.claim('k', record())).toBe(true)
  })
})
