/**
 * What a route or an MCP operation charges: the price as its author wrote it, turned into one
 * offer per payment method (the method's wire `request`, and what the issuer caches for it).
 * Static prices are built and checked at construction; a price function runs per request, and
 * what it returns is checked then (a bad one is the operator's error: `PriceError`, a 500).
 */
import type { PaymentMethod, RouteCharge } from '../method.js'
import { quote } from '../protocol/challenge.js'
import { encodeJson } from '../protocol/encoding.js'
import { BaseError, ConfigurationError } from '../protocol/errors.js'
import { offerHeader } from '../protocol/issuer.js'
import type { Offer, SettleTiming } from './offer.js'
import { type ResolvedOptions, validateMethods } from './options.js'

export type { Offer, SettleTiming }

/** A price as a route author writes it. */
export type PriceOptions<Input> = {
  /** Decimal amount in the token's units ("0.01"), or a function of the request that returns one. */
  amount: string | ((input: Input) => string | Promise<string>)
  description?: string
  externalId?: string
  /** `before` (default): settle, then run the handler. `after`: charge only when it succeeds. */
  settle?: SettleTiming
  /** Methods for this route instead of the ones given to the factory. */
  methods?: readonly PaymentMethod[]
}

/** A price, resolved: its offers for a request (synchronously when it is static). */
export type Pricing<Input> = {
  timing: SettleTiming
  externalId: string | undefined
  /** The offers of a static price (undefined when the price is a function). */
  staticOffers: Offer[] | undefined
  /** The methods offered, in order (what discovery describes for a price function). */
  methods: readonly PaymentMethod[]
  description: string | undefined
  offersFor(input: Input): Offer[] | Promise<Offer[]>
}

/** A price function returned something that is not a price, or a method refused it. The operator must fix the route. */
export class PriceError extends BaseError {
  override name = 'PriceError'
}

const decimalAmount = /^(0|[1-9]\d*)(\.\d+)?$/

/** Checks a route's price options at construction; `where` names the route in messages (`charge`, `tools["x"]`). */
export function pricing<Input>(options: ResolvedOptions, price: PriceOptions<Input>, where: string): Pricing<Input> {
  if (!price || typeof price !== 'object') throw new ConfigurationError(`${where}: pass { amount: '0.01' } (a decimal string in token units).`)
  if (typeof price.amount !== 'string' && typeof price.amount !== 'function')
    throw new ConfigurationError(
      `${where}: \`amount\` must be a decimal string in token units such as "0.01", or a function of the request returning one; got ${describe(price.amount)}.`,
    )
  const methods = price.methods ? validateMethods(price.methods, `${where}: \`methods\``, options.intents) : options.methods
  const timing = price.settle ?? 'before'
  if (timing !== 'before' && timing !== 'after') throw new ConfigurationError(`${where}: \`settle\` must be 'before' or 'after'; got ${String(price.settle)}.`)
  if (price.description !== undefined) {
    if (typeof price.description !== 'string') throw new ConfigurationError(`${where}: \`description\` must be a string.`)
    quote('description', price.description)
  }
  if (price.externalId !== undefined && typeof price.externalId !== 'string') throw new ConfigurationError(`${where}: \`externalId\` must be a string.`)

  const build = (amount: string): Offer[] => {
    if (typeof amount !== 'string' || !decimalAmount.test(amount))
      throw new Error(`\`amount\` must be a decimal string in token units such as "0.01"; got ${describe(amount)}`)
    const charge: RouteCharge = {
      amount,
      settle: timing,
      ...(price.description !== undefined && { description: price.description }),
      ...(price.externalId !== undefined && { externalId: price.externalId }),
    }
    return methods.map((method): Offer => {
      const request = method.request(charge)
      const encoded = encodeJson(request)
      return {
        method: method.name,
        intent: method.intent,
        encoded,
        header: offerHeader(method.name, method.intent, encoded, price.description),
        bindings: new Map(),
        paymentMethod: method,
        request,
        decimalAmount: amount,
      }
    })
  }

  if (typeof price.amount === 'string') {
    let offers: Offer[]
    try {
      offers = build(price.amount)
    } catch (error) {
      throw new ConfigurationError(`${where}: ${(error as Error).message}`, { cause: error })
    }
    return { timing, externalId: price.externalId, staticOffers: offers, methods, description: price.description, offersFor: () => offers }
  }

  const priceOf = price.amount
  // Bounded: one offer list per distinct amount the function returns.
  const cache = new Map<string, Offer[]>()
  const offersFor = async (input: Input): Promise<Offer[]> => {
    let amount: string
    try {
      amount = await priceOf(input)
    } catch (error) {
      // The transport rethrows what the function meant to answer with (e.g. Hono's HTTPException).
      throw new PriceError(`${where}: the price function threw`, { cause: error })
    }
    let offers = cache.get(amount)
    if (!offers) {
      try {
        offers = build(amount)
      } catch (error) {
        throw new PriceError(`${where}: the price function returned an invalid price: ${(error as Error).message}`, { cause: error })
      }
      if (cache.size >= 256) cache.clear()
      cache.set(amount, offers)
    }
    return offers
  }
  return { timing, externalId: price.externalId, staticOffers: undefined, methods, description: price.description, offersFor }
}

/** "0.01 (10000 base units of 0x20c0…)": a price as a person reads it, and as it is charged. */
export function describePrice(offer: Offer): string {
  return `${offer.decimalAmount} (${offer.request.amount} base units of ${offer.request.currency})`
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number') return `the number ${value} (write it as a string: "${value}")`
  return value === null ? 'null' : typeof value
}
