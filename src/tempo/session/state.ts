/**
 * A channel's state as this server keeps it, in the claim store (memory, Redis, Durable Object):
 * what the hot path decides on without asking the chain.
 *
 * - `deposit`, `settled`, `payer`, `signer`, `closeRequested`, `finalized`: read from the escrow at
 *   open, top-up and `sync`, and moved by our own settlements;
 * - `highest` + `signature`: the highest voucher accepted (cumulative, never decreasing);
 * - `spent` / `units`: what the served requests and stream chunks cost (never above `highest`).
 *
 * Every change is a compare-and-swap on the record's version (the store's `transition` with the
 * record's `owner` as the version token): two instances on one store read the same version and
 * only one write wins; the other re-reads and decides again. So no two requests can together
 * spend more than the vouchers cover.
 */
import type { Address, Hex } from 'viem'
import { base64url } from '../../protocol/encoding.js'
import { PaymentError, unavailable } from '../../protocol/problem.js'
import { type ClaimRecord, type ClaimStore, StoreUnavailableError } from '../../stores/store.js'

export type ChannelState = {
  channelId: Hex
  payer: Address
  payee: Address
  token: Address
  /** Who signs vouchers: the channel's authorizedSigner, or the payer when that is zero. */
  signer: Address
  deposit: bigint
  /** Settled on chain (as far as this server knows: read at open/sync, raised by its own settlements). */
  settled: bigint
  highest: bigint
  /** The signature of the `highest` voucher (absent until one was accepted). */
  signature?: Hex
  spent: bigint
  units: number
  /** The payer asked for a forced close on chain (grace period running; a top-up cancels it). */
  closeRequested: boolean
  /** A cooperative close began here: no more spending. */
  closing: boolean
  /** Closed on chain: nothing more is accepted. */
  finalized: boolean
}

type Stored = Omit<ChannelState, 'deposit' | 'settled' | 'highest' | 'spent'> & { deposit: string; settled: string; highest: string; spent: string }

function encode(state: ChannelState): string {
  const stored: Stored = {
    ...state,
    deposit: state.deposit.toString(),
    settled: state.settled.toString(),
    highest: state.highest.toString(),
    spent: state.spent.toString(),
  }
  return JSON.stringify(stored)
}

function decode(data: string | undefined): ChannelState {
  const stored = JSON.parse(data ?? 'null') as Stored | null
  if (!stored || typeof stored.channelId !== 'string') throw new Error('tempoSession: a channel record in the store is malformed')
  return { ...stored, deposit: BigInt(stored.deposit), settled: BigInt(stored.settled), highest: BigInt(stored.highest), spent: BigInt(stored.spent) }
}

const version = () => base64url(crypto.getRandomValues(new Uint8Array(16)))

export type ChannelStore = {
  key(channelId: Hex): string
  /** The channel and its version, or undefined when this server never saw it opened. */
  load(channelId: Hex): Promise<{ state: ChannelState; version: string } | undefined>
  /** Stores a newly opened channel; false when another request stored it first. */
  create(state: ChannelState): Promise<boolean>
  /**
   * Applies `change` atomically: it gets the current state and returns the next one (or
   * `undefined` to leave it) or throws to refuse. Retried on a concurrent write.
   */
  update<T>(
    channelId: Hex,
    change: (state: ChannelState) => { next?: ChannelState; value: T },
    /** The record as just loaded, to decide on without reading it again (a stale one only costs a retry). */
    loaded?: { state: ChannelState; version: string },
  ): Promise<{ state: ChannelState; value: T }>
}

export function channelStore(store: ClaimStore, prefix: string, retentionMs: number, now: () => number): ChannelStore {
  const key = (channelId: Hex) => `${prefix}${channelId.toLowerCase()}`
  const record = (state: ChannelState, owner: string): ClaimRecord => {
    const expires = now() + retentionMs
    return { state: 'pending', expires, lease: expires, owner, data: encode(state) }
  }
  const guarded = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run()
    } catch (error) {
      if (error instanceof StoreUnavailableError) throw unavailable('the payment store is unreachable; nothing was charged, retry shortly', error)
      throw error
    }
  }
  const load = (channelId: Hex) =>
    guarded(async () => {
      const found = await store.get(key(channelId))
      if (!found || found.owner === undefined) return undefined
      return { state: decode(found.data), version: found.owner }
    })
  return {
    key,
    load,
    create: (state) => guarded(() => store.claim(key(state.channelId), record(state, version()))),
    async update(channelId, change, loaded) {
      for (let attempt = 0; attempt < 64; attempt++) {
        const current = attempt === 0 && loaded ? loaded : await load(channelId)
        if (!current) throw new PaymentError('verification-failed', `channel ${channelId} is not open with this server; open it first (action "open")`)
        const { next, value } = change(current.state)
        if (!next) return { state: current.state, value }
        const swapped = await guarded(() => store.transition(key(channelId), 'pending', record(next, version()), current.version))
        if (swapped) return { state: next, value }
      }
      throw unavailable('the channel is too busy right now (concurrent updates); retry with the same credential')
    },
  }
}
