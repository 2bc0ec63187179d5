import { describe, expect, test } from 'vitest'
import { memoryStore } from '../../src/stores/memory.js'
import { StoreUnavailableError } from '../../src/stores/store.js'
import { claimStoreContract } from './contract.js'

claimStoreContract('memory', () => memoryStore())

describe('memory store bounds', () => {
  test('refuses construction with a maxEntries that is not a positive integer', () => {
    expect(() => memoryStore({ maxEntries: 0 })).toThrow(/maxEntries must be a positive integer/)
    expect(() => memoryStore({ maxEntries: 1.5 })).toThrow(/maxEntries must be a positive integer/)
  })

  test('C9 when full of live claims a new claim fails closed instead of forgetting one', async () => {
    let clock = 1_000_000
    const store = memoryStore({ maxEntries: 3, now: () => clock })
    for (const key of ['a', 'b', 'c']) expect(await store.claim(key, { state: 'settled', expires: clock + 1000 })).toBe(true)
    await expect(store.claim('d', { state: 'pending', expires: clock + 1000 })).rejects.toThrow(StoreUnavailableError)
    await expect(store.claim('d', { state: 'pending', expires: clock + 1000 })).rejects.toThrow(/full \(3 live claims\)/)
    // Every live claim is still there: a used key stays refused.
    for (const key of ['a', 'b', 'c']) expect(await store.claim(key, { state: 'pending', expires: clock + 1000 })).toBe(false)
    expect(store.size).toBe(3)
    // A claim already held is answered false, not refused as full.
    clock += 1
    expect(await store.get('a')).toEqual({ state: 'settled', expires: 1_001_000 })
  })

  test('expired claims are swept to make room when full', async () => {
    let clock = 5_000
    const store = memoryStore({ maxEntries: 4, now: () => clock })
    expect(await store.claim('old-1', { state: 'settled', expires: clock + 10 })).toBe(true)
    expect(await store.claim('old-2', { state: 'settled', expires: clock + 10 })).toBe(true)
    expect(await store.claim('old-3', { state: 'pending', expires: clock + 10, lease: 1, data: 'x' })).toBe(true)
    expect(await store.claim('keep', { state: 'settled', expires: clock + 1_000 })).toBe(true)
    expect(store.size).toBe(4)
    clock += 10 // expires is exclusive: at `expires` the record is gone
    expect(await store.claim('new', { state: 'pending', expires: clock + 1_000 })).toBe(true)
    expect(store.size).toBe(2)
    expect(await store.get('keep')).toEqual({ state: 'settled', expires: 6_000 })
    expect(await store.get('old-3')).toBeUndefined()
    expect(await store.claim('old-1', { state: 'pending', expires: clock + 1_000 })).toBe(true)
  })

  test('writes sweep expired claims a little at a time, so an idle-key backlog does not grow', async () => {
    let clock = 0
    const store = memoryStore({ maxEntries: 1_000_000, now: () => clock })
    for (let i = 0; i < 500; i++) await store.claim(`stale-${i}`, { state: 'settled', expires: clock + 5 })
    expect(store.size).toBe(500)
    clock += 100
    // Never touching the stale keys again: ordinary claims of other keys clear them.
    for (let i = 0; i < 2_000; i++) await store.claim(`fresh-${i}`, { state: 'settled', expires: clock + 1_000_000 })
    expect(store.size).toBe(2_000)
  })
})

describe('memory store budgets: free and paid claims, entries and bytes', () => {
  const later = () => Date.now() + 60_000

  test('refuses construction with byte or free budgets that are not positive integers', () => {
    expect(() => memoryStore({ maxBytes: 0 })).toThrow(/maxBytes must be a positive integer/)
    expect(() => memoryStore({ maxFreeEntries: -1 })).toThrow(/maxFreeEntries must be a positive integer/)
    expect(() => memoryStore({ maxFreeBytes: 2.5 })).toThrow(/maxFreeBytes must be a positive integer/)
  })

  test('free claims fill only their own entries; paid claims keep theirs, and the reverse', async () => {
    const store = memoryStore({ maxEntries: 3, maxFreeEntries: 2 })
    expect(await store.claim('f1', { state: 'settled', expires: later(), owner: 'o', class: 'free' })).toBe(true)
    expect(await store.claim('f2', { state: 'settled', expires: later(), class: 'free' })).toBe(true)
    await expect(store.claim('f3', { state: 'pending', expires: later(), class: 'free' })).rejects.toThrow(
      "memory store's budget for free (zero-amount) claims is full (2 live claims); raise maxFreeEntries or use a shared store",
    )
    // Paid claims (explicit or unclassed) still have all of theirs.
    expect(await store.claim('p1', { state: 'settled', expires: later(), class: 'paid' })).toBe(true)
    expect(await store.claim('p2', { state: 'settled', expires: later() })).toBe(true)
    expect(await store.claim('p3', { state: 'pending', expires: later() })).toBe(true)
    await expect(store.claim('p4', { state: 'pending', expires: later() })).rejects.toThrow(/full \(3 live claims\); raise maxEntries/)
    expect(store.usage).toEqual({ paid: { entries: 3, bytes: 6 }, free: { entries: 2, bytes: 4 } })
    // Releasing a free claim makes room for a free one only.
    expect(await store.transition('f1', 'settled', null, 'o')).toBe(true)
    await expect(store.claim('p4', { state: 'pending', expires: later() })).rejects.toThrow(StoreUnavailableError)
    expect(await store.claim('f3', { state: 'pending', expires: later(), class: 'free' })).toBe(true)
  })

  test('bytes count keys and data; a write that would pass the byte budget is refused and changes nothing', async () => {
    const store = memoryStore({ maxBytes: 100, maxFreeBytes: 40 })
    const data = 'd'.repeat(40)
    expect(await store.claim('key-1', { state: 'pending', expires: later(), lease: 1, owner: 'o1', data })).toBe(true)
    expect(store.usage.paid.bytes).toBe(45)
    expect(await store.claim('key-2', { state: 'pending', expires: later(), lease: 2, owner: 'o2', data })).toBe(true)
    await expect(store.claim('key-3', { state: 'pending', expires: later(), data: 'x'.repeat(6) })).rejects.toThrow(
      'memory store is full (100 bytes of keys and data); raise maxBytes or use a shared store',
    )
    // A transition that grows a record past the budget (a kept answer, say) is refused...
    await expect(store.transition('key-1', 'pending', { state: 'settled', expires: later(), data: data + 'x'.repeat(11) }, 'o1')).rejects.toThrow(
      /full \(100 bytes/,
    )
    expect(await store.get('key-1')).toEqual({ state: 'pending', expires: expect.any(Number), lease: 1, owner: 'o1', data })
    // ...one that fits, or shrinks it, goes through and is counted.
    expect(await store.transition('key-1', 'pending', { state: 'settled', expires: later(), data: data + 'x'.repeat(10) }, 'o1')).toBe(true)
    expect(store.usage.paid.bytes).toBe(100)
    expect(await store.transition('key-2', 'pending', { state: 'settled', expires: later() }, 'o2')).toBe(true)
    expect(store.usage.paid.bytes).toBe(60)
    // Free bytes are their own: a free record over 40 is refused while paid room is left.
    await expect(store.claim('free-1', { state: 'pending', expires: later(), class: 'free', data })).rejects.toThrow(
      "memory store's budget for free (zero-amount) claims is full (40 bytes of keys and data); raise maxFreeBytes",
    )
    expect(await store.claim('free-1', { state: 'pending', expires: later(), class: 'free', data: 'x'.repeat(34) })).toBe(true)
    expect(store.usage).toEqual({ paid: { entries: 2, bytes: 60 }, free: { entries: 1, bytes: 40 } })
  })

  test('a transition that moves a record to the other class is counted against that class', async () => {
    const store = memoryStore({ maxEntries: 5, maxFreeEntries: 1 })
    expect(await store.claim('a', { state: 'pending', expires: later(), owner: 'o', class: 'free' })).toBe(true)
    expect(await store.claim('b', { state: 'pending', expires: later(), owner: 'o' })).toBe(true)
    await expect(store.transition('b', 'pending', { state: 'settled', expires: later(), class: 'free' }, 'o')).rejects.toThrow(/free \(zero-amount\)/)
    expect(await store.transition('a', 'pending', { state: 'settled', expires: later(), class: 'paid' }, 'o')).toBe(true)
    expect(store.usage).toEqual({ paid: { entries: 2, bytes: 2 }, free: { entries: 0, bytes: 0 } })
    expect(await store.transition('b', 'pending', { state: 'settled', expires: later(), class: 'free' }, 'o')).toBe(true)
    expect(store.usage).toEqual({ paid: { entries: 1, bytes: 1 }, free: { entries: 1, bytes: 1 } })
  })

  test('expired claims are swept to make room in a full byte budget, and their bytes given back', async () => {
    let clock = 10_000
    const store = memoryStore({ maxBytes: 30, now: () => clock })
    expect(await store.claim('old', { state: 'settled', expires: clock + 5, data: 'y'.repeat(20) })).toBe(true)
    await expect(store.claim('new', { state: 'pending', expires: clock + 1_000, data: 'z'.repeat(20) })).rejects.toThrow(/bytes/)
    clock += 5
    expect(await store.claim('new', { state: 'pending', expires: clock + 1_000, data: 'z'.repeat(20) })).toBe(true)
    expect(store.usage.paid).toEqual({ entries: 1, bytes: 23 })
  })
})
