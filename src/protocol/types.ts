/**
 * The wire types of the "Payment" scheme that every layer passes around: the `request` of a
 * challenge, the echoed challenge inside a credential, and the credential itself.
 */

/** The `request` auth-param of a challenge (draft-payment-intent-charge). */
export type ChargeRequest = {
  /** Base-unit integer string. */
  amount: string
  currency: string
  recipient?: string
  description?: string
  externalId?: string
  methodDetails?: Record<string, unknown>
}

/** The echoed challenge inside a credential, with `request` decoded. */
export type EchoedChallenge = {
  id: string
  realm: string
  method: string
  intent: string
  request: ChargeRequest
  expires?: string
  digest?: string
  description?: string
  opaque?: string
}

export type Credential = {
  challenge: EchoedChallenge
  payload: unknown
  source?: string
}
