/**
 * In-process claim store. Atomic because JavaScript runs one callback at a time; bounded so it
 * never grows without limit: expired claims are swept, and when `maxEntries` live claims are
 * held a new claim fails closed (503) rather than forgetting a live one, which would let a used
 * credential pay twice.
 *
 * Records are packed to keep one million claims well under 256 MB: a number per key for
 * state + expiry, and side maps only for the few records that carry a lease, an owner or data
 * (settled payment keys carry none).
 */
import { type ClaimRecord, type ClaimState, type ClaimStore, StoreUnavailableError } from './store.js'

export type MemoryStoreOptions = {
  /** Most live claims held at once (default 1 000 000). */
  maxEntries?: number
  /** Clock, for tests. */
  now?: () => number
}

const states: readonly ClaimState[] = ['pending', 'unknown', 'settled']

export function memoryStore(options: MemoryStoreOptions = {}): ClaimStore & { readonly size: number } {
  const maxEntries = options.maxEntries ?? 1_000_000
  if (!Number.isSafeInteger(maxEntries) || maxEntries < 1)
    throw new Error(`memoryStore: maxEntries must be a positive integer, got ${String(options.maxEntries)}.`)
  const now = options.now ?? Date.now

  // expires * 4 + state index: one double per key (expires < 2^51 ms holds for millennia).
  const packed = new Map<string, number>()
  const extra = new Map<string, { lease?: number; owner?: string; data?: string }>()
  let sweepCursor = 0

  const unpack = (key: string, value: number): ClaimRecord => {
    const record: ClaimRecord = { state: states[value % 4] as ClaimState, expires: Math.floor(value / 4) }
    const more = extra.get(key)
    if (more?.lease !== undefined) record.lease = more.lease
    if (more?.owner !== undefined) record.owner = more.owner
    if (more?.data !== undefined) record.data = more.data
    return record
  }

  const live = (key: string, at: number): ClaimRecord | undefined => {
    const value = packed.get(key)
    if (value === undefined) return undefined
    if (Math.floor(value / 4) <= at) {
      remove(key)
      return undefined
    }
    return unpack(key, value)
  }

  const remove = (key: string) => {
    packed.delete(key)
    extra.delete(key)
  }

  const put = (key: string, record: ClaimRecord) => {
    // Re-inserting keeps Map order roughly by write time, which is what the sweep walks.
    packed.delete(key)
    packed.set(key, record.expires * 4 + states.indexOf(record.state))
    if (record.lease !== undefined || record.owner !== undefined || record.data !== undefined)
      extra.set(key, {
        ...(record.lease !== undefined && { lease: record.lease }),
        ...(record.owner !== undefined && { owner: record.owner }),
        ...(record.data !== undefined && { data: record.data }),
      })
    else extra.delete(key)
  }

  /** Drops expired records; a bounded step on each write, a full pass when full. */
  const sweep = (at: number, budget: number) => {
    let seen = 0
    for (const [key, value] of packed) {
      if (seen++ >= budget) break
      if (Math.floor(value / 4) <= at) remove(key)
    }
    sweepCursor++
  }

  return {
    get size() {
      return packed.size
    },
    async claim(key, record) {
      const at = now()
      if (live(key, at)) return false
      if (packed.size >= maxEntries) {
        sweep(at, Number.POSITIVE_INFINITY)
        if (packed.size >= maxEntries)
          throw new StoreUnavailableError(
            `memory store is full (${maxEntries} live claims); raise maxEntries or use a shared store`,
          )
      } else if ((sweepCursor & 63) === 0 || packed.size > maxEntries * 0.9) sweep(at, 32)
      else sweepCursor++
      put(key, record)
      return true
    },
    async transition(key, from, next, owner) {
      if (typeof owner !== 'string' || owner === '')
        throw new TypeError('memoryStore.transition: owner must be the non-empty token of the claim holder.')
      const current = live(key, now())
      if (!current || current.state !== from || current.owner !== owner) return false
      if (next === null) remove(key)
      else put(key, next)
      return true
    },
    async get(key) {
      return live(key, now())
    },
  }
}
