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
