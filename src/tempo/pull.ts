/**
 * Pull (T2, T3, T4, T7): the client hands over a signed transaction; the server checks it
 * without any RPC (or, when it sponsors the fee, with one simulation), then broadcasts it with
 * `eth_sendRawTransactionSync` and checks the receipt it gets back.
 *
 * Who paid: when the route settles before its handler and the payer pays their own fee, the
 * node's receipt says (`from`): the node checks the signature anyway, and a transaction with a
 * bad one is refused and charges nothing. Recovering the signer here would cost ~1.8 ms, the
 * largest part of a paid request. When the payer must be known before the broadcast (the fee
 * sponsor co-signs for a sender; `settle: 'after'` shows the handler who pays) it is recovered
 * from the sender signature; the `from` a 0x78 envelope carries is only compared, never trusted.
 */
import { Secp256k1 } from 'ox'
import { SignatureEnvelope, TxEnvelopeTempo } from 'ox/tempo'
import { type Address, getAddress, type Hex, isAddressEqual, keccak256 } from 'viem'
import * as z from 'zod/mini'
import type { Settled, Verified } from '../method.js'
import { SettlementUnknownError } from '../method.js'
import { PaymentError, unavailable } from '../protocol/problem.js'
import { decodeEnvelope, type Envelope, readPlainPayment } from './envelope.js'
import type { Sponsor } from './fee-payer.js'
import { feeInBaseUnits } from './fee-payer.js'
import { foreignMemo, isChallengeMemo } from './memo.js'
import { type Receipt, readReceipt } from './receipt.js'
import type { ExpectedTransfer, ParsedRequest } from './request.js'
import { type Rpc, RpcAnswerError, RpcTransportError } from './rpc.js'
import { assertTransfers, transfersFromCalls, transfersFromLogs } from './transfers.js'

/** What settle/recover need, kept (as JSON) with the claim while the outcome is pending. */
const pullData = z.object({
  raw: z.string().check(z.regex(/^0x76([0-9a-fA-F]{2})+$/)),
  hash: z.string().check(z.regex(/^0x[0-9a-f]{64}$/)),
  /** Known before the broadcast only when it was recovered; otherwise the receipt's `from`. */
  payer: z.optional(z.string()),
  validBefore: z.number().check(z.int()),
  currency: z.string(),
  transfers: z.array(z.object({ recipient: z.string(), amount: z.string(), memo: z.optional(z.string()), label: z.string() })),
  /**
   * One of its transfers carries this challenge's attribution memo: it can pay no other
   * challenge, so finding it already on chain means it is this challenge's payment.
   */
  bound: z.optional(z.boolean()),
  /** Worst-case sponsored fee in base units, when the server pays the fee. */
  sponsoredFee: z.optional(z.string()),
  /** The sponsor's ticket for this verification's fee reservation (meaningful only in the process that verified it). */
  reservation: z.optional(z.string()),
})
export type PullData = z.infer<typeof pullData>

/** How long after validBefore a transaction may still land (the chain's clock may lag ours). */
export const expiryGraceMs = 15_000

const secp256k1Order = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n

export type PullContext = {
  rpc: Rpc
  chainId: number
  sponsor: Sponsor | undefined
  now: () => number
}

export async function verifyPull(
  context: PullContext,
  parameters: {
    signature: Hex
    request: ParsedRequest
    expires: Date
    challenge: { id: string; realm: string }
    /** When the route settles: under `after` the handler runs first and is told the payer. */
    settle: 'before' | 'after'
  },
): Promise<Verified> {
  const { request, expires } = parameters
  const raw = parameters.signature.toLowerCase() as Hex
  const envelopeType = raw.slice(0, 4)
  if (envelopeType !== '0x76' && envelopeType !== '0x78')
    throw new PaymentError('malformed-credential', `payload.signature must be a signed Tempo transaction (0x76 or 0x78 envelope), got type ${envelopeType}`)
  let tx: Envelope
  // The received encoding without its sender signature (0x76 envelopes).
  let unsigned: Hex | undefined
  // Read from the hex in strictly canonical form: the received bytes are the canonical encoding.
  let readAsPlainPayment = false
  try {
    const read = readPlainPayment(raw)
    if (read) {
      ;({ tx, unsigned } = read)
      readAsPlainPayment = true
    } else if (envelopeType === '0x76') ({ tx, unsigned } = decodeEnvelope(raw))
    else tx = TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized)
  } catch (error) {
    const reason = (error as Error).message?.split('\n')[0]?.slice(0, 120) ?? 'invalid encoding'
    throw new PaymentError('malformed-credential', `payload.signature is not a decodable Tempo transaction: ${reason}`)
  }
  if (!tx.signature) throw new PaymentError('verification-failed', 'the transaction is not signed by its sender')
  if (tx.chainId !== context.chainId)
    throw new PaymentError('verification-failed', `the transaction is for chain ${tx.chainId}; this route is on chain ${context.chainId}`)

  // What it pays: exactly the route's transfers, nothing else.
  const transfers = transfersFromCalls(tx.calls ?? [], request.currency)
  assertTransfers(request.transfers, transfers, { exact: true, currency: request.currency })
  const foreign = foreignMemo(transfers, parameters.challenge)
  if (foreign)
    throw new PaymentError(
      'verification-failed',
      `${foreign.origin} carries another challenge's MPP attribution memo; a transaction pays exactly one challenge, so use this challenge's memo or none`,
    )

  // When it can land: a bounded window inside the challenge's lifetime.
  const nowSeconds = Math.floor(context.now() / 1000)
  const expirySeconds = Math.floor(expires.getTime() / 1000)
  if (tx.validBefore === undefined) throw new PaymentError('verification-failed', 'the transaction must set validBefore (no later than the challenge expiry)')
  if (tx.validBefore > expirySeconds)
    throw new PaymentError('verification-failed', `the transaction's validBefore (${tx.validBefore}) is after the challenge expiry (${expirySeconds})`)
  if (tx.validBefore <= nowSeconds) throw new PaymentError('payment-expired', `the transaction's validBefore (${tx.validBefore}) has passed`)
  if (tx.validAfter !== undefined && tx.validAfter > nowSeconds)
    throw new PaymentError('verification-failed', `the transaction is not valid before ${tx.validAfter}`)

  const wantsSponsor = tx.feePayerSignature === null
  checkSenderSignature(tx)
  // Nodes hash the canonical encoding: re-encode so our hash is theirs (the sponsor re-encodes below).
  const canonical = wantsSponsor
    ? undefined
    : readAsPlainPayment
      ? raw
      : (TxEnvelopeTempo.serialize({ ...tx, from: undefined } as Envelope).toLowerCase() as Hex)
  // What the sender signed. Without a fee payer, and when the transaction came in its canonical
  // encoding, that is the received bytes minus the signature: hashed as they are, not re-encoded.
  const signPayload =
    unsigned !== undefined && canonical === raw && tx.feePayerSignature === undefined ? keccak256(unsigned) : TxEnvelopeTempo.getSignPayload(tx)

  // Who pays: the signer, recovered only when it must be known before the broadcast (see top).
  let payer: Address | undefined
  if (wantsSponsor || parameters.settle === 'after' || tx.from !== undefined) {
    // For a 0x78 envelope ox's deserialize recovered `from` already unless the fee-payer slot
    // carried a sender address (then `feePayerSignature` is null and `from` is the envelope's
    // claim): recover once.
    payer = recoverSender(tx, signPayload, envelopeType === '0x78' && tx.feePayerSignature !== null ? (tx.from as Address | undefined) : undefined)
    if (tx.from && !isAddressEqual(tx.from as Address, payer))
      throw new PaymentError('verification-failed', `the envelope names sender ${tx.from} but the signature is from ${payer}`)
  }

  const sponsor = request.feePayer ? context.sponsor : undefined
  if (wantsSponsor && !sponsor)
    throw new PaymentError('verification-failed', 'the transaction asks for a fee payer, but this route does not sponsor fees; sign it paying your own fee')
  // The sponsor pays for the payment only: not to provision an access key or delegate an account.
  if (wantsSponsor && (tx.keyAuthorization || (tx.authorizationList?.length ?? 0) > 0))
    throw new PaymentError(
      'verification-failed',
      `a sponsored payment may not carry ${tx.keyAuthorization ? 'a key authorization' : 'an authorization list'}; the fee sponsor pays for the transfers only`,
    )

  let final: Hex
  let sponsoredFee: bigint | undefined
  let reservation: string | undefined
  if (wantsSponsor && sponsor) {
    sponsoredFee = sponsor.check(tx)
    // Every sponsor limit is checked and reserved here, before the first await: concurrent
    // payments (above all, several from one sender, which would each simulate fine against the
    // same state) cannot all pass. Held until the transaction can no longer land.
    reservation = sponsor.reserve({
      sender: payer!,
      key: signPayload,
      fee: sponsoredFee,
      until: tx.validBefore * 1000 + expiryGraceMs,
    })
    try {
      // A stale balance is read beside the simulation; a fresh one was decided by reserve.
      await Promise.all([sponsor.funded(), simulate(context.rpc, tx, payer!, sponsor)])
      final = (await sponsor.cosign(tx, payer!)).toLowerCase() as Hex
    } catch (error) {
      sponsor.release(reservation)
      throw error
    }
  } else final = canonical!
  const hash = keccak256(final)

  const data: PullData = {
    raw: final,
    hash,
    ...(payer && { payer }),
    validBefore: tx.validBefore,
    currency: request.currency,
    transfers: request.transfers.map((t) => ({
      recipient: t.recipient,
      amount: t.amount.toString(),
      ...(t.memo && { memo: t.memo }),
      label: t.label,
    })),
    ...(transfers.some((t) => isChallengeMemo(t.memo, parameters.challenge)) && { bound: true }),
    ...(sponsoredFee !== undefined && { sponsoredFee: sponsoredFee.toString(), reservation }),
  }
  ownData.add(data)
  return {
    status: 'ready',
    type: 'transaction',
    ...(payer && { payer }),
    reference: hash,
    claims: [`tempo:tx:${hash}`, `tempo:sig:${signPayload.toLowerCase()}`],
    validUntil: tx.validBefore * 1000,
    data,
  }
}

/** Refuses sender signatures this server does not take, and non-canonical secp256k1 ones. */
export function checkSenderSignature(tx: Envelope): void {
  const signature = tx.signature as SignatureEnvelope.SignatureEnvelope
  switch (signature.type) {
    case 'secp256k1': {
      const { r, s, yParity } = signature.signature
      if (r <= 0n || r >= secp256k1Order || s <= 0n)
        throw new PaymentError('verification-failed', 'the sender signature is not a valid secp256k1 signature (r or s out of range)')
      if (s > secp256k1Order / 2n || (yParity !== 0 && yParity !== 1))
        throw new PaymentError('verification-failed', 'the sender signature is not in canonical (low-s) form')
      return
    }
    case 'p256':
    case 'webAuthn':
      return
    default:
      throw new PaymentError(
        'verification-failed',
        `${signature.type} sender signatures (access keys, configurable accounts) are not supported; sign with the account's own key`,
      )
  }
}

export function recoverSender(tx: Envelope, payload: Hex, recovered: Address | undefined): Address {
  const signature = tx.signature as SignatureEnvelope.SignatureEnvelope
  switch (signature.type) {
    case 'secp256k1': {
      const { r, s, yParity } = signature.signature
      if (recovered) return getAddress(recovered)
      try {
        return getAddress(Secp256k1.recoverAddress({ payload, signature: { r, s, yParity } }))
      } catch {
        throw new PaymentError('verification-failed', 'the sender signature cannot be recovered')
      }
    }
    case 'p256':
    case 'webAuthn': {
      let valid = false
      let address: Address | undefined
      try {
        address = getAddress(SignatureEnvelope.extractAddress({ payload, signature }))
        valid = SignatureEnvelope.verify(signature, { address, payload })
      } catch {}
      if (!valid || !address) throw new PaymentError('verification-failed', `the sender's ${signature.type} signature does not verify`)
      return address
    }
    default:
      // checkSenderSignature refused every other type already.
      throw new PaymentError('verification-failed', `${signature.type} sender signatures are not supported`)
  }
}

/**
 * One `eth_call` of the sponsored transaction: a sponsored revert still costs the sponsor. Gas
 * limit yes, fee prices no: the fee is the sponsor's (`budget` checks it), and with prices the
 * node charges them to `from`, refusing every payer who holds none of the fee token.
 */
export async function simulate(rpc: Rpc, tx: Envelope, sender: Address, sponsor: Sponsor): Promise<void> {
  const calls = tx.calls ?? []
  const hex = (value: bigint) => `0x${value.toString(16)}`
  const request = {
    from: sender,
    type: '0x76',
    // A single call also goes as to/data, which every node executes (some local nodes drop `calls`).
    ...(calls.length === 1 ? { to: calls[0]?.to, data: calls[0]?.data } : { calls: calls.map((call) => ({ to: call.to, data: call.data, value: '0x0' })) }),
    feePayer: sponsor.address,
    feeToken: sponsor.feeToken,
    ...(tx.gas !== undefined && { gas: hex(tx.gas) }),
  }
  try {
    await rpc.request('eth_call', [request, 'latest'])
  } catch (error) {
    if (error instanceof RpcAnswerError)
      throw new PaymentError('verification-failed', `the transaction would fail, so the fee sponsor will not send it: ${error.reason}`)
    throw unavailable('the Tempo node did not answer the sponsored transaction simulation; retry shortly', error)
  }
}

// What verifyPull built in this process needs no second look; data back from a store does.
const ownData = new WeakSet<object>()

function readData(verified: Verified): PullData {
  const data = verified.data
  if (typeof data === 'object' && data !== null && ownData.has(data)) return data as PullData
  const parsed = pullData.safeParse(data)
  if (!parsed.success) throw new PaymentError('settlement-failed', 'the pending payment record is unreadable; nothing was sent')
  return parsed.data
}

const alreadySent =
  /already known|already imported|known transaction|already exists|already in (the )?pool|nonce too low|replay|already (been )?used|duplicate/i
const stillPending = /timeout|timed out|not (yet )?(mined|included)/i

/** The payment was given up before settling (replay refused, handler failed): free its fee reservation. */
export function abandonPull(context: PullContext, verified: Verified): void {
  const parsed = pullData.safeParse(verified.data)
  if (parsed.success && parsed.data.sponsoredFee !== undefined) context.sponsor?.release(parsed.data.reservation)
}

export async function settlePull(context: PullContext, verified: Verified): Promise<Settled> {
  const data = readData(verified)
  return settleFreeingSponsor(context, data, () => broadcast(context, data, false))
}

export async function recoverPull(context: PullContext, verified: Verified, graceMs: number): Promise<Settled> {
  const data = readData(verified)
  return settleFreeingSponsor(context, data, async () => {
    const found = await lookup(context, data)
    if (found) return finishWithFee(data, found)
    const now = context.now()
    if (now >= data.validBefore * 1000 + graceMs)
      throw new PaymentError('payment-expired', 'the signed transaction expired before it landed; nothing was charged')
    // The chain's clock may lag ours: just past validBefore, the transaction may still land.
    if (now >= data.validBefore * 1000) throw new SettlementUnknownError('the transaction expired moments ago and may still appear in a block; retry shortly')
    return broadcast(context, data, true)
  })
}

/**
 * Runs a settlement step; frees the sponsor's reservation once the outcome is definite, with
 * what the chain charged it, a failure on chain counting against the sender's window.
 */
async function settleFreeingSponsor(context: PullContext, data: PullData, run: () => Promise<Finished>): Promise<Settled> {
  const sponsor = data.sponsoredFee === undefined ? undefined : context.sponsor
  try {
    const { fee, payer } = await run()
    sponsor?.release(data.reservation, fee === undefined ? undefined : { sender: payer, paid: fee, failed: false })
    return { reference: data.hash, payer }
  } catch (error) {
    if (!(error instanceof SettlementUnknownError))
      sponsor?.release(data.reservation, error instanceof SponsoredFailure ? { sender: error.sender, paid: error.sponsorFee, failed: true } : undefined)
    throw error
  }
}

/** What a landed transaction settled: the sponsor's fee (when sponsored) and who paid. */
type Finished = { fee?: bigint; payer: Address }

/**
 * Sends the signed transaction. `recovering`: this is a retry finishing the same challenge's
 * claim, whose earlier attempt may have sent it already. A transaction the node already has is
 * taken as this payment only then, or when its memo binds it to this challenge.
 */
async function broadcast(context: PullContext, data: PullData, recovering: boolean): Promise<Finished> {
  let raw: unknown
  if (data.sponsoredFee !== undefined) context.sponsor?.sent(data.reservation)
  try {
    raw = await context.rpc.request('eth_sendRawTransactionSync', [data.raw])
  } catch (error) {
    if (error instanceof RpcAnswerError) {
      if (error.code === 4 || stillPending.test(error.reason))
        throw new SettlementUnknownError(`the node accepted the transaction but did not report its outcome: ${error.reason}`, {
          cause: error,
        })
      if (alreadySent.test(error.reason)) {
        const found = await lookup(context, data)
        if (found) {
          // On chain before this claim sent it. Bound to this challenge by its memo, it can have
          // paid nothing else (the client sent it itself): it is this payment, as a pushed hash
          // would be. Unbound, it may have paid another request whose claims were lost: only a
          // retry recovering this claim (whose earlier attempt may have sent it) counts it.
          if (!recovering && !data.bound)
            throw new PaymentError(
              'verification-failed',
              'this payment has already been used for another request: its transaction is already on chain; sign a new one',
            )
          return finishWithFee(data, found)
        }
        throw new SettlementUnknownError('the node already has this transaction; its outcome is not known yet', { cause: error })
      }
      throw new PaymentError('settlement-failed', `the node rejected the transaction, nothing was charged: ${error.reason}`, {
        cause: error,
      })
    }
    throw new SettlementUnknownError(`the broadcast did not get an answer: ${(error as Error).message}`, { cause: error })
  }
  let receipt: Receipt
  try {
    receipt = readReceipt(raw)
  } catch (error) {
    throw new SettlementUnknownError('the node answered the broadcast with a malformed receipt', { cause: error })
  }
  return finishWithFee(data, receipt)
}

async function lookup(context: PullContext, data: PullData): Promise<Receipt | undefined> {
  let raw: unknown
  try {
    raw = await context.rpc.request('eth_getTransactionReceipt', [data.hash])
  } catch (error) {
    if (error instanceof RpcTransportError) throw new SettlementUnknownError('the Tempo node did not answer the receipt lookup', { cause: error })
    throw new SettlementUnknownError(`the node refused the receipt lookup: ${(error as Error).message}`, { cause: error })
  }
  if (raw === null || raw === undefined) return undefined
  try {
    return readReceipt(raw)
  } catch (error) {
    throw new SettlementUnknownError('the node returned a malformed receipt', { cause: error })
  }
}

function finishWithFee(data: PullData, receipt: Receipt): Finished {
  if (data.sponsoredFee === undefined || receipt.transactionHash !== data.hash || receipt.status === 'pending') return { payer: finish(data, receipt) }
  // What the sponsor paid; when the receipt does not say, the worst case it reserved.
  const fee =
    receipt.gasUsed !== undefined && receipt.effectiveGasPrice !== undefined
      ? feeInBaseUnits(receipt.gasUsed, receipt.effectiveGasPrice)
      : BigInt(data.sponsoredFee)
  try {
    return { fee, payer: finish(data, receipt) }
  } catch (error) {
    // Included but failed (reverted, or not the payment): the sponsor paid the fee for nothing.
    // Count it now against the cached balance and the sender's window, not at the next read.
    if (error instanceof PaymentError) throw new SponsoredFailure(error, fee, (data.payer as Address | undefined) ?? receipt.from)
    throw error
  }
}

/** A sponsored transaction included on chain without paying: the sponsor paid its fee. */
class SponsoredFailure extends PaymentError {
  constructor(
    failure: PaymentError,
    readonly sponsorFee: bigint,
    readonly sender: Address,
  ) {
    super(failure.kind, failure.detail, { cause: failure })
  }
}

/** A receipt for our transaction: success with the charged transfers (returns the payer), or a definite failure. */
function finish(data: PullData, receipt: Receipt): Address {
  if (receipt.transactionHash !== data.hash) throw new SettlementUnknownError('the node reported a receipt for another transaction hash')
  if (receipt.status === 'pending') throw new SettlementUnknownError('the transaction is not final yet')
  if (receipt.status === 'reverted') throw new PaymentError('settlement-failed', 'the transaction reverted on chain; the payment did not happen')
  const transfers: ExpectedTransfer[] = data.transfers.map((t) => ({
    recipient: t.recipient as Address,
    amount: BigInt(t.amount),
    ...(t.memo && { memo: t.memo as Hex }),
    label: t.label,
  }))
  // The sender as the node executed it: the recovered payer, when there is one, must be it.
  const payer = receipt.from
  if (data.payer !== undefined && !isAddressEqual(data.payer as Address, payer))
    throw new PaymentError('settlement-failed', `the node reports sender ${payer}, not the signer ${data.payer}`)
  const effects = transfersFromLogs(receipt.logs, data.currency as Address).filter((effect) => effect.from !== undefined && isAddressEqual(effect.from, payer))
  try {
    assertTransfers(transfers, effects, { currency: data.currency as Address })
  } catch (error) {
    throw new PaymentError(
      'settlement-failed',
      `the settled transaction's Transfer logs do not match the charge: ${(error as PaymentError).detail ?? 'mismatch'}`,
    )
  }
  return payer
}
