/**
 * The session credential's payload (draft-tempo-session-00, "Credential Payload"): one of four
 * actions, read strictly. Amounts are base-unit integer strings that fit a uint128.
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
    throw malformed(`\`${what}\` must be ${what === 'channelId' ? 'a bytes32 hex string' : 'a 0x-prefixed hex string'}`)
  return value.toLowerCase() as Hex
}

function amount(value: unknown, what: string): bigint {
  if (typeof value !== 'string' || !/^(0|[1-9]\d{0,38})$/.test(value)) throw malformed(`\`${what}\` must be a base-unit integer string`)
  const parsed = BigInt(value)
  if (parsed > maxUint128) throw malformed(`\`${what}\` exceeds uint128`)
  return parsed
}

export function parseSessionPayload(payload: unknown): SessionPayload {
  if (!payload || typeof payload !== 'object') throw malformed('expected an object with an `action`')
  const p = payload as Record<string, unknown>
  const channelId = hex(p.channelId, 'channelId', /^0x[0-9a-fA-F]{64}$/)
  const signature = () => hex(p.signature, 'signature', /^0x([0-9a-fA-F]{128}|[0-9a-fA-F]{130})$/)
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
