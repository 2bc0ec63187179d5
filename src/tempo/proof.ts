/**
 * Zero-amount routes (T6): the client proves control of an address by signing the challenge
 * (EIP-712, domain {name:"MPP", version:"3", chainId}, Proof{account, challengeId, realm}) and
 * names that address in `source` (`did:pkh:eip155:<chainId>:<address>`). Verified locally, no
 * RPC. Only plain secp256k1 signatures: smart-account (ERC-1271) and access-key proofs, which
 * need the chain, are refused.
 */
import { type Address, getAddress, type Hex, isAddress, isAddressEqual, recoverTypedDataAddress } from 'viem'
import type { Credential, Verified } from '../method.js'
import { PaymentError } from '../protocol/problem.js'

const types = {
  Proof: [
    { name: 'account', type: 'address' },
    { name: 'challengeId', type: 'string' },
    { name: 'realm', type: 'string' },
  ],
} as const

export async function verifyProof(parameters: { credential: Credential; signature: Hex; chainId: number; expires: Date }): Promise<Verified> {
  const { credential, signature, chainId, expires } = parameters
  const source = credential.source
  if (typeof source !== 'string') throw new PaymentError('verification-failed', `a proof credential needs a source "did:pkh:eip155:${chainId}:<address>"`)
  const match = /^did:pkh:eip155:(\d+):(0x[0-9a-fA-F]{40})$/.exec(source)
  if (!match || !isAddress(match[2] as string, { strict: false }))
    throw new PaymentError('verification-failed', `the proof source must be "did:pkh:eip155:${chainId}:<address>"`)
  if (Number(match[1]) !== chainId) throw new PaymentError('verification-failed', `the proof source names chain ${match[1]}; this route is on chain ${chainId}`)
  const account = getAddress(match[2] as string)
  if (signature.length !== 132)
    throw new PaymentError(
      'verification-failed',
      'the proof signature must be a 65-byte secp256k1 signature; smart-account and access-key proofs are not supported',
    )
  let signer: Address
  try {
    signer = await recoverTypedDataAddress({
      domain: { name: 'MPP', version: '3', chainId },
      types,
      primaryType: 'Proof',
      message: { account, challengeId: credential.challenge.id, realm: credential.challenge.realm },
      signature,
    })
  } catch {
    throw new PaymentError('verification-failed', 'the proof signature cannot be recovered')
  }
  if (!isAddressEqual(signer, account))
    throw new PaymentError('verification-failed', 'the proof is not signed by the source address for this challenge, realm and chain')
  return {
    status: 'settled',
    type: 'proof',
    payer: account,
    reference: credential.challenge.id,
    claims: [],
    validUntil: expires.getTime(),
  }
}
