/**
 * Proof (T6): a zero-amount route asks the client to prove control of an address by signing the
 * challenge (EIP-712, domain {name "MPP", version "3", chainId}). A proof must answer exactly
 * that challenge, on that chain, signed by the address named in `source`, and only where the
 * route charges nothing.
 */
import type { Hex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { describe, expect, test } from 'vitest'
import { pathUsd } from '../../scripts/local-chain.js'
import type { Challenge } from '../../src/index.js'
import { credentialFor } from '../helpers/http.js'
import { craft, transferCall } from '../tempo/helpers.js'
import { expectDelivered, expectRefusal, mppxPays, proofOf, shop, source, withCredential } from './support.js'

const alice = privateKeyToAccount(generatePrivateKey())
const mallory = privateKeyToAccount(generatePrivateKey())

/** The proof typed data, written from the Tempo charge draft (independently of src/). */

function proofCredential(challenge: Challenge, signature: Hex, from = source(alice.address)): string {
  return credentialFor(challenge, { type: 'proof', signature }, { source: from })
}

describe('T6: proofs answer exactly their challenge', () => {
  test('T6: a hand-made proof for this challenge delivers (control), and the same proof again is refused (C9)', async () => {
    const s = shop({ amount: '0' })
    const { challenge } = await s.challenge()
    const credential = proofCredential(challenge, await proofOf(alice, challenge))
    const response = await s.fetch('/paid', withCredential(credential))
    await expectDelivered(response)
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'invalid-challenge',
        detail: /this challenge has already been used/,
      },
      { credentials: [credential] },
    )
  })

  test('T6 C9: an mppx proof replayed → refused', async () => {
    const s = shop({ amount: '0' })
    const credential = await mppxPays(s, alice, 'pull')
    await expectDelivered(await s.fetch('/paid', withCredential(credential)))
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      { status: 402, kind: 'invalid-challenge', detail: /already been used/ },
      { credentials: [credential] },
    )
  })

  test('T6: a proof on a route that charges an amount → refused (a signature pays nothing)', async () => {
    const s = shop()
    const { challenge } = await s.challenge()
    const credential = proofCredential(challenge, await proofOf(alice, challenge))
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /proof credentials only answer zero-amount challenges; this route charges an amount/,
      },
      { credentials: [credential] },
    )
  })

  test('T6: a proof signed for another chain (EIP-712 domain) → refused', async () => {
    const s = shop({ amount: '0' })
    const { challenge } = await s.challenge()
    const credential = proofCredential(challenge, await proofOf(alice, challenge, { chainId: 1 }))
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /the proof is not signed by the source address for this challenge, realm and chain/,
      },
      { credentials: [credential] },
    )
  })

  test('T6: a proof whose source names another chain → refused', async () => {
    const s = shop({ amount: '0' })
    const { challenge } = await s.challenge()
    const credential = proofCredential(challenge, await proofOf(alice, challenge, { chainId: 1 }), source(alice.address, 1))
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /the proof source names chain 1; this route is on chain 31337/,
      },
      { credentials: [credential] },
    )
  })

  test("T6: a proof signed by someone other than source (Mallory claims Alice's address) → refused", async () => {
    const s = shop({ amount: '0' })
    const { challenge } = await s.challenge()
    const byMallory = proofCredential(challenge, await proofOf(mallory, challenge, { account: alice.address }))
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(byMallory)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /not signed by the source address/,
      },
      { credentials: [byMallory] },
    )
    const ownMessage = proofCredential(challenge, await proofOf(mallory, challenge))
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(ownMessage)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /not signed by the source address/,
      },
      { credentials: [ownMessage] },
    )
  })

  test("T6: Alice's proof for one challenge, presented with another → refused", async () => {
    const s = shop({ amount: '0' })
    const { challenge: first } = await s.challenge()
    const { challenge: second } = await s.challenge()
    const credential = proofCredential(second, await proofOf(alice, first))
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /not signed by the source address for this challenge/,
      },
      { credentials: [credential] },
    )
  })

  test('T6: a proof for another realm → refused', async () => {
    const s = shop({ amount: '0' })
    const { challenge } = await s.challenge()
    const credential = proofCredential(challenge, await proofOf(alice, { id: challenge.id, realm: 'other.test' }))
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /not signed by the source address/,
      },
      { credentials: [credential] },
    )
  })

  test('T6: a proof without source, or with a malformed one → refused', async () => {
    const s = shop({ amount: '0' })
    const { challenge } = await s.challenge()
    const signature = await proofOf(alice, challenge)
    const bare = credentialFor(challenge, { type: 'proof', signature })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(bare)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /a proof credential needs a source "did:pkh:eip155:31337:<address>"/,
      },
      { credentials: [bare] },
    )
    const odd = proofCredential(challenge, signature, `did:web:${alice.address}`)
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(odd)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /the proof source must be "did:pkh:eip155:31337:<address>"/,
      },
      { credentials: [odd] },
    )
  })

  test('T6: a zero-amount route answered with a transaction or a hash → refused (nothing to pay, and nothing broadcast)', async () => {
    const s = shop({ amount: '0' })
    const { challenge } = await s.challenge()
    const tx = credentialFor(challenge, { type: 'transaction', signature: craft(generatePrivateKey(), { calls: [transferCall(pathUsd, s.recipient, 1n)] }) })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(tx)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /this route charges nothing: answer with a proof credential \(\{type:"proof"\}\), not a transaction payment/,
      },
      { credentials: [tx] },
    )
    expect(s.runs()).toBe(0)
  })
})
