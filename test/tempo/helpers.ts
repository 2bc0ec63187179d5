/**
 * Test helpers for the Tempo method: challenges as the middleware would echo them, credentials
 * made by the reference client (mppx) or crafted by hand (for what mppx would never sign), and
 * transports that count or fake JSON-RPC calls.
 */

import { Credential as MppxCredential } from 'mppx'
import { tempo as mppxTempo } from 'mppx/client'
import { Secp256k1 } from 'ox'
import { SignatureEnvelope, TxEnvelopeTempo } from 'ox/tempo'
import { type Address, createClient, custom, encodeFunctionData, type Hex, http, maxUint256, type Transport } from 'viem'
import { generatePrivateKey, type LocalAccount, privateKeyToAccount } from 'viem/accounts'
import { Abis } from 'viem/tempo'
import { expect } from 'vitest'
import { localChain } from '../../scripts/local-chain.js'
import type { ChargeRequest, Credential, EchoedChallenge } from '../../src/method.js'
import { PaymentError } from '../../src/protocol/problem.js'

export const realm = 'api.example.test'

let counter = 0
export function challengeFor(request: ChargeRequest, options: { expiresInMs?: number; id?: string } = {}): EchoedChallenge & { expires: string } {
  return {
    id: options.id ?? `test-challenge-${Date.now()}-${counter++}`,
    realm,
    method: 'tempo',
    intent: 'charge',
    request,
    expires: new Date(Date.now() + (options.expiresInMs ?? 120_000)).toISOString(),
  }
}

/** A credential made by the reference client, exactly as it would send it. */
export async function mppxCredential(rpcUrl: string, account: LocalAccount, challenge: EchoedChallenge, mode: 'pull' | 'push'): Promise<Credential> {
  const method = mppxTempo.charge({
    account,
    mode,
    getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }),
  })
  const serialized = await method.createCredential({ challenge, context: {} } as never)
  const parsed = MppxCredential.deserialize(serialized) as unknown as Credential
  return { challenge, payload: parsed.payload, ...(parsed.source && { source: parsed.source }) }
}

export const transferCall = (currency: Address, to: Address, amount: bigint, memo?: Hex) => ({
  to: currency,
  data: memo
    ? encodeFunctionData({ abi: Abis.tip20, functionName: 'transferWithMemo', args: [to, amount, memo] })
    : encodeFunctionData({ abi: Abis.tip20, functionName: 'transfer', args: [to, amount] }),
})

export type CraftOptions = {
  chainId?: number
  calls: { to: Address; data: Hex; value?: bigint }[]
  validBefore?: number | null
  validAfter?: number
  gas?: bigint
  maxFeePerGas?: bigint
  feeToken?: Address
  /** `sponsored`: empty fee-payer slot as a 0x76; `envelope78`: the 0x78 hand-off form. */
  sponsor?: 'sponsored' | 'envelope78'
  /** Write this sender into a 0x78 envelope instead of the signer. */
  claimedSender?: Address
}

/** A transaction signed by `privateKey` that mppx would never build (wrong amounts, extra calls...). */
export function craft(privateKey: Hex, options: CraftOptions): Hex {
  const now = Math.floor(Date.now() / 1000)
  const envelope = TxEnvelopeTempo.from({
    chainId: options.chainId ?? 31337,
    calls: options.calls,
    gas: options.gas ?? 800_000n,
    maxFeePerGas: options.maxFeePerGas ?? 40_000_000_000n,
    maxPriorityFeePerGas: 1_000_000_000n,
    nonceKey: maxUint256,
    nonce: 0n,
    ...(options.validBefore !== null && { validBefore: options.validBefore ?? now + 25 }),
    validAfter: options.validAfter ?? now - 60 - Math.floor(Math.random() * 1_000_000),
    ...(options.feeToken && { feeToken: options.feeToken }),
    ...(options.sponsor && { feePayerSignature: null }),
  } as unknown as TxEnvelopeTempo.TxEnvelopeTempo)
  const signature = SignatureEnvelope.from(Secp256k1.sign({ payload: TxEnvelopeTempo.getSignPayload(envelope), privateKey }))
  if (options.sponsor === 'envelope78' || options.claimedSender)
    return TxEnvelopeTempo.serialize(envelope, {
      signature,
      format: 'feePayer',
      sender: options.claimedSender ?? Secp256k1.recoverAddress({ payload: TxEnvelopeTempo.getSignPayload(envelope), signature: signature.signature as never }),
    })
  return TxEnvelopeTempo.serialize(envelope, { signature })
}

/** Plain JSON-RPC over fetch; error answers are thrown as `{ code, message }` like an EIP-1193 provider. */
export async function rawRpc(url: string, method: string, params: unknown[]): Promise<unknown> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  })
  const body = (await response.json()) as { result?: unknown; error?: { code: number; message: string } }
  if (body.error) throw Object.assign(new Error(body.error.message), { code: body.error.code })
  return body.result
}

/** A viem transport in front of the node that records methods and lets a test rewrite answers. */
export function scriptedTransport(
  rpcUrl: string,
  script: (method: string, params: unknown[], forward: () => Promise<unknown>) => Promise<unknown> = (_m, _p, forward) => forward(),
): { transport: Transport; calls: string[] } {
  const calls: string[] = []
  const transport = custom({
    async request({ method, params }: { method: string; params: unknown[] }) {
      calls.push(method)
      return script(method, params ?? [], () => rawRpc(rpcUrl, method, params ?? []))
    },
  })
  return { transport, calls }
}

/** A fresh address nobody holds the key of. */
export const fresh = () => privateKeyToAccount(generatePrivateKey()).address

/** Awaits a promise that must reject with a PaymentError, and returns the error. */
export async function refusal(promise: Promise<unknown>): Promise<PaymentError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(PaymentError)
  return error as PaymentError
}
