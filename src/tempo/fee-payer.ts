/**
 * Fee sponsorship (T3): the server's account pays the transaction fee of a pull payment. The
 * sender signed with an empty fee-payer slot; the sponsor checks its limits, co-signs locally
 * (domain 0x78, committing to the sender and the fee token) and the settlement broadcasts.
 *
 * Fees are counted in fee-token base units: Tempo prices gas in attodollars (1e-18 USD), and a
 * 6-decimal USD token pays `ceil(gas × pricePerGas / 1e12)` base units.
 *
 * Exposure is bounded three ways: per payment (gas, fee per gas, total fee), in flight (the
 * worst-case fees of co-signed payments not yet settled, per process), and by the sponsor's
 * balance, read at most every 30 s (a refresh costs one extra call, run alongside the
 * simulation) and lowered by every fee paid in between.
 */
import { Signature } from 'ox'
import { TxEnvelopeTempo } from 'ox/tempo'
import { decodeFunctionResult, encodeFunctionData, type Address, type Hex, type LocalAccount } from 'viem'
import { tip20 } from './abi.js'
import { PaymentError, unavailable } from '../protocol/problem.js'
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
}

type Envelope = TxEnvelopeTempo.TxEnvelopeTempo

export const balanceTtlMs = 30_000
const attodollarsPerBaseUnit = 10n ** 12n

/** Base units of fee token for `gas × pricePerGas` attodollars, rounded up as the chain does. */
export function feeInBaseUnits(gas: bigint, pricePerGas: bigint): bigint {
  const atto = gas * pricePerGas
  return (atto + attodollarsPerBaseUnit - 1n) / attodollarsPerBaseUnit
}

export type Sponsor = ReturnType<typeof createSponsor>

export function createSponsor(config: FeePayerConfig & { feeToken: Address }, rpc: Rpc, now: () => number) {
  const { account, feeToken } = config
  const maxGas = config.maxGas ?? 2_000_000n
  const maxFeePerGas = config.maxFeePerGas ?? 100_000_000_000n
  const maxTotalFee = config.maxTotalFee ?? 50_000n
  const maxInFlight = config.maxInFlight ?? maxTotalFee * 10n
  const reservations = new Map<string, { fee: bigint; until: number }>()
  let balance: { value: bigint; at: number } | undefined
  let refreshing: Promise<bigint> | undefined

  const inFlight = (except?: string) => {
    const at = now()
    let total = 0n
    for (const [key, reservation] of reservations) {
      if (reservation.until <= at) reservations.delete(key)
      else if (key !== except) total += reservation.fee
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
    limits: { maxGas, maxFeePerGas, maxTotalFee, maxInFlight },

    /** The per-payment limits; returns the worst-case fee in base units. */
    check(tx: Envelope): bigint {
      const gas = tx.gas ?? 0n
      const feePerGas = tx.maxFeePerGas ?? 0n
      if (gas <= 0n) throw new PaymentError('verification-failed', 'a sponsored transaction must declare its gas limit')
      if (gas > maxGas)
        throw new PaymentError('verification-failed', `the transaction declares ${gas} gas; the fee sponsor allows at most ${maxGas}`)
      if (feePerGas <= 0n)
        throw new PaymentError('verification-failed', 'a sponsored transaction must declare maxFeePerGas')
      if (feePerGas > maxFeePerGas)
        throw new PaymentError(
          'verification-failed',
          `the transaction offers ${feePerGas} per gas; the fee sponsor allows at most ${maxFeePerGas}`,
        )
      if ((tx.maxPriorityFeePerGas ?? 0n) > feePerGas)
        throw new PaymentError('verification-failed', 'maxPriorityFeePerGas exceeds maxFeePerGas')
      const fee = feeInBaseUnits(gas, feePerGas)
      if (fee > maxTotalFee)
        throw new PaymentError(
          'verification-failed',
          `the transaction may cost up to ${fee} fee-token base units; the fee sponsor allows at most ${maxTotalFee} per payment`,
        )
      return fee
    },

    /** Whether the cached balance is fresh (the budget check needs no RPC call). */
    balanceKnown(): boolean {
      return balance !== undefined && now() - balance.at < balanceTtlMs
    },

    /** Refuses (503) when the in-flight budget or the sponsor's balance cannot cover `fee`. */
    async budget(fee: bigint, key: string): Promise<void> {
      const pending = inFlight(key)
      if (pending + fee > maxInFlight)
        throw unavailable('the fee sponsor has too many payments awaiting settlement; retry shortly', undefined, 1)
      const value = await readBalance()
      if (value < pending + fee)
        throw unavailable(
          `the fee sponsor's ${feeToken} balance is too low to sponsor this payment; the operator must top it up`,
          undefined,
          30,
        )
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

    reserve(key: string, fee: bigint, until: number) {
      reservations.set(key, { fee, until })
    },

    /** The payment is settled or definitely failed; `paid` is the fee the chain charged, if known. */
    release(key: string, paid?: bigint) {
      reservations.delete(key)
      if (balance && paid !== undefined) balance = { ...balance, value: balance.value - paid }
    },
  }
}
