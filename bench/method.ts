/**
 * Our payment method for the servers under test: the Tempo method when it is there (the table
 * must use it), else the chainless fake of the tests, so the 402 path can be measured before.
 */
import type { Address, LocalAccount } from 'viem'
import { localChainId, pathUsd } from '../scripts/local-chain.js'
import type { PaymentMethod } from '../src/index.js'
import { fakeMethod } from '../test/helpers/fake-method.js'

export type MethodConfig = { rpcUrl: string; recipient: Address; feePayer?: LocalAccount; method?: 'tempo' | 'fake' }

// A variable specifier: the Tempo method is written in parallel and may not exist yet.
const tempoModule = '../src/tempo/index.js'

export async function ourMethod(config: MethodConfig): Promise<PaymentMethod & { kind: 'tempo' | 'fake' }> {
  if (config.method !== 'fake') {
    const loaded = (await import(tempoModule).catch(() => undefined)) as
      | { tempo: (options: Record<string, unknown>) => PaymentMethod }
      | undefined
    if (loaded)
      return Object.assign(
        loaded.tempo({
          rpcUrl: config.rpcUrl,
          chainId: localChainId,
          currency: pathUsd,
          recipient: config.recipient,
          ...(config.feePayer && { feePayer: { account: config.feePayer } }),
        }),
        { kind: 'tempo' as const },
      )
    if (config.method === 'tempo') throw new Error('bench: src/tempo/index.ts is not there yet')
  }
  return Object.assign(fakeMethod({ currency: pathUsd, recipient: config.recipient }), { kind: 'fake' as const })
}
