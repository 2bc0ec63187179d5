/**
 * Payouts (issue #15): a server's accrued earnings sent on chain from the operator's wallet to
 * the developer's payout address, as a TIP-20 `transferWithMemo` whose memo is the payout id.
 *
 * Exactly once, across crashes and across instances, without trusting timing:
 * - The ledger records the intent first (`beginPayout` moves the earnings to payout-pending).
 * - Every transaction ever signed for a payout uses the same Tempo nonce slot: nonce key
 *   `keyFor(id)` (derived from the id), nonce 0. The chain executes at most one transaction per
 *   slot, so however often a payout is (re)broadcast — after a lost answer, by a restarted
 *   process, by two instances at once — at most one transfer can land.
 * - The outcome is decided only from final chain state: a TransferWithMemo log from the operator
 *   with the payout's memo completes the payout with that transaction's hash; a slot consumed
 *   WITHOUT that log (the transaction reverted, or the slot was burnt) cancels it back to
 *   earnings. While the slot is open nothing is final: the payout stays pending and
 *   `reconcilePayouts()` broadcasts it again into the same slot.
 * - A payout that cannot be paid (the node refuses it, the transfer would revert) is cancelled
 *   only after its slot is burnt by a harmless transaction (a `balanceOf` call) in the same slot,
 *   so no earlier copy still in some mempool can land after the earnings went back.
 */
import { Hono } from 'hono'
import {
  type Account,
  type Address,
  type Chain,
  type Client,
  concat,
  encodeFunctionData,
  type Hex,
  hexToBigInt,
  isAddress,
  isAddressEqual,
  isHex,
  keccak256,
  padHex,
  stringToHex,
  type Transport,
  toHex,
} from 'viem'
import { prepareTransactionRequest, readContract, signTransaction, waitForTransactionReceipt } from 'viem/actions'
import { BaseError, ConfigurationError } from '../protocol/errors.js'
import { tip20 } from '../tempo/abi.js'
import { classify, RpcAnswerError } from '../tempo/rpc.js'
import type { PayoutStatus } from './ledger.js'
import { bearerSecret, problem, readJson } from './wire.js'

/** A payout as the ledger records it (`beginPayout`, `pendingPayouts`). */
export type PayoutRecord = {
  id: string
  realm: string
  to: string
  /** Base units. */
  amount: bigint
  status: string
}

/** What payouts need from the ledger (`createLedger()` provides it). */
export type PayoutLedger = {
  beginPayout(input: { realm: string; to: string; amount?: bigint; id?: string }): Promise<PayoutRecord>
  completePayout(id: string, txHash: string): Promise<unknown>
  cancelPayout(id: string): Promise<unknown>
  pendingPayouts(realm?: string): Promise<readonly PayoutRecord[]>
  earnings(realm: string): Promise<{ realm: string; accrued: bigint; paidOut: bigint; pending: bigint }>
}

export type PayoutsConfig = {
  ledger: PayoutLedger
  /**
   * The operator's wallet: a viem client with an `account` (the address that holds the
   * operator's share of the money and pays out) and a Tempo `chain` (its `feeToken`, if set,
   * pays the fees), e.g. `createClient({ account, chain: tempo, transport: http() })`.
   */
  wallet: Client<Transport, Chain, Account>
  /** The TIP-20 token the ledger counts in (its `currency`). */
  currency: Address
  /** Where each server's (realm's) earnings go. Set by the operator, never by a request. */
  payoutAddress: Record<string, Address> | ((realm: string) => Address | undefined | Promise<Address | undefined>)
  /**
   * The first block that can hold a payout of this operator, for payouts whose id does not say
   * when they began (ids made by `payout()` do: the search starts there). Default 0.
   */
  fromBlock?: bigint
  /** Largest block range of one `eth_getLogs` (providers limit it). Default: one request. */
  logBlockRange?: bigint
  /** How long to wait for a broadcast payout's receipt before leaving it pending. Default 60 000. */
  receiptTimeoutMs?: number
}

export type PayoutResult = {
  id: string
  realm: string
  to: Address
  amount: bigint
  status: PayoutStatus
  /** The transaction that paid it (`paid`). */
  txHash?: Hex
  /** Why it is still pending or was cancelled. */
  detail?: string
}

export type PayoutErrorReason = 'no-payout-address' | 'nothing-to-pay' | 'invalid-request'

/** A payout that could not even begin (no earnings, no address): nothing was recorded or sent. */
export class PayoutError extends BaseError {
  override name = 'PayoutError'
  constructor(
    readonly reason: PayoutErrorReason,
    message: string,
  ) {
    super(message)
  }
}

export type Payouts = {
  /** Pays a realm's accrued earnings (or `amount` of them) to its payout address. */
  payout(input: { realm: string; amount?: bigint }): Promise<PayoutResult>
  /** Settles every pending payout (of `realm`) from chain state: paid, re-broadcast into its slot, or cancelled. */
  reconcilePayouts(options?: { realm?: string }): Promise<PayoutResult[]>
  /** The nonce key every transaction of this payout uses (nonce 0). */
  nonceKey(id: string): bigint
  /** The payout's memo: the id itself when it fits in 32 bytes (hex or UTF-8), else its keccak256. */
  memo(id: string): Hex
  /**
   * Operator routes, authenticated by `Authorization: Bearer <operatorSecret>`:
   * `POST /payouts` `{ realm, amount? }`, `POST /payouts/reconcile`, `GET /payouts/pending`,
   * `GET /earnings/:realm`. Mount them with `app.route('/operator', payouts.routes({ operatorSecret }))`.
   */
  routes(options: { operatorSecret: string }): Hono
}

const nonceManager: Address = '0x4e4F4E4345000000000000000000000000000000'
const nonceAbi = [
  {
    name: 'getNonce',
    type: 'function',
    stateMutability: 'view',
    inputs: [
      { type: 'address', name: 'account' },
      { type: 'uint256', name: 'nonceKey' },
    ],
    outputs: [{ type: 'uint64', name: 'nonce' }],
  },
] as const
const transferWithMemoTopic: Hex = '0x57bc7354aa85aed339e000bccffabbc529466af35f0772c8f8ee1145927de7f0'
const domain = stringToHex('hono-mpp/payout')

/** The memo of a payout id: the id when it is 32 bytes of hex or at most 32 bytes of UTF-8, else its hash. */
export function payoutMemo(id: string): Hex {
  if (isHex(id) && id.length === 66) return id.toLowerCase() as Hex
  const bytes = new TextEncoder().encode(id)
  return bytes.length <= 32 ? padHex(toHex(bytes), { dir: 'right', size: 32 }) : keccak256(bytes)
}

/** The Tempo nonce key of a payout: > 0 and below the expiring-nonce key (2^256 − 1). */
export function payoutNonceKey(id: string): bigint {
  return (hexToBigInt(keccak256(concat([domain, payoutMemo(id)]))) >> 8n) + 1n
}

/**
 * A payout id: `po_<block>_<random>`, 32 characters at most (so the memo is the id itself,
 * readable in an explorer), carrying the block it was begun at, where reconcile's log search starts.
 */
export function newPayoutId(block: bigint, operator: Address): string {
  const random = [...crypto.getRandomValues(new Uint8Array(7))].map((byte) => byte.toString(16).padStart(2, '0')).join('')
  return `po_${block.toString(36)}_${walletTag(operator)}${random}`
}

/** The first 6 hex digits of the paying address: a payout names the wallet whose slot it uses. */
const walletTag = (operator: Address) => operator.slice(2, 8).toLowerCase()

const idPattern = /^po_([0-9a-z]{1,10})_([0-9a-f]{6})[0-9a-f]{14}$/

function beganAt(id: string): bigint | undefined {
  const match = idPattern.exec(id)
  return match?.[1] === undefined ? undefined : BigInt(Number.parseInt(match[1], 36))
}

/** Node answers to a broadcast that mean a copy of it is already in flight or landed: not a refusal to pay. */
const inFlight = /already known|already imported|known transaction|replacement transaction underpriced|nonce too low/i

type Found = { nonce: bigint; hash?: Hex }

/**
 * Sets up payouts from the operator's wallet. Call `reconcilePayouts()` at start-up (and from
 * time to time): it finishes whatever a crash left between the broadcast and the ledger write.
 *
 * @throws {ConfigurationError} when the wallet has no account or the addresses are malformed.
 */
export function payouts(config: PayoutsConfig): Payouts {
  const { ledger, wallet, currency } = config
  if (!wallet?.account?.address) throw new ConfigurationError('payouts({ wallet }): the wallet client needs an `account` (the operator address that pays out)')
  if (!wallet.chain) throw new ConfigurationError('payouts({ wallet }): the wallet client needs a Tempo `chain` (e.g. `tempo` from viem/chains)')
  if (!isAddress(currency ?? ''))
    throw new ConfigurationError(`payouts({ currency }): ${String(currency)} is not an address; give the TIP-20 token the ledger counts in`)
  if (typeof config.payoutAddress === 'object' && config.payoutAddress !== null) {
    for (const [realm, address] of Object.entries(config.payoutAddress))
      if (!isAddress(address)) throw new ConfigurationError(`payouts({ payoutAddress }): the address for ${realm} (${String(address)}) is not an address`)
  } else if (typeof config.payoutAddress !== 'function')
    throw new ConfigurationError('payouts({ payoutAddress }): give a map { realm: address } or a function realm → address')
  const operator = wallet.account.address
  const fromBlock = config.fromBlock ?? 0n
  const receiptTimeoutMs = config.receiptTimeoutMs ?? 60_000
  // One settlement per payout at a time in this process; other instances are kept apart by the slot.
  const settling = new Map<string, Promise<PayoutResult>>()

  const addressFor = async (realm: string): Promise<Address | undefined> =>
    typeof config.payoutAddress === 'function' ? await config.payoutAddress(realm) : config.payoutAddress[realm]

  const result = (record: PayoutRecord, status: PayoutStatus, extra: { txHash?: Hex; detail?: string } = {}): PayoutResult => ({
    id: record.id,
    realm: record.realm,
    to: record.to as Address,
    amount: record.amount,
    status,
    ...extra,
  })

  /** The slot's nonce, and the paying transaction if it landed. */
  async function look(record: PayoutRecord): Promise<Found> {
    // One snapshot: the slot's nonce and the logs are read at the same block, so a transfer that
    // used the slot is in the logs searched (no log index lagging behind the state).
    const block = BigInt(await wallet.request({ method: 'eth_blockNumber' }))
    const nonce = BigInt(
      await readContract(wallet, {
        address: nonceManager,
        abi: nonceAbi,
        functionName: 'getNonce',
        args: [operator, payoutNonceKey(record.id)],
        blockNumber: block,
      }),
    )
    // Nothing landed in the slot: no log can exist.
    if (nonce === 0n) return { nonce }
    const hash = await findTransfer(record, block)
    return hash === undefined ? { nonce } : { nonce, hash }
  }

  /** The hash of the operator's TransferWithMemo with this payout's memo, recipient and amount, up to `latest`. */
  async function findTransfer(record: PayoutRecord, latest: bigint): Promise<Hex | undefined> {
    // Ids made here carry the block they were begun at: nothing for them can be older.
    const begun = beganAt(record.id)
    const first = begun !== undefined && begun > fromBlock ? begun : fromBlock
    const step = config.logBlockRange ?? latest - first + 1n
    for (let start = first; start <= latest; start += step) {
      const end = start + step - 1n < latest ? start + step - 1n : latest
      const logs = (await wallet.request({
        method: 'eth_getLogs',
        params: [
          {
            address: currency,
            fromBlock: toHex(start),
            toBlock: toHex(end),
            topics: [transferWithMemoTopic, padHex(operator, { size: 32 }), null, payoutMemo(record.id)],
          },
        ],
      } as never)) as { topics: Hex[]; data: Hex; transactionHash: Hex; removed?: boolean }[]
      const log = logs.find(
        (entry) =>
          !entry.removed &&
          entry.topics[2] !== undefined &&
          isAddressEqual(`0x${entry.topics[2].slice(26)}`, record.to as Address) &&
          BigInt(entry.data) === record.amount,
      )
      if (log) return log.transactionHash
    }
    return undefined
  }

  /** Signs a transaction into the payout's slot. */
  async function sign(record: PayoutRecord, data: Hex): Promise<Hex> {
    const request = await prepareTransactionRequest(wallet, {
      account: wallet.account,
      chain: wallet.chain,
      calls: [{ to: currency, data }],
      nonceKey: payoutNonceKey(record.id),
      nonce: 0,
    } as never)
    return signTransaction(wallet, request as never)
  }

  /** Broadcasts; `refused` when the node answered with an error, `unknown` when it did not answer. */
  async function broadcast(signed: Hex): Promise<{ hash: Hex } | { refused: string } | { unknown: string }> {
    try {
      return { hash: (await wallet.request({ method: 'eth_sendRawTransaction', params: [signed] })) as Hex }
    } catch (error) {
      const sorted = classify('eth_sendRawTransaction', error)
      return sorted instanceof RpcAnswerError ? { refused: sorted.reason } : { unknown: sorted.shortMessage }
    }
  }

  /** Decides from final chain state: landed with the transfer → paid; slot used without it → cancelled. */
  async function decide(record: PayoutRecord, found: Found, reason: string): Promise<PayoutResult | undefined> {
    if (found.hash) {
      try {
        await ledger.completePayout(record.id, found.hash)
      } catch (error) {
        // Paid on chain; the ledger still says pending, and the memo lets reconcile find this hash.
        return result(record, 'pending', {
          txHash: found.hash,
          detail: `paid on chain, but the ledger could not record it (${describe(error)}); reconcilePayouts records it`,
        })
      }
      return result(record, 'paid', { txHash: found.hash })
    }
    if (found.nonce > 0n) {
      try {
        await ledger.cancelPayout(record.id)
      } catch (error) {
        return result(record, 'pending', { detail: `${reason}, but the ledger could not cancel it (${describe(error)}); reconcilePayouts cancels it` })
      }
      return result(record, 'cancelled', { detail: reason })
    }
    return undefined
  }

  /** Makes the slot unusable for the payout (a `balanceOf` call in it), then decides. */
  async function abandon(record: PayoutRecord, reason: string): Promise<PayoutResult> {
    let burnt = 'the slot could not be closed'
    try {
      const signed = await sign(record, encodeFunctionData({ abi: tip20, functionName: 'balanceOf', args: [operator] }))
      const sent = await broadcast(signed)
      if ('hash' in sent) await waitForTransactionReceipt(wallet, { hash: sent.hash, timeout: receiptTimeoutMs, pollingInterval: 250 })
      else burnt = `closing its nonce slot failed: ${'refused' in sent ? sent.refused : sent.unknown}`
    } catch (error) {
      burnt = `closing its nonce slot failed: ${classify('close', error).shortMessage}`
    }
    const decided = await decide(record, await look(record), reason)
    return decided ?? result(record, 'pending', { detail: `${reason}; ${burnt}, so it stays pending (reconcilePayouts retries)` })
  }

  /** Brings one payout to its outcome as far as the chain allows. */
  async function settle(record: PayoutRecord): Promise<PayoutResult> {
    // Its slot belongs to the wallet that began it; another wallet's slot would pay it again.
    const tag = idPattern.exec(record.id)?.[2]
    if (tag !== undefined && tag !== walletTag(operator))
      return result(record, 'pending', { detail: `begun by the wallet 0x${tag}…, not ${operator}; reconcile it with that wallet` })
    const decided = await decide(record, await look(record), 'the payout transaction reverted')
    if (decided) return decided
    let signed: Hex
    try {
      signed = await sign(
        record,
        encodeFunctionData({ abi: tip20, functionName: 'transferWithMemo', args: [record.to as Address, record.amount, payoutMemo(record.id)] }),
      )
    } catch (error) {
      const sorted = classify('prepare', error)
      // The node answered (the transfer would revert: too little in the wallet): it cannot be paid now.
      if (sorted instanceof RpcAnswerError) return abandon(record, `the payout cannot be sent: ${sorted.reason}`)
      return result(record, 'pending', { detail: `the node did not answer: ${sorted.shortMessage}` })
    }
    const sent = await broadcast(signed)
    if ('unknown' in sent) return result(record, 'pending', { detail: `the broadcast's outcome is unknown: ${sent.unknown}` })
    if ('refused' in sent) {
      // Refused: maybe an earlier copy is already in the slot (landed or waiting), maybe it cannot pay.
      const again = await decide(record, await look(record), 'the payout transaction reverted')
      if (again) return again
      if (inFlight.test(sent.refused)) return result(record, 'pending', { detail: `a copy is already in flight: ${sent.refused}` })
      return abandon(record, `the node refused the payout: ${sent.refused}`)
    }
    try {
      await waitForTransactionReceipt(wallet, { hash: sent.hash, timeout: receiptTimeoutMs, pollingInterval: 250 })
    } catch (error) {
      return result(record, 'pending', { txHash: sent.hash, detail: `no receipt yet: ${classify('receipt', error).shortMessage}` })
    }
    // The receipt says it landed; the log (not the receipt's status alone) decides.
    return (await decide(record, await look(record), 'the payout transaction reverted')) ?? result(record, 'pending', { detail: 'landed but not yet visible' })
  }

  function settleOnce(record: PayoutRecord): Promise<PayoutResult> {
    const running = settling.get(record.id)
    if (running) return running
    const started = settle(record).finally(() => settling.delete(record.id))
    settling.set(record.id, started)
    return started
  }

  async function payout(input: { realm: string; amount?: bigint }): Promise<PayoutResult> {
    if (typeof input?.realm !== 'string' || input.realm === '') throw new PayoutError('invalid-request', 'payout({ realm }): name the server (realm) to pay')
    if (input.amount !== undefined && (typeof input.amount !== 'bigint' || input.amount <= 0n))
      throw new PayoutError('invalid-request', 'payout({ amount }): a positive number of base units, or none for all accrued earnings')
    const to = await addressFor(input.realm)
    if (to === undefined || !isAddress(to)) throw new PayoutError('no-payout-address', `no payout address is configured for ${input.realm}`)
    const { accrued } = await ledger.earnings(input.realm)
    const amount = input.amount ?? accrued
    if (amount <= 0n || amount > accrued)
      throw new PayoutError('nothing-to-pay', `${input.realm} has ${accrued} base units of accrued earnings; cannot pay out ${amount}`)
    let record: PayoutRecord
    try {
      const block = BigInt(await wallet.request({ method: 'eth_blockNumber' }))
      record = await ledger.beginPayout({ realm: input.realm, to, amount, id: newPayoutId(block, operator) })
    } catch (error) {
      // Another payout of this realm took the earnings in between.
      const code = (error as { code?: unknown }).code
      if (code === 'nothing-accrued' || code === 'insufficient-earnings')
        throw new PayoutError('nothing-to-pay', `${input.realm} no longer has ${amount} base units of accrued earnings`)
      throw error
    }
    return settleOnce(record)
  }

  async function reconcilePayouts(options: { realm?: string } = {}): Promise<PayoutResult[]> {
    const results: PayoutResult[] = []
    const pending = options.realm === undefined ? await ledger.pendingPayouts() : await ledger.pendingPayouts(options.realm)
    for (const record of pending) results.push(await settleOnce(record))
    return results
  }

  return {
    payout,
    reconcilePayouts,
    nonceKey: payoutNonceKey,
    memo: payoutMemo,
    routes: ({ operatorSecret }) => operatorRoutes({ payout, reconcilePayouts, ledger }, operatorSecret),
  }
}

function describe(error: unknown): string {
  return error instanceof BaseError ? error.shortMessage : error instanceof Error ? error.name : 'error'
}

const json = (value: PayoutResult) => ({ ...value, amount: value.amount.toString() })

function operatorRoutes(p: { payout: Payouts['payout']; reconcilePayouts: Payouts['reconcilePayouts']; ledger: PayoutLedger }, operatorSecret: string): Hono {
  const app = new Hono()
  app.use('*', bearerSecret(operatorSecret, 'payouts.routes({ operatorSecret })'))
  // The ledger or the node could not answer: whatever began stays pending for reconcilePayouts.
  app.onError((error) =>
    problem(503, 'ledger-unavailable', `the ledger or the chain could not answer (${describe(error)}); a begun payout stays pending and is reconciled`),
  )
  app.post('/payouts', async (c) => {
    const body = await readJson(c)
    if (body instanceof Response) return body
    const { realm, amount } = body as { realm?: unknown; amount?: unknown }
    if (typeof realm !== 'string' || (amount !== undefined && (typeof amount !== 'string' || !/^[1-9][0-9]{0,77}$/.test(amount))))
      return problem(400, 'bad-request', 'the body is { "realm": string, "amount"?: base units as a decimal string }')
    try {
      const done = await p.payout({ realm, ...(amount !== undefined && { amount: BigInt(amount) }) })
      if (done.status === 'cancelled') return problem(409, 'payout-cancelled', done.detail ?? 'the payout was cancelled', { payout: json(done) })
      return c.json(json(done), done.status === 'paid' ? 200 : 202)
    } catch (error) {
      if (error instanceof PayoutError) return problem(error.reason === 'invalid-request' ? 400 : 409, error.reason, error.shortMessage)
      throw error
    }
  })
  app.post('/payouts/reconcile', async (c) => c.json({ payouts: (await p.reconcilePayouts()).map(json) }))
  app.get('/payouts/pending', async (c) =>
    c.json({ payouts: (await p.ledger.pendingPayouts()).map((r) => ({ id: r.id, realm: r.realm, to: r.to, amount: r.amount.toString(), status: r.status })) }),
  )
  app.get('/earnings/:realm', async (c) => {
    const e = await p.ledger.earnings(c.req.param('realm'))
    return c.json({ realm: e.realm, accrued: e.accrued.toString(), paidOut: e.paidOut.toString(), pending: e.pending.toString() })
  })
  return app
}
