/**
 * The Hono adapter: reads the request, asks the layers below, writes the 402 or the receipt.
 */
import type { Context, MiddlewareHandler, Next } from 'hono'
import { type PaymentInfo, checkBinding, credentialFingerprint, paymentInfoOf } from './binding.js'
import type { ChargeRequest, PaymentMethod, RouteCharge } from './method.js'
import { rankOffers } from './protocol/accept-payment.js'
import { bindingPrefix, challengeIdFrom, quote, secretKeys } from './protocol/challenge.js'
import { parseCredential, paymentTokens } from './protocol/credential.js'
import { contentDigest } from './protocol/digest.js'
import { base64url, encodeJson } from './protocol/encoding.js'
import { type HmacKey, type HmacState, hmacKey } from './protocol/hmac.js'
import { PaymentError, type ProblemKind, problemType, problemTypes } from './protocol/problem.js'
import { type Receipt, rfc3339, serializeReceipt } from './protocol/receipt.js'
import { type SettleEvent, type SettleTiming, settle } from './settle.js'
import { memoryStore } from './stores/memory.js'
import type { ClaimStore } from './stores/store.js'

export type { PaymentInfo }

declare module 'hono' {
  interface ContextVariableMap {
    payment: PaymentInfo
  }
}

export type PaymentEvent =
  | { type: 'challenge'; path: string; challengeIds: string[] }
  | { type: 'rejected'; path: string; reason: ProblemKind; detail: string; status: number; challengeId?: string }
  | ({ path: string } & SettleEvent)

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
  /** Observability hook. Carries no credential, receipt body or secret. */
  onEvent?: (event: PaymentEvent) => void
}

export type ChargeOptions = {
  /** Decimal amount in the token's units ("0.01"), or a function of the request. */
  amount: string | ((c: Context) => string | Promise<string>)
  description?: string
  externalId?: string
  /** `before` (default): settle, then run the handler. `after`: charge only when it answers 2xx. */
  settle?: SettleTiming
  /** Methods for this route instead of the ones given to `mpp()`. */
  methods?: readonly PaymentMethod[]
}

type Offer = {
  method: PaymentMethod
  intent: 'charge'
  request: ChargeRequest
  encoded: string
  /** `, method="…", intent="charge", request="…"[, description="…"]`: the fixed middle of its challenge header. */
  header: string
  /** Keyed HMAC states after this offer's fixed binding input, per realm (bounded). */
  prefixes: Map<string, HmacState>
}

/** A fresh challenge, ready for the header: its id and its serialisation. */
type Issued = { id: string; header: string }

const offerKey = (offer: Offer) => ({ method: offer.method.name, intent: offer.intent })

const decimalAmount = /^(0|[1-9]\d*)(\.\d+)?$/
const methodName = /^[a-z][a-z0-9:_-]*$/

/**
 * Payment middleware factory: `mpp({ secret, methods })` then `pay.charge({ amount })` on a route.
 *
 * @see https://paymentauth.org — the "Payment" HTTP authentication scheme, `charge` intent.
 * @param options.secret - HMAC secret(s) binding challenges, at least 32 bytes each.
 * @param options.methods - Payment methods, e.g. `tempo({ recipient, rpcUrl })`.
 * @param options.store - Claim store shared by every instance that serves the routes.
 * @returns `{ charge(options): MiddlewareHandler, store }`.
 * @throws Error on misconfiguration (short secret, no methods, bad expiry), saying what to fix.
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import { mpp } from 'hono-mpp'
 * import { tempo } from 'hono-mpp/tempo'
 *
 * const pay = mpp({ secret: process.env.MPP_SECRET!, methods: [tempo({ recipient, rpcUrl })] })
 * const app = new Hono()
 * app.get('/paid', pay.charge({ amount: '0.01' }), (c) => c.json({ paidBy: c.get('payment').payer }))
 * ```
 */
export function mpp(options: MppOptions) {
  // Imported once: the HMAC pad blocks of every secret are hashed here, not per request.
  const keys = secretKeys(options.secret).map(hmacKey)
  const methods = validateMethods(options.methods, 'mpp: `methods`')
  const ttl = options.expires ?? 300
  if (!Number.isFinite(ttl) || ttl < 5 || ttl > 86_400)
    throw new Error(`mpp: \`expires\` is the challenge lifetime in seconds, between 5 and 86400; got ${String(options.expires)}.`)
  if (options.realm !== undefined) quote('realm', options.realm)
  const leaseMs = options.leaseMs ?? 60_000
  if (!Number.isFinite(leaseMs) || leaseMs < 1_000)
    throw new Error(`mpp: \`leaseMs\` must be at least 1000 ms; got ${String(options.leaseMs)}.`)
  const store = options.store ?? memoryStore()
  const issue = issueWith(keys[0]!, ttl)
  const onEvent = options.onEvent
  const emit = (event: PaymentEvent) => {
    try {
      onEvent?.(event)
    } catch {
      // A failing listener never changes a payment's outcome.
    }
  }

  function charge(route: ChargeOptions): MiddlewareHandler {
    const routeMethods = route.methods ? validateMethods(route.methods, 'charge: `methods`') : methods
    const timing = route.settle ?? 'before'
    if (timing !== 'before' && timing !== 'after')
      throw new Error(`charge: \`settle\` must be 'before' or 'after'; got ${String(route.settle)}.`)
    if (route.description !== undefined) quote('description', route.description)

    const buildOffers = (amount: string): Offer[] => {
      if (typeof amount !== 'string' || !decimalAmount.test(amount))
        throw new Error(`charge: \`amount\` must be a decimal string in token units such as "0.01"; got ${JSON.stringify(amount)}.`)
      const charge: RouteCharge = {
        amount,
        settle: timing,
        ...(route.description !== undefined && { description: route.description }),
        ...(route.externalId !== undefined && { externalId: route.externalId }),
      }
      const offers = routeMethods.map((method): Offer => {
        const request = method.request(charge)
        const encoded = encodeJson(request)
        const description = route.description === undefined ? '' : `, ${quote('description', route.description)}`
        return {
          method,
          intent: 'charge',
          request,
          encoded,
          header: `, method="${method.name}", intent="charge", request="${encoded}"${description}`,
          prefixes: new Map(),
        }
      })
      unpaidBodies.set(offers, paymentRequiredBody(describe(offers)))
      return offers
    }

    const describe = (offers: Offer[]) =>
      `this resource costs ${offers[0]?.request.amount ?? '?'} base units; pay one of the offered challenges and retry with an Authorization: Payment credential`
    // The unpaid 402's problem JSON up to its challenge id, per offer list (built with it).
    const unpaidBodies = new WeakMap<Offer[], string>()
    const staticOffers = typeof route.amount === 'string' ? buildOffers(route.amount) : undefined
    const dynamicOffers = new Map<string, Offer[]>()
    const offersFor = async (c: Context): Promise<Offer[]> => {
      if (staticOffers) return staticOffers
      const amount = await (route.amount as (c: Context) => string | Promise<string>)(c)
      let offers = dynamicOffers.get(amount)
      if (!offers) {
        offers = buildOffers(amount)
        if (dynamicOffers.size >= 256) dynamicOffers.clear()
        dynamicOffers.set(amount, offers)
      }
      return offers
    }

    /** The unpaid answer: synchronous, no error object, the problem JSON prebuilt up to the challenge id. */
    const unpaid = (c: Context, offers: Offer[], realm: string, target: string, digest: string | undefined): Response => {
      const challenges = issue(preferredOffers(c, offers), realm, target, digest)
      if (onEvent) emit({ type: 'challenge', path: c.req.path, challengeIds: challenges.map((ch) => ch.id) })
      return problemResponse(402, `${unpaidBodies.get(offers)!}${JSON.stringify(challenges[0]!.id)}}`, challenges, undefined)
    }

    // Not async: the commonest answer (unpaid, static price, no body) returns without a promise.
    return function payment(c, next) {
      if (staticOffers && !mayHaveBody(c) && !c.req.header('authorization'))
        return unpaid(c, staticOffers, options.realm ?? hostOf(c), `${c.req.method} ${pathAndQuery(c.req.url)}`, undefined) as unknown as Promise<Response>
      return paid(c, next)
    }

    async function paid(c: Context, next: Next): Promise<Response | void> {
      const path = c.req.path
      const realm = options.realm ?? hostOf(c)
      const target = `${c.req.method} ${pathAndQuery(c.req.url)}`
      let offers: Offer[] | undefined
      let digest: string | undefined

      const refuse = (error: PaymentError): Response => {
        const challenges = error.wantsChallenge && offers ? issue(preferredOffers(c, offers), realm, target, digest) : []
        const response = problemResponse(error.status, JSON.stringify(error.toProblem(challenges[0]?.id)), challenges, error.retryAfter)
        emit({ type: 'rejected', path, reason: error.kind, detail: error.detail, status: error.status, ...(challenges[0] && { challengeId: challenges[0].id }) })
        return response
      }

      try {
        offers = staticOffers ?? (await offersFor(c))
        digest = mayHaveBody(c) ? await bodyDigest(c) : undefined
        const tokens = paymentTokens(c.req.header('authorization'))
        if (tokens.length === 0) return unpaid(c, offers, realm, target, digest)
        if (tokens.length > 1)
          throw new PaymentError('bad-request', `the request carries ${tokens.length} Payment credentials; send exactly one`)

        const credential = parseCredential(tokens[0]!)
        const offer = offers.find((o) => o.method.name === credential.challenge.method)
        if (!offer)
          throw new PaymentError(
            'method-unsupported',
            `method "${credential.challenge.method}" is not accepted here; accepted: ${offers.map((o) => o.method.name).join(', ')}`,
          )
        const expires = checkBinding(keys, credential, { offer, realm, target, digest })

        const idempotencyKey = c.req.header('idempotency-key')
        if (idempotencyKey !== undefined && !/^[\x21-\x7e][\x20-\x7e]{0,254}$/.test(idempotencyKey))
          throw new PaymentError('bad-request', 'Idempotency-Key must be 1 to 255 printable ASCII characters')
        const fingerprint = credentialFingerprint(credential)
        let handlerRan = false
        const response = await settle({
          store,
          method: offer.method,
          credential,
          request: offer.request,
          expires,
          timing,
          fingerprint,
          ...(idempotencyKey !== undefined && { idempotencyKey }),
          leaseMs,
          emit: (event) => emit({ path, ...event }),
          handler: async ({ verified, settled }) => {
            const paymentInfo = paymentInfoOf(offer, credential, { ...verified, ...(settled ?? {}) }, settled !== undefined)
            if (settled) paymentInfo.receipt = receiptOf(offer, settled.reference, route.externalId)
            c.set('payment', paymentInfo)
            handlerRan = true
            await next()
            return c.res
          },
          withReceipt: (response, { verified, settled }) => {
            const current = c.get('payment')
            // The handler may have kept the receipt it was shown: send that same one.
            const receipt =
              current?.receipt?.reference === settled.reference ? current.receipt : receiptOf(offer, settled.reference, route.externalId)
            if (current) Object.assign(current, { settled: true, receipt, reference: settled.reference, payer: settled.payer ?? verified.payer })
            return withHeaders(response, { 'Payment-Receipt': serializeReceipt(receipt), 'Cache-Control': 'private' })
          },
        })
        if (handlerRan) {
          c.res = undefined
          c.res = response
          return
        }
        return response
      } catch (error) {
        const refusal = error instanceof PaymentError ? error : internalError(error)
        const response = refuse(refusal)
        if (c.finalized) {
          // The handler ran (settle: 'after') but the payment failed: its answer is withheld.
          c.res = undefined
          c.res = response
          return
        }
        return response
      }
    }
  }

  return { charge, store }
}

/** Offers ranked by Accept-Payment; all of them when it leaves none (a 402 always carries a challenge). */
function preferredOffers(c: Context, offers: Offer[]): Offer[] {
  const header = c.req.header('accept-payment')
  if (!header) return offers
  const ranked = rankOffers(offers, header, offerKey)
  return ranked.length ? ranked : offers
}

function validateMethods(list: readonly PaymentMethod[] | undefined, what: string): readonly PaymentMethod[] {
  if (!Array.isArray(list) || list.length === 0)
    throw new Error(`${what} must list at least one payment method, e.g. [tempo({ recipient, rpcUrl })].`)
  const seen = new Set<string>()
  for (const method of list) {
    if (!method || typeof method.verify !== 'function' || typeof method.request !== 'function')
      throw new Error(`${what} contains something that is not a payment method (expected e.g. tempo({...})).`)
    if (!methodName.test(method.name)) throw new Error(`${what}: method name "${method.name}" must be lowercase (a-z, 0-9, :_-).`)
    if (seen.has(method.name))
      throw new Error(`${what} lists method "${method.name}" twice; use one per name (route-level \`methods\` can pick another configuration).`)
    seen.add(method.name)
  }
  return list
}

let expiresCache = { second: 0, ttl: 0, value: '' }

function expiresAt(ttl: number): string {
  const second = Math.floor(Date.now() / 1000)
  if (expiresCache.second !== second || expiresCache.ttl !== ttl)
    expiresCache = { second, ttl, value: rfc3339(new Date((second + ttl) * 1000)) }
  return expiresCache.value
}

const base64urlAlphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
// Random bytes are drawn in bulk: one getRandomValues call per 256 challenges, not one each.
const randomPool = new Uint8Array(16 * 256)
let randomUsed = randomPool.length

/** 16 random base64url characters: the encoding of 12 random bytes (96 bits), drawn directly. */
function nonce(): string {
  if (randomUsed === randomPool.length) {
    crypto.getRandomValues(randomPool)
    randomUsed = 0
  }
  let out = ''
  for (let i = 0; i < 16; i++) out += base64urlAlphabet[randomPool[randomUsed++]! & 63]
  return out
}

/** Builds one fresh challenge per offer; a random nonce makes every challenge id unique. */
function issueWith(key: HmacKey, ttl: number) {
  let lastRealm = ''
  let lastQuoted = ''
  return (offers: Offer[], realm: string, target: string, digest: string | undefined): Issued[] => {
    const expires = expiresAt(ttl)
    // = encodeJson({ n, r: target }): two string members in JCS order, built directly.
    const opaque = base64url(`{"n":"${nonce()}","r":${JSON.stringify(target)}}`)
    if (realm !== lastRealm || lastQuoted === '') {
      lastQuoted = quote('realm', realm)
      lastRealm = realm
    }
    const tail = `${digest === undefined ? '' : `, digest="${digest}"`}, expires="${expires}", opaque="${opaque}"`
    return offers.map((offer) => {
      let prefix = offer.prefixes.get(realm)
      if (!prefix) {
        // Bounded: the realm may come from the Host header.
        if (offer.prefixes.size >= 64) offer.prefixes.clear()
        prefix = bindingPrefix(key, { realm, method: offer.method.name, intent: 'charge', request: offer.encoded })
        offer.prefixes.set(realm, prefix)
      }
      const id = challengeIdFrom(prefix, { expires, digest, opaque })
      // Same order and quoting as serializeChallenge: id, realm, method, intent, request, description, digest, expires, opaque.
      return { id, header: `Payment id="${id}", ${lastQuoted}${offer.header}${tail}` }
    })
  }
}

/** The problem JSON of an unpaid request up to (and including the key of) its challenge id. */
function paymentRequiredBody(detail: string): string {
  const problem = new PaymentError('payment-required', detail).toProblem()
  return `${JSON.stringify(problem).slice(0, -1)},"challengeId":`
}

function problemResponse(status: number, body: string, challenges: Issued[], retryAfter: number | undefined): Response {
  // A plain header record: the cheapest form for every runtime's Response (and @hono/node-server's
  // fast path). Several challenges share one WWW-Authenticate field, comma-separated, exactly as
  // Headers.append would combine them.
  const headers: Record<string, string> = { 'content-type': 'application/problem+json', 'cache-control': 'no-store' }
  if (challenges.length === 1) headers['www-authenticate'] = challenges[0]!.header
  else if (challenges.length > 1) headers['www-authenticate'] = challenges.map((challenge) => challenge.header).join(', ')
  if (retryAfter !== undefined) headers['retry-after'] = String(retryAfter)
  return new Response(body, { status, headers })
}

function internalError(error: unknown): PaymentError {
  // Whatever failed, the claims keep a credential from paying twice, so a retry is always safe.
  return new PaymentError('payment-unavailable', 'the payment could not be processed right now; retry shortly with the same credential (it is never charged twice)', {
    cause: error,
    retryAfter: 5,
  })
}

function receiptOf(offer: Offer, reference: string, externalId: string | undefined): Receipt {
  return {
    status: 'success',
    method: offer.method.name,
    timestamp: rfc3339(new Date()),
    reference,
    ...(externalId !== undefined && { externalId }),
  }
}

function withHeaders(response: Response, headers: Record<string, string>): Response {
  try {
    for (const [name, value] of Object.entries(headers)) response.headers.set(name, value)
    return response
  } catch {
    const copy = new Response(response.body, response)
    for (const [name, value] of Object.entries(headers)) copy.headers.set(name, value)
    return copy
  }
}

function hostOf(c: Context): string {
  const host = c.req.header('host')
  if (host && !/[\r\n"\\]/.test(host)) return host
  const url = c.req.url
  const start = url.indexOf('//') + 2
  const end = url.indexOf('/', start)
  return url.slice(start, end === -1 ? undefined : end)
}

function pathAndQuery(url: string): string {
  const start = url.indexOf('/', url.indexOf('//') + 2)
  if (start === -1) return '/'
  const hash = url.indexOf('#', start)
  return hash === -1 ? url.slice(start) : url.slice(start, hash)
}

function mayHaveBody(c: Context): boolean {
  const method = c.req.method
  if (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') return false
  if (c.req.header('content-length') === '0') return false
  return !!c.req.raw.body
}

async function bodyDigest(c: Context): Promise<string | undefined> {
  const body = new Uint8Array(await c.req.arrayBuffer())
  return body.length === 0 ? undefined : contentDigest(body)
}

export { problemType, problemTypes }
