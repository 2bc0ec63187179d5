/**
 * The credential payload of the Tempo charge method, parsed strictly: it is untrusted input.
 *   pull  → { type: "transaction", signature: <signed 0x76/0x78 transaction> }
 *   push  → { type: "hash", hash: <transaction hash> }
 *   proof → { type: "proof", signature: <EIP-712 signature> } (zero-amount routes)
 */
import type { Hex } from 'viem'
import * as z from 'zod/mini'
import { PaymentError } from '../protocol/problem.js'

const hexPattern = z.regex(/^0x(?:[0-9a-fA-F]{2})+$/, 'must be 0x-prefixed hex bytes')

// Big enough for a transaction with ten splits, a WebAuthn signature and a key authorization.
const maxTransactionHex = 32_768

const schema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('transaction'), signature: z.string().check(hexPattern, z.maxLength(maxTransactionHex)) }),
  z.object({ type: z.literal('hash'), hash: z.string().check(z.regex(/^0x[0-9a-fA-F]{64}$/, 'must be a 32-byte hex hash')) }),
  z.object({ type: z.literal('proof'), signature: z.string().check(hexPattern, z.maxLength(4_096)) }),
])

export type Payload = { type: 'transaction'; signature: Hex } | { type: 'hash'; hash: Hex } | { type: 'proof'; signature: Hex }

export function parsePayload(payload: unknown): Payload {
  const parsed = schema.safeParse(payload)
  if (parsed.success) return parsed.data as Payload
  const issue = parsed.error.issues[0]
  const where = issue?.path.length ? `payload.${issue.path.join('.')}` : 'payload'
  throw new PaymentError(
    'malformed-credential',
    `${where} ${issue?.code === 'invalid_union' || issue?.path[0] === 'type' ? 'must have type "transaction", "hash" or "proof"' : (issue?.message ?? 'is invalid')}` +
      ' (tempo expects {type:"transaction",signature} | {type:"hash",hash} | {type:"proof",signature})',
  )
}
