/**
 * The behaviour every ClaimStore backend owes the settlement layer, run against each backend
 * (memory, redis, durable-object). Keys are random per test, so one store serves the suite.
 */
import { randomUUID } from 'node:crypto'
import { describe, expect, test } from 'vitest'
import type { ClaimRecord, ClaimStore } from '../../src/stores/store.js'

export type ContractOptions = {
  /** Lifetime given to records in the expiry tests (ms); long enough to cross a network hop. */
  shortLife?: number
  /** How many concurrent callers race for one key. */
  concurrency?: number
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export function claimStoreContract(
  name: string,
  store: () => ClaimStore | Promise<ClaimStore>,
  options: ContractOptions = {},
): void {
  const shortLife = options.shortLife ?? 300
  const concurrency = options.concurrency ?? 1000
  const key = (label: string) => `test:${label}:${randomUUID()}`
  const minutes = (n: number) => Date.now() + n * 60_000

  describe(`ClaimStore contract: ${name}`, () => {
    test('C9 a key is claimed once; the winner’s record is what get returns', async () => {
      const s = await store()
      const k = key('once')
      const record: ClaimRecord = { state: 'pending', expires: minutes(5), lease: Date.now() + 30_000, data: '{"tx":"0x76ab","note":"é \\" ✓"}' }
      expect(await s.claim(k, record)).toBe(true)
      expect(await s.claim(k, { state: 'pending', expires: minutes(5) })).toBe(false)
      expect(await s.claim(k, { state: 'settled', expires: minutes(5) })).toBe(false)
      expect(await s.get(k)).toEqual(record)
    })

    test('distinct keys do not block each other', async () => {
      const s = await store()
      const [a, b] = [key('a'), key('b')]
      expect(await s.claim(a, { state: 'pending', expires: minutes(5) })).toBe(true)
      expect(await s.claim(b, { state: 'settled', expires: minutes(5) })).toBe(true)
      expect((await s.get(a))?.state).toBe('pending')
      expect((await s.get(b))?.state).toBe('settled')
    })

    test(`C9 ${concurrency} concurrent claims of one key: exactly one wins`, async () => {
      const s = await store()
      const k = key('race')
      const expires = minutes(5)
      const results = await Promise.all(
        Array.from({ length: concurrency }, (_, i) => s.claim(k, { state: 'pending', expires, data: String(i) })),
      )
      const winners = results.flatMap((won, i) => (won ? [i] : []))
      expect(winners).toHaveLength(1)
      // The stored record is the winner's, not a later loser's overwrite.
      expect((await s.get(k))?.data).toBe(String(winners[0]))
    })

    test(`C9 ${concurrency} concurrent transitions from one state: exactly one swaps`, async () => {
      const s = await store()
      const k = key('cas-race')
      const lease = Date.now() + 30_000
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), lease })).toBe(true)
      const results = await Promise.all(
        Array.from({ length: concurrency }, (_, i) =>
          s.transition(k, 'pending', { state: 'unknown', expires: minutes(5), data: String(i) }, lease),
        ),
      )
      const winners = results.flatMap((won, i) => (won ? [i] : []))
      expect(winners).toHaveLength(1)
      expect(await s.get(k)).toEqual({ state: 'unknown', expires: expect.any(Number), data: String(winners[0]) })
    })

    test('expiry frees the key: get forgets it and a new claim wins', async () => {
      const s = await store()
      const k = key('expiry')
      const expires = Date.now() + shortLife
      expect(await s.claim(k, { state: 'settled', expires })).toBe(true)
      expect(await s.claim(k, { state: 'pending', expires: minutes(5) })).toBe(false)
      await sleep(expires - Date.now() + 100)
      expect(await s.get(k)).toBeUndefined()
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), data: 'second' })).toBe(true)
      expect((await s.get(k))?.data).toBe('second')
    })

    test('transition is a compare-and-swap on state and lease', async () => {
      const s = await store()
      const k = key('cas')
      const lease = Date.now() + 30_000
      const pending: ClaimRecord = { state: 'pending', expires: minutes(5), lease, data: 'mine' }
      expect(await s.claim(k, pending)).toBe(true)

      // Wrong state, or a lease that is not ours: nothing changes.
      expect(await s.transition(k, 'unknown', { state: 'settled', expires: minutes(5) })).toBe(false)
      expect(await s.transition(k, 'settled', null)).toBe(false)
      expect(await s.transition(k, 'pending', { state: 'settled', expires: minutes(5) }, lease + 1)).toBe(false)
      expect(await s.transition(k, 'pending', null, lease - 1)).toBe(false)
      expect(await s.get(k)).toEqual(pending)

      // Our lease: the swap happens, and the new record replaces the old one wholesale.
      const takenOver = Date.now() + 60_000
      expect(await s.transition(k, 'pending', { state: 'pending', expires: minutes(5), lease: takenOver }, lease)).toBe(true)
      expect(await s.transition(k, 'pending', { state: 'settled', expires: minutes(5) }, lease)).toBe(false)
      expect(await s.transition(k, 'pending', { state: 'unknown', expires: minutes(5), data: 'lookup' }, takenOver)).toBe(true)
      expect(await s.get(k)).toEqual({ state: 'unknown', expires: expect.any(Number), data: 'lookup' })

      // Without a lease only the state is compared.
      expect(await s.transition(k, 'unknown', { state: 'settled', expires: minutes(10) })).toBe(true)
      expect((await s.get(k))?.state).toBe('settled')
      expect(await s.transition(k, 'unknown', null)).toBe(false)
    })

    test('transition sets the new expiry: a record moved to a short life expires', async () => {
      const s = await store()
      const k = key('reexpire')
      expect(await s.claim(k, { state: 'pending', expires: minutes(5) })).toBe(true)
      const expires = Date.now() + shortLife
      expect(await s.transition(k, 'pending', { state: 'settled', expires })).toBe(true)
      await sleep(expires - Date.now() + 100)
      expect(await s.get(k)).toBeUndefined()
      expect(await s.claim(k, { state: 'pending', expires: minutes(5) })).toBe(true)
    })

    test('release (transition to null) removes the claim, so it can be claimed again', async () => {
      const s = await store()
      const k = key('release')
      const lease = Date.now() + 30_000
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), lease })).toBe(true)
      expect(await s.transition(k, 'pending', null, lease)).toBe(true)
      expect(await s.get(k)).toBeUndefined()
      expect(await s.transition(k, 'pending', null, lease)).toBe(false)
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), data: 'again' })).toBe(true)
      expect((await s.get(k))?.data).toBe('again')
    })

    test('a record’s class (free/paid budget) is kept like the rest, and a transition replaces it wholesale', async () => {
      const s = await store()
      const k = key('class')
      const lease = Date.now() + 30_000
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), lease, class: 'free' })).toBe(true)
      expect(await s.get(k)).toEqual({ state: 'pending', expires: expect.any(Number), lease, class: 'free' })
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), class: 'paid' })).toBe(false)
      expect(await s.transition(k, 'pending', { state: 'settled', expires: minutes(5), data: '{"kept":1}', class: 'free' }, lease)).toBe(true)
      expect(await s.get(k)).toEqual({ state: 'settled', expires: expect.any(Number), data: '{"kept":1}', class: 'free' })
      expect(await s.transition(k, 'settled', { state: 'settled', expires: minutes(5) })).toBe(true)
      expect(await s.get(k)).toEqual({ state: 'settled', expires: expect.any(Number) })

      const paid = key('class-paid')
      expect(await s.claim(paid, { state: 'settled', expires: minutes(5), class: 'paid' })).toBe(true)
      expect((await s.get(paid))?.class).toBe('paid')
    })

    test('a record of an unknown class is refused, not stored', async () => {
      const s = await store()
      const k = key('bad-class')
      await expect(s.claim(k, { state: 'pending', expires: minutes(5), class: 'gold' as never })).rejects.toThrow(/class/)
      expect(await s.get(k)).toBeUndefined()
      expect(await s.claim(k, { state: 'pending', expires: minutes(5) })).toBe(true)
      await expect(s.transition(k, 'pending', { state: 'settled', expires: minutes(5), class: 'gold' as never })).rejects.toThrow(/class/)
      expect((await s.get(k))?.state).toBe('pending')
    })

    test('get and transition of a missing or expired key find nothing', async () => {
      const s = await store()
      const missing = key('missing')
      expect(await s.get(missing)).toBeUndefined()
      expect(await s.transition(missing, 'pending', { state: 'settled', expires: minutes(5) })).toBe(false)
      expect(await s.transition(missing, 'pending', null)).toBe(false)
      expect(await s.get(missing)).toBeUndefined()

      const expired = key('expired')
      const expires = Date.now() + shortLife
      expect(await s.claim(expired, { state: 'pending', expires, lease: 7 })).toBe(true)
      await sleep(expires - Date.now() + 100)
      expect(await s.get(expired)).toBeUndefined()
      expect(await s.transition(expired, 'pending', { state: 'settled', expires: minutes(5) }, 7)).toBe(false)
      expect(await s.get(expired)).toBeUndefined()
    })
  })
}
