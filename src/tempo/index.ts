/**
 * The Tempo charge method (`method="tempo"`, `intent="charge"`): TIP-20 payments on Tempo,
 * verified and settled through viem/ox. Import from `hono-mpp/tempo`.
 */
import { type Address, getAddress, type Hex, isAddress, type Transport } from 'viem'
import type { ChargeRequest, PaymentMethod, RouteCharge, Settled, Verified, VerifyParameters } from '../method.js'
import { ConfigurationError } from '../protocol/errors.js'
import { PaymentError } from '../protocol/problem.js'
import { checkFeePayer, createSponsor, type FeePayerConfig } from './fee-payer.js'
import { parsePayload } from './payload.js'
import { verifyProof } from './proof.js'
import { abandonPull, expiryGraceMs, type PullContext, recoverPull, settlePull, verifyPull } from './pull.js'
import { verifyPush } from './push.js'
import { buildRequest, type Mode, parseRequest, type RequestShape, type Split, toBaseUnits } from './request.js'
import { type RpcCall, rpcOf } from './rpc.js'

export type { FeePayerConfig } from './fee-payer.js'
export { challengeMemo, isChallengeMemo } from './memo.js'
export type { RpcCall } from './rpc.js'

/** Tempo Testnet (Moderato). */
export const defaultChainId = 42431
/** pathUSD, the default currency. */
export const pathUsd: Address = '0x20c0000000000000000000000000000000000000'

export type TempoConfig = {
  /** JSON-RPC endpoint of a Tempo node. Exactly one of `rpcUrl` and `transport`. */
  rpcUrl?: string
  /** A viem transport (e.g. `http(url, { fetchOptions })`, `fallback([...])`). */
  transport?: Transport
  /** Chain id the payments must be on (default 42431, Tempo Testnet). */
  chainId?: number
  /** TIP-20 token charged (default pathUSD). */
  currency?: Address
  /** The currency's decimals (default 6, every TIP-20 USD token). */
  decimals?: number
  /** Who is paid. */
  recipient: Address
  /** Accepted payment modes (default both). A route that sponsors fees takes pull only. */
  modes?: Mode[]
  /** Up to 10 other recipients paid out of each charge; the primary recipient gets the rest. */
  splits?: { amount: string; recipient: Address; memo?: Hex }[]
  /** A fixed bytes32 memo the primary transfer must carry (pull only). */
  memo?: Hex
  /** Sponsor the transaction fees of pull payments with this account. */
  feePayer?: FeePayerConfig
  /** RPC timeout in ms (default 10 000). */
  timeout?: number
  /** Told of every JSON-RPC call the method makes (e.g. `paymentMetrics().onRpcCall` from `hono-mpp/metrics`). */
  onRpcCall?: (call: RpcCall) => void
  /** Clock, for tests. */
  now?: () => number
}

/** The Tempo method, with `release` to free a sponsored payment's fee reservation when it is given up. */
export type TempoMethod = PaymentMethod & { release(verified: Verified): void }

/**
 * Creates the Tempo charge method.
 *
 * Pull (`{type:"transaction"}`) costs one RPC call per paid request (the broadcast), push
 * (`{type:"hash"}`) one (the receipt), sponsored pull two (a simulation and the broadcast), proof
 * (zero-amount routes) none. Chain id, fees and nonces are never fetched: the client fixed them.
 *
 * @see https://paymentauth.org — draft-tempo-charge
 * @param config.rpcUrl / config.transport — how to reach a Tempo node (exactly one).
 * @param config.chainId — chain id (default 42431).
 * @param config.currency — TIP-20 token (default pathUSD `0x20c0…0000`).
 * @param config.decimals — token decimals (default 6).
 * @param config.recipient — the payee (required).
 * @param config.modes — `['pull','push']` by default; `['pull']` when `feePayer` is set.
 * @param config.splits — 1..10 `{ amount: "0.001", recipient, memo? }`, summing below every charged amount.
 * @param config.memo — fixed bytes32 memo for the primary transfer; pull only (it cannot bind a push payment to its challenge).
 * @param config.feePayer — `{ account, feeToken?, maxGas?, maxFeePerGas?, maxTotalFee?, maxInFlight?, maxRevertedFeesPerSender?, revertWindowMs? }`
 *   to sponsor fees; one sponsored payment per sender is in flight at a time (see the README's "The fee sponsor's exposure").
 * @param config.timeout — RPC timeout, ms (default 10 000).
 * @returns a `PaymentMethod` for `mpp({ methods: [...] })`.
 * @throws Error on misconfiguration, saying what to fix.
 * @example
 * ```ts
 * import { mpp } from 'hono-mpp'
 * import { tempo } from 'hono-mpp/tempo'
 *
 * const payments = mpp({
 *   secret: process.env.MPP_SECRET!,
 *   methods: [tempo({ rpcUrl: 'https://rpc.moderato.tempo.xyz', recipient: '0x…' })],
 * })
 * app.get('/report', payments.charge({ amount: '0.01' }), (c) => c.json({ ok: true }))
 * ```
 */
export function tempo(config: TempoConfig): TempoMethod {
  if (!config || typeof config !== 'object') throw new ConfigurationError('tempo(): pass a configuration object with at least `recipient` and `rpcUrl`.')
  const fail = (message: string): never => {
    throw new ConfigurationError(`tempo(): ${message}`)
  }
  if ((config.rpcUrl === undefined) === (config.transport === undefined))
    fail('pass exactly one of `rpcUrl` (a Tempo node URL) or `transport` (a viem transport).')
  if (config.rpcUrl !== undefined && typeof config.rpcUrl === 'string' && /^wss?:\/\//i.test(config.rpcUrl))
    fail(`\`rpcUrl\` takes an http(s) URL; for a WebSocket node pass \`transport: webSocket(${JSON.stringify(config.rpcUrl)})\` from viem instead.`)
  if (config.rpcUrl !== undefined && (typeof config.rpcUrl !== 'string' || !URL.canParse(config.rpcUrl) || !/^https?:\/\/\S+$/i.test(config.rpcUrl)))
    fail(`\`rpcUrl\` must be an http(s) URL of a Tempo node, got ${JSON.stringify(config.rpcUrl)}.`)
  if (config.transport !== undefined && typeof config.transport !== 'function') fail('`transport` must be a viem transport such as http(url).')
  const chainId = config.chainId ?? defaultChainId
  if (!Number.isSafeInteger(chainId) || chainId <= 0) fail(`\`chainId\` must be a positive integer, got ${String(config.chainId)}.`)
  const decimals = config.decimals ?? 6
  if (!Number.isInteger(decimals) || decimals < 0 || decimals > 36) fail(`\`decimals\` must be an integer 0..36, got ${String(config.decimals)}.`)
  const timeout = config.timeout ?? 10_000
  if (!Number.isFinite(timeout) || timeout <= 0) fail(`\`timeout\` must be a positive number of milliseconds, got ${String(config.timeout)}.`)
  if (config.onRpcCall !== undefined && typeof config.onRpcCall !== 'function') fail('`onRpcCall` must be a function (call) => void.')
  const address = (value: unknown, what: string): Address => {
    if (typeof value !== 'string' || !isAddress(value, { strict: false }))
      return fail(`\`${what}\` must be a 0x-prefixed 20-byte address, got ${JSON.stringify(value)}.`)
    if (value !== value.toLowerCase() && !isAddress(value))
      return fail(`\`${what}\` ${value} has an invalid EIP-55 checksum; check the address or write it in lowercase.`)
    return getAddress(value)
  }
  const bytes32 = (value: unknown, what: string): Hex => {
    if (typeof value !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(value))
      return fail(`\`${what}\` must be a bytes32 hex string (0x + 64 hex digits), got ${JSON.stringify(value)}.`)
    return value.toLowerCase() as Hex
  }
  if (config.recipient === undefined) fail('`recipient` is required: the address that receives the payments.')
  const recipient = address(config.recipient, 'recipient')
  const currency = config.currency === undefined ? pathUsd : address(config.currency, 'currency')

  const feePayer = config.feePayer
  if (config.modes !== undefined) {
    if (!Array.isArray(config.modes) || config.modes.length === 0) fail("`modes` must be a non-empty array of 'pull' and/or 'push'.")
    for (const mode of config.modes) if (mode !== 'pull' && mode !== 'push') fail(`unknown mode ${JSON.stringify(mode)}; use 'pull' and/or 'push'.`)
    if (new Set(config.modes).size !== config.modes.length) fail('`modes` lists a mode twice.')
  }
  const modes: Mode[] = config.modes ? [...config.modes] : feePayer ? ['pull'] : ['pull', 'push']
  if (feePayer && !modes.includes('pull')) fail("`feePayer` sponsors pull payments only, and `modes` excludes 'pull'; add 'pull' to modes or remove feePayer.")
  if (feePayer && modes.includes('push'))
    fail("a route that sponsors fees takes only pull payments (a pushed payment already paid its own fee); set modes: ['pull'].")

  const memo = config.memo === undefined ? undefined : bytes32(config.memo, 'memo')
  if (memo && modes.includes('push')) fail("a fixed `memo` cannot bind a push payment to its challenge; set modes: ['pull'] or remove memo.")

  let splits: Split[] = []
  if (config.splits !== undefined) {
    if (!Array.isArray(config.splits) || config.splits.length === 0 || config.splits.length > 10)
      fail(`\`splits\` must list 1 to 10 entries, got ${Array.isArray(config.splits) ? config.splits.length : typeof config.splits}.`)
    splits = config.splits.map((split, index) => {
      if (!split || typeof split !== 'object') return fail(`splits[${index}] must be { amount, recipient, memo? }.`)
      let amount: bigint
      try {
        amount = toBaseUnits(split.amount, decimals, `splits[${index}].amount`)
      } catch (error) {
        return fail((error as Error).message)
      }
      if (amount === 0n) fail(`splits[${index}].amount must be greater than zero.`)
      return {
        amount,
        recipient: address(split.recipient, `splits[${index}].recipient`),
        ...(split.memo !== undefined && { memo: bytes32(split.memo, `splits[${index}].memo`) }),
      }
    })
  }

  let sponsorConfig: (FeePayerConfig & { feeToken: Address }) | undefined
  if (feePayer) {
    checkFeePayer(feePayer, fail, 'payment')
    sponsorConfig = {
      ...feePayer,
      feeToken: feePayer.feeToken === undefined ? currency : address(feePayer.feeToken, 'feePayer.feeToken'),
    }
  }

  const shape: RequestShape = {
    chainId,
    currency,
    recipient,
    decimals,
    splits,
    ...(memo && { memo }),
    feePayer: feePayer !== undefined,
    modes,
  }
  const now = config.now ?? Date.now
  const rpc = rpcOf(config, chainId, timeout)
  const context: PullContext = {
    rpc,
    chainId,
    sponsor: sponsorConfig ? createSponsor(sponsorConfig, rpc, now) : undefined,
    now,
  }

  return {
    name: 'tempo',
    intent: 'charge',
    deferrable: ['transaction'],

    request(charge: RouteCharge): ChargeRequest {
      return buildRequest(shape, charge)
    },

    async verify({ credential, request: wire, expires, settle }: VerifyParameters): Promise<Verified> {
      const payload = parsePayload(credential.payload)
      let request: ReturnType<typeof parseRequest>
      try {
        request = parseRequest(wire)
      } catch (error) {
        throw new PaymentError('bad-request', (error as Error).message)
      }
      if (request.chainId !== chainId)
        throw new PaymentError('verification-failed', `the challenge is for chain ${request.chainId}; this method settles on chain ${chainId}`)
      if (request.amount === 0n) {
        if (payload.type !== 'proof')
          throw new PaymentError(
            'verification-failed',
            `this route charges nothing: answer with a proof credential ({type:"proof"}), not a ${payload.type} payment`,
          )
        return verifyProof({ credential, signature: payload.signature, chainId, expires })
      }
      switch (payload.type) {
        case 'proof':
          throw new PaymentError('verification-failed', 'proof credentials only answer zero-amount challenges; this route charges an amount')
        case 'transaction':
          if (!request.modes.includes('pull'))
            throw new PaymentError('verification-failed', 'this route does not accept pull payments (type "transaction"); push the payment and send its hash')
          return verifyPull(context, { signature: payload.signature, request, expires, challenge: credential.challenge, settle })
        case 'hash':
          if (request.feePayer) throw new PaymentError('verification-failed', 'this route sponsors fees, so it takes only pull payments (type "transaction")')
          if (!request.modes.includes('push'))
            throw new PaymentError('verification-failed', 'this route does not accept push payments (type "hash"); send the signed transaction instead')
          return verifyPush({ rpc, credential, hash: payload.hash, request, expires })
      }
    },

    async settle(verified: Verified): Promise<Settled> {
      if (verified.status === 'settled') return { reference: verified.reference, ...(verified.payer && { payer: verified.payer }) }
      return settlePull(context, verified)
    },

    release(verified: Verified): void {
      if (verified.status === 'ready' && verified.type === 'transaction') abandonPull(context, verified)
    },

    async recover(verified: Verified): Promise<Settled> {
      if (verified.status === 'settled') return { reference: verified.reference, ...(verified.payer && { payer: verified.payer }) }
      return recoverPull(context, verified, expiryGraceMs)
    },
  }
}

export {
  type ChannelState,
  type ChannelView,
  type SessionMeter,
  type SessionPaymentInfo,
  type SessionReceipt,
  sessionIntent,
  type TempoSession,
  type TempoSessionConfig,
  tempoSession,
} from './session/index.js'
export { type MeteredStreamOptions, meteredStream } from './session/sse.js'
