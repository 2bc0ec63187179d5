/**
 * Fee sponsorship of a session's open and top-up transactions (the charge method's sponsor,
 * fee-payer.ts, with its limits). The client signs approve + open (or approve + topUp) with an
 * empty fee-payer slot; before the sponsor co-signs, the transaction must do exactly that and
 * nothing else — the token approval of the escrow for the deposit, and the escrow call for this
 * payee and token (or this channel) — and must pass the sponsor's per-payment, in-flight,
 * per-sender and balance limits, and a simulation. Anything else is refused with no fee paid.
 */
import { TxEnvelopeTempo } from 'ox/tempo'
import { type Address, decodeFunctionData, encodeAbiParameters, getAddress, type Hex, keccak256, parseAbiParameters } from 'viem'
import { PaymentError } from '../../protocol/problem.js'
import { tip20 } from '../abi.js'
import { decodeEnvelope, type Envelope } from '../envelope.js'
import { feeInBaseUnits, type Sponsor } from '../fee-payer.js'
import { checkSenderSignature, expiryGraceMs, recoverSender, simulate } from '../pull.js'
import type { Receipt } from '../receipt.js'
import type { Rpc } from '../rpc.js'
import { escrowAbi } from './escrow-artifact.js'

/** Longest a sponsored transaction may stay valid (its reservation is held that long at most). */
export const maxSponsoredValiditySeconds = 300

export type Expected =
  | { action: 'open'; escrow: Address; recipient: Address; currency: Address; channelId: Hex; chainId: number }
  | { action: 'topUp'; escrow: Address; currency: Address; channelId: Hex }

/** A co-signed transaction ready to broadcast, and what the sponsor reserved for it. */
export type Sponsored = { raw: Hex; ticket: string; sender: Address; fee: bigint }

/** Decodes a 0x76 or 0x78 envelope without trusting it. */
export function decodeAny(raw: Hex): Envelope {
  const lower = raw.toLowerCase() as Hex
  try {
    return lower.startsWith('0x78') ? TxEnvelopeTempo.deserialize(lower as TxEnvelopeTempo.Serialized) : decodeEnvelope(lower).tx
  } catch {
    throw new PaymentError('malformed-credential', 'session payload: `transaction` is not a signed Tempo transaction (0x76 or 0x78 envelope)')
  }
}

/** True when the sender left the fee-payer slot for the server. */
export const wantsSponsor = (tx: Envelope) => tx.feePayerSignature === null

function refuse(why: string): never {
  throw new PaymentError('verification-failed', `the fee sponsor co-signs only ${why}`)
}

/**
 * The calls must be exactly [approve(escrow, amount) on the currency]? then the expected escrow
 * call, with no value; returns nothing, throws a 402 naming what does not match.
 */
function checkCalls(tx: Envelope, expected: Expected): readonly unknown[] {
  const what =
    expected.action === 'open'
      ? `approve + open on the escrow ${expected.escrow} for payee ${expected.recipient} in ${expected.currency}`
      : `approve + topUp of channel ${expected.channelId} on the escrow ${expected.escrow}`
  const calls = (tx.calls ?? []) as readonly { to?: string | null; data?: string; value?: bigint }[]
  if (calls.length < 1 || calls.length > 2) refuse(`${what}; this transaction makes ${calls.length} calls`)
  for (const call of calls) if ((call.value ?? 0n) !== 0n) refuse(`${what}; this transaction sends value`)
  const last = calls[calls.length - 1]!
  if (!last.to || getAddress(last.to) !== expected.escrow) refuse(`${what}; its last call goes to ${last.to ?? 'no address'}`)
  let amount: bigint
  let args: readonly unknown[] = []
  try {
    const decoded = decodeFunctionData({ abi: escrowAbi, data: (last.data ?? '0x') as Hex })
    if (decoded.functionName !== expected.action) refuse(`${what}; its escrow call is ${decoded.functionName}`)
    args = decoded.args as readonly unknown[]
    if (expected.action === 'open') {
      const [payee, token, deposit] = args as [Address, Address, bigint]
      if (getAddress(payee) !== expected.recipient || getAddress(token) !== expected.currency) refuse(`${what}; it opens a channel for ${payee} in ${token}`)
      amount = deposit
    } else {
      const [channelId, added] = args as [Hex, bigint]
      if (channelId.toLowerCase() !== expected.channelId.toLowerCase()) refuse(`${what}; it tops up ${channelId}`)
      amount = added
    }
  } catch (error) {
    if (error instanceof PaymentError) throw error
    refuse(`${what}; its escrow call does not decode`)
  }
  if (calls.length === 2) {
    const first = calls[0]!
    if (!first.to || getAddress(first.to) !== expected.currency) refuse(`${what}; its first call goes to ${first.to ?? 'no address'}, not the token`)
    try {
      const decoded = decodeFunctionData({ abi: tip20, data: (first.data ?? '0x') as Hex })
      if (decoded.functionName !== 'approve') refuse(`${what}; its first call is ${decoded.functionName}, not approve`)
      const [spender, value] = decoded.args as readonly [Address, bigint]
      if (getAddress(spender) !== expected.escrow || value !== amount) refuse(`${what}; it approves ${value} to ${spender}, not ${amount} to the escrow`)
    } catch (error) {
      if (error instanceof PaymentError) throw error
      refuse(`${what}; its first call does not decode as approve`)
    }
  }
  return args
}

/**
 * Checks a transaction that asks for a fee payer, reserves the sponsor's share (synchronously,
 * before any await), simulates it and co-signs. Throws, with the reservation freed, when it is refused.
 */
export async function sponsorTransaction(rpc: Rpc, sponsor: Sponsor | undefined, tx: Envelope, expected: Expected, nowMs: number): Promise<Sponsored> {
  if (!sponsor)
    throw new PaymentError(
      'verification-failed',
      `the ${expected.action} transaction asks for a fee payer, but this server does not sponsor fees; sign it paying your own fee`,
    )
  if (!tx.signature) throw new PaymentError('verification-failed', 'the transaction is not signed by its sender')
  if (tx.keyAuthorization || (tx.authorizationList?.length ?? 0) > 0)
    throw new PaymentError('verification-failed', 'a sponsored transaction may not carry a key authorization or an authorization list')
  const args = checkCalls(tx, expected)
  const nowSeconds = Math.floor(nowMs / 1000)
  if (tx.validBefore === undefined) throw new PaymentError('verification-failed', 'a sponsored transaction must set validBefore')
  if (tx.validBefore <= nowSeconds) throw new PaymentError('payment-expired', `the transaction's validBefore (${tx.validBefore}) has passed`)
  if (tx.validBefore > nowSeconds + maxSponsoredValiditySeconds)
    throw new PaymentError(
      'verification-failed',
      `a sponsored transaction may be valid for at most ${maxSponsoredValiditySeconds} s; set an earlier validBefore`,
    )
  checkSenderSignature(tx)
  const signPayload = TxEnvelopeTempo.getSignPayload(tx)
  const sender = recoverSender(tx, signPayload, undefined)
  if (tx.from && getAddress(tx.from as Address) !== sender)
    throw new PaymentError('verification-failed', `the envelope names sender ${tx.from} but the signature is from ${sender}`)
  if (expected.action === 'open') {
    // The channel it opens is the one the credential names (its id commits to the sender): the
    // sponsor pays for no channel the server would then not find.
    const [payee, token, , salt, authorizedSigner] = args as [Address, Address, bigint, Hex, Address]
    const opened = keccak256(
      encodeAbiParameters(parseAbiParameters('address, address, address, bytes32, address, address, uint256'), [
        sender,
        payee,
        token,
        salt,
        authorizedSigner,
        expected.escrow,
        BigInt(expected.chainId),
      ]),
    )
    if (opened !== expected.channelId.toLowerCase())
      throw new PaymentError('verification-failed', `the transaction opens channel ${opened}, not ${expected.channelId} (nothing was co-signed)`)
  }
  const fee = sponsor.check(tx)
  const ticket = sponsor.reserve({ sender, key: signPayload, fee, until: tx.validBefore * 1000 + expiryGraceMs })
  try {
    await Promise.all([sponsor.funded(), simulate(rpc, tx, sender, sponsor)])
    const raw = (await sponsor.cosign(tx, sender)).toLowerCase() as Hex
    return { raw, ticket, sender, fee }
  } catch (error) {
    sponsor.release(ticket)
    throw error
  }
}

/** Frees the reservation once the outcome is definite: what the fee cost and whether it failed. */
export function settleSponsored(sponsor: Sponsor, sponsored: Sponsored, receipt: Receipt): void {
  const paid =
    receipt.gasUsed !== undefined && receipt.effectiveGasPrice !== undefined ? feeInBaseUnits(receipt.gasUsed, receipt.effectiveGasPrice) : sponsored.fee
  sponsor.release(sponsored.ticket, { sender: sponsored.sender, paid, failed: receipt.status !== 'success' })
}
