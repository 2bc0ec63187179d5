/**
 * Our payment method for the servers under test: the Tempo method (what the table reports), or
 * the chainless fake of the tests (`method: 'fake'`), to look at the middleware alone.
 */
import type { Address, LocalAccount } from 'viem'
import { localChainId, pathUsd } from '../scripts/local-chain.js'
import type { PaymentMethod } from '../src/index.js'
import { tempo } from '../src/tempo/index.js'
import { fakeMethod } from '../test/helpers/fake-method.js'

export type MethodConfig = { rpcUrl: string; recipient: Address; feePayer?: LocalAccount; method?: 'tempo' | 'fake' }

export function ourMethod(config: MethodConfig): PaymentMethod {
  if (config.method === 'fake') return fakeMethod({ currency: pathUsd, recipient: config.recipient })
  return tempo({
    rpcUrl: config.rpcUrl,
    chainId: localChainId,
    currency: pathUsd,
    recipient: config.recipient,
    ...(config.feePayer && { feePayer: { account: config.feePayer } }),
  })
}
