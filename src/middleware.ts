/**
 * The Hono adapter: reads the request, asks the layers below, writes the 402 or the receipt.
 */
import type { Context, Env, Handler, MiddlewareHandler, Next } from 'hono'
import { type PaymentInfo, checkBinding, credentialFingerprint, paymentInfoOf } from './binding.js'
import { maxBodyBytesOf, readBody } from './body.js'
import type { ChargeRequest, PaymentMethod, RouteCharge } from './method.js'
import { rankOffers } from './protocol/accept-payment.js'
import { bindingPrefix, bindingSlot, quote, secretKeys } from './protocol/challenge.js'
import { parseCredential, paymentTokens } from './protocol/credential.js'
import { contentDigest } from './protocol/digest.js'
import { base64url, encodeJson, utf8 } from './protocol/encoding.js'
import { type HmacKey, type HmacState, hmacAbsorb, hmacFinish, hmacKey } from './protocol/hmac.js'
import { invalidHost, requestHost } from './protocol/host.js'
import { PaymentError, type ProblemKind, problemType, problemTypes } from './protocol/problem.js'
import { type Receipt, rfc3339, serializeReceipt } from './protocol/receipt.js'
import { type SettleEvent, type SettleTiming, maxReplayBytes as defaultMaxReplayBytes, settle } from './settle.js'
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
  /**
   * Protection space; defaults to the request's host (its Host header, else its URL's host),
   * which must then be a valid `host[:port]`: other requests are refused with 400.
   */
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
   * `Idempotency-Key` replays (C10). `maxReplayBytes`: the most bytes of a paid answer kept with
   * its claim for a replay (default 65 536; 0 keeps none). Answers always stream through at once;
   * a longer body is not kept, and the client is told the limit (`Idempotency-Replay-Limit`) and,
   * when known before the body (`Content-Length`, `text/event-stream`), `Idempotency-Replay: unavailable`.
   */
  idempotency?: { maxReplayBytes?: number }
  /** Observability hook. Carries no credential, receipt body or secret. */
  onEvent?: (event: PaymentEvent) => void
  /**
   * The largest request body read (and hashed for its digest) before payment, in bytes
   * (default 1 MiB). A larger one is answered 413 without being read to the end.
   */
  maxBodyBytes?: number
}

/** The handler of `charge(options, handler)`: a Hono handler that answers the paid request. */
export type PaidHandler<E extends Env = any, P extends string = any> = (c: Context<E, P>, next: Next) => Response | Promise<Response>

const noNext: Next = async () => {}

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
  /** Per realm (bounded): the keyed HMAC state after this offer's fixed binding input, and per target the states of the current expiry second. */
  bindings: Map<string, { prefix: HmacState; expires: string; targets: Map<string, Midstate> }>
}

/** The HMAC state of one offer, realm, expiry, digest and target, up to the nonce (see midstate), and the opaque up to it. */
type Midstate = {
  state: HmacState
  opaqueHead: string
  carry: Uint8Array
  /** The challenge header from after the id to the opaque's variable end, as one flat string. */
  header: string
}

/**
 * The same text as one flat string. A template literal makes a rope that is flattened each time
 * the runtime reads it whole (Node checks every header value with a regular expression, then
 * writes it); a value reused for a second of challenges is better flattened once. `Number()`
 * reads the whole string, which flattens it in place.
 */
function flat(text: string): string {
  Number(text)
  return text
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
  const maxBodyBytes = maxBodyBytesOf(options.maxBodyBytes, 'mpp')
  const leaseMs = options.leaseMs ?? 60_000
  if (!Number.isFinite(leaseMs) || leaseMs < 1_000)
    throw new Error(`mpp: \`leaseMs\` must be at least 1000 ms; got ${String(options.leaseMs)}.`)
  const maxReplayBytes = options.idempotency?.maxReplayBytes ?? defaultMaxReplayBytes
  if (!Number.isSafeInteger(maxReplayBytes) || maxReplayBytes < 0 || maxReplayBytes > 16 * 1024 * 1024)
    throw new Error(
      `mpp: \`idempotency.maxReplayBytes\` must be a whole number of bytes from 0 to 16777216 (16 MiB); got ${String(options.idempotency?.maxReplayBytes)}.`,
    )
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

  /**
   * Charges for a route. `charge(options)` is a middleware that runs before the route's handler;
   * `charge(options, handler)` is the route's one handler, which Hono calls without building a
   * middleware chain (the faster form: an unpaid request is answered synchronously, no promise).
   * Both behave the same: a handler that throws reaches `app.onError`, after the payment's
   * bookkeeping (under `settle: 'after'` nothing is charged).
   */
  function charge(route: ChargeOptions): MiddlewareHandler
  function charge<E extends Env = any, P extends string = any>(route: ChargeOptions, handler: PaidHandler<E, P>): Handler<E, P>
  function charge(route: ChargeOptions, handler?: PaidHandler): MiddlewareHandler | Handler {
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
          bindings: new Map(),
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
      return problemResponse(402, `${unpaidBodies.get(offers)!}"${challenges[0]!.id}"}`, challenges, undefined)
    }

    const fast = (c: Context): Response | undefined => {
      if (!staticOffers || mayHaveBody(c) || c.req.header('authorization')) return undefined
      const realm = options.realm ?? hostOf(c)
      // An invalid Host goes the slow way, which refuses it.
      return realm === undefined ? undefined : unpaid(c, staticOffers, realm, `${c.req.method} ${pathAndQuery(c.req.url)}`, undefined)
    }

    // Not async: the commonest answer (unpaid, static price, no body) returns without a promise.
    if (!handler)
      return function payment(c, next) {
        return (fast(c) as unknown as Promise<Response>) ?? paid(c, next)
      }

    const routeHandler = handler
    return function paidRoute(c: Context): Response | Promise<Response> {
      const answer = fast(c)
      if (answer) return answer
      // As Hono's chain would: the handler's answer becomes c.res, and what it throws goes to
      // app.onError (rethrown below, once the payment has been settled or released).
      let thrown: { error: unknown } | undefined
      const run = async () => {
        try {
          c.res = await routeHandler(c, noNext)
        } catch (error) {
          thrown = { error }
          c.res = new Response(null, { status: 500 })
        }
      }
      return paid(c, run).then((response) => {
        if (thrown) throw thrown.error
        return response ?? c.res
      })
    }

    async function paid(c: Context, next: Next): Promise<Response | void> {
      const path = c.req.path
      const realm = options.realm ?? hostOf(c)
      const target = `${c.req.method} ${pathAndQuery(c.req.url)}`
      let offers: Offer[] | undefined
      let digest: string | undefined

      const refuse = (error: PaymentError): Response => {
        const challenges = error.wantsChallenge && offers && realm !== undefined ? issue(preferredOffers(c, offers), realm, target, digest) : []
        const response = problemResponse(error.status, JSON.stringify(error.toProblem(challenges[0]?.id)), challenges, error.retryAfter)
        emit({ type: 'rejected', path, reason: error.kind, detail: error.detail, status: error.status, ...(challenges[0] && { challengeId: challenges[0].id }) })
        return response
      }

      try {
        if (realm === undefined) throw new PaymentError('bad-request', invalidHost(c.req.header('host')))
        // Bounded, and before a price function that might read the body itself.
        digest = mayHaveBody(c) ? await bodyDigest(c, maxBodyBytes) : undefined
        offers = staticOffers ?? (await offersFor(c))
        const tokens = paymentTokens(c.req.header('authorization'))
        if (tokens.length === 0) return unpaid(c, offers, realm, target, digest)
        if (tokens.length > 1)
          throw new PaymentError('bad-request', `the request carries ${tokens.length} Payment credentials; send exactly one`)

        const issued = offers
        const credential = parseCredential(tokens[0]!, (encoded) => issued.find((o) => o.encoded === encoded)?.request)
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
          maxReplayBytes,
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
            return withHeaders(response, { 'Payment-Receipt': serializeReceipt(receipt), 'Cache-Control': paidCacheControl(response.headers.get('cache-control')) })
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

const base64urlAlphabet = new TextEncoder().encode('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_')
// Random bytes are drawn in bulk: one getRandomValues call per 256 challenges, not one each.
const randomPool = new Uint8Array(16 * 256)
let randomUsed = randomPool.length
// The variable end of an opaque's JSON: up to 2 carried bytes, 16 nonce characters, `"}`.
const opaqueEnd = new Uint8Array(20)

/**
 * The per-request end of a challenge's opaque: base64url of the carried bytes, a fresh nonce of
 * 16 random base64url characters (96 bits, drawn directly) and the closing `"}`.
 */
function opaqueTail(carry: Uint8Array): string {
  if (randomUsed === randomPool.length) {
    crypto.getRandomValues(randomPool)
    randomUsed = 0
  }
  let n = 0
  for (; n < carry.length; n++) opaqueEnd[n] = carry[n]!
  for (let i = 0; i < 16; i++) opaqueEnd[n++] = base64urlAlphabet[randomPool[randomUsed++]! & 63]!
  opaqueEnd[n++] = 0x22 // "
  opaqueEnd[n++] = 0x7d // }
  return base64url(opaqueEnd.subarray(0, n))
}

let salt: Uint8Array | undefined
/** 63 random base64url characters, drawn once per process (lazily: Workers forbid it at load). */
function instanceSalt(): Uint8Array {
  if (!salt) {
    const random = crypto.getRandomValues(new Uint8Array(63))
    salt = random.map((byte) => base64urlAlphabet[byte & 63]!)
  }
  return salt
}

/**
 * The HMAC state of one offer, realm, expiry second, digest and target, absorbed up to the
 * nonce, so a challenge hashes one inner block and the outer one (where hashing the whole
 * input costs four or five).
 *
 * opaque = base64url(`{"r":<target>,"s":"<salt><nonce>"}`): `r` binds the request target, `s`
 * is this process's salt (0 to 47 characters, as many as put the nonce's bytes into the last
 * block) then the random nonce. Only the base64 of the nonce's 3-byte groups changes per
 * challenge; everything before is absorbed here, once a second.
 */
function midstate(prefix: HmacState, expires: string, digest: string | undefined, target: string): Omit<Midstate, 'header'> {
  const head = `${bindingSlot(expires)}|${bindingSlot(digest)}|`
  const json = utf8(`{"r":${JSON.stringify(target)},"s":"`)
  const filler = instanceSalt()
  let chosen = 0
  for (let f = 0; f < filler.length; f++) {
    const length = json.length + f
    const whole = length - (length % 3)
    const variable = Math.ceil(((length - whole + 18) * 4) / 3)
    const tail = (prefix.length + head.length + (whole / 3) * 4) % 64
    if (tail + variable + 9 <= 64) {
      chosen = f
      break
    }
  }
  const start = new Uint8Array(json.length + chosen)
  start.set(json)
  start.set(filler.subarray(0, chosen), json.length)
  const whole = start.length - (start.length % 3)
  const opaqueHead = base64url(start.subarray(0, whole))
  return { state: hmacAbsorb(prefix, head + opaqueHead), opaqueHead, carry: start.slice(whole) }
}

/** Builds one fresh challenge per offer; a random nonce makes every challenge id unique. */
function issueWith(key: HmacKey, ttl: number) {
  let lastRealm = ''
  let lastQuoted = ''
  return (offers: Offer[], realm: string, target: string, digest: string | undefined): Issued[] => {
    const expires = expiresAt(ttl)
    if (realm !== lastRealm || lastQuoted === '') {
      lastQuoted = quote('realm', realm)
      lastRealm = realm
    }
    const middle = `${digest === undefined ? '' : `, digest="${digest}"`}, expires="${expires}", opaque="`
    return offers.map((offer) => {
      let binding = offer.bindings.get(realm)
      if (!binding) {
        // Bounded: the realm may come from the Host header.
        if (offer.bindings.size >= 64) offer.bindings.clear()
        binding = { prefix: bindingPrefix(key, { realm, method: offer.method.name, intent: 'charge', request: offer.encoded }), expires, targets: new Map() }
        offer.bindings.set(realm, binding)
      }
      if (binding.expires !== expires) {
        binding.expires = expires
        binding.targets.clear()
      }
      // Requests with a body differ by digest: those are not worth keeping.
      let mid = digest === undefined ? binding.targets.get(target) : undefined
      if (!mid) {
        const absorbed = midstate(binding.prefix, expires, digest, target)
        // Same order and quoting as serializeChallenge: id, realm, method, intent, request, description, digest, expires, opaque.
        mid = { ...absorbed, header: flat(`", ${lastQuoted}${offer.header}${middle}${absorbed.opaqueHead}`) }
        if (digest === undefined) {
          if (binding.targets.size >= 64) binding.targets.clear()
          binding.targets.set(target, mid)
        }
      }
      const tail = opaqueTail(mid.carry)
      const id = base64url(hmacFinish(mid.state, tail))
      return { id, header: `Payment id="${id}${mid.header}${tail}"` }
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

/** The request's host as a realm, or undefined when it is not a valid `host[:port]`. */
function hostOf(c: Context): string | undefined {
  return requestHost(c.req.header('host'), c.req.url)
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

async function bodyDigest(c: Context, limit: number): Promise<string | undefined> {
  const body = await readBody(c, limit)
  return body.length === 0 ? undefined : contentDigest(body)
}

/**
 * The Cache-Control of a paid answer: `private` (C6), never storable by a shared cache, since one
 * client paid for it. The handler's own directives are kept, `no-store` included; `public`,
 * `s-maxage` and `proxy-revalidate` (shared caches only) are dropped, and so is a `private="…"`
 * (it makes only the fields it names private) in favour of the bare `private`.
 */
function paidCacheControl(current: string | null): string {
  if (!current) return 'private'
  const kept = ['private']
  for (const part of directivesOf(current)) {
    const directive = part.trim()
    if (!directive) continue
    const name = directive.split('=')[0]!.trim().toLowerCase()
    if (name === 'public' || name === 's-maxage' || name === 'proxy-revalidate' || name === 'private') continue
    kept.push(directive)
  }
  return kept.join(', ')
}

/** A Cache-Control value split at the commas outside quoted strings. */
function directivesOf(value: string): string[] {
  const parts: string[] = []
  let start = 0
  let quoted = false
  for (let i = 0; i < value.length; i++) {
    const char = value[i]
    if (quoted && char === '\\') i++
    else if (char === '"') quoted = !quoted
    else if (char === ',' && !quoted) {
      parts.push(value.slice(start, i))
      start = i + 1
    }
  }
  parts.push(value.slice(start))
  return parts
}

export { problemType, problemTypes }
