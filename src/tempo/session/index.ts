/**
 * The Tempo session intent (`method="tempo"`, `intent="session"`, draft-tempo-session-00,
 * contract-backed channels, `sessionProtocol` "v1"): the client deposits once into an escrow
 * channel, then pays each request (or each streamed chunk) with an off-chain EIP-712 voucher
 * whose cumulative amount only rises. A voucher is checked with one signature recovery and two
 * claim-store operations — no RPC call; the chain is asked only at open, top-up, settlement,
 * close and `sync`.
 *
 * `tempoSession(config)` returns the payment method (its offers) and the operator's calls:
 * `settle`, `close`, `sync`, `channel`. `sessionIntent` settles its credentials: pass it to
 * `mpp({ intents: [sessionIntent] })`.
 */
import { type Address, decodeFunctionData, getAddress, type Hex, isAddress, type LocalAccount, type Transport } from 'viem'
import type { PaymentInfo } from '../../core/binding.js'
import type { Attempt, Delivery, Intent } from '../../core/intent.js'
import type { ChargeRequest, PaymentMethod, RouteCharge, Settled, Verified } from '../../method.js'
import { base64url } from '../../protocol/encoding.js'
import { ConfigurationError } from '../../protocol/errors.js'
import { PaymentError, unavailable } from '../../protocol/problem.js'
import type { Receipt } from '../../protocol/receipt.js'
import type { Credential } from '../../protocol/types.js'
import { memoryStore } from '../../stores/memory.js'
import type { ClaimStore } from '../../stores/store.js'
import { checkFeePayer, createSponsor, type FeePayerConfig, type Sponsor } from '../fee-payer.js'
import { toBaseUnits } from '../request.js'
import { type Rpc, type RpcCall, rpcOf } from '../rpc.js'
import { broadcast, closeRequests, readChannel, zeroAddress } from './chain.js'
import { escrowAbi } from './escrow-artifact.js'
import { parseSessionPayload, type SessionPayload, sessionActions } from './payload.js'
import { type SettleContext, type Settlement, settleChannel, syncFromChain } from './settle.js'
import { decodeAny, type Expected, type Sponsored, settleSponsored, sponsorTransaction, wantsSponsor } from './sponsor.js'
import { type ChannelState, type ChannelStore, channelStore } from './state.js'
import { domainSeparator, type SignerKeys, signerKeys, voucherDigest } from './voucher.js'

export type { ChannelState } from './state.js'

/** Tempo Testnet (Moderato). */
const defaultChainId = 42431
const pathUsd: Address = '0x20c0000000000000000000000000000000000000'

export type TempoSessionConfig = {
  /** JSON-RPC endpoint of a Tempo node. Exactly one of `rpcUrl` and `transport`. */
  rpcUrl?: string
  transport?: Transport
  /** Chain id (default 42431, Tempo Testnet). */
  chainId?: number
  /** The channel escrow contract the offers name (the canonical one on Tempo networks, or your own deployment). */
  escrow: Address
  /**
   * The payee: a local account (it signs the `settle` and `close` transactions, which the escrow
   * accepts only from the payee). Its address is the offers' `recipient`.
   */
  account: LocalAccount
  /** TIP-20 token of the channels (default pathUSD). */
  currency?: Address
  /** The currency's decimals (default 6). */
  decimals?: number
  /** Token the payee's own transactions pay their fees in (default `currency`). */
  feeToken?: Address
  /** Deposit suggested to clients in the offer, in token units ("1"). */
  suggestedDeposit?: string
  /** Smallest rise of a voucher over the previous one, in token units (default: none). */
  minVoucherDelta?: string
  /** What one unit of the price pays for, as the offer says (default "request"). */
  unitType?: string
  /** Settle a channel's highest voucher on chain once it is this much above what is settled (token units). */
  settleThreshold?: string
  /** Keeps background work (threshold settlements) alive, e.g. a Worker's `ctx.waitUntil`. */
  waitUntil?: (work: Promise<unknown>) => void
  /** Where channel state lives: the same shared store for every instance (default: an in-process memory store). */
  store?: ClaimStore
  /** How long a channel's record is kept after its last change, in ms (default 30 days). */
  retentionMs?: number
  /** Gas limit of the payee's settle/close transactions (default 3 000 000). */
  gas?: bigint
  /** Metered streams: how long to wait for a voucher asked for mid-stream, ms (default 30 000). */
  voucherTimeoutMs?: number
  /** Metered streams: how often to look for a voucher accepted by another instance, ms (default 250). */
  pollMs?: number
  /** RPC timeout in ms (default 10 000). */
  timeout?: number
  onRpcCall?: (call: RpcCall) => void
  now?: () => number
  /**
   * Sponsor the fees of the clients' open and top-up transactions (the charge method's fee
   * sponsor and limits: `{ account, feeToken?, maxGas?, maxFeePerGas?, maxTotalFee?, maxInFlight?,
   * maxRevertedFeesPerSender?, revertWindowMs? }`). The offers then say `feePayer: true`; only
   * approve + open for this payee and currency, or approve + topUp of the named channel, is co-signed.
   */
  feePayer?: FeePayerConfig
}

/** A channel as this server accounts for it (base units). */
export type ChannelView = ChannelState & { available: bigint }

/** The session method: its offers, its intent, and the operator's calls. */
export type TempoSession = PaymentMethod & {
  /** The escrow, chain and payee the offers name. */
  readonly escrow: Address
  readonly chainId: number
  readonly recipient: Address
  /** Settles the channel's highest voucher on chain now (exactly once; finishes an unfinished one first). */
  settle(channelId: Hex): Promise<Settlement>
  /** Closes the channel with its highest voucher: the payee gets it, the payer the rest of the deposit. */
  close(channelId: Hex): Promise<Settlement>
  /**
   * Reads the channel from the escrow (deposit, settled, a forced close the payer requested). When
   * the payer asked for a forced close, stops spending and closes with the highest voucher before
   * the grace period ends. Run it for open channels at least every few minutes (the grace period is 15).
   */
  sync(channelId: Hex): Promise<ChannelState>
  /**
   * Looks on chain for forced closes of this payee's channels (the escrow's `CloseRequested`
   * logs) and runs `sync` on each channel held here, so it stops serving and is closed with its
   * highest voucher inside the grace period. Each look reads from where the previous one stopped
   * (the first reaches `lookbackBlocks` back, default 4 096; or pass `fromBlock`); when a sync
   * fails, the next look reads the same blocks again. Two RPC calls plus a sync per closing
   * channel: run it every minute or so (a timer, or a Workers cron trigger), as the grace period is 15 minutes.
   */
  checkCloses(options?: { fromBlock?: bigint; lookbackBlocks?: bigint }): Promise<{ synced: Hex[]; nextBlock: bigint }>
  /** The channel as accounted here, or undefined. */
  channel(channelId: Hex): Promise<ChannelView | undefined>
}

/** What a metered stream needs of the channel that paid its request. */
export type SessionMeter = {
  channelId: Hex
  /** The price of one unit (base units). */
  price: bigint
  /** Charges one unit now, atomically; false when the vouchers do not cover it. */
  charge(): Promise<boolean>
  /** The channel's current accounting. */
  state(): Promise<ChannelState>
  /** Resolves true once a voucher above `highest` was accepted (here or by another instance), false after the timeout. */
  waitForVoucher(highest: bigint, signal?: AbortSignal): Promise<boolean>
  /** The receipt for the channel now. */
  receipt(state: ChannelState): SessionReceipt
}

/** What `c.get('payment')` holds on a route paid by a session voucher. */
export type SessionPaymentInfo = PaymentInfo & { intent: 'session'; channelId: Hex; session: SessionMeter }

/** The session receipt (draft-tempo-session-00 "Receipt"): per request, with the channel's running totals. */
export type SessionReceipt = Receipt & {
  intent: 'session'
  challengeId: string
  channelId: Hex
  /** The highest voucher accepted (base units). */
  acceptedCumulative: string
  /** Everything the channel spent so far (base units): the running total. */
  spent: string
  units: number
  /** What this request was charged (base units). */
  charged: string
  txHash?: Hex
}

type Internals = {
  config: { escrow: Address; chainId: number; recipient: Address; currency: Address; minDelta: bigint; threshold: bigint | undefined }
  rpc: Rpc
  domain: Hex
  /** Channel signers' public keys, so a later voucher is verified, not recovered. */
  signerKeys: SignerKeys
  channels: ChannelStore
  settling: SettleContext
  voucherTimeoutMs: number
  pollMs: number
  waiters: Map<string, Set<() => void>>
  waitUntil: ((work: Promise<unknown>) => void) | undefined
  now: () => number
  sponsor: Sponsor | undefined
}

const registry = new WeakMap<PaymentMethod, Internals>()

/**
 * Creates the Tempo session method.
 *
 * @param config.escrow — the escrow contract (required); config.account — the payee's local account (required).
 * @param config.rpcUrl / config.transport — a Tempo node (exactly one).
 * @param config.store — the shared store for channel state (Redis, Durable Object) when several instances serve.
 * @throws ConfigurationError on misconfiguration, saying what to fix.
 * @example
 * ```ts
 * const session = tempoSession({ rpcUrl, escrow, account: payee, suggestedDeposit: '1' })
 * const pay = mpp({ secret, methods: [tempo({ rpcUrl, recipient: payee.address }), session], intents: [sessionIntent] })
 * app.on(['GET', 'POST'], '/session', pay.charge({ amount: '0.001' }), (c) => c.json({ ok: true }))
 * ```
 */
export function tempoSession(config: TempoSessionConfig): TempoSession {
  const fail = (message: string): never => {
    throw new ConfigurationError(`tempoSession(): ${message}`)
  }
  if (!config || typeof config !== 'object') fail('pass a configuration object with `escrow`, `account` and `rpcUrl`.')
  if ((config.rpcUrl === undefined) === (config.transport === undefined))
    fail('pass exactly one of `rpcUrl` (a Tempo node URL) or `transport` (a viem transport).')
  if (config.rpcUrl !== undefined && (typeof config.rpcUrl !== 'string' || !/^https?:\/\/\S+$/i.test(config.rpcUrl)))
    fail(`\`rpcUrl\` must be an http(s) URL of a Tempo node, got ${JSON.stringify(config.rpcUrl)}.`)
  const address = (value: unknown, what: string): Address => {
    if (typeof value !== 'string' || !isAddress(value, { strict: false }))
      return fail(`\`${what}\` must be a 0x-prefixed 20-byte address, got ${JSON.stringify(value)}.`)
    return getAddress(value)
  }
  if (config.escrow === undefined) fail('`escrow` is required: the channel escrow contract the offers name (see the README, "Session intent").')
  const escrow = address(config.escrow, 'escrow')
  if (!config.account || typeof config.account.address !== 'string' || typeof config.account.sign !== 'function')
    fail('`account` must be the payee as a local account (privateKeyToAccount(...)): it signs the settle and close transactions.')
  const recipient = getAddress(config.account.address)
  const chainId = config.chainId ?? defaultChainId
  if (!Number.isSafeInteger(chainId) || chainId <= 0) fail(`\`chainId\` must be a positive integer, got ${String(config.chainId)}.`)
  const decimals = config.decimals ?? 6
  if (!Number.isInteger(decimals) || decimals < 0 || decimals > 36) fail(`\`decimals\` must be an integer 0..36, got ${String(config.decimals)}.`)
  const currency = config.currency === undefined ? pathUsd : address(config.currency, 'currency')
  const feeToken = config.feeToken === undefined ? currency : address(config.feeToken, 'feeToken')
  const units = (value: string | undefined, what: string): bigint | undefined => {
    if (value === undefined) return undefined
    try {
      return toBaseUnits(value, decimals, what)
    } catch (error) {
      return fail((error as Error).message)
    }
  }
  const suggestedDeposit = units(config.suggestedDeposit, 'suggestedDeposit')
  const minDelta = units(config.minVoucherDelta, 'minVoucherDelta') ?? 0n
  const threshold = units(config.settleThreshold, 'settleThreshold')
  if (threshold !== undefined && threshold <= 0n) fail('`settleThreshold` must be above zero.')
  const unitType = config.unitType ?? 'request'
  if (typeof unitType !== 'string' || unitType.length === 0) fail('`unitType` must be a non-empty string such as "request" or "chunk".')
  const positive = (value: number | undefined, fallback: number, what: string): number => {
    const chosen = value ?? fallback
    if (typeof chosen !== 'number' || !Number.isFinite(chosen) || chosen <= 0)
      fail(`\`${what}\` must be a positive number of milliseconds, got ${String(value)}.`)
    return chosen
  }
  const timeout = positive(config.timeout, 10_000, 'timeout')
  const retentionMs = positive(config.retentionMs, 30 * 24 * 3_600_000, 'retentionMs')
  const voucherTimeoutMs = positive(config.voucherTimeoutMs, 30_000, 'voucherTimeoutMs')
  const pollMs = positive(config.pollMs, 250, 'pollMs')
  const gas = config.gas ?? 3_000_000n
  if (typeof gas !== 'bigint' || gas <= 0n) fail('`gas` must be a positive bigint.')
  if (config.waitUntil !== undefined && typeof config.waitUntil !== 'function') fail('`waitUntil` must be a function (promise) => void.')
  const now = config.now ?? Date.now
  const rpc = rpcOf(config, chainId, timeout)
  let sponsor: Sponsor | undefined
  const feePayer = config.feePayer
  if (feePayer !== undefined) {
    checkFeePayer(feePayer, fail, 'transaction')
    sponsor = createSponsor({ ...feePayer, feeToken: feePayer.feeToken === undefined ? feeToken : address(feePayer.feeToken, 'feePayer.feeToken') }, rpc, now)
  }
  const store = config.store ?? memoryStore()
  const prefix = `tempo-session:${chainId}:${escrow.toLowerCase()}:`
  const channels = channelStore(store, prefix, retentionMs, now)
  const internals: Internals = {
    // Checksummed like every address read from the chain, so the checks of a channel hold whatever case the offer carries.
    config: { escrow, chainId, recipient, currency: getAddress(currency), minDelta, threshold },
    rpc,
    domain: domainSeparator(escrow, chainId),
    signerKeys: signerKeys(),
    channels,
    settling: {
      rpc,
      store,
      channels,
      signer: { account: config.account, chainId, escrow, feeToken, gas },
      escrow,
      prefix,
      leaseMs: 60_000,
      validitySeconds: 20,
      now,
    },
    voucherTimeoutMs,
    pollMs,
    waiters: new Map(),
    waitUntil: config.waitUntil,
    now,
    sponsor,
  }

  const unused = async (): Promise<never> => {
    throw new Error('tempoSession: session credentials are settled by its intent (pass `intents: [sessionIntent]` to mpp())')
  }
  const method: TempoSession = {
    name: 'tempo',
    intent: 'session',
    escrow,
    chainId,
    recipient,
    request(charge: RouteCharge): ChargeRequest {
      const amount = toBaseUnits(charge.amount, decimals, 'amount')
      if (amount === 0n) throw new Error('a session price must be above zero (a free route needs no payment)')
      return {
        amount: amount.toString(),
        currency,
        recipient,
        unitType,
        ...(suggestedDeposit !== undefined && { suggestedDeposit: suggestedDeposit.toString() }),
        ...(charge.description !== undefined && { description: charge.description }),
        ...(charge.externalId !== undefined && { externalId: charge.externalId }),
        methodDetails: {
          escrowContract: escrow,
          chainId,
          ...(minDelta > 0n && { minVoucherDelta: minDelta.toString() }),
          sessionProtocol: 'v1',
          ...(sponsor && { feePayer: true }),
        },
      } as ChargeRequest
    },
    verify: unused as () => Promise<Verified>,
    settle: unused as () => Promise<Settled>,
    recover: unused as () => Promise<Settled>,
  } as unknown as TempoSession
  // Where the next look for forced closes starts (checkCloses).
  let closesFrom: bigint | 'lookback' = 'lookback'
  Object.assign(method, {
    settle: (channelId: Hex) => settleChannel(internals.settling, normalize(channelId), 'settle'),
    close: (channelId: Hex) => settleChannel(internals.settling, normalize(channelId), 'close'),
    async sync(channelId: Hex) {
      const id = normalize(channelId)
      const state = await syncFromChain(internals.settling, id)
      // A pending forced close already stops spending (closeRequested). Before the grace period
      // ends, close with the highest voucher: at or above what was consumed, the only amount the
      // escrow can capture (a payer leaving unilaterally forgoes the exact-capture of a cooperative close).
      if (state.closeRequested && !state.finalized && state.signature && state.highest > state.settled)
        return (await settleChannel(internals.settling, id, 'close')).state
      return (await channels.load(id))?.state ?? state
    },
    async checkCloses(options: { fromBlock?: bigint; lookbackBlocks?: bigint } = {}) {
      const from = options.fromBlock ?? closesFrom
      const found = await closeRequests(internals.rpc, escrow, internals.config.recipient, from, options.lookbackBlocks ?? 4096n).catch((error) => {
        throw unavailable('the Tempo node did not answer the look for forced closes; try again', error)
      })
      const synced: Hex[] = []
      let failure: unknown
      for (const id of found.channels) {
        if (!(await channels.load(id))) continue // not a channel this server holds
        try {
          await method.sync(id)
          synced.push(id)
        } catch (error) {
          failure ??= error
        }
      }
      if (failure !== undefined) throw failure
      closesFrom = found.nextBlock
      return { synced, nextBlock: found.nextBlock }
    },
    async channel(channelId: Hex) {
      const found = await channels.load(normalize(channelId))
      return found ? { ...found.state, available: found.state.highest - found.state.spent } : undefined
    },
  })
  registry.set(method, internals)
  return method
}

const normalize = (channelId: Hex) => {
  if (typeof channelId !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(channelId)) throw new Error('channelId must be a bytes32 hex string')
  return channelId.toLowerCase() as Hex
}

/**
 * A payment-only update (voucher, open, top-up, close), answered 204 without running the work: a
 * HEAD (the draft's voucher-only form), or a bodiless POST without a query to the URL the
 * challenge was issued for (how the reference client sends mid-stream vouchers and closes).
 */
function paymentOnly(target: string, hasBody: boolean): boolean {
  return target.startsWith('HEAD ') || (target.startsWith('POST ') && !hasBody && !target.includes('?'))
}

function actionOf(credential: Credential): string | undefined {
  const action = (credential.payload as { action?: unknown } | null)?.action
  return typeof action === 'string' ? action : undefined
}

/** The session intent: one object for every session method (each offer names its method). */
export const sessionIntent: Intent = {
  name: 'session',
  sameTarget(bound, current, credential, hasBody) {
    const action = actionOf(credential)
    // Only a payment-only update (HEAD, or a bodiless POST without a query) may carry a challenge
    // issued for the same URL under another HTTP method or with a body: it serves no content.
    if (!action || !(sessionActions as readonly string[]).includes(action) || !paymentOnly(current, hasBody)) return false
    return bound.slice(bound.indexOf(' ')) === current.slice(current.indexOf(' '))
  },
  async pay<Result>(attempt: Attempt<Result>): Promise<Delivery<Result>> {
    const internals = registry.get(attempt.offer.paymentMethod)
    if (!internals) throw new PaymentError('method-unsupported', 'this offer is not a tempoSession() method; the session intent settles only those')
    const payload = parseSessionPayload(attempt.credential.payload)
    const price = BigInt(attempt.offer.request.amount)
    const management = payload.action === 'close' || payload.action === 'topUp' || paymentOnly(attempt.target, attempt.hasBody)
    if (management && !attempt.acknowledge)
      throw new PaymentError('bad-request', `a session "${payload.action}" without a paid request cannot be carried by this transport; send it over HTTP`)
    const charge = management ? 0n : price
    const event = { challengeId: attempt.credential.challenge.id, method: attempt.offer.method, intent: 'session' }
    // Idempotent replay (draft §12.4): a retry of this credential with the same Idempotency-Key
    // gets the kept answer, and `spent` does not grow again.
    const replay = management ? undefined : await replayOf(internals, attempt)
    if (replay?.kind === 'kept') {
      attempt.emit({ type: 'replayed', ...event })
      return { result: attempt.replay!.restore(replay.answer), succeeded: true, receipt: undefined, replayed: true }
    }
    try {
      const delivery = await serve(internals, attempt, payload, { price, charge, management, event, ...(replay && { keep: replay.keep }) })
      if (!delivery.succeeded) await replay?.release()
      return delivery
    } catch (error) {
      await replay?.release()
      throw error
    }
  },
}

type Served = {
  price: bigint
  charge: bigint
  management: boolean
  event: { challengeId: string; method: string; intent: string }
  keep?: (answer: unknown) => Promise<void>
}

/** The record of an idempotent request: held while it runs, then the answer as delivered. */
async function replayOf<Result>(
  internals: Internals,
  attempt: Attempt<Result>,
): Promise<{ kind: 'kept'; answer: unknown } | { kind: 'held'; keep: (answer: unknown) => Promise<void>; release: () => Promise<void> } | undefined> {
  if (attempt.idempotencyKey === undefined || !attempt.replay) return undefined
  const { store, prefix } = internals.settling
  const key = `${prefix}idem:${attempt.credential.challenge.id}:${attempt.idempotencyKey}`
  const owner = base64url(crypto.getRandomValues(new Uint8Array(16)))
  const expires = internals.now() + 24 * 3_600_000
  const fingerprint = attempt.fingerprint
  const claimed = await store
    .claim(key, { state: 'pending', expires, lease: internals.now() + attempt.leaseMs, owner, data: JSON.stringify({ fp: fingerprint }) })
    .catch((error) => {
      throw unavailable('the payment store is unreachable; nothing was charged, retry shortly', error)
    })
  if (!claimed) {
    const held = await store.get(key)
    const kept = held?.data ? (JSON.parse(held.data) as { fp?: string; answer?: unknown }) : undefined
    if (kept?.fp !== fingerprint)
      throw new PaymentError('bad-request', 'this Idempotency-Key was already used with another credential for this challenge; use a new key')
    if (held?.state === 'settled' && 'answer' in kept) return { kind: 'kept', answer: kept.answer }
    throw new PaymentError('payment-in-progress', 'a request with this credential and Idempotency-Key is in progress; retry shortly', { retryAfter: 1 })
  }
  return {
    kind: 'held',
    keep: async (answer) => {
      await store.transition(key, 'pending', { state: 'settled', expires, data: JSON.stringify({ fp: fingerprint, answer }) }, owner).catch(() => false)
    },
    release: async () => {
      await store.transition(key, 'pending', null, owner).catch(() => false)
    },
  }
}

async function serve<Result>(internals: Internals, attempt: Attempt<Result>, payload: SessionPayload, served: Served): Promise<Delivery<Result>> {
  const { price, charge, management, event } = served

  let state: ChannelState
  let txHash: Hex | undefined
  switch (payload.action) {
    case 'open':
      await open(internals, payload, price)
      state = await acceptVoucher(internals, payload.channelId, payload.cumulativeAmount, payload.signature, charge)
      break
    case 'voucher':
      state = await acceptVoucher(internals, payload.channelId, payload.cumulativeAmount, payload.signature, charge)
      break
    case 'topUp':
      state = await topUp(internals, payload, price)
      break
    case 'close': {
      const closed = await close(internals, payload)
      state = closed.state
      txHash = closed.txHash
      break
    }
  }
  attempt.emit({ type: 'verified', ...event, payer: state.payer, credentialType: payload.action })
  const receipt = receiptOf(attempt.credential.challenge.id, state, charge, txHash, attempt.externalId)
  const settled = (amount: bigint) =>
    attempt.emit({
      type: 'settled',
      ...event,
      reference: state.channelId,
      payer: state.payer,
      recovered: false,
      amount: amount.toString(),
      currency: attempt.offer.request.currency,
    })
  if (management) {
    settled(0n)
    return { result: attempt.acknowledge!(), succeeded: true, receipt, replayed: false }
  }
  const meter = meterOf(internals, state.channelId, price, attempt.credential.challenge.id)
  const info: SessionPaymentInfo = {
    method: attempt.offer.method,
    intent: 'session',
    challengeId: attempt.credential.challenge.id,
    amount: attempt.offer.request.amount,
    decimalAmount: attempt.offer.decimalAmount,
    currency: attempt.offer.request.currency,
    recipient: attempt.offer.request.recipient,
    payer: state.payer,
    reference: state.channelId,
    credentialType: payload.action,
    settled: false,
    receipt,
    channelId: state.channelId,
    session: meter,
  }
  // The unit is reserved (spent) atomically before the work runs, so concurrent requests never
  // spend more than the vouchers cover. Under `settle: 'before'` it is charged now and stays
  // charged when the work fails; under `settle: 'after'` it is charged only once the work
  // succeeded, and given back when it failed.
  const after = attempt.timing === 'after'
  if (!after) settled(price)
  let outcome: Awaited<ReturnType<typeof attempt.run>>
  try {
    outcome = await attempt.run(info)
  } catch (error) {
    if (after) await giveBack(internals, attempt, state.channelId, charge, 'the paid work threw')
    throw error
  }
  if (!outcome.succeeded) {
    if (after) await giveBack(internals, attempt, state.channelId, charge, outcome.failure ?? 'the paid work did not succeed')
    return { result: outcome.result, succeeded: false, receipt: undefined, replayed: false }
  }
  if (after) settled(price)
  attempt.emit({ type: 'delivered', ...event, amount: price.toString(), currency: attempt.offer.request.currency })
  return { result: outcome.result, succeeded: true, receipt, replayed: false, ...(served.keep && { keep: served.keep }) }
}

/**
 * `settle: 'after'`, the work failed: the unit reserved for it is given back by a compare-and-swap
 * on the channel's record (against whatever other requests changed meanwhile), so the client's
 * next request uses it. Not once a close began (the close captures what was spent when it
 * started), nor when the store cannot be reached: then the unit stays charged.
 */
async function giveBack<Result>(internals: Internals, attempt: Attempt<Result>, channelId: Hex, charge: bigint, why: string): Promise<void> {
  const given = await internals.channels
    .update(channelId, (s) => {
      if (s.finalized || s.closing || s.spent < charge || s.units < 1) return { value: false }
      return { next: { ...s, spent: s.spent - charge, units: s.units - 1 }, value: true }
    })
    .then(({ value }) => value)
    .catch(() => false)
  if (given) {
    notify(internals, channelId)
    attempt.emit({
      type: 'released',
      challengeId: attempt.credential.challenge.id,
      method: attempt.offer.method,
      intent: 'session',
      reason: `${why}; the unit was given back to channel ${channelId}`,
    })
  }
}

function receiptOf(challengeId: string, state: ChannelState, charged: bigint, txHash: Hex | undefined, externalId: string | undefined): SessionReceipt {
  return {
    method: 'tempo',
    intent: 'session',
    status: 'success',
    timestamp: new Date().toISOString(),
    reference: state.channelId,
    challengeId,
    channelId: state.channelId,
    acceptedCumulative: state.highest.toString(),
    spent: state.spent.toString(),
    units: state.units,
    charged: charged.toString(),
    ...(txHash !== undefined && { txHash }),
    ...(externalId !== undefined && { externalId }),
  }
}

/**
 * Accepts a voucher and charges `charge` in one atomic step. The signature is checked once,
 * before (it does not depend on the channel's changing state); the rules are decided on the
 * state the swap is made against.
 */
async function acceptVoucher(internals: Internals, channelId: Hex, cumulative: bigint, signature: Hex, charge: bigint): Promise<ChannelState> {
  const loaded = await internals.channels.load(channelId)
  if (!loaded) throw notFound(channelId)
  checkOwned(internals, loaded.state)
  checkSignature(internals, loaded.state, cumulative, signature, 'voucher')
  const { state, value } = await internals.channels.update(channelId, (s) => decide(s, cumulative, signature, charge, internals.config.minDelta), loaded)
  if (value.raised) {
    notify(internals, channelId)
    const threshold = internals.config.threshold
    if (threshold !== undefined && state.highest - state.settled >= threshold) {
      const work = settleChannel(internals.settling, channelId, 'settle').catch(() => undefined)
      internals.waitUntil?.(work)
    }
  }
  if (value.refusal) throw value.refusal
  return state
}

type Decision = { next?: ChannelState; value: { raised: boolean; refusal?: PaymentError } }

/** The voucher rules on one state of the channel (the one the swap is made against). */
function decide(s: ChannelState, cumulative: bigint, signature: Hex, charge: bigint, minDelta: bigint): Decision {
  const channelId = s.channelId
  const members = { channelId }
  if (s.finalized) throw new PaymentError('session/channel-finalized', `channel ${channelId} is closed; open a new channel`, { members })
  if (s.closing || s.closeRequested)
    throw new PaymentError(
      'session/channel-finalized',
      `channel ${channelId} is closing (${s.closing ? 'a cooperative close was requested' : 'the payer requested a forced close on chain'}); open a new channel`,
      { members },
    )
  if (cumulative > s.deposit)
    throw new PaymentError(
      'session/amount-exceeds-deposit',
      `the voucher's cumulativeAmount ${cumulative} exceeds the channel's deposit ${s.deposit}; top up the deposit by at least ${cumulative - s.deposit} first`,
      { members },
    )
  if (cumulative < s.highest)
    throw new PaymentError(
      'verification-failed',
      `the voucher's cumulativeAmount ${cumulative} is below the highest accepted ${s.highest}; cumulative amounts never decrease — sign at least ${larger(s.spent + charge, s.highest)}`,
      { members },
    )
  const rise = cumulative - s.highest
  if (rise > 0n && rise < minDelta)
    throw new PaymentError('session/delta-too-small', `the voucher rises by ${rise}, below the minimum increment ${minDelta}`, { members })
  const highest = cumulative
  if (highest - s.spent < charge) {
    // The voucher itself is valid: it is kept (the draft persists it before the balance check),
    // and the request is refused for the balance it still lacks.
    const required = s.spent + charge
    const refusal = new PaymentError(
      'session/insufficient-balance',
      `this request costs ${charge}; the channel's vouchers cover ${highest} and ${s.spent} is spent: sign a voucher for a cumulativeAmount of at least ${required}${required > s.deposit ? ` after topping up the deposit by ${required - s.deposit}` : ''}`,
      { members: { channelId, requiredTopUp: (required - highest).toString(), requiredCumulative: required.toString() } },
    )
    if (rise === 0n) throw refusal
    return { next: { ...s, highest, signature }, value: { raised: true, refusal } }
  }
  if (rise === 0n && charge === 0n) return { value: { raised: false } }
  return {
    next: { ...s, highest, signature: rise > 0n ? signature : s.signature, spent: s.spent + charge, units: s.units + (charge > 0n ? 1 : 0) },
    value: { raised: rise > 0n },
  }
}

/** The larger of two amounts (Math.max takes no bigints). */
export function larger(a: bigint, b: bigint): bigint {
  if (a > b) return a
  return b
}

const notFound = (channelId: Hex) =>
  new PaymentError('session/channel-not-found', `channel ${channelId} is not open with this server; open it first (action "open")`, {
    members: { channelId },
  })

/**
 * A channel pays only the method it was opened for: its payee and token are this method's. One
 * store (and one escrow, such as the canonical one) may hold the channels of several methods —
 * other payees, other tokens — and a voucher of one must not pay a route priced by another.
 */
function checkOwned(internals: Internals, state: ChannelState): void {
  const { recipient, currency } = internals.config
  if (state.payee !== recipient || state.token !== currency)
    throw new PaymentError(
      'verification-failed',
      `channel ${state.channelId} pays ${state.payee} in ${state.token}; this route is paid to ${recipient} in ${currency}: open a channel for it`,
      { members: { channelId: state.channelId } },
    )
}

/** The voucher (or close request) must be signed, in canonical low-s form, by the channel's signer as the escrow recorded it. */
function checkSignature(internals: Internals, state: ChannelState, cumulative: bigint, signature: Hex, what: string): void {
  const found = internals.signerKeys.check(voucherDigest(internals.domain, state.channelId, cumulative), signature, state.signer)
  if (found === 'invalid')
    throw new PaymentError(
      'session/invalid-signature',
      `the ${what} signature does not verify (EIP-712 "Tempo Stream Channel" v1, chain ${internals.config.chainId}, escrow ${internals.config.escrow}; 65 or 64 bytes, low s)`,
      { members: { channelId: state.channelId } },
    )
  if (found === 'mismatch')
    throw new PaymentError(
      'session/signer-mismatch',
      `the ${what} is not signed by the channel's signer ${state.signer} (for chain ${internals.config.chainId}, escrow ${internals.config.escrow}, this channel and amount)`,
      { members: { channelId: state.channelId } },
    )
}

function notify(internals: Internals, channelId: Hex) {
  const waiting = internals.waiters.get(channelId)
  if (!waiting) return
  internals.waiters.delete(channelId)
  for (const wake of waiting) wake()
}

/** Decodes the client's signed transaction far enough to see its calls, without recovering the sender. */
function callsOf(raw: Hex, chainId: number): { to: Address; data: Hex }[] {
  const tx = decodeAny(raw)
  if (Number(tx.chainId) !== chainId)
    throw new PaymentError('verification-failed', `the transaction is for chain ${tx.chainId}; this server's channels are on chain ${chainId}`)
  return ((tx as unknown as { calls?: readonly { to?: string; data?: string }[] }).calls ?? []).flatMap((call) =>
    call.to && call.data ? [{ to: getAddress(call.to), data: call.data as Hex }] : [],
  )
}

function escrowCall(internals: Internals, raw: Hex, name: 'open' | 'topUp'): readonly unknown[] {
  for (const call of callsOf(raw, internals.config.chainId)) {
    if (call.to !== internals.config.escrow) continue
    try {
      const decoded = decodeFunctionData({ abi: escrowAbi, data: call.data })
      if (decoded.functionName === name) return decoded.args ?? []
    } catch {}
  }
  throw new PaymentError('verification-failed', `the transaction makes no ${name} call to the escrow ${internals.config.escrow}`)
}

/**
 * Broadcasts the client's transaction, co-signed first when it asks for a fee payer (and passes
 * the sponsor's checks); the chain is read afterwards to see what it did. A sponsored
 * transaction's reservation is freed once its outcome is definite; when it is not (no answer,
 * or the node had it already), it is held until the transaction can no longer land.
 */
async function send(internals: Internals, raw: Hex, expected: Expected): Promise<'landed' | 'reverted' | 'known'> {
  const what = expected.action
  const sponsor = internals.sponsor
  let sponsored: Sponsored | undefined
  const tx = decodeAny(raw)
  if (wantsSponsor(tx)) {
    sponsored = await sponsorTransaction(internals.rpc, sponsor, tx, expected, internals.now())
    sponsor!.sent(sponsored.ticket)
  }
  let sent: Awaited<ReturnType<typeof broadcast>>
  try {
    sent = await broadcast(internals.rpc, sponsored?.raw ?? raw)
  } catch (error) {
    throw unavailable(`the ${what} transaction was sent but the node did not report its outcome; retry with the same credential`, error)
  }
  if (sent.kind === 'refused') {
    if (sponsored) sponsor!.release(sponsored.ticket)
    throw new PaymentError('settlement-failed', `the node refused the ${what} transaction, nothing happened: ${sent.reason}`)
  }
  if (sent.kind === 'known') return 'known'
  if (sponsored) settleSponsored(sponsor!, sponsored, sent.receipt)
  return sent.receipt.status === 'success' ? 'landed' : 'reverted'
}

/** Opens (or finds) the channel: broadcast, then check on chain; creates its record. */
async function open(internals: Internals, payload: Extract<SessionPayload, { action: 'open' }>, price: bigint): Promise<void> {
  const known = await internals.channels.load(payload.channelId)
  if (known) return checkOwned(internals, known.state) // a retry of the open: the voucher decides
  const { escrow, recipient, currency } = internals.config
  const [payee, token, deposit] = escrowCall(internals, payload.transaction, 'open') as [Address, Address, bigint]
  if (getAddress(payee) !== recipient) throw new PaymentError('verification-failed', `the channel's payee is ${payee}; this server is paid at ${recipient}`)
  if (getAddress(token) !== currency) throw new PaymentError('verification-failed', `the channel's token is ${token}; this server takes ${currency}`)
  // Checked before it is sent (or co-signed): a channel the server would refuse once opened would
  // lock the payer's deposit until a forced close, and cost a sponsor its fee for nothing.
  if (deposit < price)
    throw new PaymentError('payment-insufficient', `the open deposits ${deposit}, less than the price ${price}; deposit at least ${price} (nothing was sent)`)
  const outcome = await send(internals, payload.transaction, {
    action: 'open',
    escrow,
    recipient,
    currency,
    channelId: payload.channelId,
    chainId: internals.config.chainId,
  })
  const chain = await readChannel(internals.rpc, escrow, payload.channelId).catch((error) => {
    throw unavailable('the Tempo node did not answer a channel read; retry with the same credential', error)
  })
  if (chain.payer === zeroAddress) {
    if (outcome === 'reverted')
      throw new PaymentError('settlement-failed', 'the open transaction reverted on chain (gas, allowance or balance); no channel was opened')
    throw new PaymentError(
      'verification-failed',
      outcome === 'known' ? 'the channel is not on chain yet; retry with the same credential' : `the transaction did not open channel ${payload.channelId}`,
    )
  }
  if (chain.payee !== recipient)
    throw new PaymentError('verification-failed', `channel ${payload.channelId} pays ${chain.payee}, not this server (${recipient})`)
  if (chain.token !== currency)
    throw new PaymentError('verification-failed', `channel ${payload.channelId} holds ${chain.token}; this server takes ${currency}`)
  if (chain.finalized) throw new PaymentError('verification-failed', `channel ${payload.channelId} is closed; open a new channel`)
  if (chain.closeRequestedAt !== 0n)
    throw new PaymentError('verification-failed', `channel ${payload.channelId} has a forced close pending; open a new channel`)
  if (chain.deposit - chain.settled < price)
    throw new PaymentError(
      'payment-insufficient',
      `channel ${payload.channelId} holds ${chain.deposit - chain.settled} unsettled, less than the price ${price}`,
    )
  await internals.channels.create({
    channelId: payload.channelId,
    payer: chain.payer,
    payee: chain.payee,
    token: chain.token,
    signer: chain.authorizedSigner === zeroAddress ? chain.payer : chain.authorizedSigner,
    deposit: chain.deposit,
    settled: chain.settled,
    highest: chain.settled,
    spent: chain.settled,
    units: 0,
    closeRequested: false,
    closing: false,
    finalized: false,
  })
}

async function topUp(internals: Internals, payload: Extract<SessionPayload, { action: 'topUp' }>, price: bigint): Promise<ChannelState> {
  const known = await internals.channels.load(payload.channelId)
  if (!known) throw notFound(payload.channelId)
  checkOwned(internals, known.state)
  if (known.state.finalized)
    throw new PaymentError('session/channel-finalized', `channel ${payload.channelId} is closed; open a new channel`, {
      members: { channelId: payload.channelId },
    })
  const [channelId, added] = escrowCall(internals, payload.transaction, 'topUp') as [Hex, bigint]
  if (channelId.toLowerCase() !== payload.channelId)
    throw new PaymentError('verification-failed', `the transaction tops up channel ${channelId}, not ${payload.channelId}`)
  // The sponsor pays a fee only for a top-up that funds at least one unit, as for an open: tiny
  // top-ups sent one after another would otherwise spend its fees for nothing.
  if (added < price && wantsSponsor(decodeAny(payload.transaction)))
    throw new PaymentError(
      'payment-insufficient',
      `a fee-sponsored top-up must add at least the price ${price}; this one adds ${added} (nothing was sent; add more, or pay your own fee)`,
    )
  const outcome = await send(internals, payload.transaction, {
    action: 'topUp',
    escrow: internals.config.escrow,
    currency: internals.config.currency,
    channelId: payload.channelId,
  })
  if (outcome === 'reverted')
    throw new PaymentError('settlement-failed', 'the top-up transaction reverted on chain (allowance or balance); the deposit is unchanged')
  return syncFromChain(internals.settling, payload.channelId)
}

/**
 * Cooperative close: the close request must cover max(spent, settled); the payee captures exactly
 * that (never more than was consumed), the payer gets the rest. A contract-backed channel pays
 * what the voucher it is closed with says, so the close runs with a voucher signed for exactly
 * that amount: the close request's own, or the highest voucher held when it equals the capture;
 * at or below what is settled, the escrow checks no voucher.
 */
async function close(internals: Internals, payload: Extract<SessionPayload, { action: 'close' }>): Promise<Settlement> {
  const loaded = await internals.channels.load(payload.channelId)
  if (!loaded) throw notFound(payload.channelId)
  checkOwned(internals, loaded.state)
  checkSignature(internals, loaded.state, payload.cumulativeAmount, payload.signature, 'close request')
  const members = { channelId: payload.channelId }
  const { value: voucher } = await internals.channels.update(payload.channelId, (s) => {
    if (s.finalized) throw new PaymentError('session/channel-finalized', `channel ${payload.channelId} is already closed`, { members })
    const capture = larger(s.spent, s.settled)
    if (payload.cumulativeAmount < capture)
      throw new PaymentError(
        'verification-failed',
        `the close request's cumulativeAmount ${payload.cumulativeAmount} is below what is owed, ${capture}; sign the close for ${capture}`,
        { members },
      )
    if (payload.cumulativeAmount > s.deposit)
      throw new PaymentError(
        'session/amount-exceeds-deposit',
        `the close request's cumulativeAmount ${payload.cumulativeAmount} exceeds the deposit ${s.deposit}`,
        { members },
      )
    let exact: { amount: bigint; signature: Hex } | undefined
    if (payload.cumulativeAmount === capture || capture <= s.settled) exact = { amount: capture, signature: payload.signature }
    else if (s.signature && s.highest === capture) exact = { amount: capture, signature: s.signature }
    if (!exact)
      throw new PaymentError(
        'verification-failed',
        `this server captures only what was consumed (${capture}), and the close request authorises ${payload.cumulativeAmount}; sign the close for exactly ${capture}`,
        { members },
      )
    return { next: s.closing ? undefined : { ...s, closing: true }, value: exact }
  })
  try {
    return await settleChannel(internals.settling, payload.channelId, 'close', voucher)
  } catch (error) {
    // Definitely not closed: the channel may be used again.
    if (error instanceof PaymentError && error.kind === 'settlement-failed')
      await internals.channels
        .update(payload.channelId, (s) => ({ next: s.finalized ? undefined : { ...s, closing: false }, value: undefined }))
        .catch(() => {})
    throw error
  }
}

function meterOf(internals: Internals, channelId: Hex, price: bigint, challengeId: string): SessionMeter {
  return {
    channelId,
    price,
    async charge() {
      const { value } = await internals.channels.update(channelId, (s) => {
        if (s.finalized || s.closing || s.closeRequested || s.highest - s.spent < price) return { value: false }
        return { next: { ...s, spent: s.spent + price, units: s.units + 1 }, value: true }
      })
      return value
    },
    async state() {
      const found = await internals.channels.load(channelId)
      if (!found) throw new PaymentError('verification-failed', `channel ${channelId} is not open with this server`)
      return found.state
    },
    waitForVoucher(highest, signal) {
      return new Promise<boolean>((resolve) => {
        let done = false
        const finish = (value: boolean) => {
          if (done) return
          done = true
          clearTimeout(timer)
          clearInterval(poll)
          internals.waiters.get(channelId)?.delete(wake)
          signal?.removeEventListener('abort', aborted)
          resolve(value)
        }
        const wake = () => finish(true)
        const aborted = () => finish(false)
        const timer = setTimeout(() => finish(false), internals.voucherTimeoutMs)
        // Another instance may accept the voucher: look at the shared record now and then.
        const poll = setInterval(() => {
          internals.channels
            .load(channelId)
            .then((found) => {
              if (found && found.state.highest > highest) finish(true)
            })
            .catch(() => {})
        }, internals.pollMs)
        const waiting = internals.waiters.get(channelId) ?? new Set()
        internals.waiters.set(channelId, waiting)
        waiting.add(wake)
        signal?.addEventListener('abort', aborted)
      })
    },
    receipt: (state) => receiptOf(challengeId, state, 0n, undefined, undefined),
  }
}
