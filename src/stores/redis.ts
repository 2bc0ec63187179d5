/**
 * Claim store on Redis, shared by any number of app instances. It speaks raw Redis commands
 * through a function you pass, so hono-mpp depends on no Redis client and runs wherever your
 * client does (node-redis, ioredis, an HTTP Redis on Workers...).
 *
 * - claim: `SET key record NX PXAT expires` — Redis decides the one winner atomically.
 * - transition: one Lua script (`EVAL`) compares state and owner and then `SET ... PXAT` or
 *   `DEL`, so no other command runs between the compare and the swap (no WATCH round trips).
 * - get: `GET`.
 *
 * Expiry uses Redis's own clock (`PXAT` is absolute epoch ms): keep app and Redis clocks in
 * sync (NTP), as a skew shortens or lengthens how long a used credential stays refused.
 *
 * Every command is bounded by `timeout`; a timeout, a dropped connection, an error reply or an
 * unexpected answer throws `StoreUnavailableError`, and the middleware fails closed (503).
 * A command that timed out may still run later on Redis: a claim won that way stays held until
 * its lease/expiry runs out, which refuses a retry rather than paying twice.
 *
 * Redis must never evict a claim: an evicted claim makes a used credential look unused. So the
 * store refuses to work unless Redis runs with `maxmemory-policy noeviction` (then a full Redis
 * refuses writes, and the middleware fails closed with a 503). It reads the policy before its
 * first command (`CONFIG GET`, or `INFO memory` where CONFIG is disabled, as on many managed
 * Redis); call `await store.check()` at start-up to be refused there with the reason.
 */
import { type ClaimRecord, type ClaimState, type ClaimStore, claimClasses, decodeRecord, encodeRecord, StoreUnavailableError } from './store.js'

/** Sends one raw Redis command, e.g. `['SET', 'k', 'v', 'NX']`, and resolves its reply. */
export type RedisCommand = (args: string[]) => Promise<unknown>

export type RedisStoreOptions = {
  /**
   * Sends one raw command. node-redis: `(args) => client.sendCommand(args)`;
   * ioredis: `(args) => redis.call(args[0], ...args.slice(1))`.
   */
  command: RedisCommand
  /** Prepended to every key (default `"hono-mpp:claim:"`), to share a Redis with other data. */
  prefix?: string
  /** Milliseconds each command may take before the store reports itself unavailable (default 1000). */
  timeout?: number
  /**
   * Read Redis's `maxmemory-policy` before the first command and refuse any but `noeviction`
   * (default true). Set false only where the policy cannot be read (neither `CONFIG GET` nor
   * `INFO` is allowed) and you have made sure yourself that it is `noeviction`.
   */
  checkEvictionPolicy?: boolean
}

/** A Redis `ClaimStore`, plus the start-up check of Redis's eviction policy. */
export type RedisClaimStore = ClaimStore & {
  /**
   * Resolves when Redis runs with `maxmemory-policy noeviction`; rejects with the reason
   * otherwise (another policy, a policy that cannot be read, Redis unreachable). Every store
   * also runs it before its first command; call it at start-up to fail there instead.
   */
  check(): Promise<void>
}

/**
 * ARGV: from state, owner (a non-empty token; a record without an owner never matches), next
 * record JSON ('' = release), next expires.
 */
const transitionScript = `
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, record = pcall(cjson.decode, current)
if not ok or type(record) ~= 'table' then return redis.error_reply('hono-mpp: corrupt claim record') end
if record.state ~= ARGV[1] then return 0 end
if type(record.owner) ~= 'string' or record.owner ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PXAT', ARGV[4])
end
return 1
`

const states: readonly ClaimState[] = ['pending', 'unknown', 'settled']

/**
 * A `ClaimStore` on Redis (6.2 or later, for `PXAT`).
 *
 * @param options.command Sends one raw Redis command (see {@link nodeRedisCommand}, {@link ioredisCommand}).
 * @param options.prefix Key prefix (default `"hono-mpp:claim:"`).
 * @param options.timeout Per-command timeout in ms (default 1000).
 * @param options.checkEvictionPolicy Refuse a Redis whose `maxmemory-policy` is not `noeviction` (default true).
 * @returns A store whose claims are atomic across every process using the same Redis.
 * @throws {Error} At construction when `command` is not a function or `timeout` is not a positive number.
 *   Its commands reject (`StoreUnavailableError`, so requests answer 503) while Redis's
 *   `maxmemory-policy` is not `noeviction` or cannot be read; `await store.check()` says why.
 * @example
 * ```ts
 * import { createClient } from 'redis'
 * import { redisStore, nodeRedisCommand } from 'hono-mpp/stores/redis'
 *
 * const client = await createClient({ url: process.env.REDIS_URL }).connect()
 * const store = redisStore({ command: nodeRedisCommand(client) })
 * await store.check() // refuses a Redis that may evict claims
 * ```
 */
export function redisStore(options: RedisStoreOptions): RedisClaimStore {
  if (typeof options?.command !== 'function')
    throw new Error('redisStore: `command` must be a function sending one raw Redis command, e.g. (args) => client.sendCommand(args).')
  const { command } = options
  const prefix = options.prefix ?? 'hono-mpp:claim:'
  if (typeof prefix !== 'string') throw new Error('redisStore: `prefix` must be a string.')
  const timeout = options.timeout ?? 1000
  if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout <= 0)
    throw new Error(`redisStore: \`timeout\` must be a positive number of milliseconds, got ${String(options.timeout)}.`)
  const checkEvictionPolicy = options.checkEvictionPolicy ?? true
  if (typeof checkEvictionPolicy !== 'boolean')
    throw new Error(`redisStore: \`checkEvictionPolicy\` must be true or false, got ${String(options.checkEvictionPolicy)}.`)

  const send = async (args: string[]): Promise<unknown> => {
    const name = args[0] as string
    let timer: ReturnType<typeof setTimeout> | undefined
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StoreUnavailableError(`redis store: ${name} did not answer within ${timeout} ms`)), timeout)
    })
    try {
      // `Promise.resolve().then` also turns a synchronous throw of `command` into a rejection.
      return await Promise.race([Promise.resolve().then(() => command(args)), timedOut])
    } catch (error) {
      if (error instanceof StoreUnavailableError) throw error
      throw new StoreUnavailableError(`redis store: ${name} failed: ${reason(error)}`, { cause: error })
    } finally {
      clearTimeout(timer)
    }
  }

  const check = (record: ClaimRecord, what: string): { json: string; expires: string } => {
    if (!record || !states.includes(record.state)) throw new TypeError(`redisStore.${what}: record.state must be one of ${states.join(', ')}.`)
    if (!Number.isFinite(record.expires) || record.expires <= 0)
      throw new TypeError(`redisStore.${what}: record.expires must be a positive epoch in milliseconds.`)
    if (record.class !== undefined && !claimClasses.includes(record.class))
      throw new TypeError(`redisStore.${what}: record.class must be one of ${claimClasses.join(', ')}.`)
    // PXAT takes an integer; rounding up never frees a key before its record says so.
    return { json: encodeRecord(record), expires: String(Math.ceil(record.expires)) }
  }

  /** Reads the policy: CONFIG GET, else INFO memory; throws when neither says or it evicts. */
  const verifyPolicy = async (): Promise<void> => {
    let policy: string | undefined
    let configFailure = 'no answer'
    try {
      policy = policyOfConfig(await send(['CONFIG', 'GET', 'maxmemory-policy']))
      if (policy === undefined) configFailure = 'an answer without maxmemory-policy'
    } catch (error) {
      // No answer in time: Redis is slow or away, not refusing CONFIG; INFO would wait as long.
      if (error instanceof StoreUnavailableError && error.message.endsWith(`did not answer within ${timeout} ms`)) throw error
      configFailure = error instanceof Error ? error.message : String(error)
    }
    if (policy === undefined) {
      let info: unknown
      try {
        info = await send(['INFO', 'memory'])
      } catch (error) {
        throw new StoreUnavailableError(
          `redis store: cannot read maxmemory-policy (CONFIG GET: ${configFailure}; INFO: ${error instanceof Error ? error.message : String(error)}). ` +
            'Claims are only safe on a Redis that never evicts them: allow CONFIG GET or INFO to this client, or make sure the policy is noeviction and pass checkEvictionPolicy: false.',
        )
      }
      policy = policyOfInfo(text(info))
      if (policy === undefined)
        throw new StoreUnavailableError(
          `redis store: cannot read maxmemory-policy (CONFIG GET: ${configFailure}; INFO memory has no maxmemory_policy). ` +
            'Claims are only safe on a Redis that never evicts them: make sure the policy is noeviction and pass checkEvictionPolicy: false.',
        )
    }
    if (policy !== 'noeviction')
      throw new StoreUnavailableError(
        `redis store: Redis runs with maxmemory-policy ${policy}, which may evict live claims and let a used credential pay again. ` +
          'Set it to noeviction (redis.conf `maxmemory-policy noeviction`, or CONFIG SET maxmemory-policy noeviction; on a managed Redis, in its parameter group or settings).',
      )
  }

  // Passed once, it is not asked again; a failure is asked again on the next command, so fixing
  // the policy (or Redis coming back) needs no restart.
  let passed = !checkEvictionPolicy
  let checking: Promise<void> | undefined
  const checked = (): Promise<void> | undefined => {
    if (passed) return undefined
    checking ??= verifyPolicy().then(
      () => {
        passed = true
      },
      (error: unknown) => {
        checking = undefined
        throw error
      },
    )
    return checking
  }

  return {
    async check() {
      await checked()
    },

    async claim(key, record) {
      const { json, expires } = check(record, 'claim')
      await checked()
      const reply = await send(['SET', prefix + key, json, 'NX', 'PXAT', expires])
      if (reply === null || reply === undefined) return false
      if (text(reply) === 'OK') return true
      throw new StoreUnavailableError(`redis store: unexpected SET reply (${describe(reply)})`)
    },

    async transition(key, from, next, owner) {
      if (!states.includes(from)) throw new TypeError(`redisStore.transition: from must be one of ${states.join(', ')}.`)
      if (typeof owner !== 'string' || owner === '') throw new TypeError('redisStore.transition: owner must be the non-empty token of the claim holder.')
      const swap = next === null ? { json: '', expires: '' } : check(next, 'transition')
      await checked()
      const reply = await send(['EVAL', transitionScript, '1', prefix + key, from, owner, swap.json, swap.expires])
      const value = typeof reply === 'bigint' ? Number(reply) : reply
      if (value === 1) return true
      if (value === 0) return false
      throw new StoreUnavailableError(`redis store: unexpected EVAL reply (${describe(reply)})`)
    },

    async get(key) {
      await checked()
      const reply = await send(['GET', prefix + key])
      if (reply === null || reply === undefined) return undefined
      const value = text(reply)
      if (value === undefined) throw new StoreUnavailableError(`redis store: unexpected GET reply (${describe(reply)})`)
      try {
        // Redis's clock decides liveness (it expires the key), as it does for claim.
        return decodeRecord(value)
      } catch (error) {
        throw new StoreUnavailableError('redis store: corrupt claim record (not JSON)', { cause: error })
      }
    },
  }
}

/** node-redis (v4+): `nodeRedisCommand(client)` sends through `client.sendCommand`. */
export function nodeRedisCommand(client: { sendCommand(args: string[]): Promise<unknown> }): RedisCommand {
  return (args) => client.sendCommand(args)
}

/** ioredis: `ioredisCommand(redis)` sends through `redis.call`. */
export function ioredisCommand(redis: { call(command: string, ...args: string[]): Promise<unknown> }): RedisCommand {
  return (args) => redis.call(args[0] as string, ...args.slice(1))
}

const decoder = new TextDecoder()

/** `CONFIG GET maxmemory-policy`: a [name, value] array (RESP2) or a map (RESP3 clients). */
function policyOfConfig(reply: unknown): string | undefined {
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2)
      if (text(reply[i])?.toLowerCase() === 'maxmemory-policy')
        return text(reply[i + 1])
          ?.trim()
          .toLowerCase()
    return undefined
  }
  if (reply instanceof Map) {
    for (const [name, value] of reply) if (text(name)?.toLowerCase() === 'maxmemory-policy') return text(value)?.trim().toLowerCase()
    return undefined
  }
  if (typeof reply === 'object' && reply !== null) {
    const value = (reply as Record<string, unknown>)['maxmemory-policy']
    return text(value)?.trim().toLowerCase()
  }
  return undefined
}

/** `INFO memory`: lines of `name:value`, one of them `maxmemory_policy:<policy>`. */
function policyOfInfo(info: string | undefined): string | undefined {
  const match = info === undefined ? null : /^maxmemory_policy:([^\r\n]*)/m.exec(info)
  return match?.[1]?.trim().toLowerCase() || undefined
}

/** Clients may hand back strings or bytes (node-redis/ioredis buffer modes). */
function text(reply: unknown): string | undefined {
  if (typeof reply === 'string') return reply
  if (reply instanceof Uint8Array) return decoder.decode(reply)
  return undefined
}

function describe(reply: unknown): string {
  if (typeof reply === 'string') return `string of ${reply.length} chars`
  return reply === null ? 'null' : typeof reply
}

/** The cause's first line, short: enough to tell a refused connection from a closed client. */
function reason(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error)
  const line = message.split('\n')[0] ?? ''
  return line.length > 200 ? `${line.slice(0, 200)}…` : line || 'unknown error'
}
