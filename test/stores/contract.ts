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

export function claimStoreContract(name: string, store: () => ClaimStore | Promise<ClaimStore>, options: ContractOptions = {}): void {
  const shortLife = options.shortLife ?? 300
  const concurrency = options.concurrency ?? 1000
  const key = (label: string) => `test:${label}:${randomUUID()}`
  const token = () => randomUUID()
  const minutes = (n: number) => Date.now() + n * 60_000

  describe(`ClaimStore contract: ${name}`, () => {
    test('C9 a key is claimed once; the winner’s record is what get returns', async () => {
      const s = await store()
      const k = key('once')
      const record: ClaimRecord = {
        state: 'pending',
        expires: minutes(5),
        lease: Date.now() + 30_000,
        owner: token(),
        data: '{"tx":"0x76ab","note":"é \\" ✓"}',
      }
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
      const results = await Promise.all(Array.from({ length: concurrency }, (_, i) => s.claim(k, { state: 'pending', expires, data: String(i) })))
      const winners = results.flatMap((won, i) => (won ? [i] : []))
      expect(winners).toHaveLength(1)
      // The stored record is the winner's, not a later loser's overwrite.
      expect((await s.get(k))?.data).toBe(String(winners[0]))
    })

    test(`C9 ${concurrency} concurrent takeovers of one holder: exactly one swaps, and only its token changes anything after`, async () => {
      const s = await store()
      const k = key('cas-race')
      const first = token()
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), lease: Date.now() + 30_000, owner: first })).toBe(true)
      const takers = Array.from({ length: concurrency }, () => token())
      // Every taker computes the same lease, as retries arriving in one millisecond would.
      const lease = Date.now() + 60_000
      const results = await Promise.all(
        takers.map((taker, i) => s.transition(k, 'pending', { state: 'pending', expires: minutes(5), lease, owner: taker, data: String(i) }, first)),
      )
      const winners = results.flatMap((won, i) => (won ? [i] : []))
      expect(winners).toHaveLength(1)
      const winner = takers[winners[0]!]!
      expect(await s.get(k)).toEqual({ state: 'pending', expires: expect.any(Number), lease, owner: winner, data: String(winners[0]) })
      // The holder that was taken over, and every losing taker, can no longer release or settle it.
      expect(await s.transition(k, 'pending', null, first)).toBe(false)
      expect(await s.transition(k, 'pending', { state: 'settled', expires: minutes(5) }, first)).toBe(false)
      const loser = takers.find((t) => t !== winner)!
      expect(await s.transition(k, 'pending', null, loser)).toBe(false)
      expect((await s.get(k))?.owner).toBe(winner)
      expect(await s.transition(k, 'pending', { state: 'settled', expires: minutes(5), owner: winner }, winner)).toBe(true)
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

    test('transition is a compare-and-swap on state and owner', async () => {
      const s = await store()
      const k = key('cas')
      const lease = Date.now() + 30_000
      const mine = token()
      const pending: ClaimRecord = { state: 'pending', expires: minutes(5), lease, owner: mine, data: 'mine' }
      expect(await s.claim(k, pending)).toBe(true)

      // Wrong state, or an owner that is not the holder (even with the same lease): nothing changes.
      expect(await s.transition(k, 'unknown', { state: 'settled', expires: minutes(5) }, mine)).toBe(false)
      expect(await s.transition(k, 'settled', null, mine)).toBe(false)
      expect(await s.transition(k, 'pending', { state: 'settled', expires: minutes(5) }, token())).toBe(false)
      expect(await s.transition(k, 'pending', null, `${mine}x`)).toBe(false)
      expect(await s.transition(k, 'pending', null, mine.slice(0, -1))).toBe(false)
      expect(await s.transition(k, 'pending', null, String(lease))).toBe(false)
      expect(await s.get(k)).toEqual(pending)

      // The holder's token: the swap happens, and the new record replaces the old one wholesale.
      const next = token()
      expect(await s.transition(k, 'pending', { state: 'pending', expires: minutes(5), lease, owner: next }, mine)).toBe(true)
      expect(await s.transition(k, 'pending', { state: 'settled', expires: minutes(5) }, mine)).toBe(false)
      expect(await s.transition(k, 'pending', { state: 'unknown', expires: minutes(5), owner: next, data: 'lookup' }, next)).toBe(true)
      expect(await s.get(k)).toEqual({ state: 'unknown', expires: expect.any(Number), owner: next, data: 'lookup' })

      // A record without an owner (a settled payment key) never changes again.
      expect(await s.transition(k, 'unknown', { state: 'settled', expires: minutes(10) }, next)).toBe(true)
      expect(await s.get(k)).toEqual({ state: 'settled', expires: expect.any(Number) })
      expect(await s.transition(k, 'settled', null, next)).toBe(false)
      expect(await s.transition(k, 'settled', { state: 'pending', expires: minutes(5), owner: next }, next)).toBe(false)
      expect((await s.get(k))?.state).toBe('settled')
    })

    test('transition refuses a missing or empty owner instead of skipping the comparison', async () => {
      const s = await store()
      const k = key('no-owner')
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), owner: token() })).toBe(true)
      await expect(s.transition(k, 'pending', null, '')).rejects.toThrow(/owner must be/)
      await expect(s.transition(k, 'pending', null, undefined as unknown as string)).rejects.toThrow(/owner must be/)
      expect((await s.get(k))?.state).toBe('pending')
    })

    test('C9 a payment key is released only by its own claim: a holder that was taken over cannot free it', async () => {
      const s = await store()
      const payment = key('tx')
      const [keys, stranger] = [token(), token()]
      expect(await s.claim(payment, { state: 'pending', expires: minutes(5), owner: keys })).toBe(true)
      expect(await s.transition(payment, 'pending', null, stranger)).toBe(false)
      expect(await s.claim(payment, { state: 'pending', expires: minutes(5), owner: stranger })).toBe(false)
      // Its own claim settles it, and then nobody frees it.
      expect(await s.transition(payment, 'pending', { state: 'settled', expires: minutes(5) }, keys)).toBe(true)
      expect(await s.transition(payment, 'pending', null, keys)).toBe(false)
      expect(await s.transition(payment, 'settled', null, keys)).toBe(false)
      expect(await s.claim(payment, { state: 'pending', expires: minutes(5), owner: stranger })).toBe(false)
      expect((await s.get(payment))?.state).toBe('settled')
    })

    test('transition sets the new expiry: a record moved to a short life expires', async () => {
      const s = await store()
      const k = key('reexpire')
      const mine = token()
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), owner: mine })).toBe(true)
      const expires = Date.now() + shortLife
      expect(await s.transition(k, 'pending', { state: 'settled', expires }, mine)).toBe(true)
      await sleep(expires - Date.now() + 100)
      expect(await s.get(k)).toBeUndefined()
      expect(await s.claim(k, { state: 'pending', expires: minutes(5) })).toBe(true)
    })

    test('release (transition to null) removes the claim, so it can be claimed again', async () => {
      const s = await store()
      const k = key('release')
      const mine = token()
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), lease: Date.now() + 30_000, owner: mine })).toBe(true)
      expect(await s.transition(k, 'pending', null, mine)).toBe(true)
      expect(await s.get(k)).toBeUndefined()
      expect(await s.transition(k, 'pending', null, mine)).toBe(false)
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), data: 'again' })).toBe(true)
      expect((await s.get(k))?.data).toBe('again')
    })

    test('a record’s class (free/paid budget) is kept like the rest, and a transition replaces it wholesale', async () => {
      const s = await store()
      const k = key('class')
      const lease = Date.now() + 30_000
      const mine = token()
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), lease, owner: mine, class: 'free' })).toBe(true)
      expect(await s.get(k)).toEqual({ state: 'pending', expires: expect.any(Number), lease, owner: mine, class: 'free' })
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), class: 'paid' })).toBe(false)
      expect(await s.transition(k, 'pending', { state: 'settled', expires: minutes(5), owner: mine, data: '{"kept":1}', class: 'free' }, mine)).toBe(true)
      expect(await s.get(k)).toEqual({ state: 'settled', expires: expect.any(Number), owner: mine, data: '{"kept":1}', class: 'free' })
      expect(await s.transition(k, 'settled', { state: 'settled', expires: minutes(5) }, mine)).toBe(true)
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
      const mine = token()
      expect(await s.claim(k, { state: 'pending', expires: minutes(5), owner: mine })).toBe(true)
      await expect(s.transition(k, 'pending', { state: 'settled', expires: minutes(5), class: 'gold' as never }, mine)).rejects.toThrow(/class/)
      expect((await s.get(k))?.state).toBe('pending')
    })

    test('get and transition of a missing or expired key find nothing', async () => {
      const s = await store()
      const missing = key('missing')
      expect(await s.get(missing)).toBeUndefined()
      expect(await s.transition(missing, 'pending', { state: 'settled', expires: minutes(5) }, token())).toBe(false)
      expect(await s.transition(missing, 'pending', null, token())).toBe(false)
      expect(await s.get(missing)).toBeUndefined()

      const expired = key('expired')
      const expires = Date.now() + shortLife
      const mine = token()
      expect(await s.claim(expired, { state: 'pending', expires, lease: 7, owner: mine })).toBe(true)
      await sleep(expires - Date.now() + 100)
      expect(await s.get(expired)).toBeUndefined()
      expect(await s.transition(expired, 'pending', { state: 'settled', expires: minutes(5) }, mine)).toBe(false)
      expect(await s.get(expired)).toBeUndefined()
    })
  })
}
