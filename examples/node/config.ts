/**
 * Reads the example server's environment. Every problem names the variable to fix.
 *
 * PORT (default 3000), TEMPO_RPC_URL, MPP_RECIPIENT, MPP_SECRET (≥ 32 bytes), optional
 * MPP_FEE_PAYER_KEY, MPP_CURRENCY, TEMPO_CHAIN_ID (else asked of the RPC once at start-up),
 * MPP_REDIS_URL (share claims between instances), MPP_METRICS=1 (serve Prometheus metrics at
 * GET /metrics).
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
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

export function readEnv(env: Record<string, string | undefined>): ServerEnv {
  const problems: string[] = []
  const port = Number(env.PORT ?? '3000')
  if (!Number.isInteger(port) || port < 0 || port > 65535) problems.push(`PORT must be a port number (0-65535); got "${env.PORT}"`)
  const rpcUrl = env.TEMPO_RPC_URL
  if (!rpcUrl) problems.push('TEMPO_RPC_URL is missing: the JSON-RPC URL of a Tempo node (e.g. http://127.0.0.1:8545)')
  else if (!/^https?:\/\//.test(rpcUrl)) problems.push(`TEMPO_RPC_URL must be an http(s) URL; got "${rpcUrl}"`)
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
  }
}
