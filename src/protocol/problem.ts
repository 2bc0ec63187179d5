/**
 * RFC 9457 problem details for the "Payment" scheme, and the one error class every layer throws
 * to refuse a payment. The middleware turns a `PaymentError` into the answer; nothing else
 * decides a status code.
 */
import { BaseError } from './errors.js'

const base = 'https://paymentauth.org/problems/'

/** Problem types of the Payment scheme (draft-httpauth-payment §problem types) and their status. */
export const problemTypes = {
  'payment-required': { status: 402, title: 'Payment Required' },
  'malformed-credential': { status: 402, title: 'Malformed Credential' },
  'invalid-challenge': { status: 402, title: 'Invalid Challenge' },
  'payment-expired': { status: 402, title: 'Payment Expired' },
  'verification-failed': { status: 402, title: 'Verification Failed' },
  'payment-insufficient': { status: 402, title: 'Payment Insufficient' },
  'method-unsupported': { status: 400, title: 'Method Unsupported' },
  'bad-request': { status: 400, title: 'Bad Request' },
  'payment-denied': { status: 403, title: 'Payment Denied' },
  'payment-in-progress': { status: 409, title: 'Payment In Progress' },
  'settlement-failed': { status: 402, title: 'Settlement Failed' },
  'payment-unavailable': { status: 503, title: 'Payment Unavailable' },
  // Not a type of the scheme's registry: this server's answer to a request body over
  // `maxBodyBytes` (RFC 9110 §15.5.14), which it refuses before reading it to the end.
  'content-too-large': { status: 413, title: 'Content Too Large' },
  // Not types of the scheme's registry either: refusals of a prepaid API key (`hono-mpp/accounts`).
  // The key itself is never named; a wrong key says nothing about whether another account exists.
  'insufficient-balance': { status: 402, title: 'Insufficient Balance' },
  'key-limit-exceeded': { status: 402, title: 'Key Limit Exceeded' },
  'invalid-key': { status: 401, title: 'Invalid API Key' },
  'key-revoked': { status: 401, title: 'API Key Revoked' },
  'key-expired': { status: 401, title: 'API Key Expired' },
  'wrong-server': { status: 403, title: 'API Key For Another Server' },
  'no-account': { status: 403, title: 'No Account' },
  // The session intent's types (draft-tempo-session-00, "Rejection and Error Responses"). The
  // draft lists 410 for a finalized or unknown channel, but on the protected resource itself it
  // requires 402 with a fresh challenge, which is where every session credential arrives here.
  'session/invalid-signature': { status: 402, title: 'Invalid Signature' },
  'session/signer-mismatch': { status: 402, title: 'Signer Mismatch' },
  'session/amount-exceeds-deposit': { status: 402, title: 'Amount Exceeds Deposit' },
  'session/delta-too-small': { status: 402, title: 'Delta Too Small' },
  'session/channel-not-found': { status: 402, title: 'Channel Not Found' },
  'session/channel-finalized': { status: 402, title: 'Channel Finalized' },
  'session/insufficient-balance': { status: 402, title: 'Insufficient Balance' },
} as const

export type ProblemKind = keyof typeof problemTypes

export type Problem = {
  type: string
  title: string
  status: number
  detail: string
  challengeId?: string
  /** Extension members of a problem type (e.g. `balance`, `price`, `topUp` of `insufficient-balance`; the session intent's `channelId`, `requiredTopUp`). */
  [member: string]: unknown
}

export function problemType(kind: ProblemKind): string {
  return base + kind
}

export type PaymentErrorOptions = {
  /** Seconds after which a retry may succeed (503s, in-progress). */
  retryAfter?: number
  cause?: unknown
  /** Extension members the problem JSON carries beside the standard ones, e.g. `{ channelId, requiredTopUp }` (never a credential or secret). */
  members?: Record<string, string | number | boolean>
}

/**
 * A refused or failed payment. `detail` names the precise reason for a client author and never
 * contains a credential, a receipt or a secret.
 */
export class PaymentError extends BaseError {
  override name = 'PaymentError'
  readonly kind: ProblemKind
  readonly status: number
  readonly detail: string
  readonly retryAfter: number | undefined
  readonly members: Readonly<Record<string, string | number | boolean>> | undefined

  constructor(kind: ProblemKind, detail: string, options: PaymentErrorOptions = {}) {
    super(`${problemTypes[kind].title}: ${detail}`, options.cause === undefined ? {} : { cause: options.cause })
    this.kind = kind
    this.status = problemTypes[kind].status
    this.detail = detail
    this.retryAfter = options.retryAfter
    this.members = options.members
  }

  /**
   * Whether a fresh challenge goes with this answer: 402s do, and so does a 401 (a refused API
   * key), which must name a way to authenticate (RFC 9110 §15.5.2); 400/403/409/413/503 need none.
   */
  get wantsChallenge(): boolean {
    return this.status === 402 || this.status === 401 || this.kind === 'method-unsupported'
  }

  toProblem(challengeId?: string): Problem {
    return {
      ...this.members,
      type: problemType(this.kind),
      title: problemTypes[this.kind].title,
      status: this.status,
      detail: this.detail,
      ...(challengeId !== undefined && { challengeId }),
    }
  }
}

/** The chain, RPC or store could not be reached: answer 503 with Retry-After, never a false success. */
export function unavailable(detail: string, cause?: unknown, retryAfter = 2): PaymentError {
  return new PaymentError('payment-unavailable', detail, { retryAfter, cause })
}
