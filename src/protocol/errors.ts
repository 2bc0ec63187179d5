/**
 * The one error family of hono-mpp, in viem's style: every class has its own `name`, a
 * `shortMessage` a person can act on, optional `details` and `metaMessages`, and the `cause`
 * it wraps. `message` is the short message followed by the meta messages, never a credential,
 * a receipt or a secret.
 */

export type BaseErrorParameters = {
  cause?: unknown
  /** More about the fault, for the operator (never shown to a paying client). */
  details?: string
  /** Lines that help fix the problem, appended to `message`. */
  metaMessages?: readonly string[]
}

export class BaseError extends Error {
  override name = 'HonoMppError'
  readonly shortMessage: string
  readonly details: string | undefined
  readonly metaMessages: readonly string[] | undefined

  constructor(shortMessage: string, parameters: BaseErrorParameters = {}) {
    const message = parameters.metaMessages?.length ? `${shortMessage}\n\n${parameters.metaMessages.join('\n')}` : shortMessage
    super(message, parameters.cause === undefined ? undefined : { cause: parameters.cause })
    this.shortMessage = shortMessage
    this.details = parameters.details
    this.metaMessages = parameters.metaMessages
  }
}

/** A misconfiguration found at construction: the message says what to fix. */
export class ConfigurationError extends BaseError {
  override name = 'ConfigurationError'
}
