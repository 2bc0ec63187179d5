/**
 * Claim store on Cloudflare Durable Objects, for apps running on Workers.
 *
 * `ClaimStoreObject` is the Durable Object: it keeps claim records in its own storage. A Durable
 * Object runs one event at a time and its input gates hold other events back while a storage
 * read or write is in flight, so read-compare-write inside one request is atomic. Expired
 * records are deleted when next touched and, for keys never touched again, by an alarm.
 *
 * `durableObjectStore({ namespace })` is the `ClaimStore` the middleware uses: it routes each
 * key to one of `shards` objects (by a hash of the key) and speaks to it with `stub.fetch`.
 * Anything that keeps an answer from coming back (exception, non-200, bad body, timeout)
 * throws `StoreUnavailableError`, and the middleware fails closed (503).
 *
 * The Workers types used here are declared locally, minimal and structural, so this file needs
 * no `@cloudflare/workers-types` and no `cloudflare:` or `node:` import.
 */
import { type ClaimClass, type ClaimRecord, type ClaimState, type ClaimStore, claimClasses, StoreUnavailableError } from './store.js'

/** The part of a Durable Object id this file uses. */
export interface DurableObjectIdLike {
  toString(): string
}

/** The part of a Durable Object stub this file uses. */
export interface DurableObjectStubLike {
  fetch(input: string, init?: { method?: string; headers?: Record<string, string>; body?: string }): Promise<Response>
}

/** The part of a Durable Object namespace binding (`env.CLAIMS`) this file uses. */
export interface DurableObjectNamespaceLike {
  idFromName(name: string): DurableObjectIdLike
  get(id: DurableObjectIdLike): DurableObjectStubLike
}

/** The part of `DurableObjectStorage` this file uses (key-value API; KV- or SQLite-backed). */
export interface DurableObjectStorageLike {
  get<T = unknown>(key: string): Promise<T | undefined>
  put<T>(key: string, value: T): Promise<void>
  delete(key: string): Promise<boolean>
  delete(keys: string[]): Promise<number>
  list<T = unknown>(options?: { prefix?: string; startAfter?: string; limit?: number }): Promise<Map<string, T>>
  getAlarm(): Promise<number | null>
  setAlarm(scheduledTime: number | Date): Promise<void>
}

/** The part of `DurableObjectState` this file uses. */
export interface DurableObjectStateLike {
  storage: DurableObjectStorageLike
}

type Operation =
  | { op: 'claim'; key: string; record: ClaimRecord }
  | { op: 'transition'; key: string; from: ClaimState; next: ClaimRecord | null; owner: string }
  | { op: 'get'; key: string }

const states: readonly ClaimState[] = ['pending', 'unknown', 'settled']
const recordPrefix = 'claim:'
/** Durable Object storage keys are limited to 2 KiB. */
const maxKeyLength = 2048 - recordPrefix.length

/**
 * The Durable Object holding claims. Export it from your Worker's entry module and bind it
 * (see `durableObjectStore`).
 *
 * @example
 * ```ts
 * // worker.ts
 * export { ClaimStoreObject } from 'hono-mpp/stores/durable-object'
 * ```
 */
export class ClaimStoreObject {
  protected readonly storage: DurableObjectStorageLike
  /**
   * Alarms sweep no more often than this (ms): the sweep lists the whole object, and lazy
   * deletion already keeps answers right, so the alarm only reclaims space.
   */
  protected sweepDelay = 60_000
  /** When the next alarm fires; `undefined` until read from storage. */
  private alarmAt: number | null | undefined

  constructor(state: DurableObjectStateLike, _env?: unknown) {
    this.storage = state.storage
  }

  async fetch(request: Request): Promise<Response> {
    if (request.method !== 'POST') return answer(405, { error: 'POST an operation' })
    let operation: Operation
    try {
      operation = parseOperation(await request.json())
    } catch (error) {
      return answer(400, { error: error instanceof Error ? error.message : 'invalid operation' })
    }
    const now = Date.now()
    switch (operation.op) {
      case 'claim': {
        if (await this.live(operation.key, now)) return answer(200, { ok: false })
        await this.write(operation.key, operation.record, now)
        return answer(200, { ok: true })
      }
      case 'transition': {
        const current = await this.live(operation.key, now)
        if (!current || current.state !== operation.from || current.owner !== operation.owner) return answer(200, { ok: false })
        if (operation.next === null) await this.storage.delete(recordPrefix + operation.key)
        else await this.write(operation.key, operation.next, now)
        return answer(200, { ok: true })
      }
      case 'get':
        return answer(200, { record: (await this.live(operation.key, now)) ?? null })
    }
  }

  /** Deletes expired records and schedules the next sweep while any record is left. */
  async alarm(): Promise<void> {
    const now = Date.now()
    let earliest = Number.POSITIVE_INFINITY
    let startAfter: string | undefined
    for (;;) {
      const page = await this.storage.list<ClaimRecord>({
        prefix: recordPrefix,
        limit: 1000,
        ...(startAfter !== undefined && { startAfter }),
      })
      const expired: string[] = []
      for (const [key, record] of page) {
        if (record.expires <= now) expired.push(key)
        else earliest = Math.min(earliest, record.expires)
        startAfter = key
      }
      // `delete` takes at most 128 keys at once.
      for (let i = 0; i < expired.length; i += 128) await this.storage.delete(expired.slice(i, i + 128))
      if (page.size < 1000) break
    }
    this.alarmAt = null
    if (earliest !== Number.POSITIVE_INFINITY) await this.schedule(Math.max(earliest, now + this.sweepDelay))
  }

  private async live(key: string, now: number): Promise<ClaimRecord | undefined> {
    const record = await this.storage.get<ClaimRecord>(recordPrefix + key)
    if (record === undefined) return undefined
    if (record.expires <= now) {
      await this.storage.delete(recordPrefix + key)
      return undefined
    }
    return record
  }

  private async write(key: string, record: ClaimRecord, now: number): Promise<void> {
    await this.storage.put(recordPrefix + key, record)
    if (this.alarmAt === undefined) this.alarmAt = await this.storage.getAlarm()
    // Any pending alarm reschedules itself for what is left, so one is enough.
    if (this.alarmAt === null) await this.schedule(Math.max(record.expires, now + this.sweepDelay))
  }

  private async schedule(at: number): Promise<void> {
    await this.storage.setAlarm(at)
    this.alarmAt = at
  }
}

export type DurableObjectStoreOptions = {
  /** The Durable Object namespace binding whose class is `ClaimStoreObject`, e.g. `env.CLAIMS`. */
  namespace: DurableObjectNamespaceLike
  /**
   * How many objects share the keys (default 16). One object serves roughly a thousand simple
   * requests a second; more shards spread the load. Keep it fixed while claims are live:
   * changing it moves keys to other objects, where a used credential would look unused.
   */
  shards?: number
  /** Object names are `${name}:${shard}` (default `"hono-mpp:claims"`); change it to keep separate sets. */
  name?: string
  /** Milliseconds a call may take before the store reports itself unavailable (default 2000). */
  timeout?: number
}

/**
 * A `ClaimStore` backed by `ClaimStoreObject` Durable Objects.
 *
 * @param options.namespace The binding of `ClaimStoreObject` (e.g. `env.CLAIMS`).
 * @param options.shards Number of objects the keys are spread over (default 16; never change it while claims are live).
 * @param options.name Prefix of the object names (default `"hono-mpp:claims"`).
 * @param options.timeout Per-call timeout in ms (default 2000).
 * @returns A store whose claims are atomic across every Worker isolate.
 * @throws {Error} At construction when `namespace` is not a Durable Object namespace or `shards`/`timeout` are invalid.
 * @example
 * ```toml
 * # wrangler.toml
 * [[durable_objects.bindings]]
 * name = "CLAIMS"
 * class_name = "ClaimStoreObject"
 *
 * [[migrations]]
 * tag = "v1"
 * new_sqlite_classes = ["ClaimStoreObject"]
 * ```
 * ```ts
 * import { ClaimStoreObject, durableObjectStore } from 'hono-mpp/stores/durable-object'
 * export { ClaimStoreObject }
 * // per request: const store = durableObjectStore({ namespace: c.env.CLAIMS })
 * ```
 */
export function durableObjectStore(options: DurableObjectStoreOptions): ClaimStore {
  const namespace = options?.namespace
  if (!namespace || typeof namespace.idFromName !== 'function' || typeof namespace.get !== 'function')
    throw new Error(
      'durableObjectStore: `namespace` must be the Durable Object namespace binding of ClaimStoreObject (e.g. env.CLAIMS); check the [[durable_objects.bindings]] entry in wrangler.toml.',
    )
  const shards = options.shards ?? 16
  if (!Number.isSafeInteger(shards) || shards < 1) throw new Error(`durableObjectStore: \`shards\` must be a positive integer, got ${String(options.shards)}.`)
  const name = options.name ?? 'hono-mpp:claims'
  if (typeof name !== 'string' || name === '') throw new Error('durableObjectStore: `name` must be a non-empty string.')
  const timeout = options.timeout ?? 2000
  if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout <= 0)
    throw new Error(`durableObjectStore: \`timeout\` must be a positive number of milliseconds, got ${String(options.timeout)}.`)

  const call = async (operation: Operation): Promise<Record<string, unknown>> => {
    if (typeof operation.key !== 'string' || operation.key === '' || operation.key.length > maxKeyLength)
      throw new TypeError(`durableObjectStore.${operation.op}: key must be a non-empty string of at most ${maxKeyLength} characters.`)
    const shard = shards === 1 ? 0 : fnv1a(operation.key) % shards
    let timer: ReturnType<typeof setTimeout> | undefined
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StoreUnavailableError(`durable object store: ${operation.op} did not answer within ${timeout} ms`)), timeout)
    })
    const exchange = async () => {
      // A fresh stub per call: stubs are cheap, and one made in another request's context may not be usable.
      const stub = namespace.get(namespace.idFromName(`${name}:${shard}`))
      const response = await stub.fetch('https://claim-store.hono-mpp/', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(operation),
      })
      if (response.status !== 200) {
        await response.body?.cancel()
        throw new StoreUnavailableError(`durable object store: ${operation.op} answered HTTP ${response.status}; is the namespace bound to ClaimStoreObject?`)
      }
      const body: unknown = await response.json()
      if (typeof body !== 'object' || body === null)
        throw new StoreUnavailableError(`durable object store: ${operation.op} answered a body that is not an object`)
      return body as Record<string, unknown>
    }
    try {
      return await Promise.race([exchange(), timedOut])
    } catch (error) {
      if (error instanceof StoreUnavailableError) throw error
      const message = error instanceof Error ? error.message.split('\n')[0] : String(error)
      throw new StoreUnavailableError(`durable object store: ${operation.op} failed: ${message}`, { cause: error })
    } finally {
      clearTimeout(timer)
    }
  }

  const ok = (body: Record<string, unknown>, op: string): boolean => {
    if (typeof body.ok !== 'boolean') throw new StoreUnavailableError(`durable object store: ${op} answered without ok`)
    return body.ok
  }

  return {
    async claim(key, record) {
      checkRecord(record, 'claim')
      return ok(await call({ op: 'claim', key, record }), 'claim')
    },
    async transition(key, from, next, owner) {
      if (!states.includes(from)) throw new TypeError(`durableObjectStore.transition: from must be one of ${states.join(', ')}.`)
      if (next !== null) checkRecord(next, 'transition')
      if (typeof owner !== 'string' || owner === '')
        throw new TypeError('durableObjectStore.transition: owner must be the non-empty token of the claim holder.')
      return ok(await call({ op: 'transition', key, from, next, owner }), 'transition')
    },
    async get(key) {
      const body = await call({ op: 'get', key })
      if (body.record === null) return undefined
      if (!isRecord(body.record)) throw new StoreUnavailableError('durable object store: get answered a malformed record')
      return body.record
    },
  }
}

function checkRecord(record: ClaimRecord, what: string): void {
  if (!isRecord(record))
    throw new TypeError(
      `durableObjectStore.${what}: record needs state (${states.join(', ')}), a finite expires, and optional numeric lease / string owner / string data / class (${claimClasses.join(', ')}).`,
    )
}

function isRecord(value: unknown): value is ClaimRecord {
  if (typeof value !== 'object' || value === null) return false
  const record = value as Record<string, unknown>
  return (
    states.includes(record.state as ClaimState) &&
    typeof record.expires === 'number' &&
    Number.isFinite(record.expires) &&
    (record.lease === undefined || (typeof record.lease === 'number' && Number.isFinite(record.lease))) &&
    (record.owner === undefined || typeof record.owner === 'string') &&
    (record.data === undefined || typeof record.data === 'string') &&
    (record.class === undefined || claimClasses.includes(record.class as ClaimClass))
  )
}

/** Keeps only the fields of a record, so nothing else lands in storage. */
function cleanRecord(record: ClaimRecord): ClaimRecord {
  return {
    state: record.state,
    expires: record.expires,
    ...(record.lease !== undefined && { lease: record.lease }),
    ...(record.owner !== undefined && { owner: record.owner }),
    ...(record.data !== undefined && { data: record.data }),
    ...(record.class !== undefined && { class: record.class }),
  }
}

function parseOperation(body: unknown): Operation {
  if (typeof body !== 'object' || body === null) throw new Error('operation must be a JSON object')
  const input = body as Record<string, unknown>
  const key = input.key
  if (typeof key !== 'string' || key === '' || key.length > maxKeyLength)
    throw new Error(`key must be a non-empty string of at most ${maxKeyLength} characters`)
  switch (input.op) {
    case 'claim':
      if (!isRecord(input.record)) throw new Error('claim needs a valid record')
      return { op: 'claim', key, record: cleanRecord(input.record) }
    case 'transition': {
      if (!states.includes(input.from as ClaimState)) throw new Error('transition needs from: pending, unknown or settled')
      if (input.next !== null && !isRecord(input.next)) throw new Error('transition needs next: a valid record or null')
      if (typeof input.owner !== 'string' || input.owner === '') throw new Error('transition needs owner: the non-empty token of the claim holder')
      return {
        op: 'transition',
        key,
        from: input.from as ClaimState,
        next: input.next === null ? null : cleanRecord(input.next as ClaimRecord),
        owner: input.owner,
      }
    }
    case 'get':
      return { op: 'get', key }
    default:
      throw new Error('op must be claim, transition or get')
  }
}

function answer(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } })
}

/** FNV-1a, 32 bit: a stable, even spread of keys over shards (not a security boundary). */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}
