/**
 * Helpers for the session escrow on the local chain: deploy our contract, open channels the way
 * the reference client does (approve + open in one Tempo transaction), sign vouchers with viem's
 * EIP-712 signer, send the payee's and payer's calls, and simulate calls that must revert.
 *
 * Channels hold pathUSD; every transaction pays its fee in AlphaUSD, so pathUSD balances move by
 * exactly the channel's amounts.
 */
import {
  type Address,
  BaseError,
  type Client,
  ContractFunctionRevertedError,
  createClient,
  encodeFunctionData,
  getAddress,
  type Hex,
  http,
  type TransactionReceipt,
  toHex,
} from 'viem'
import { generatePrivateKey, type LocalAccount, privateKeyToAccount } from 'viem/accounts'
import { prepareTransactionRequest, readContract, sendTransactionSync, signTransaction, simulateContract } from 'viem/actions'
import { Abis } from 'viem/tempo'
import { alphaUsd, fundedAccount, localChain, localChainId, pathUsd, sessionPayerClient } from '../../scripts/local-chain.js'
import type { Challenge } from '../../src/index.js'
import type { OnChainChannel } from '../../src/tempo/session/chain.js'
import { escrowAbi, escrowBytecode } from '../../src/tempo/session/escrow-artifact.js'
import { credentialFor } from '../helpers/http.js'

export { escrowAbi }
export const token = getAddress(pathUsd)
export const feeToken = alphaUsd

/** The voucher's EIP-712 domain and types, as draft-tempo-session-00 fixes them (v1). */
export const voucherDomain = (escrow: Address, chainId = localChainId) =>
  ({ name: 'Tempo Stream Channel', version: '1', chainId, verifyingContract: escrow }) as const
export const voucherTypes = {
  Voucher: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'cumulativeAmount', type: 'uint128' },
  ],
} as const

export const client = (rpcUrl: string, account?: LocalAccount): Client =>
  createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl), ...(account && { account }) })

/**
 * Deploys the escrow from a freshly funded account. Contract creation on Tempo costs far more gas
 * than on Ethereum (state creation pricing), and the node silently drops a creation whose gas is
 * exactly the estimate, so the limit is the estimate plus a margin.
 */
export async function deployEscrow(rpcUrl: string, options: { funder?: number; nonceKey?: 'expiring' } = {}): Promise<Address> {
  const deployer = await fundedAccount(rpcUrl, { amount: '1000', funder: options.funder ?? 4 })
  const c = client(rpcUrl, deployer)
  const estimate = BigInt(await c.request({ method: 'eth_estimateGas', params: [{ from: deployer.address, data: escrowBytecode }] }))
  const receipt = await sendTransactionSync(c, { account: deployer, data: escrowBytecode, gas: estimate + 1_000_000n, feeToken } as never)
  if (receipt.status !== 'success' || !receipt.contractAddress) throw new Error('escrow deployment failed')
  return getAddress(receipt.contractAddress)
}

/** A fresh key that holds nothing (an authorised signer, a stranger). */
export const keyOnly = () => privateKeyToAccount(generatePrivateKey())

export async function signVoucher(
  signer: LocalAccount,
  escrow: Address,
  channelId: Hex,
  cumulativeAmount: bigint,
  chainId: number = localChainId,
): Promise<Hex> {
  return signer.signTypedData({ domain: voucherDomain(escrow, chainId), types: voucherTypes, primaryType: 'Voucher', message: { channelId, cumulativeAmount } })
}

export type Call = { to: Address; data: Hex }

/**
 * Sends `calls` in one Tempo transaction from `account`; the receipt must be a success. The gas
 * limit is fixed: the local node's estimate leaves out Tempo's price for new storage slots (an
 * open was estimated at 0.77M gas and used 1.33M), so estimated transactions run out of gas.
 */
export async function send(rpcUrl: string, account: LocalAccount, calls: Call[]): Promise<TransactionReceipt> {
  const receipt = await sendTransactionSync(client(rpcUrl, account), { account, calls, feeToken, gas: 5_000_000n } as never)
  if (receipt.status !== 'success') throw new Error(`transaction reverted: ${receipt.transactionHash}`)
  return receipt
}

export const escrowCall = (escrow: Address, functionName: string, args: readonly unknown[]): Call => ({
  to: escrow,
  data: encodeFunctionData({ abi: escrowAbi, functionName, args } as never),
})

/** The calls the reference client puts in its open transaction: approve the escrow, then open. */
export function openCalls(escrow: Address, payee: Address, deposit: bigint, salt: Hex, authorizedSigner: Address): Call[] {
  return [
    { to: token, data: encodeFunctionData({ abi: Abis.tip20, functionName: 'approve', args: [escrow, deposit] }) },
    escrowCall(escrow, 'open', [payee, token, deposit, salt, authorizedSigner]),
  ]
}

export const approveCall = (escrow: Address, amount: bigint): Call => ({
  to: token,
  data: encodeFunctionData({ abi: Abis.tip20, functionName: 'approve', args: [escrow, amount] }),
})

/** A channel as the escrow holds it (read here independently of the server's reader). */
export type ChannelState = OnChainChannel

export async function getChannel(rpcUrl: string, escrow: Address, channelId: Hex): Promise<ChannelState> {
  return (await readContract(client(rpcUrl), { address: escrow, abi: escrowAbi, functionName: 'getChannel', args: [channelId] })) as unknown as ChannelState
}

/**
 * Simulates `functionName` from `account` and returns the custom error it reverts with (the
 * contract's error name); throws when the call would succeed.
 */
export async function revertOf(rpcUrl: string, account: Address, escrow: Address, functionName: string, args: readonly unknown[]): Promise<string> {
  try {
    await simulateContract(client(rpcUrl), { account, address: escrow, abi: escrowAbi, functionName, args } as never)
  } catch (error) {
    const reverted = error instanceof BaseError ? error.walk((e) => e instanceof ContractFunctionRevertedError) : undefined
    if (reverted instanceof ContractFunctionRevertedError && reverted.data?.errorName) return reverted.data.errorName
    throw error
  }
  throw new Error(`${functionName} did not revert`)
}

/** The session payer's viem client on the local chain (gas padded for `open`; see scripts/local-chain.ts). */
export const clientFor = sessionPayerClient

export function* chunks(count: number) {
  for (let i = 1; i <= count; i++) yield `chunk ${i}`
}

/** Fee-sponsor limits wide enough for an open on the local chain (about 1.3M gas, padded), as an operator would set them. */
export const sponsorLimits = { maxGas: 6_000_000n, maxFeePerGas: 1_000_000_000_000n, maxTotalFee: 6_000_000n }

/** Signs `calls` from `payer` with an empty fee-payer slot: what a client asking for sponsorship sends. */
export async function sponsoredTransaction(rpcUrl: string, payer: LocalAccount, calls: Call[]): Promise<Hex> {
  const wallet = sessionPayerClient(rpcUrl)
  const prepared = (await prepareTransactionRequest(wallet, {
    account: payer,
    calls,
    feeToken: token,
    nonceKey: 'expiring',
    validBefore: Math.floor(Date.now() / 1000) + 25,
    gas: 3_000_000n,
  } as never)) as Record<string, unknown>
  prepared.feePayer = true
  return (await signTransaction(wallet, prepared as never)) as Hex
}

/**
 * A hand-built sponsored open credential for `challenge` (the reference client's payload:
 * approve + open of 0.1 and a first voucher of 0.001), with `extra` calls appended to the transaction.
 */
/** A fee-sponsored open; `claim`: the channel id the credential names instead of the one the transaction opens. */
export async function sponsoredOpen(
  rpcUrl: string,
  escrow: Address,
  payer: LocalAccount,
  payee: Address,
  challenge: Challenge,
  extra: Call[] = [],
  claim?: Hex,
) {
  const salt = toHex(crypto.getRandomValues(new Uint8Array(32)))
  const deposit = 100_000n
  const channelId = (await readContract(client(rpcUrl), {
    address: escrow,
    abi: escrowAbi,
    functionName: 'computeChannelId',
    args: [payer.address, payee, token, salt, payer.address],
  } as never)) as Hex
  const transaction = await sponsoredTransaction(rpcUrl, payer, [...openCalls(escrow, payee, deposit, salt, payer.address), ...extra])
  const named = claim ?? channelId
  const payload = {
    action: 'open',
    type: 'transaction',
    channelId: named,
    transaction,
    authorizedSigner: payer.address,
    cumulativeAmount: '1000',
    signature: await signVoucher(payer, escrow, named, 1000n),
  }
  return { channelId, deposit, authorization: credentialFor(challenge, payload) }
}
