/**
 * The payee's on-chain settlements of a channel (`settle` the highest voucher, `close`), exactly
 * once across retries, restarts and instances — the same rules as charge claims:
 *
 * 1. One settlement per channel at a time: a lock record in the claim store (`claim`), held under
 *    a random owner token with a lease. A holder that dies lets its lease run out; the next
 *    settlement of the channel takes the record over (compare-and-swap on the owner) and finishes
 *    the job it holds before anything else.
 * 2. The transaction is signed first and kept in the lock record (its raw bytes and hash) BEFORE
 *    it is broadcast. Whoever finishes the job looks that hash up: landed → apply its outcome;
 *    not landed while still valid → send the same bytes again (the node refuses a duplicate);
 *    not landed after its `validBefore` (expiring nonce) → it can never land, so sign a new one.
 * 3. An outcome that is not known (the broadcast did not answer) marks the record `unknown` and
 *    answers 503; nothing is applied until the chain says what happened.
 *
 * The escrow itself refuses a second payment for the same voucher (`settle` needs a higher
 * cumulative amount; `close` a live channel), so even a bug here could not pay twice on chain;
 * these rules keep this server's bookkeeping (`settled`, `finalized`) equal to the chain's.
 */
import type { Address, Hex } from 'viem'
import { base64url } from '../../protocol/encoding.js'
import { PaymentError, unavailable } from '../../protocol/problem.js'
import type { ClaimRecord, ClaimStore } from '../../stores/store.js'
import type { Rpc } from '../rpc.js'
import { broadcast, hashOf, type PayeeSigner, readChannel, receiptOf, signPayeeCall } from './chain.js'
import type { ChannelState, ChannelStore } from './state.js'

const larger = (a: bigint, b: bigint): bigint => {
  if (a > b) return a
  return b
}

export type SettleKind = 'settle' | 'close'

/** The job a lock record holds (JSON). */
type Job = {
  kind: SettleKind
  amount: string
  signature: Hex
  raw?: Hex
  hash?: Hex
  /** Unix seconds: the signed transaction cannot land after this. */
  validBefore?: number
}

export type SettleContext = {
  rpc: Rpc
  store: ClaimStore
  channels: ChannelStore
  signer: PayeeSigner
  escrow: Address
  prefix: string
  leaseMs: number
  /** How long a signed payee transaction stays valid (seconds). */
  validitySeconds: number
  now: () => number
}

export type Settlement = {
  /** The transaction that did it (undefined when there was nothing to do). */
  txHash?: Hex
  state: ChannelState
}

const token = () => base64url(crypto.getRandomValues(new Uint8Array(16)))

/**
 * Settles (or closes) `channelId` on chain with `voucher` (default: the highest one held).
 * Finishes an earlier job of the channel first if one was left unfinished.
 */
export async function settleChannel(
  context: SettleContext,
  channelId: Hex,
  kind: SettleKind,
  voucher?: { amount: bigint; signature: Hex },
): Promise<Settlement> {
  const lockKey = `${context.prefix}settle:${channelId.toLowerCase()}`
  const owner = token()
  const leaseRecord = (job: Job, state: ClaimRecord['state'] = 'pending'): ClaimRecord => {
    const now = context.now()
    return { state, expires: now + 24 * 3_600_000, lease: now + context.leaseMs, owner, data: JSON.stringify(job) }
  }
  const wanted = async (): Promise<Job | undefined> => {
    const current = await context.channels.load(channelId)
    if (!current) throw new PaymentError('verification-failed', `channel ${channelId} is not open with this server`)
    const { state } = current
    if (state.finalized) return undefined
    const chosen = voucher ?? (state.signature ? { amount: state.highest, signature: state.signature } : undefined)
    if (!chosen) return undefined
    if (kind === 'settle' && chosen.amount <= state.settled) return undefined
    return { kind, amount: chosen.amount.toString(), signature: chosen.signature }
  }

  // Take the lock: fresh, or over a dead holder's / an unknown outcome's record (finish its job first).
  let job: Job | undefined
  let inherited = false
  const first = await wanted()
  if (first === undefined && !voucher) {
    const state = (await context.channels.load(channelId))!.state
    return { state }
  }
  job = first
  const placeholder: Job = job ?? { kind, amount: '0', signature: '0x' }
  if (!(await context.store.claim(lockKey, leaseRecord(placeholder)))) {
    const held = await context.store.get(lockKey)
    if (!held || held.owner === undefined) throw unavailable('a settlement of this channel is finishing; retry shortly')
    const takeable = held.state === 'unknown' || (held.lease ?? 0) < context.now()
    if (!takeable) throw unavailable('a settlement of this channel is in progress; retry shortly')
    const previous = JSON.parse(held.data ?? 'null') as Job | null
    if (!(await context.store.transition(lockKey, held.state, leaseRecord(previous ?? placeholder), held.owner)))
      throw unavailable('a settlement of this channel is in progress; retry shortly')
    if (previous?.hash) {
      job = previous
      inherited = true
    }
  }

  const release = () => context.store.transition(lockKey, 'pending', null, owner).catch(() => false)
  try {
    let result: Settlement | undefined
    if (job) result = await run(context, lockKey, owner, leaseRecord, job, channelId)
    if (inherited) {
      // The inherited job is done; now the one asked for (if still needed).
      const next = await wanted()
      if (next) result = await run(context, lockKey, owner, leaseRecord, next, channelId)
    }
    await release()
    return result ?? { state: (await context.channels.load(channelId))!.state }
  } catch (error) {
    if (error instanceof PaymentError && error.kind !== 'payment-unavailable') await release()
    throw error
  }
}

/** Runs one job to its end: sign (or reuse), keep, broadcast, apply. */
async function run(
  context: SettleContext,
  lockKey: string,
  owner: string,
  leaseRecord: (job: Job, state?: ClaimRecord['state']) => ClaimRecord,
  job: Job,
  channelId: Hex,
): Promise<Settlement> {
  const keep = async (next: Job, state: ClaimRecord['state'] = 'pending') => {
    if (!(await context.store.transition(lockKey, 'pending', leaseRecord(next, state), owner)))
      throw unavailable('this settlement was taken over by another instance; retry shortly')
  }
  let current = job
  for (let round = 0; round < 3; round++) {
    if (current.raw && current.hash) {
      const found = await receiptOf(context.rpc, current.hash).catch((error) => {
        throw unavailable('the Tempo node did not answer a settlement lookup; retry shortly', error)
      })
      if (found && found.status !== 'pending') return apply(context, channelId, current, found.status === 'success' ? current.hash : undefined)
      const expired = current.validBefore !== undefined && context.now() / 1000 > current.validBefore + 2
      if (expired) current = { kind: current.kind, amount: current.amount, signature: current.signature }
    }
    if (!current.raw) {
      const validBefore = Math.floor(context.now() / 1000) + context.validitySeconds
      const raw = await signPayeeCall(
        context.rpc,
        context.signer,
        { functionName: current.kind, channelId, cumulativeAmount: BigInt(current.amount), signature: current.signature },
        validBefore,
      ).catch((error) => {
        throw unavailable('the Tempo node did not answer while preparing the settlement; retry shortly', error)
      })
      current = { ...current, raw, hash: hashOf(raw), validBefore }
      // Kept BEFORE it is sent: whoever finishes this job looks this hash up.
      await keep(current)
    }
    let sent: Awaited<ReturnType<typeof broadcast>>
    try {
      sent = await broadcast(context.rpc, current.raw!)
    } catch (error) {
      await keep(current, 'unknown').catch(() => {})
      throw unavailable('the settlement was sent but its outcome is not known yet; it is finished on the next settlement of this channel', error)
    }
    if (sent.kind === 'landed') return apply(context, channelId, current, sent.receipt.status === 'success' ? current.hash : undefined)
    if (sent.kind === 'refused') {
      // Never landed: nothing happened on chain. Reading the channel says whether it still needs doing.
      const state = await syncFromChain(context, channelId)
      if ((current.kind === 'close' && state.finalized) || (current.kind === 'settle' && state.settled >= BigInt(current.amount))) return { state }
      throw new PaymentError('settlement-failed', `the node refused the payee's ${current.kind} transaction: ${sent.reason}`)
    }
    // Known to the node: look its receipt up on the next round.
  }
  await keep(current, 'unknown').catch(() => {})
  throw unavailable('the settlement is in the node but not yet included; retry shortly')
}

/** Applies a landed job: the chain's word for `settled` / `finalized` (read back, so a revert is applied as what happened). */
async function apply(context: SettleContext, channelId: Hex, job: Job, txHash: Hex | undefined): Promise<Settlement> {
  const state = await syncFromChain(context, channelId)
  if (!txHash) {
    if ((job.kind === 'close' && state.finalized) || (job.kind === 'settle' && state.settled >= BigInt(job.amount))) return { state }
    throw new PaymentError('settlement-failed', `the payee's ${job.kind} transaction reverted on chain`)
  }
  return { txHash, state }
}

/** Reads the channel from the escrow and records what it says (deposit, settled, close request, finalized). */
export async function syncFromChain(context: Pick<SettleContext, 'rpc' | 'escrow' | 'channels'>, channelId: Hex): Promise<ChannelState> {
  const chain = await readChannel(context.rpc, context.escrow, channelId).catch((error) => {
    throw unavailable('the Tempo node did not answer a channel read; retry shortly', error)
  })
  const { state } = await context.channels.update(channelId, (state) => ({
    next: {
      ...state,
      deposit: chain.deposit,
      settled: larger(chain.settled, state.settled),
      closeRequested: chain.closeRequestedAt !== 0n,
      finalized: state.finalized || chain.finalized,
    },
    value: undefined,
  }))
  return state
}
