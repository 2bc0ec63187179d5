/**
 * In-process claim store. Atomic because JavaScript runs one callback at a time; bounded so it
 * never grows without limit: expired claims are swept, and when a budget is spent by live claims
 * a new claim fails closed (503) rather than forgetting a live one, which would let a used
 * credential pay twice.
 *
 * Two budgets, each of entries and of bytes (the characters of keys and data, kept answers
 * included): one for `paid` claims, one for `free` ones (zero-amount challenges, whose proofs
 * cost their senders nothing). A flood of free proofs fills only its own budget, so paid claims
 * always have theirs, and the reverse.
 *
 * Records are packed to keep one million claims well under 256 MB: a number per key for
 * state + class + expiry, and side maps only for the few records that carry a lease, an owner or
 * data (settled payment keys carry none).
 */
import { type ClaimClass, type ClaimRecord, type ClaimState, type ClaimStore, StoreUnavailableError } from './store.js'

export type MemoryStoreOptions = {
  /** Most live paid claims held at once (default 1 000 000). */
  maxEntries?: number
  /**
   * Most characters of keys and data the paid claims hold at once (default 128 MiB), kept
   * answers (`Idempotency-Key`) included. The maps' own overhead per claim (about 150 bytes) is
   * bounded by `maxEntries`.
   */
  maxBytes?: number
  /** Most live free (zero-amount) claims held at once (default a quarter of `maxEntries`). */
  maxFreeEntries?: number
  /** Most characters of keys and data the free claims hold at once (default a quarter of `maxBytes`). */
  maxFreeBytes?: number
  /** Clock, for tests. */
  now?: () => number
}

/** What each budget holds now. */
export type MemoryStoreUsage = Record<ClaimClass, { entries: number; bytes: number }>

const states: readonly ClaimState[] = ['pending', 'unknown', 'settled']
/** Class codes packed with a record: 0 = none given (counts as paid), 1 = free, 2 = paid. */
const classes: readonly (ClaimClass | undefined)[] = [undefined, 'free', 'paid']
const PAID = 0
const FREE = 1

/**
 * The default claim store: in this process only (use `hono-mpp/stores/redis` or
 * `hono-mpp/stores/durable-object` when several instances serve the routes). Bounded by entries
 * and bytes, with separate budgets for paid and free (zero-amount) claims; when a budget is spent
 * a new claim fails closed (503) rather than forgetting a live one.
 *
 * @param options.maxEntries - live paid claims (default 1 000 000).
 * @param options.maxBytes - characters of keys and data the paid claims hold (default 128 MiB).
 * @param options.maxFreeEntries / options.maxFreeBytes - the free claims' budget (default a quarter of each).
 * @returns a `ClaimStore` with `size` and `usage` for monitoring.
 * @throws Error when a bound is not a positive integer.
 * @example
 * ```ts
 * const pay = mpp({ secret, methods, store: memoryStore({ maxEntries: 100_000 }) })
 * ```
 */
export function memoryStore(options: MemoryStoreOptions = {}): ClaimStore & { readonly size: number; readonly usage: MemoryStoreUsage } {
  const positive = (name: keyof MemoryStoreOptions, fallback: number): number => {
    const value = options[name] ?? fallback
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1)
      throw new Error(`memoryStore: ${name} must be a positive integer, got ${String(options[name])}.`)
    return value
  }
  const maxEntries = positive('maxEntries', 1_000_000)
  const maxBytes = positive('maxBytes', 128 * 1024 * 1024)
  const maxFreeEntries = positive('maxFreeEntries', Math.ceil(maxEntries / 4))
  const maxFreeBytes = positive('maxFreeBytes', Math.ceil(maxBytes / 4))
  const now = options.now ?? Date.now

  const budget = [
    { entries: maxEntries, bytes: maxBytes, what: 'memory store is full', entriesOption: 'maxEntries', bytesOption: 'maxBytes' },
    {
      entries: maxFreeEntries,
      bytes: maxFreeBytes,
      what: "memory store's budget for free (zero-amount) claims is full",
      entriesOption: 'maxFreeEntries',
      bytesOption: 'maxFreeBytes',
    },
  ] as const
  const entries = [0, 0]
  const bytes = [0, 0]

  // expires * 16 + class code * 4 + state index: one double per key (expires < 2^49 ms holds for millennia).
  const packed = new Map<string, number>()
  const extra = new Map<string, { lease?: number; owner?: string; data?: string }>()
  let sweepCursor = 0

  const expiryOf = (value: number) => Math.floor(value / 16)
  const budgetOf = (value: number) => (Math.floor(value / 4) % 4 === 1 ? FREE : PAID)
  const sizeOf = (key: string, data: string | undefined) => key.length + (data?.length ?? 0)

  const unpack = (key: string, value: number): ClaimRecord => {
    const record: ClaimRecord = { state: states[value % 4] as ClaimState, expires: expiryOf(value) }
    const more = extra.get(key)
    if (more?.lease !== undefined) record.lease = more.lease
    if (more?.owner !== undefined) record.owner = more.owner
    if (more?.data !== undefined) record.data = more.data
    const claimClass = classes[Math.floor(value / 4) % 4]
    if (claimClass !== undefined) record.class = claimClass
    return record
  }

  const live = (key: string, at: number): ClaimRecord | undefined => {
    const value = packed.get(key)
    if (value === undefined) return undefined
    if (expiryOf(value) <= at) {
      remove(key, value)
      return undefined
    }
    return unpack(key, value)
  }

  const remove = (key: string, value: number) => {
    const b = budgetOf(value)
    entries[b]!--
    bytes[b]! -= sizeOf(key, extra.get(key)?.data)
    packed.delete(key)
    extra.delete(key)
  }

  const codeOf = (record: ClaimRecord): number => {
    const code = classes.indexOf(record.class)
    if (code < 0) throw new TypeError(`memoryStore: record.class must be 'free' or 'paid', got ${String(record.class)}.`)
    return code
  }

  /** Whether `record` under `key` fits its budget once `current` (same key) is gone. */
  const fits = (key: string, record: ClaimRecord, current: number | undefined): boolean => {
    const b = classes.indexOf(record.class) === 1 ? FREE : PAID
    let usedEntries = entries[b]!
    let usedBytes = bytes[b]!
    if (current !== undefined && budgetOf(current) === b) {
      usedEntries--
      usedBytes -= sizeOf(key, extra.get(key)?.data)
    }
    return usedEntries + 1 <= budget[b].entries && usedBytes + sizeOf(key, record.data) <= budget[b].bytes
  }

  const full = (record: ClaimRecord): StoreUnavailableError => {
    const b = classes.indexOf(record.class) === 1 ? FREE : PAID
    const limit = budget[b]
    return new StoreUnavailableError(
      entries[b]! + 1 > limit.entries
        ? `${limit.what} (${limit.entries} live claims); raise ${limit.entriesOption} or use a shared store`
        : `${limit.what} (${limit.bytes} bytes of keys and data); raise ${limit.bytesOption} or use a shared store`,
    )
  }

  const put = (key: string, record: ClaimRecord, current: number | undefined) => {
    if (current !== undefined) remove(key, current)
    const code = codeOf(record)
    // Re-inserting keeps Map order roughly by write time, which is what the sweep walks.
    const value = record.expires * 16 + code * 4 + states.indexOf(record.state)
    packed.set(key, value)
    if (record.lease !== undefined || record.owner !== undefined || record.data !== undefined)
      extra.set(key, {
        ...(record.lease !== undefined && { lease: record.lease }),
        ...(record.owner !== undefined && { owner: record.owner }),
        ...(record.data !== undefined && { data: record.data }),
      })
    const b = budgetOf(value)
    entries[b]!++
    bytes[b]! += sizeOf(key, record.data)
  }

  /** Drops expired records; a bounded step on each write, a full pass when full. */
  const sweep = (at: number, steps: number) => {
    let seen = 0
    for (const [key, value] of packed) {
      if (seen++ >= steps) break
      if (expiryOf(value) <= at) remove(key, value)
    }
    sweepCursor++
  }

  /** Makes room for `record` (sweeping when needed) or throws that its budget is spent. */
  const admit = (key: string, record: ClaimRecord, current: number | undefined, at: number) => {
    codeOf(record)
    if (fits(key, record, current)) return
    sweep(at, Number.POSITIVE_INFINITY)
    if (!fits(key, record, current)) throw full(record)
  }

  return {
    get size() {
      return packed.size
    },
    get usage() {
      return {
        paid: { entries: entries[PAID]!, bytes: bytes[PAID]! },
        free: { entries: entries[FREE]!, bytes: bytes[FREE]! },
      }
    },
    async claim(key, record) {
      const at = now()
      if (live(key, at)) return false
      admit(key, record, undefined, at)
      if ((sweepCursor & 63) === 0 || packed.size > (maxEntries + maxFreeEntries) * 0.9) sweep(at, 32)
      else sweepCursor++
      put(key, record, undefined)
      return true
    },
    async transition(key, from, next, owner) {
      if (typeof owner !== 'string' || owner === '') throw new TypeError('memoryStore.transition: owner must be the non-empty token of the claim holder.')
      const at = now()
      const current = live(key, at)
      if (!current || current.state !== from || current.owner !== owner) return false
      const value = packed.get(key) as number
      if (next === null) remove(key, value)
      else {
        admit(key, next, value, at)
        put(key, next, value)
      }
      return true
    },
    async get(key) {
      return live(key, now())
    },
  }
}
