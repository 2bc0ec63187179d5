/**
 * The HTTP transport for Hono: reads `Authorization: Payment` (or a configured scheme's token),
 * writes `WWW-Authenticate` challenges and RFC 9457 problem JSON, and attaches `Payment-Receipt`.
 * Everything else happens in the core.
 */
import type { Context, Env, Handler, MiddlewareHandler, Next } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { PaymentInfo } from '../core/binding.js'
import type { PaymentEvent } from '../core/events.js'
import type { ReplayHooks } from '../core/intent.js'
import { type CoreOptions, createCore, type PaidRequest, type PaymentCore, paymentRequiredDetail, refusalOf } from '../core/payments.js'
import type { Offer, PriceOptions, Pricing, SettleTiming } from '../core/pricing.js'
import { PriceError } from '../core/pricing.js'
import { rankOffers } from '../protocol/accept-payment.js'
import { parseCredential, paymentTokens } from '../protocol/credential.js'
import { ConfigurationError } from '../protocol/errors.js'
import type { Issued, IssueTarget } from '../protocol/issuer.js'
import { PaymentError } from '../protocol/problem.js'
import { serializeReceipt } from '../protocol/receipt.js'
import { registered } from './handlers.js'
import { idempotencyKeyOf, keepForReplay, maxReplayBytesOf, replayHooks } from './replay.js'
import { bodyDigest, carriesCredential, mayHaveBody, pathAndQuery, realmOf, realmOrUndefined, routeOf, schemeTokenOf } from './request.js'

export type { PaymentEvent, PaymentInfo, SettleTiming }

declare module 'hono' {
  interface ContextVariableMap {
    payment: PaymentInfo
  }
}

/** Options of `mpp()`. */
export type MppOptions = CoreOptions & {
  /**
   * Customises the unpaid answer (402 without a credential): return the body and content type to
   * send instead of the problem JSON. The status and the `WWW-Authenticate` challenges stay.
   * `challenges` holds each challenge as its `WWW-Authenticate` value (e.g. for `hono-mpp/paywall`).
   */
  unpaidResponse?: (
    c: Context,
    info: { detail: string; challengeId: string; challenges: readonly string[] },
  ) => { body: string; contentType: string } | undefined
  /**
   * `Idempotency-Key` replays (C10). `maxReplayBytes`: the most bytes of a paid answer kept with
   * its claim for a replay (default 65 536; 0 keeps none). Answers always stream through at once;
   * a longer body is not kept, and the client is told the limit (`Idempotency-Replay-Limit`) and,
   * when known before the body (`Content-Length`, `text/event-stream`), `Idempotency-Replay: unavailable`.
   */
  idempotency?: { maxReplayBytes?: number }
}

/** The handler of `charge(options, handler)`: a Hono handler that answers the paid request. */
// biome-ignore lint/suspicious/noExplicitAny: the defaults of Hono's own Handler<E, P>, so a route's types flow through.
export type PaidHandler<E extends Env = any, P extends string = any> = (c: Context<E, P>, next: Next) => Response | Promise<Response>

/** What a route charges: a decimal amount (or a function of the request), and how it settles. */
export type ChargeOptions = PriceOptions<Context>

/** What `mpp()` returns. */
export type Mpp = {
  /**
   * Charges for a route. `charge(options)` is a middleware that runs before the route's handler;
   * `charge(options, handler)` is the route's one handler, which Hono calls without building a
   * middleware chain (the faster form: an unpaid request is answered synchronously).
   * Both behave the same: a handler that throws reaches `app.onError`, after the payment's
   * bookkeeping (under `settle: 'after'` nothing is charged).
   */
  charge: {
    (options: ChargeOptions): MiddlewareHandler
    // biome-ignore lint/suspicious/noExplicitAny: the defaults of Hono's own Handler<E, P>, so a route's types flow through.
    <E extends Env = any, P extends string = any>(options: ChargeOptions, handler: PaidHandler<E, P>): Handler<E, P>
  }
  /** The claim store (shared with other transports, e.g. `mcpPayments({ store: pay.store })`). */
  store: PaymentCore['store']
}

const noNext: Next = async () => {}

/** What each middleware or handler `charge()` returned charges (read by `hono-mpp/discovery`). */
const pricedHandlers = new WeakMap<object, Pricing<Context>>()

/** The price of a handler `charge()` returned (undefined for any other handler). */
export function pricingOfHandler(handler: unknown): Pricing<Context> | undefined {
  return registered(pricedHandlers, handler)
}

/**
 * Payment middleware factory: `mpp({ secret, methods })`, then `pay.charge({ amount })` on a route.
 *
 * @see https://paymentauth.org — the "Payment" HTTP authentication scheme, `charge` intent.
 * @param options.secret - HMAC secret(s) binding challenges, at least 32 bytes each.
 * @param options.methods - Payment methods, e.g. `tempo({ recipient, rpcUrl })`.
 * @param options.store - Claim store shared by every instance that serves the routes.
 * @returns `{ charge, store }`.
 * @throws ConfigurationError on misconfiguration (short secret, no methods, bad expiry), saying what to fix.
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
export function mpp(options: MppOptions): Mpp {
  const core = createCore(options, 'mpp')
  const customUnpaid = options.unpaidResponse
  if (customUnpaid !== undefined && typeof customUnpaid !== 'function')
    throw new ConfigurationError('mpp: `unpaidResponse` must be a function (c, { detail, challengeId }) => { body, contentType } | undefined.')
  const maxReplayBytes = maxReplayBytesOf(options.idempotency?.maxReplayBytes)

  function charge(route: ChargeOptions): MiddlewareHandler
  // biome-ignore lint/suspicious/noExplicitAny: the defaults of Hono's own Handler<E, P>, so a route's types flow through.
  function charge<E extends Env = any, P extends string = any>(route: ChargeOptions, handler: PaidHandler<E, P>): Handler<E, P>
  function charge(route: ChargeOptions, handler?: PaidHandler): MiddlewareHandler | Handler {
    const price = core.price(route, 'charge')
    const staticOffers = price.staticOffers
    // The unpaid 402's problem JSON up to its challenge id, per offer list.
    const unpaidBodies = new WeakMap<Offer[], string>()
    const unpaidBody = (offers: Offer[]) => {
      let body = unpaidBodies.get(offers)
      if (body === undefined) {
        body = problemPrefix(unpaidDetail(offers))
        unpaidBodies.set(offers, body)
      }
      return body
    }

    /** The unpaid answer: synchronous, no error object, the problem JSON prebuilt up to the challenge id. */
    const unpaid = (c: Context, offers: Offer[], where: IssueTarget): Response => {
      const challenges = core.challenges(preferredOffers(c, offers), where)
      core.emitEvent({ type: 'challenge', path: c.req.path, route: routeOf(c), challengeIds: challenges.map((challenge) => challenge.id) })
      const custom = customUnpaid?.(c, {
        detail: unpaidDetail(offers),
        challengeId: challenges[0]!.id,
        challenges: challenges.map((challenge) => challenge.header),
      })
      if (custom) return problemResponse(402, custom.body, challenges, undefined, custom.contentType)
      return problemResponse(402, `${unpaidBody(offers)}"${challenges[0]!.id}"}`, challenges, undefined)
    }

    /** The commonest answer (unpaid, static price, no body) needs no promise. */
    const answerUnpaidNow = (c: Context): Response | undefined => {
      if (!staticOffers || mayHaveBody(c) || carriesCredential(c, core)) return undefined
      const realm = realmOrUndefined(c, core.realm)
      // An invalid Host goes the slow way, which refuses it.
      return realm === undefined ? undefined : unpaid(c, staticOffers, { realm, target: `${c.req.method} ${pathAndQuery(c.req.url)}`, digest: undefined })
    }

    if (!handler) {
      const payment: MiddlewareHandler = function payment(c, next) {
        return (answerUnpaidNow(c) as unknown as Promise<Response>) ?? answer(c, next)
      }
      pricedHandlers.set(payment, price)
      return payment
    }

    const routeHandler = handler
    pricedHandlers.set(paidRoute, price)
    return paidRoute
    function paidRoute(c: Context): Response | Promise<Response> {
      const unpaidAnswer = answerUnpaidNow(c)
      if (unpaidAnswer) return unpaidAnswer
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
      return answer(c, run).then((response) => {
        if (thrown) throw thrown.error
        return response ?? c.res
      })
    }

    /** Answers a request that may carry a credential or a body: challenge, refuse, or run the paid handler. */
    async function answer(c: Context, next: Next): Promise<Response | undefined> {
      const path = c.req.path
      const where: IssueTarget = { realm: '', target: `${c.req.method} ${pathAndQuery(c.req.url)}`, digest: undefined }
      let offers: Offer[] | undefined
      let handlerRan = false
      try {
        where.realm = realmOf(c, core.realm)
        // Bounded, and before a price function that might read the body itself.
        where.digest = mayHaveBody(c) ? await bodyDigest(c, core.maxBodyBytes) : undefined
        offers = staticOffers ?? (await price.offersFor(c))
        const authorization = readAuthorization(c, core)
        if (!authorization) return unpaid(c, offers, where)
        const request: PaidRequest<Response> = {
          offers,
          pricing: price,
          where,
          subject: 'this route',
          path,
          route: routeOf(c),
          run: async (payment) => {
            c.set('payment', payment)
            handlerRan = true
            await next()
            const status = c.res.status
            return { succeeded: status >= 200 && status < 300, result: c.res, failure: `the handler answered ${status}` }
          },
          acknowledge: () => new Response(null, { status: 204 }),
        }
        const delivery =
          authorization.kind === 'payment'
            ? await core.pay(parseCredential(authorization.token, knownRequest(offers)), withIdempotency(c, request))
            : await core.payWithToken(authorization.scheme, authorization.token, withIdempotency(c, request))
        let response =
          delivery.receipt && delivery.succeeded
            ? withHeaders(delivery.result, { 'Payment-Receipt': serializeReceipt(delivery.receipt), 'Cache-Control': paidCacheControl(delivery.result) })
            : delivery.result
        if (delivery.keep) response = await keepForReplay(response, delivery.keep, maxReplayBytes)
        if (handlerRan) {
          c.res = undefined
          c.res = response
          return
        }
        return response
      } catch (error) {
        const response = refuse(c, error, offers, where, path)
        if (handlerRan) {
          // The handler ran (settle: 'after') but the payment failed: its answer is withheld.
          await c.res.body?.cancel().catch(() => {})
          c.res = undefined
          c.res = response
          return
        }
        return response
      }
    }

    function refuse(c: Context, error: unknown, offers: Offer[] | undefined, where: IssueTarget, path: string): Response {
      const refusal = refusalOf(error)
      if (refusal instanceof PriceError) {
        // A price function may answer on purpose (e.g. 404 for an unknown item).
        if (refusal.cause instanceof HTTPException) throw refusal.cause
        core.emitEvent({ type: 'error', path, route: routeOf(c), detail: refusal.shortMessage, error: refusal })
        // The operator's error: a 500 problem that says so, and app.onError sees the cause.
        throw new HTTPException(500, { res: problemResponse(500, JSON.stringify(misconfigured(refusal)), [], undefined), cause: refusal })
      }
      const challenges = refusal.wantsChallenge && offers && where.realm ? core.challenges(preferredOffers(c, offers), where) : []
      core.emitEvent({
        type: 'rejected',
        path,
        route: routeOf(c),
        reason: refusal.kind,
        detail: refusal.detail,
        status: refusal.status,
        ...(challenges[0] && { challengeId: challenges[0].id }),
      })
      return problemResponse(refusal.status, JSON.stringify(refusal.toProblem(challenges[0]?.id)), challenges, refusal.retryAfter)
    }
  }

  return { charge, store: core.store }
}

type Authorization =
  | { kind: 'payment'; token: string }
  | { kind: 'scheme'; scheme: PaymentCore['schemes'] extends ReadonlyMap<string, infer S> ? S : never; token: string }

/**
 * The credential the request carries: one Payment credential, or a configured scheme's token,
 * from `Authorization: <scheme> <token>` or the scheme's own header (e.g. `X-API-Key: <token>`).
 * A Payment credential wins over a scheme's header.
 */
function readAuthorization(c: Context, core: PaymentCore): Authorization | undefined {
  const tokens = paymentTokens(c.req.header('authorization'))
  if (tokens.length > 1) throw new PaymentError('bad-request', `the request carries ${tokens.length} Payment credentials; send exactly one`)
  if (tokens.length === 1) return { kind: 'payment', token: tokens[0]! }
  const found = schemeTokenOf(c, core)
  return found && { kind: 'scheme', ...found }
}

function withIdempotency(c: Context, request: PaidRequest<Response>): PaidRequest<Response> {
  const key = idempotencyKeyOf(c)
  if (key === undefined) return request
  return { ...request, idempotencyKey: key, replay: replayHooks as ReplayHooks<Response> }
}

/** An echoed request the route issued itself needs no decoding again. */
function knownRequest(offers: readonly Offer[]) {
  return (encoded: string) => offers.find((offer) => offer.encoded === encoded)?.request
}

function unpaidDetail(offers: readonly Offer[]): string {
  return paymentRequiredDetail('this resource', offers, 'an Authorization: Payment credential')
}

/** Offers ranked by Accept-Payment; all of them when it leaves none (a 402 always carries a challenge). */
function preferredOffers(c: Context, offers: Offer[]): Offer[] {
  const header = c.req.header('accept-payment')
  if (!header) return offers
  const ranked = rankOffers(offers, header, offerKey)
  return ranked.length ? ranked : offers
}

const offerKey = (offer: Offer) => ({ method: offer.method, intent: offer.intent })

/** The problem JSON of an unpaid request up to (and including the key of) its challenge id. */
function problemPrefix(detail: string): string {
  const problem = new PaymentError('payment-required', detail).toProblem()
  return `${JSON.stringify(problem).slice(0, -1)},"challengeId":`
}

function misconfigured(error: PriceError) {
  return { type: 'about:blank', title: 'Internal Server Error', status: 500, detail: `this route's price is misconfigured: ${error.shortMessage}` }
}

function problemResponse(
  status: number,
  body: string,
  challenges: Issued[],
  retryAfter: number | undefined,
  contentType = 'application/problem+json',
): Response {
  // A plain header record: the cheapest form for every runtime's Response (and @hono/node-server's
  // fast path). Several challenges share one WWW-Authenticate field, comma-separated, exactly as
  // Headers.append would combine them.
  const headers: Record<string, string> = { 'content-type': contentType, 'cache-control': 'no-store' }
  if (challenges.length === 1) headers['www-authenticate'] = challenges[0]!.header
  else if (challenges.length > 1) headers['www-authenticate'] = challenges.map((challenge) => challenge.header).join(', ')
  if (retryAfter !== undefined) headers['retry-after'] = String(retryAfter)
  return new Response(body, { status, headers })
}

/**
 * The Cache-Control of a paid answer: `private` (C6), never storable by a shared cache, since one
 * client paid for it. The handler's own directives are kept, `no-store` included; `public`,
 * `s-maxage` and `proxy-revalidate` (shared caches only) are dropped, and so is a `private="…"`
 * (it makes only the fields it names private) in favour of the bare `private`.
 */
function paidCacheControl(response: Response): string {
  const current = response.headers.get('cache-control')
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
