/**
 * Push (T5): the client sent the payment itself and presents its hash. One
 * `eth_getTransactionReceipt`; the receipt must be successful and its logs — emitted by the
 * currency contract, from the transaction's sender — must pay exactly the route's transfers,
 * one of them carrying this challenge's attribution memo (see memo.ts).
 */
import type { Hex } from 'viem'
import type { Credential, Verified } from '../method.js'
import { PaymentError, unavailable } from '../protocol/problem.js'
import { foreignMemo, isChallengeMemo } from './memo.js'
import { readReceipt } from './receipt.js'
import type { ParsedRequest } from './request.js'
import { type Rpc, RpcTransportError } from './rpc.js'
import { assertTransfers, transfersFromLogs } from './transfers.js'

export async function verifyPush(parameters: { rpc: Rpc; credential: Credential; hash: Hex; request: ParsedRequest; expires: Date }): Promise<Verified> {
  const { rpc, credential, request, expires } = parameters
  const hash = parameters.hash.toLowerCase() as Hex
  let raw: unknown
  try {
    raw = await rpc.request('eth_getTransactionReceipt', [hash])
  } catch (error) {
    if (error instanceof RpcTransportError) throw unavailable('the Tempo node did not answer the receipt lookup; retry shortly', error)
    throw new PaymentError('verification-failed', `the node refused the receipt lookup: ${(error as Error).message}`)
  }
  if (raw === null || raw === undefined)
    throw new PaymentError('verification-failed', 'transaction not found (not mined yet?); retry shortly', { retryAfter: 1 })
  const receipt = readReceipt(raw)
  if (receipt.transactionHash !== hash) throw new PaymentError('verification-failed', 'the node returned the receipt of another transaction')
  if (receipt.status === 'pending') throw new PaymentError('verification-failed', 'the transaction is not final yet; retry shortly', { retryAfter: 1 })
  if (receipt.status !== 'success') throw new PaymentError('verification-failed', 'the transaction reverted; it paid nothing')
  const payer = receipt.from
  const effects = transfersFromLogs(receipt.logs, request.currency).filter(
    (effect) => effect.from !== undefined && effect.from.toLowerCase() === payer.toLowerCase(),
  )
  assertTransfers(request.transfers, effects, {
    currency: request.currency,
    bound: {
      test: (effect) => isChallengeMemo(effect.memo, credential.challenge),
      refusal:
        "no matching transfer carries this challenge's MPP attribution memo; a pushed payment must be made for this challenge (transferWithMemo with the memo derived from its id and realm)",
    },
  })
  const foreign = foreignMemo(effects, credential.challenge)
  if (foreign)
    throw new PaymentError(
      'verification-failed',
      `the transaction also pays another challenge (${foreign.origin} carries another challenge's MPP attribution memo); one transaction pays exactly one challenge`,
    )
  return {
    status: 'settled',
    type: 'hash',
    payer,
    reference: hash,
    claims: [`tempo:tx:${hash}`],
    validUntil: expires.getTime(),
  }
}
