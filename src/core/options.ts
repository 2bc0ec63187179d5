/**
 * The options every transport takes (`mpp()` for HTTP, `mcpPayments()` for MCP), validated once
 * at construction: a misconfiguration throws a `ConfigurationError` saying what to fix, before
 * any request arrives.
 */
import type { PaymentMethod } from '../method.js'
import { quote, secretKeys } from '../protocol/challenge.js'
import { ConfigurationError } from '../protocol/errors.js'
import { type HmacKey, hmacKey } from '../protocol/hmac.js'
import { createIssuer, type Issuer } from '../protocol/issuer.js'
import { memoryStore } from '../stores/memory.js'
import type { ClaimStore } from '../stores/store.js'
import { chargeIntent } from './charge.js'
import { eventEmitter, type PaymentEventListener } from './events.js'
import type { Intent } from './intent.js'

export type MppOptions = {
  /** HMAC binding secret(s), each at least 32 bytes. The first signs; all verify (rotation). */
  secret: string | Uint8Array | readonly (string | Uint8Array)[]
  /** Protection space; defaults to the request's host. */
  realm?: string
  /** Payment methods offered, in order of preference (e.g. `[tempo({...})]`). */
  methods: readonly PaymentMethod[]
  /** Claim store (default: a bounded in-memory store; use Redis or Durable Objects for many instances). */
  store?: ClaimStore
  /** Challenge lifetime in seconds (default 300). */
  expires?: number
  /** How long one attempt may hold a claim before a retry may take over, ms (default 60 000). */
  leaseMs?: number
  /**
   * Intents besides `charge`, each settling the credentials of the methods that name it
   * (`method.intent`). The charge intent is always there.
   */
  intents?: readonly Intent[]
  /**
   * The largest request body read (and hashed for its digest, or parsed for its operation) before
   * payment, in bytes (default 1 MiB). A larger one is answered 413 without being read to the end.
   */
  maxBodyBytes?: number
  /** Observability hook. Carries no credential, receipt body or secret. */
  onEvent?: PaymentEventListener
}

/** The options, checked and with their defaults: what the core and the transports run on. */
export type ResolvedOptions = {
  /** Imported once: the HMAC pad blocks of every secret are hashed here, not per request. */
  keys: readonly HmacKey[]
  methods: readonly PaymentMethod[]
  realm: string | undefined
  store: ClaimStore
  /** Challenge lifetime, seconds. */
  ttl: number
  leaseMs: number
  maxBodyBytes: number
  intents: ReadonlyMap<string, Intent>
  issue: Issuer
  emit: PaymentEventListener
}

const methodName = /^[a-z][a-z0-9:_-]*$/

/** 1 MiB: the default bound on a request body read before payment. */
const defaultMaxBodyBytes = 1024 * 1024

function maxBodyBytesOf(value: number | undefined, who: string): number {
  const limit = value ?? defaultMaxBodyBytes
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1)
    throw new ConfigurationError(
      `${who}: \`maxBodyBytes\` is the largest request body read before payment, a whole number of bytes of at least 1 (default ${defaultMaxBodyBytes}); got ${String(value)}.`,
    )
  return limit
}

/** Validates `options` for the factory named `who` (`mpp`, `mcpPayments`). */
export function resolveOptions(options: MppOptions, who: string): ResolvedOptions {
  if (!options || typeof options !== 'object') throw new ConfigurationError(`${who}: pass an options object with at least \`secret\` and \`methods\`.`)
  const keys = secretKeys(options.secret).map(hmacKey)
  const intents = new Map<string, Intent>([['charge', chargeIntent]])
  for (const intent of options.intents ?? []) {
    if (!intent || typeof intent.pay !== 'function' || !methodName.test(intent.name))
      throw new ConfigurationError(`${who}: \`intents\` must list intent objects with a lowercase \`name\` and a \`pay\` function.`)
    intents.set(intent.name, intent)
  }
  const methods = validateMethods(options.methods, `${who}: \`methods\``, intents)
  const ttl = options.expires ?? 300
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 5 || ttl > 86_400)
    throw new ConfigurationError(`${who}: \`expires\` is the challenge lifetime in seconds, between 5 and 86400; got ${String(options.expires)}.`)
  if (options.realm !== undefined) {
    if (typeof options.realm !== 'string' || options.realm.length === 0)
      throw new ConfigurationError(`${who}: \`realm\` must be a non-empty string (or left out to use the request's host).`)
    quote('realm', options.realm)
  }
  const leaseMs = options.leaseMs ?? 60_000
  if (typeof leaseMs !== 'number' || !Number.isFinite(leaseMs) || leaseMs < 1_000)
    throw new ConfigurationError(`${who}: \`leaseMs\` must be at least 1000 ms; got ${String(options.leaseMs)}.`)
  if (options.onEvent !== undefined && typeof options.onEvent !== 'function')
    throw new ConfigurationError(`${who}: \`onEvent\` must be a function (event) => void.`)
  return {
    keys,
    methods,
    realm: options.realm,
    store: options.store ?? memoryStore(),
    ttl,
    leaseMs,
    maxBodyBytes: maxBodyBytesOf(options.maxBodyBytes, who),
    intents,
    issue: createIssuer(keys[0]!, ttl),
    emit: eventEmitter(options.onEvent),
  }
}

/** Checks a list of payment methods: at least one, each a method, one per name, each with a known intent. */
export function validateMethods(list: readonly PaymentMethod[] | undefined, what: string, intents: ReadonlyMap<string, Intent>): readonly PaymentMethod[] {
  if (!Array.isArray(list) || list.length === 0)
    throw new ConfigurationError(`${what} must list at least one payment method, e.g. [tempo({ recipient, rpcUrl })].`)
  const seen = new Set<string>()
  for (const method of list) {
    if (!method || typeof method.verify !== 'function' || typeof method.request !== 'function')
      throw new ConfigurationError(`${what} contains something that is not a payment method (expected e.g. tempo({...})).`)
    if (!methodName.test(method.name)) throw new ConfigurationError(`${what}: method name "${method.name}" must be lowercase (a-z, 0-9, :_-).`)
    if (!intents.has(method.intent))
      throw new ConfigurationError(
        `${what}: method "${method.name}" implements intent "${method.intent}", which no configured intent settles; add it to \`intents\`.`,
      )
    const key = `${method.name}/${method.intent}`
    if (seen.has(key))
      throw new ConfigurationError(`${what} lists method "${method.name}" twice; use one per name (route-level \`methods\` can pick another configuration).`)
    seen.add(key)
  }
  return list
}
