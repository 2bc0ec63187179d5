/**
 * A transaction receipt as the node returns it (JSON-RPC), read strictly: only the fields a
 * payment decision rests on.
 */
import { type Address, getAddress, type Hex } from 'viem'
import * as z from 'zod/mini'

const hex = z.string().check(z.regex(/^0x[0-9a-fA-F]*$/))

const schema = z.object({
  transactionHash: z.string().check(z.regex(/^0x[0-9a-fA-F]{64}$/)),
  status: z.string(),
  from: z.string().check(z.regex(/^0x[0-9a-fA-F]{40}$/)),
  gasUsed: z.optional(hex),
  effectiveGasPrice: z.optional(hex),
  logs: z.array(
    z.object({
      address: z.string(),
      topics: z.array(hex),
      data: hex,
      logIndex: z.optional(hex),
    }),
  ),
})

export type Receipt = {
  transactionHash: Hex
  status: 'success' | 'reverted' | 'pending'
  from: Address
  gasUsed?: bigint
  effectiveGasPrice?: bigint
  logs: { address: string; topics: Hex[]; data: Hex; logIndex?: string }[]
}

export function readReceipt(raw: unknown): Receipt {
  const parsed = schema.safeParse(raw)
  if (!parsed.success) throw new Error('the node returned a malformed transaction receipt')
  const { transactionHash, status, from, gasUsed, effectiveGasPrice, logs } = parsed.data
  return {
    transactionHash: transactionHash.toLowerCase() as Hex,
    // Anything but an explicit 1 or 0 (e.g. a preconfirmation) is not final.
    status: status === '0x1' ? 'success' : status === '0x0' ? 'reverted' : 'pending',
    from: getAddress(from),
    ...(gasUsed && gasUsed !== '0x' && { gasUsed: BigInt(gasUsed) }),
    ...(effectiveGasPrice && effectiveGasPrice !== '0x' && { effectiveGasPrice: BigInt(effectiveGasPrice) }),
    logs: logs as Receipt['logs'],
  }
}
