/**
 * The transport-neutral payment core: the resolved options, challenge issuing, and one entry
 * per kind of credential. It takes a parsed credential (or another scheme's token), binds it to
 * what the route charges, and hands it to its intent (or scheme) with the transport's callback.
 * It never sees a `Request` or a JSON-RPC message.
 */

import type { ParsedCredential } from '../protocol/credential.js'
import { ConfigurationError } from '../protocol/errors.js'
import type { Issued, IssueTarget } from '../protocol/issuer.js'
import { PaymentError } from '../protocol/problem.js'
import { checkBinding, credentialFingerprint } from './binding.js'
import type { PaymentEvent } from './events.js'
import type { CredentialScheme, Delivery, ReplayHooks, RunPaid } from './intent.js'
import { type MppOptions, type ResolvedOptions, resolveOptions } from './options.js'
import { describePrice, type Offer, PriceError, type PriceOptions, type Pricing, pricing } from './pricing.js'

export type CoreOptions = MppOptions & {
  /** Other authorization schemes the same priced routes accept (e.g. prepaid API keys as `Bearer`). */
  schemes?: readonly CredentialScheme[]
}

/** One paid request as a transport hands it to the core. */
export type PaidRequest<Result> = {
  offers: readonly Offer[]
  pricing: Pick<Pricing<never>, 'timing' | 'externalId'>
  /** What the challenges were bound to: realm, target, body digest. */
  where: IssueTarget
  /** How refusals name what is charged ("this route", "tools/call summarize"). */
  subject: string
  /** The client's Idempotency-Key, when the transport supports replay. */
  idempotencyKey?: string
  /** Emits with the transport's path, and the route it matched as declared (a bounded label). */
  path: string
  route?: string
  run: RunPaid<Result>
  replay?: ReplayHooks<Result>
  /** The transport's answer for a payment-only request (HTTP: 204 No Content); see `Attempt.acknowledge`. */
  acknowledge?: () => Result
}

export type PaymentCore = ResolvedOptions & {
  /** The configured schemes by lowercase name. */
  schemes: ReadonlyMap<string, CredentialScheme>
  /** The schemes also read from a header of their own, with that header's lowercase name. */
  schemeHeaders: ReadonlyMap<CredentialScheme, string>
  /** Resolves a route's price; throws `ConfigurationError` at construction. */
  price<Input>(options: PriceOptions<Input>, where: string): Pricing<Input>
  /** Fresh challenges for `offers`, bound to `where`. */
  challenges(offers: readonly Offer[], where: IssueTarget): Issued[]
  /** Binds a Payment credential to the route's offers and settles it through its intent. */
  pay<Result>(credential: ParsedCredential, request: PaidRequest<Result>): Promise<Delivery<Result>>
  /** Hands another scheme's token to its handler (`schemes`). */
  payWithToken<Result>(scheme: CredentialScheme, token: string, request: PaidRequest<Result>): Promise<Delivery<Result>>
  emitEvent(event: PaymentEvent): void
}

/** Headers a scheme may not claim: they carry something else. */
const reservedHeaders = new Set([
  'authorization',
  'idempotency-key',
  'payment-receipt',
  'www-authenticate',
  'accept-payment',
  'content-digest',
  'host',
  'cookie',
])

/** Builds the core for the factory named `who`. Throws `ConfigurationError` on misconfiguration. */
export function createCore(options: CoreOptions, who: string): PaymentCore {
  const resolved = resolveOptions(options, who)
  const schemes = new Map<string, CredentialScheme>()
  const schemeHeaders = new Map<CredentialScheme, string>()
  for (const scheme of options.schemes ?? []) {
    if (!scheme || typeof scheme.pay !== 'function' || !/^[A-Za-z][A-Za-z0-9._~+-]*$/.test(scheme.scheme ?? ''))
      throw new ConfigurationError(`${who}: \`schemes\` must list handlers with an authorization \`scheme\` (a token such as "Bearer") and a \`pay\` function.`)
    if (scheme.scheme.toLowerCase() === 'payment') throw new ConfigurationError(`${who}: the Payment scheme is built in; \`schemes\` adds others.`)
    if (schemes.has(scheme.scheme.toLowerCase()))
      throw new ConfigurationError(`${who}: \`schemes\` lists the "${scheme.scheme}" scheme twice; give one handler per scheme.`)
    if (scheme.header !== undefined) {
      const header = typeof scheme.header === 'string' ? scheme.header.toLowerCase() : ''
      if (!/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(header) || reservedHeaders.has(header))
        throw new ConfigurationError(
          `${who}: the "${scheme.scheme}" scheme's \`header\` must be a header name of its own such as "X-API-Key" (not Authorization, Idempotency-Key or a payment header); got ${JSON.stringify(scheme.header)}.`,
        )
      if ([...schemeHeaders.values()].includes(header))
        throw new ConfigurationError(`${who}: two schemes read the header "${scheme.header}"; give each its own.`)
      schemeHeaders.set(scheme, header)
    }
    schemes.set(scheme.scheme.toLowerCase(), scheme)
  }
  return {
    ...resolved,
    schemes,
    schemeHeaders,
    emitEvent: resolved.emit,
    price: (price, where) => pricing(resolved, price, where),
    challenges: (offers, where) => resolved.issue(offers, where),

    pay(credential, request) {
      const { method, intent } = credential.challenge
      const offer = request.offers.find((o) => o.method === method && o.intent === intent) ?? request.offers.find((o) => o.method === method)
      if (!offer)
        throw new PaymentError(
          'method-unsupported',
          `method "${method}" is not accepted for ${request.subject}; accepted: ${[...new Set(request.offers.map((o) => o.method))].join(', ')}`,
        )
      const handler = resolved.intents.get(offer.intent)!
      const sameTarget = handler.sameTarget
      const expires = checkBinding(resolved.keys, credential, {
        offer,
        ...request.where,
        subject: request.subject,
        ...(sameTarget && { sameTarget: (bound: string, current: string, hasBody: boolean) => sameTarget.call(handler, bound, current, credential, hasBody) }),
      })
      return handler.pay({
        offer,
        credential,
        expires,
        timing: request.pricing.timing,
        fingerprint: credentialFingerprint(credential),
        idempotencyKey: request.idempotencyKey,
        externalId: request.pricing.externalId,
        store: resolved.store,
        leaseMs: resolved.leaseMs,
        emit: (event) => resolved.emit({ path: request.path, ...(request.route !== undefined && { route: request.route }), ...event }),
        run: request.run,
        replay: request.replay,
        target: request.where.target,
        hasBody: request.where.digest !== undefined,
        acknowledge: request.acknowledge,
      })
    },

    payWithToken(scheme, token, request) {
      return scheme.pay({
        scheme: scheme.scheme,
        token,
        offers: request.offers,
        timing: request.pricing.timing,
        externalId: request.pricing.externalId,
        subject: request.subject,
        where: { realm: request.where.realm, target: request.where.target, digest: request.where.digest },
        idempotencyKey: request.replay ? request.idempotencyKey : undefined,
        replay: request.replay,
        store: resolved.store,
        leaseMs: resolved.leaseMs,
        emit: (event) => resolved.emit({ path: request.path, ...(request.route !== undefined && { route: request.route }), ...event }),
        run: request.run,
      })
    },
  }
}

/** The words of an unpaid answer, the same on every transport. */
export function paymentRequiredDetail(subject: string, offers: readonly Offer[], retryWith: string): string {
  return `${subject} costs ${offers[0] ? describePrice(offers[0]) : '?'}; pay one of the offered challenges and retry with ${retryWith}`
}

/**
 * What a transport answers for a failure: a refusal as it is, and anything unexpected as a 503
 * (the claims keep a credential from paying twice, so a retry is always safe). A `PriceError`
 * is the operator's to fix: the transport answers 500 and reports it.
 */
export function refusalOf(error: unknown): PaymentError | PriceError {
  if (error instanceof PaymentError || error instanceof PriceError) return error
  return new PaymentError(
    'payment-unavailable',
    'the payment could not be processed right now; retry shortly with the same credential (it is never charged twice)',
    {
      cause: error,
      retryAfter: 5,
    },
  )
}
