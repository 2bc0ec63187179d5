/**
 * Push: a transaction hash is public. Nobody may present a payment made by someone else, made for
 * another challenge, or already counted in pull mode, and no transfer may be counted for two
 * challenges, not even after the first challenge's claims have lapsed.
 *
 * "Lapsed" is reached without waiting: the shops share a memory store whose clock runs ahead of
 * the wall clock, which is what the store would see after that much real time.
 */
import type { Address } from 'viem'
import { beforeAll, describe, expect, test } from 'vitest'
import { balanceOf, fundedAccount, pathUsd } from '../../scripts/local-chain.js'
import { memoryStore } from '../../src/index.js'
import { challengeMemo } from '../../src/tempo/index.js'
import { credentialFor } from '../helpers/http.js'
import { craft, transferCall } from '../tempo/helpers.js'
import { broadcast, expectDelivered, expectRefusal, fresh, mppxPays, rpcUrl, shop, wireOf, withCredential } from './support.js'

let payer: Awaited<ReturnType<typeof fundedAccount>>
let victim: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  payer = await fundedAccount(rpcUrl(), { funder: 2, amount: '20' })
  victim = await fundedAccount(rpcUrl(), { funder: 2, amount: '20' })
})

/** Two shops of one operator (same secret, realm, recipient, store): A's challenges live 5 s, B's 300 s. */
function twinShops(options: { amountA?: string; amountB?: string; splitsA?: { amount: string; recipient: Address }[] } = {}) {
  let skew = 0
  const store = memoryStore({ now: () => Date.now() + skew })
  const recipient = fresh()
  const a = shop({ recipient, store, expires: 5, amount: options.amountA, tempo: { ...(options.splitsA && { splits: options.splitsA }) } })
  const b = shop({ recipient, store, expires: 300, amount: options.amountB })
  return { a, b, recipient, lapse: (ms: number) => (skew += ms) }
}

describe("T5: someone else's payment", () => {
  test("T5: a victim's public transfer, made for the victim's own challenge, presented as a hash → refused, and the victim can still use it", async () => {
    const s = shop()
    const victimCredential = await mppxPays(s, victim, 'push')
    const { hash } = wireOf(victimCredential).payload as { hash: string }
    const { challenge } = await s.challenge()
    const stolen = credentialFor(challenge, { type: 'hash', hash })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(stolen)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /no matching transfer carries this challenge's MPP attribution memo/,
      },
      { watch: [{ address: victim.address }], credentials: [stolen] },
    )
    // The attempt did not burn the victim's payment.
    await expectDelivered(await s.fetch('/paid', withCredential(victimCredential)))
  })

  test('T5: a plain transfer of the exact amount to the recipient (no memo) → refused', async () => {
    const s = shop()
    const { hash } = await broadcast(craft(victim.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] }))
    const { challenge } = await s.challenge()
    const stolen = credentialFor(challenge, { type: 'hash', hash })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(stolen)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /MPP attribution memo/,
      },
      { credentials: [stolen] },
    )
  })

  test('T5: a hash that paid challenge A, presented for challenge B even after A has lapsed → refused', async () => {
    const { a, b, lapse } = twinShops()
    const paidA = await mppxPays(a, payer, 'push')
    await expectDelivered(await a.fetch('/paid', withCredential(paidA)))
    lapse(120_000)
    const { challenge } = await b.challenge()
    const again = credentialFor(challenge, wireOf(paidA).payload)
    await expectRefusal(
      b,
      () => b.fetch('/paid', withCredential(again)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /MPP attribution memo/,
      },
      { watch: [{ address: payer.address }], credentials: [again] },
    )
  })

  test('T5 T3: a hash presented to a route that sponsors fees (pull only) → refused', async () => {
    const sponsor = await fundedAccount(rpcUrl(), { funder: 2, amount: '1' })
    const s = shop({ tempo: { feePayer: { account: sponsor } } })
    const { challenge } = await s.challenge()
    const { hash } = await broadcast(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n, challengeMemo(challenge))] }))
    const credential = credentialFor(challenge, { type: 'hash', hash })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /this route sponsors fees, so it takes only pull payments/,
      },
      { credentials: [credential] },
    )
  })

  test('T5: a push credential on a route that charges only when its handler succeeds → refused (already settled by the client)', async () => {
    const s = shop()
    const { challenge } = await s.challenge('/after')
    const { hash } = await broadcast(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n, challengeMemo(challenge))] }))
    const credential = credentialFor(challenge, { type: 'hash', hash })
    await expectRefusal(
      s,
      () => s.fetch('/after', withCredential(credential)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /does not accept push payments|already settled by the client/,
      },
      { credentials: [credential] },
    )
  })
})

describe('T5 C9: a transaction first accepted in pull mode', () => {
  test('T5 C9: its hash presented for the challenge it paid → refused', async () => {
    const s = shop()
    const pulled = await mppxPays(s, payer, 'pull')
    const delivered = await s.fetch('/paid', withCredential(pulled))
    const reference = JSON.parse(Buffer.from(delivered.headers.get('payment-receipt')!, 'base64url').toString()).reference as string
    await expectDelivered(delivered)
    const wire = wireOf(pulled)
    const again = credentialFor(wire.challenge as never, { type: 'hash', hash: reference })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(again)),
      {
        status: 402,
        kind: 'invalid-challenge',
        detail: /already been used/,
      },
      { watch: [{ address: payer.address }], credentials: [again] },
    )
  })

  test('T5 C9: its hash presented for a fresh challenge → refused', async () => {
    const s = shop()
    const pulled = await mppxPays(s, payer, 'pull')
    const delivered = await s.fetch('/paid', withCredential(pulled))
    const reference = JSON.parse(Buffer.from(delivered.headers.get('payment-receipt')!, 'base64url').toString()).reference as string
    const { challenge } = await s.challenge()
    const again = credentialFor(challenge, { type: 'hash', hash: reference })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(again)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /MPP attribution memo|already been used/,
      },
      { credentials: [again] },
    )
  })

  test("T5 T2 C9: a pull payment carrying another challenge's memo is refused (else its hash would pay that challenge too once its own claims lapse)", async () => {
    const { a, b, recipient } = twinShops()
    const { challenge: forB } = await b.challenge()
    const { challenge: forA } = await a.challenge()
    // Pays A by pull, but with B's attribution memo on the transfer.
    const raw = craft(payer.privateKey, {
      calls: [transferCall(pathUsd, recipient, 10_000n, challengeMemo(forB))],
      validBefore: Math.floor(Date.parse(forA.expires!) / 1000),
    })
    const pulled = credentialFor(forA, { type: 'transaction', signature: raw })
    await expectRefusal(
      a,
      () => a.fetch('/paid', withCredential(pulled)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /call 0 carries another challenge's MPP attribution memo; a transaction pays exactly one challenge/,
      },
      { watch: [{ address: payer.address }], credentials: [pulled] },
    )
    // With its own challenge's memo (what mppx writes) the same payment is fine.
    const own = credentialFor(forA, {
      type: 'transaction',
      signature: craft(payer.privateKey, {
        calls: [transferCall(pathUsd, recipient, 10_000n, challengeMemo(forA))],
        validBefore: Math.floor(Date.parse(forA.expires!) / 1000),
      }),
    })
    await expectDelivered(await a.fetch('/paid', withCredential(own)))
  })
})

describe('T5 C9: one transfer counted for two challenges', () => {
  test('T5 C9: a pushed transaction carrying the memos of two challenges pays neither (its transfers would count for both)', async () => {
    // A charges 2000 + a 2000 split to the same recipient; B charges 2000. The transaction moves
    // 2000 (memo A) + 2000 (memo B): before the fix, A took both transfers, and once A's claims
    // had lapsed B took the second one again, delivering 6000 for 4000.
    const recipient = fresh()
    let skew = 0
    const store = memoryStore({ now: () => Date.now() + skew })
    const a = shop({ recipient, store, expires: 5, amount: '0.004', tempo: { splits: [{ amount: '0.002', recipient }] } })
    const b = shop({ recipient, store, expires: 300, amount: '0.002' })
    const { challenge: forA } = await a.challenge()
    const { challenge: forB } = await b.challenge()
    const { hash } = await broadcast(
      craft(payer.privateKey, {
        calls: [transferCall(pathUsd, recipient, 2_000n, challengeMemo(forA)), transferCall(pathUsd, recipient, 2_000n, challengeMemo(forB))],
      }),
    )
    expect(await balanceOf(rpcUrl(), recipient)).toBe(4_000n)
    const both =
      /the transaction also pays another challenge \(log \d+ carries another challenge's MPP attribution memo\); one transaction pays exactly one challenge/
    const forAHash = credentialFor(forA, { type: 'hash', hash })
    await expectRefusal(
      a,
      () => a.fetch('/paid', withCredential(forAHash)),
      { status: 402, kind: 'verification-failed', detail: both },
      { credentials: [forAHash] },
    )
    skew += 70_000
    const forBHash = credentialFor(forB, { type: 'hash', hash })
    await expectRefusal(
      b,
      () => b.fetch('/paid', withCredential(forBHash)),
      { status: 402, kind: 'verification-failed', detail: both },
      { credentials: [forBHash] },
    )
  })
})
