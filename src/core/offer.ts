/**
 * An offer: one payment method's terms for one price, as its challenges carry them. The type
 * every core stage passes around (pricing builds offers, binding checks credentials against
 * them, intents settle them).
 */
import type { PaymentMethod } from '../method.js'
import type { IssuableOffer } from '../protocol/issuer.js'
import type { ChargeRequest } from '../protocol/types.js'

/** When a route settles: `before` its handler runs (default), or `after` it succeeded. */
export type SettleTiming = 'before' | 'after'

/** One payment method's offer for one price. */
export type Offer = IssuableOffer & {
  paymentMethod: PaymentMethod
  request: ChargeRequest
  /** The price as written, in the token's units ("0.01"). */
  decimalAmount: string
}
