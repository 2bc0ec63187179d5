/**
 * Replay: a credential, a signed transaction or a pushed hash pays exactly once, whether it is
 * sent again later, 50 times at once, or wrapped in a fresh challenge.
 */
import { beforeAll, describe, expect, test } from 'vitest'
import { balanceOf, fundedAccount, pathUsd } from '../../scripts/local-chain.js'
import { challengeMemo } from '../../src/tempo/index.js'
import { credentialFor } from '../helpers/http.js'
import { craft, transferCall } from '../tempo/helpers.js'
import { broadcast, expectDelivered, expectRefusal, mppxPays, rpcUrl, shop, wireOf, withCredential } from './support.js'

let payer: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  payer = await fundedAccount(rpcUrl(), { funder: 0, amount: '20' })
})

const used = /already been used|already in progress/

describe.each(['pull', 'push'] as const)('replay of a %s credential', (mode) => {
  test(`C9 I2: the same ${mode} credential twice → one delivery, the second is refused`, async () => {
    const s = shop()
    const authorization = await mppxPays(s, payer, mode)
    await expectDelivered(await s.fetch('/paid', withCredential(authorization)))
    expect(s.runs()).toBe(1)
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(authorization)),
      { status: 402, kind: 'invalid-challenge', detail: /this challenge has already been used; request a new one/ },
      { watch: [{ address: payer.address }], credentials: [authorization] },
    )
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
  })

  test(`C9: the same ${mode} credential 50 times in parallel → exactly one delivery, 49 refusals without receipt`, async () => {
    const s = shop()
    const authorization = await mppxPays(s, payer, mode)
    const before = await balanceOf(rpcUrl(), payer.address)
    const responses = await Promise.all(Array.from({ length: 50 }, () => s.fetch('/paid', withCredential(authorization))))
    const delivered = responses.filter((r) => r.status === 200)
    expect(delivered).toHaveLength(1)
    expect(delivered[0]!.headers.get('payment-receipt')).toBeTruthy()
    for (const response of responses.filter((r) => r.status !== 200)) {
      expect(response.status).toBe(402)
      expect(response.headers.get('payment-receipt')).toBeNull()
      const body = (await response.json()) as { type: string; detail: string }
      expect(body.type).toBe('https://paymentauth.org/problems/invalid-challenge')
      expect(body.detail).toMatch(used)
      expect(JSON.stringify(body)).not.toContain(authorization.slice(8, 60))
    }
    expect(s.runs()).toBe(1)
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
    // Pull: one transaction left the payer's account (the amount and one fee, in pathUSD).
    const spent = before - (await balanceOf(rpcUrl(), payer.address))
    if (mode === 'pull') expect(spent >= 10_000n && spent < 20_000n).toBe(true)
  })
})

describe('one payment, several challenges', () => {
  test('C9 T2: a signed transaction that paid one challenge, wrapped in a fresh challenge → refused, not broadcast again', async () => {
    const s = shop()
    // Without a memo, only the claim on the transaction stops it.
    const { challenge: first } = await s.challenge()
    const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
    await expectDelivered(await s.fetch('/paid', withCredential(credentialFor(first, { type: 'transaction', signature: raw }))))
    const { challenge } = await s.challenge()
    const again = credentialFor(challenge, { type: 'transaction', signature: raw })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(again)),
      { status: 402, kind: 'verification-failed', detail: /this payment has already been used for another request/ },
      { watch: [{ address: payer.address }], credentials: [again] },
    )
  })

  test('C9 T2: an mppx transaction (memo bound to its challenge) wrapped in a fresh challenge → refused for the memo', async () => {
    const s = shop()
    const first = await mppxPays(s, payer, 'pull')
    await expectDelivered(await s.fetch('/paid', withCredential(first)))
    const { challenge } = await s.challenge()
    const again = credentialFor(challenge, wireOf(first).payload)
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(again)),
      { status: 402, kind: 'verification-failed', detail: /call 0 carries another challenge's MPP attribution memo/ },
      { watch: [{ address: payer.address }], credentials: [again] },
    )
  })

  test('C9 T2: one signed transaction raced for two challenges at once → one delivery', async () => {
    const s = shop()
    const [a, b] = [await s.challenge(), await s.challenge()]
    const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
    const credentials = [
      credentialFor(a.challenge, { type: 'transaction', signature: raw }),
      credentialFor(b.challenge, { type: 'transaction', signature: raw }),
    ]
    const responses = await Promise.all(credentials.map((c) => s.fetch('/paid', withCredential(c))))
    const statuses = responses.map((r) => r.status).sort()
    expect(statuses).toEqual([200, 402])
    const refused = responses.find((r) => r.status === 402)!
    expect(refused.headers.get('payment-receipt')).toBeNull()
    expect(((await refused.json()) as { detail: string }).detail).toMatch(/already been used for another request/)
    expect(s.runs()).toBe(1)
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
  })

  test('C9 T5: a pushed hash that paid one challenge, presented with another → refused', async () => {
    const s = shop()
    const first = await mppxPays(s, payer, 'push')
    await expectDelivered(await s.fetch('/paid', withCredential(first)))
    const { challenge } = await s.challenge()
    const again = credentialFor(challenge, wireOf(first).payload)
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(again)),
      { status: 402, kind: 'verification-failed', detail: /attribution memo|already been used/ },
      { credentials: [again] },
    )
  })

  test('C9 T5: a pushed hash raced for its own challenge and another one → one delivery', async () => {
    const s = shop()
    const [a, b] = [await s.challenge(), await s.challenge()]
    const { hash } = await broadcast(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n, challengeMemo(a.challenge))] }))
    const credentials = [a, b].map(({ challenge }) => credentialFor(challenge, { type: 'hash', hash }))
    const responses = await Promise.all(credentials.map((c) => s.fetch('/paid', withCredential(c))))
    expect(responses.map((r) => r.status)).toEqual([200, 402])
    expect(s.runs()).toBe(1)
  })
})

describe('replay against a route that settles after its handler', () => {
  test('C9: a pull credential that paid a settle-after route, sent again → refused, charged once', async () => {
    const s = shop()
    const authorization = await mppxPays(s, payer, 'pull', '/after')
    await expectDelivered(await s.fetch('/after', withCredential(authorization)))
    await expectRefusal(
      s,
      () => s.fetch('/after', withCredential(authorization)),
      { status: 402, kind: 'invalid-challenge', detail: /already been used/ },
      { watch: [{ address: payer.address }], credentials: [authorization] },
    )
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
  })
})
