/**
 * Fee sponsorship (T3): the server's account pays the transaction fee of a pull payment. The
 * sender signed with an empty fee-payer slot; the sponsor checks its limits, co-signs locally
 * (domain 0x78, committing to the sender and the fee token) and the settlement broadcasts.
 *
 * Fees are counted in fee-token base units: Tempo prices gas in attodollars (1e-18 USD), and a
 * 6-decimal USD token pays `ceil(gas × pricePerGas / 1e12)` base units.
 *
 * Exposure is bounded per payment (gas, fee per gas, total fee); in flight (the worst-case fees
 * of co-signed payments not yet settled); per sender (one sponsored payment in flight at a time,
 * and a cap on the fees its failed transactions cost within a window); and by the sponsor's
 * balance, read at most every 30 s (a refresh costs one extra call, run alongside the
 * simulation) and lowered by every fee paid in between. Every limit is checked and its share
 * reserved in one synchronous step (`reserve`), before any await: concurrent payments cannot all
 * pass a check that none of them has counted yet. The state is per process.
 */
import { Signature } from 'ox'
import { TxEnvelopeTempo } from 'ox/tempo'
import { type Address, decodeFunctionResult, encodeFunctionData, type Hex, type LocalAccount } from 'viem'
import { PaymentError, unavailable } from '../protocol/problem.js'
import { tip20 } from './abi.js'
import { type Rpc, RpcTransportError } from './rpc.js'

export type FeePayerConfig = {
  /** The sponsor: a local account that can sign hashes (`privateKeyToAccount`, `mnemonicToAccount`). */
  account: LocalAccount
  /** The USD TIP-20 the sponsor pays fees in (default: the route currency). */
  feeToken?: Address
  /** Most gas one sponsored transaction may declare (default 2 000 000). */
  maxGas?: bigint
  /** Most fee per gas, in attodollars (default 100 gwei-equivalent: 100 000 000 000). */
  maxFeePerGas?: bigint
  /** Most total fee per payment (gas × maxFeePerGas), in fee-token base units (default 50 000 = 0.05 USD). */
  maxTotalFee?: bigint
  /** Most worst-case fees of co-signed payments awaiting settlement, in fee-token base units (default 10 × maxTotalFee). */
  maxInFlight?: bigint
  /**
   * Most fees, in fee-token base units, the sponsor pays within `revertWindowMs` for one sender's
   * sponsored transactions that failed on chain (reverted) or whose outcome it never learned;
   * past it, that sender is not sponsored until the window lets it in again (default maxTotalFee).
   */
  maxRevertedFeesPerSender?: bigint
  /** The window of `maxRevertedFeesPerSender`, in ms (default 3 600 000: one hour). */
  revertWindowMs?: number
}

/**
 * Checks a `feePayer` configuration (the charge method's and the session method's), calling
 * `fail` with what to fix. `unit`: what one sponsored thing is called in the messages.
 */
export function checkFeePayer(feePayer: FeePayerConfig, fail: (message: string) => never, unit: 'payment' | 'transaction'): void {
  if (!feePayer || typeof feePayer !== 'object' || !feePayer.account || typeof feePayer.account.address !== 'string')
    fail('`feePayer.account` must be a viem local account (privateKeyToAccount(...)).')
  if (typeof feePayer.account.sign !== 'function')
    fail('`feePayer.account` must be able to sign hashes (a local account such as privateKeyToAccount(...)); JSON-RPC accounts cannot co-sign.')
  for (const key of ['maxGas', 'maxFeePerGas', 'maxTotalFee', 'maxInFlight', 'maxRevertedFeesPerSender'] as const) {
    const value = feePayer[key]
    if (value !== undefined && (typeof value !== 'bigint' || value <= 0n)) fail(`\`feePayer.${key}\` must be a positive bigint, got ${String(value)}.`)
  }
  const perPayment = feePayer.maxTotalFee ?? 50_000n
  if (feePayer.maxInFlight !== undefined && feePayer.maxInFlight < perPayment)
    fail(`\`feePayer.maxInFlight\` is below \`feePayer.maxTotalFee\`: not even one ${unit} could be sponsored.`)
  if (feePayer.maxRevertedFeesPerSender !== undefined && feePayer.maxRevertedFeesPerSender < perPayment)
    fail(
      `\`feePayer.maxRevertedFeesPerSender\` is below \`feePayer.maxTotalFee\`: a ${unit} at the per-payment limit could never be sponsored; raise it or lower maxTotalFee.`,
    )
  if (feePayer.revertWindowMs !== undefined && (!Number.isSafeInteger(feePayer.revertWindowMs) || feePayer.revertWindowMs <= 0))
    fail(`\`feePayer.revertWindowMs\` must be a positive integer number of milliseconds, got ${String(feePayer.revertWindowMs)}.`)
}

type Envelope = TxEnvelopeTempo.TxEnvelopeTempo

const balanceTtlMs = 30_000
const attodollarsPerBaseUnit = 10n ** 12n

/** Base units of fee token for `gas × pricePerGas` attodollars, rounded up as the chain does. */
export function feeInBaseUnits(gas: bigint, pricePerGas: bigint): bigint {
  const atto = gas * pricePerGas
  return (atto + attodollarsPerBaseUnit - 1n) / attodollarsPerBaseUnit
}

export type Sponsor = ReturnType<typeof createSponsor>

const defaultRevertWindowMs = 3_600_000

/** A co-signed payment awaiting settlement, held by the verifications (tickets) that made it. */
type Payment = { sender: string; fee: bigint; until: number; tickets: Set<string>; sent: boolean }

/** What a settled or definitely failed sponsored payment cost the sponsor. */
export type SponsorOutcome = { sender: string; paid: bigint; failed: boolean }

const wholeSeconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000))

export function createSponsor(config: FeePayerConfig & { feeToken: Address }, rpc: Rpc, now: () => number) {
  const { account, feeToken } = config
  const maxGas = config.maxGas ?? 2_000_000n
  const maxFeePerGas = config.maxFeePerGas ?? 100_000_000_000n
  const maxTotalFee = config.maxTotalFee ?? 50_000n
  const maxInFlight = config.maxInFlight ?? maxTotalFee * 10n
  const maxRevertedFeesPerSender = config.maxRevertedFeesPerSender ?? maxTotalFee
  const revertWindowMs = config.revertWindowMs ?? defaultRevertWindowMs
  /** Keyed by sender and sign payload: re-verifying the same transaction joins its payment. */
  const payments = new Map<string, Payment>()
  /** Which payment each ticket (one successful verification) holds. */
  const tickets = new Map<string, string>()
  /** The one payment each sender has in flight. */
  const senders = new Map<string, string>()
  /** Fees lost to each sender's failed sponsored transactions within the window. */
  const losses = new Map<string, { at: number; fee: bigint }[]>()
  // Tickets are unique across processes: data recovered from another instance frees nothing here.
  // Drawn at the first payment, not here: Workers generate no random values outside a request.
  let instance: string | undefined
  let issued = 0
  let balance: { value: bigint; at: number } | undefined
  let refreshing: Promise<bigint> | undefined

  const lose = (sender: string, fee: bigint, at: number) => {
    if (fee <= 0n) return
    const list = losses.get(sender)
    if (list) list.push({ at, fee })
    else losses.set(sender, [{ at, fee }])
    if (losses.size > 1024) for (const key of [...losses.keys()]) lostBy(key, now())
  }

  /** The sender's losses still inside the window, oldest first. */
  const lostBy = (sender: string, at: number) => {
    const list = (losses.get(sender) ?? []).filter((loss) => loss.at > at - revertWindowMs).sort((a, b) => a.at - b.at)
    if (list.length === 0) losses.delete(sender)
    else losses.set(sender, list)
    return list
  }

  const drop = (key: string, payment: Payment) => {
    payments.delete(key)
    for (const ticket of payment.tickets) tickets.delete(ticket)
    if (senders.get(payment.sender) === key) senders.delete(payment.sender)
  }

  /** Drops payments past their validBefore; one that was broadcast and never settled counts as lost. */
  const inFlight = (at: number) => {
    let total = 0n
    for (const [key, payment] of payments) {
      if (payment.until > at) total += payment.fee
      else {
        drop(key, payment)
        if (payment.sent) lose(payment.sender, payment.fee, payment.until)
      }
    }
    return total
  }

  const readBalance = async (): Promise<bigint> => {
    if (balance && now() - balance.at < balanceTtlMs) return balance.value
    refreshing ??= (async () => {
      try {
        const result = await rpc.request<Hex>('eth_call', [
          {
            to: feeToken,
            data: encodeFunctionData({ abi: tip20, functionName: 'balanceOf', args: [account.address] }),
          },
          'latest',
        ])
        const value = decodeFunctionResult({ abi: tip20, functionName: 'balanceOf', data: result }) as bigint
        balance = { value, at: now() }
        return value
      } catch (error) {
        throw unavailable(
          error instanceof RpcTransportError
            ? 'the Tempo node did not answer the fee sponsor balance check; retry shortly'
            : 'the fee sponsor balance could not be read; retry shortly',
          error,
        )
      } finally {
        refreshing = undefined
      }
    })()
    return refreshing
  }

  return {
    address: account.address,
    feeToken,
    limits: { maxGas, maxFeePerGas, maxTotalFee, maxInFlight, maxRevertedFeesPerSender, revertWindowMs },

    /** The per-payment limits; returns the worst-case fee in base units. */
    check(tx: Envelope): bigint {
      const gas = tx.gas ?? 0n
      const feePerGas = tx.maxFeePerGas ?? 0n
      if (gas <= 0n) throw new PaymentError('verification-failed', 'a sponsored transaction must declare its gas limit')
      if (gas > maxGas) throw new PaymentError('verification-failed', `the transaction declares ${gas} gas; the fee sponsor allows at most ${maxGas}`)
      if (feePerGas <= 0n) throw new PaymentError('verification-failed', 'a sponsored transaction must declare maxFeePerGas')
      if (feePerGas > maxFeePerGas)
        throw new PaymentError('verification-failed', `the transaction offers ${feePerGas} per gas; the fee sponsor allows at most ${maxFeePerGas}`)
      if ((tx.maxPriorityFeePerGas ?? 0n) > feePerGas) throw new PaymentError('verification-failed', 'maxPriorityFeePerGas exceeds maxFeePerGas')
      const fee = feeInBaseUnits(gas, feePerGas)
      if (fee > maxTotalFee)
        throw new PaymentError(
          'verification-failed',
          `the transaction may cost up to ${fee} fee-token base units; the fee sponsor allows at most ${maxTotalFee} per payment`,
        )
      return fee
    },

    /**
     * Checks every limit and reserves the payment's worst-case `fee`, in one synchronous step
     * (no await: concurrent payments each see the others' reservations). The sender is the
     * recovered signer; `key` its sign payload. Returns the ticket `release` frees. Refuses when
     * the sender's failed transactions used up its window (402), when the sender has another
     * payment in flight (409), when the in-flight budget or the cached balance cannot cover it (503).
     */
    reserve(payment: { sender: Address; key: Hex; fee: bigint; until: number }): string {
      const at = now()
      const pending = inFlight(at)
      const sender = payment.sender.toLowerCase()
      const key = `${sender}:${payment.key.toLowerCase()}`
      const { fee } = payment

      const lost = lostBy(sender, at)
      let total = lost.reduce((sum, loss) => sum + loss.fee, 0n)
      if (total + fee > maxRevertedFeesPerSender) {
        // When enough of the oldest losses have left the window for this payment to fit.
        let until = at + revertWindowMs
        for (const loss of lost) {
          total -= loss.fee
          if (total + fee <= maxRevertedFeesPerSender) {
            until = loss.at + revertWindowMs
            break
          }
        }
        const retryAfter = wholeSeconds(until - at)
        throw new PaymentError(
          'verification-failed',
          `the fee sponsor already paid ${lost.reduce((sum, loss) => sum + loss.fee, 0n)} fee-token base units for this payer's failed transactions in the last ${wholeSeconds(revertWindowMs)} s and sponsors at most ${maxRevertedFeesPerSender} per payer in that time; retry in ${retryAfter} s, or pay your own fee`,
          { retryAfter },
        )
      }

      const holder = senders.get(sender)
      if (holder !== undefined && holder !== key)
        throw new PaymentError(
          'payment-in-progress',
          `another sponsored payment from ${payment.sender} is awaiting settlement; the fee sponsor sends one payment per payer at a time: retry this credential once it has settled`,
          { retryAfter: 1 },
        )

      const joined = payments.get(key)
      const added = joined ? 0n : fee
      if (pending + added > maxInFlight) throw unavailable('the fee sponsor has too many payments awaiting settlement; retry shortly', undefined, 1)
      if (balance && at - balance.at < balanceTtlMs && balance.value < pending + added)
        throw unavailable(`the fee sponsor's ${feeToken} balance is too low to sponsor this payment; the operator must top it up`, undefined, 30)

      instance ??= Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('')
      const ticket = `${instance}.${++issued}`
      if (joined) joined.tickets.add(ticket)
      else payments.set(key, { sender, fee, until: payment.until, tickets: new Set([ticket]), sent: false })
      senders.set(sender, key)
      tickets.set(ticket, key)
      return ticket
    },

    /**
     * With a stale balance, reads it (one RPC call, run beside the simulation) and refuses (503)
     * when it cannot cover every reserved payment. With a fresh one, `reserve` decided already.
     */
    async funded(): Promise<void> {
      if (balance && now() - balance.at < balanceTtlMs) return
      const value = await readBalance()
      if (value < inFlight(now()))
        throw unavailable(`the fee sponsor's ${feeToken} balance is too low to sponsor this payment; the operator must top it up`, undefined, 30)
    },

    /** Co-signs locally, committing to the recovered sender and the fee token; the final 0x76 bytes. */
    async cosign(tx: Envelope, sender: Address): Promise<Hex> {
      if (!account.sign) throw new Error('tempo: feePayer.account cannot sign hashes')
      const unsigned = TxEnvelopeTempo.from({
        ...tx,
        from: undefined,
        feePayerSignature: undefined,
        feeToken,
      } as Envelope)
      const payload = TxEnvelopeTempo.getFeePayerSignPayload(unsigned, { sender })
      const signature = await account.sign({ hash: payload })
      return TxEnvelopeTempo.serialize({ ...unsigned, signature: tx.signature } as Envelope, {
        feePayerSignature: Signature.from(signature),
      })
    },

    /** The ticket's transaction is about to be broadcast: from now on it may cost its fee. */
    sent(ticket: string | undefined) {
      const key = ticket === undefined ? undefined : tickets.get(ticket)
      const payment = key === undefined ? undefined : payments.get(key)
      if (payment) payment.sent = true
    },

    /**
     * The payment is given up, settled or definitely failed: frees the ticket's reservation (a
     * ticket unknown here, such as another instance's, frees nothing). `outcome`: what the chain
     * charged the sponsor, and whether the payment failed (counted against the sender's window).
     */
    release(ticket: string | undefined, outcome?: SponsorOutcome) {
      const key = ticket === undefined ? undefined : tickets.get(ticket)
      const payment = key === undefined ? undefined : payments.get(key)
      if (key !== undefined && payment) {
        tickets.delete(ticket!)
        payment.tickets.delete(ticket!)
        if (payment.tickets.size === 0) drop(key, payment)
      }
      if (!outcome) return
      if (balance) balance = { ...balance, value: balance.value - outcome.paid }
      if (outcome.failed) lose(outcome.sender.toLowerCase(), outcome.paid, now())
    },
  }
}
