/**
 * Zero-amount routes (T6): an EIP-712 proof of control of the `source` address, verified
 * locally, no RPC.
 */
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { beforeAll, describe, expect, inject, test } from 'vitest'
import type { Credential } from '../../src/method.js'
import { tempo } from '../../src/tempo/index.js'
import { challengeFor, mppxCredential, refusal, scriptedTransport } from './helpers.js'

let rpcUrl: string
beforeAll(() => {
  rpcUrl = inject('rpcUrl')
})

function setup() {
  const { transport, calls } = scriptedTransport(rpcUrl)
  const m = tempo({ transport, chainId: 31337, recipient: privateKeyToAccount(generatePrivateKey()).address })
  const request = m.request({ amount: '0' })
  const challenge = challengeFor(request)
  return { m, request, challenge, expires: new Date(challenge.expires), calls }
}

const account = privateKeyToAccount(generatePrivateKey())

describe('proof', () => {
  test('T6: an mppx proof verifies locally; reference = challenge id, payer = source, no claim beyond the challenge', async () => {
    const s = setup()
    expect(s.request.amount).toBe('0')
    const credential = await mppxCredential(rpcUrl, account, s.challenge, 'pull')
    expect(credential.payload).toMatchObject({ type: 'proof' })
    expect(credential.source).toBe(`did:pkh:eip155:31337:${account.address}`)
    const verified = await s.m.verify({ credential, request: s.request, expires: s.expires, settle: 'before' })
    expect(verified).toEqual({
      status: 'settled',
      type: 'proof',
      payer: account.address,
      reference: s.challenge.id,
      claims: [],
      validUntil: s.expires.getTime(),
    })
    expect(s.calls).toEqual([])
  })

  test('T6: a proof whose source names someone other than the signer is refused', async () => {
    const s = setup()
    const credential = await mppxCredential(rpcUrl, account, s.challenge, 'pull')
    const other = privateKeyToAccount(generatePrivateKey()).address
    const error = await refusal(
      s.m.verify({ credential: { ...credential, source: `did:pkh:eip155:31337:${other}` }, request: s.request, expires: s.expires, settle: 'before' }),
    )
    expect(error.kind).toBe('verification-failed')
    expect(error.detail).toMatch(/not signed by the source address/)
  })

  test('T6: a proof for another challenge (or realm) is refused', async () => {
    const s = setup()
    const credential = await mppxCredential(rpcUrl, account, s.challenge, 'pull')
    const other = challengeFor(s.request)
    const e1 = await refusal(s.m.verify({ credential: { ...credential, challenge: other }, request: s.request, expires: s.expires, settle: 'before' }))
    expect(e1.detail).toMatch(/not signed by the source address for this challenge/)
    const e2 = await refusal(
      s.m.verify({
        credential: { ...credential, challenge: { ...s.challenge, realm: 'elsewhere.test' } },
        request: s.request,
        expires: s.expires,
        settle: 'before',
      }),
    )
    expect(e2.detail).toMatch(/not signed by the source address/)
  })

  test('T6: a source on another chain, a malformed source or none is refused', async () => {
    const s = setup()
    const credential = await mppxCredential(rpcUrl, account, s.challenge, 'pull')
    const verify = (source: string | undefined) => {
      const { source: _drop, ...rest } = credential
      const c: Credential = source === undefined ? rest : { ...rest, source }
      return refusal(s.m.verify({ credential: c, request: s.request, expires: s.expires, settle: 'before' }))
    }
    expect((await verify(`did:pkh:eip155:1:${account.address}`)).detail).toMatch(/names chain 1; this route is on chain 31337/)
    expect((await verify(`did:key:${account.address}`)).detail).toMatch(/must be "did:pkh:eip155:31337:<address>"/)
    expect((await verify(undefined)).detail).toMatch(/needs a source/)
  })

  test('T6: a signature that is not a 65-byte secp256k1 signature is refused', async () => {
    const s = setup()
    const credential = await mppxCredential(rpcUrl, account, s.challenge, 'pull')
    const error = await refusal(
      s.m.verify({
        credential: { ...credential, payload: { type: 'proof', signature: `0x${'11'.repeat(100)}` } },
        request: s.request,
        expires: s.expires,
        settle: 'before',
      }),
    )
    expect(error.detail).toMatch(/smart-account and access-key proofs are not supported/)
  })

  test('T6: a proof on a paying route, and a payment on a zero-amount route, are refused', async () => {
    const s = setup()
    const proof = await mppxCredential(rpcUrl, account, s.challenge, 'pull')
    const paying = s.m.request({ amount: '0.01' })
    const e1 = await refusal(s.m.verify({ credential: { ...proof, challenge: challengeFor(paying) }, request: paying, expires: s.expires, settle: 'before' }))
    expect(e1.detail).toMatch(/proof credentials only answer zero-amount challenges/)
    const e2 = await refusal(
      s.m.verify({
        credential: { challenge: s.challenge, payload: { type: 'hash', hash: `0x${'ab'.repeat(32)}` } },
        request: s.request,
        expires: s.expires,
        settle: 'before',
      }),
    )
    expect(e2.detail).toMatch(/this route charges nothing: answer with a proof credential/)
  })
})
