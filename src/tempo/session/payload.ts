/**
 * The session credential's payload (draft-tempo-session-00, "Credential Payload"): one of four
 * actions, read strictly. Amounts are base-unit integer strings that fit a uint128; a signature's
 * `v` of 0/1 is kept as 27/28, the form the escrow pays.
 */
import type { Hex } from 'viem'
import { PaymentError } from '../../protocol/problem.js'
import { maxUint128 } from './voucher.js'

export type SessionPayload =
  | { action: 'open'; channelId: Hex; transaction: Hex; cumulativeAmount: bigint; signature: Hex; authorizedSigner?: string }
  | { action: 'voucher'; channelId: Hex; cumulativeAmount: bigint; signature: Hex }
  | { action: 'topUp'; channelId: Hex; transaction: Hex; additionalDeposit: bigint }
  | { action: 'close'; channelId: Hex; cumulativeAmount: bigint; signature: Hex }

export const sessionActions = ['open', 'voucher', 'topUp', 'close'] as const

const malformed = (detail: string) => new PaymentError('malformed-credential', `session payload: ${detail}`)

function hex(value: unknown, what: string, pattern: RegExp): Hex {
  if (typeof value !== 'string' || !pattern.test(value))
    throw malformed(
      `\`${what}\` must be ${what === 'channelId' ? 'a bytes32 hex string' : `a 0x-prefixed hex string${what === 'signature' ? ' of 65 bytes (r, s, v) or 64 (EIP-2098)' : ''}`}`,
    )
  return value.toLowerCase() as Hex
}

function amount(value: unknown, what: string): bigint {
  if (typeof value !== 'string' || !/^(0|[1-9]\d{0,38})$/.test(value)) throw malformed(`\`${what}\` must be a base-unit integer string`)
  const parsed = BigInt(value)
  if (parsed > maxUint128) throw malformed(`\`${what}\` exceeds uint128`)
  return parsed
}

/**
 * A 65-byte signature whose `v` is the bare y parity (0/1) in the 27/28 form: the same signature,
 * spelled as the escrow verifies it. The escrow's recovery (ours, and the canonical one's) takes
 * only `v` 27/28, and the signature kept is the one the payee settles and closes with, so keeping
 * the 0/1 spelling would accept a voucher the chain refuses to pay.
 */
function canonicalV(signature: Hex): Hex {
  if (signature.length !== 132) return signature
  const v = signature.slice(130)
  if (v === '00') return `${signature.slice(0, 130)}1b` as Hex
  if (v === '01') return `${signature.slice(0, 130)}1c` as Hex
  return signature
}

export function parseSessionPayload(payload: unknown): SessionPayload {
  if (!payload || typeof payload !== 'object') throw malformed('expected an object with an `action`')
  const p = payload as Record<string, unknown>
  const channelId = hex(p.channelId, 'channelId', /^0x[0-9a-fA-F]{64}$/)
  const signature = () => canonicalV(hex(p.signature, 'signature', /^0x([0-9a-fA-F]{128}|[0-9a-fA-F]{130})$/))
  const transaction = () => hex(p.transaction, 'transaction', /^0x([0-9a-fA-F]{2})+$/)
  switch (p.action) {
    case 'open':
      if (p.type !== 'transaction') throw malformed('an open carries `type: "transaction"`')
      return {
        action: 'open',
        channelId,
        transaction: transaction(),
        cumulativeAmount: amount(p.cumulativeAmount, 'cumulativeAmount'),
        signature: signature(),
        ...(typeof p.authorizedSigner === 'string' && { authorizedSigner: p.authorizedSigner }),
      }
    case 'voucher':
      return { action: 'voucher', channelId, cumulativeAmount: amount(p.cumulativeAmount, 'cumulativeAmount'), signature: signature() }
    case 'topUp':
      if (p.type !== 'transaction') throw malformed('a topUp carries `type: "transaction"`')
      return { action: 'topUp', channelId, transaction: transaction(), additionalDeposit: amount(p.additionalDeposit, 'additionalDeposit') }
    case 'close':
      return { action: 'close', channelId, cumulativeAmount: amount(p.cumulativeAmount, 'cumulativeAmount'), signature: signature() }
    default:
      throw malformed(`unknown action ${JSON.stringify(p.action)}; expected one of ${sessionActions.join(', ')}`)
  }
}
