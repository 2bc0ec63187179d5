import { expect, inject, test } from 'vitest'
import { balanceOf, fundedAccount } from '../../scripts/local-chain.js'

test('local chain: a fresh account is funded by transfer', async () => {
  const rpcUrl = inject('rpcUrl')
  const account = await fundedAccount(rpcUrl, { amount: '5' })
  expect(await balanceOf(rpcUrl, account.address)).toBe(5_000_000n)
})
