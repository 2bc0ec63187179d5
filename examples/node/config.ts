/**
 * Reads the example server's environment. Every problem names the variable to fix.
 *
 * PORT (default 3000), TEMPO_RPC_URL, MPP_RECIPIENT, MPP_SECRET (≥ 32 bytes), optional
 * MPP_FEE_PAYER_KEY, MPP_CURRENCY, TEMPO_CHAIN_ID (else asked of the RPC once at start-up),
 * MPP_REDIS_URL (share claims between instances), MPP_METRICS=1 (serve Prometheus metrics at
 * GET /metrics).
 *
 * Accounts (prepaid balances and API keys): DATABASE_URL (a Postgres server; default: embedded
 * PGlite, in memory or in MPP_PGLITE_DIR), MPP_REALM (the server the keys belong to, default
 * "hono-mpp-example"), MPP_TOPUP_MIN / MPP_TOPUP_MAX (default 0.10 and 100),
 * MPP_PLATFORM_FEE_BPS (default 0), and for payouts MPP_OPERATOR_KEY (the wallet that pays out),
 * MPP_OPERATOR_SECRET (guards /operator/*) and MPP_PAYOUT_ADDRESS (default MPP_RECIPIENT).
 *
 * Sessions (pay-as-you-go by voucher): MPP_SESSION_KEY (the payee's key: it signs settlements and
 * closes, and its address is paid) and MPP_ESCROW (the channel escrow; on a local chain, left
 * out, the server deploys ours with MPP_SESSION_KEY).
 */
import { type Address, type Hex, isAddress, isHex } from 'viem'

export type ServerEnv = {
  port: number
  rpcUrl: string
  recipient: Address
  secret: string
  feePayerKey?: Hex
  currency?: Address
  chainId?: number
  redisUrl?: string
  metrics: boolean
  databaseUrl?: string
  pgliteDir?: string
  realm: string
  topUpMin: string
  topUpMax: string
  platformFeeBps: number
  operatorKey?: Hex
  operatorSecret?: string
  payoutAddress?: Address
  sessionKey?: Hex
  escrow?: Address
  /** Variables that are set but have no effect in this configuration (printed at start-up). */
  ignored: string[]
}

const decimal = /^(0|[1-9]\d*)(\.\d+)?$/
const privateKey = (value: string | undefined): value is Hex => value !== undefined && isHex(value) && value.length === 66

export class ConfigError extends Error {
  override name = 'ConfigError'
}

export function readEnv(env: Record<string, string | undefined>): ServerEnv {
  const problems: string[] = []
  const port = Number(env.PORT ?? '3000')
  if (!Number.isInteger(port) || port < 0 || port > 65535) problems.push(`PORT must be a port number (0-65535); got "${env.PORT}"`)
  const rpcUrl = env.TEMPO_RPC_URL
  if (!rpcUrl) problems.push('TEMPO_RPC_URL is missing: the JSON-RPC URL of a Tempo node (e.g. http://127.0.0.1:8545)')
  // Never echoed: an RPC URL may carry an API key.
  else if (!/^https?:\/\//.test(rpcUrl)) problems.push('TEMPO_RPC_URL must be an http(s) URL (e.g. http://127.0.0.1:8545)')
  else if (/^https?:\/\/[^/?#]*@/.test(rpcUrl))
    problems.push("TEMPO_RPC_URL must not carry user:password@ (fetch refuses credentials in URLs); use the provider's URL with its key in the path")
  const recipient = env.MPP_RECIPIENT
  if (!recipient) problems.push('MPP_RECIPIENT is missing: the address (0x + 40 hex) that receives payments')
  else if (!isAddress(recipient, { strict: false })) problems.push('MPP_RECIPIENT is not an address (0x followed by 40 hex digits)')
  const secret = env.MPP_SECRET
  if (!secret) problems.push('MPP_SECRET is missing: at least 32 bytes, e.g. `openssl rand -hex 32`')
  else if (new TextEncoder().encode(secret).length < 32) problems.push('MPP_SECRET is too short: it must be at least 32 bytes (e.g. `openssl rand -hex 32`)')
  const feePayerKey = env.MPP_FEE_PAYER_KEY
  if (feePayerKey !== undefined && feePayerKey !== '' && !(isHex(feePayerKey) && feePayerKey.length === 66))
    problems.push('MPP_FEE_PAYER_KEY must be a private key: 0x followed by 64 hex digits')
  const currency = env.MPP_CURRENCY
  if (currency !== undefined && currency !== '' && !isAddress(currency, { strict: false }))
    problems.push('MPP_CURRENCY must be a TIP-20 token address (0x followed by 40 hex digits)')
  const chainIdText = env.TEMPO_CHAIN_ID
  const chainId = chainIdText ? Number(chainIdText) : undefined
  if (chainIdText && (!Number.isSafeInteger(chainId) || chainId! <= 0)) problems.push(`TEMPO_CHAIN_ID must be a positive integer; got "${chainIdText}"`)
  const redisUrl = env.MPP_REDIS_URL
  if (redisUrl !== undefined && redisUrl !== '' && !/^rediss?:\/\//.test(redisUrl)) problems.push('MPP_REDIS_URL must be a redis:// or rediss:// URL')
  const metrics = env.MPP_METRICS ?? ''
  if (!['', '0', '1'].includes(metrics)) problems.push(`MPP_METRICS must be 1 (serve GET /metrics) or 0; got "${metrics}"`)
  const databaseUrl = env.DATABASE_URL
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl))
    problems.push('DATABASE_URL must be a postgres:// or postgresql:// URL (or left out for the embedded PGlite database)')
  const realm = env.MPP_REALM || 'hono-mpp-example'
  if (!/^[\x21-\x7e]+$/.test(realm) || /["\\]/.test(realm))
    problems.push('MPP_REALM must be printable ASCII without spaces, quotes or backslashes (e.g. api.example.com)')
  const topUpMin = env.MPP_TOPUP_MIN || '0.10'
  const topUpMax = env.MPP_TOPUP_MAX || '100'
  if (!decimal.test(topUpMin)) problems.push(`MPP_TOPUP_MIN must be a decimal amount such as 0.10; got "${topUpMin}"`)
  if (!decimal.test(topUpMax)) problems.push(`MPP_TOPUP_MAX must be a decimal amount such as 100; got "${topUpMax}"`)
  // TIP-20 tokens have 6 decimals: bounds in base units, checked here so the message names the variable.
  const baseUnits = (name: string, value: string): bigint | undefined => {
    if (!decimal.test(value)) return undefined
    const [whole, fraction = ''] = value.split('.')
    if (fraction.length > 6) {
      problems.push(`${name} has more than 6 decimals (TIP-20 tokens have 6); got "${value}"`)
      return undefined
    }
    const units = BigInt(whole!) * 1_000_000n + BigInt(fraction.padEnd(6, '0'))
    if (units === 0n) problems.push(`${name} must be above 0; got "${value}"`)
    return units
  }
  const minUnits = baseUnits('MPP_TOPUP_MIN', topUpMin)
  const maxUnits = baseUnits('MPP_TOPUP_MAX', topUpMax)
  if (minUnits && maxUnits && minUnits > maxUnits) problems.push(`MPP_TOPUP_MIN (${topUpMin}) must not be above MPP_TOPUP_MAX (${topUpMax})`)
  const feeText = env.MPP_PLATFORM_FEE_BPS || '0'
  const platformFeeBps = Number(feeText)
  if (!/^\d+$/.test(feeText) || platformFeeBps > 10_000) problems.push(`MPP_PLATFORM_FEE_BPS must be whole basis points between 0 and 10000; got "${feeText}"`)
  const operatorKey = env.MPP_OPERATOR_KEY || undefined
  if (operatorKey !== undefined && !privateKey(operatorKey)) problems.push('MPP_OPERATOR_KEY must be a private key: 0x followed by 64 hex digits')
  const operatorSecret = env.MPP_OPERATOR_SECRET || undefined
  if (operatorSecret !== undefined && operatorSecret.length < 32)
    problems.push('MPP_OPERATOR_SECRET is too short: at least 32 characters (e.g. `openssl rand -hex 32`)')
  if ((operatorKey === undefined) !== (operatorSecret === undefined))
    problems.push('payouts need both MPP_OPERATOR_KEY (the wallet that pays out) and MPP_OPERATOR_SECRET (guards /operator/*); set both or neither')
  const payoutAddress = env.MPP_PAYOUT_ADDRESS || undefined
  if (payoutAddress !== undefined && !isAddress(payoutAddress, { strict: false }))
    problems.push('MPP_PAYOUT_ADDRESS is not an address (0x followed by 40 hex digits)')
  const sessionKey = env.MPP_SESSION_KEY || undefined
  if (sessionKey !== undefined && !privateKey(sessionKey)) problems.push('MPP_SESSION_KEY must be a private key: 0x followed by 64 hex digits')
  const escrow = env.MPP_ESCROW || undefined
  if (escrow !== undefined && !isAddress(escrow, { strict: false })) problems.push('MPP_ESCROW is not an address (0x followed by 40 hex digits)')
  const ignored: string[] = []
  if (escrow && !sessionKey) ignored.push('MPP_ESCROW is ignored: sessions are off without MPP_SESSION_KEY')
  if (payoutAddress && !operatorKey) ignored.push('MPP_PAYOUT_ADDRESS is ignored: payouts are off without MPP_OPERATOR_KEY and MPP_OPERATOR_SECRET')
  if (env.MPP_PGLITE_DIR && databaseUrl) ignored.push('MPP_PGLITE_DIR is ignored: the ledger is on DATABASE_URL')
  if (problems.length) throw new ConfigError(`examples/node: cannot start:\n  - ${problems.join('\n  - ')}`)
  return {
    port,
    rpcUrl: rpcUrl!,
    recipient: recipient as Address,
    secret: secret!,
    ...(feePayerKey && { feePayerKey: feePayerKey as Hex }),
    ...(currency && { currency: currency as Address }),
    ...(chainId !== undefined && { chainId }),
    ...(redisUrl && { redisUrl }),
    metrics: metrics === '1',
    ...(databaseUrl && { databaseUrl }),
    ...(env.MPP_PGLITE_DIR && { pgliteDir: env.MPP_PGLITE_DIR }),
    realm,
    topUpMin,
    topUpMax,
    platformFeeBps,
    ...(operatorKey && { operatorKey: operatorKey as Hex }),
    ...(operatorSecret && { operatorSecret }),
    ...(payoutAddress && { payoutAddress: payoutAddress as Address }),
    ...(sessionKey && { sessionKey: sessionKey as Hex }),
    ...(escrow && { escrow: escrow as Address }),
    ignored,
  }
}
