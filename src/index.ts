/**
 * hono-mpp: HTTP 402 payment gating for Hono — the "Payment" authentication scheme with the
 * `charge` intent. Methods live in their own entry points (`hono-mpp/tempo`), the MCP transport
 * in `hono-mpp/mcp`, claim stores in `hono-mpp/stores/*`.
 */

export { combineListeners, type EventWhere, type PaymentEventListener, type SettleEvent } from './core/events.js'
export type { Attempt, CredentialScheme, Delivery, Intent, Outcome, ReplayHooks, RunPaid, TokenAttempt } from './core/intent.js'
export type { Offer } from './core/pricing.js'
export { PriceError } from './core/pricing.js'
export type { ChargeRequest, Credential, EchoedChallenge, PaymentMethod, RouteCharge, Settled, Verified, VerifyParameters } from './method.js'
export { SettlementUnknownError } from './method.js'
export { rankOffers } from './protocol/accept-payment.js'
export { type Challenge, parseChallenges, serializeChallenge } from './protocol/challenge.js'
export { parseCredential, paymentTokens } from './protocol/credential.js'
export { contentDigest } from './protocol/digest.js'
export { base64url, canonicalize, decodeJson, encodeJson } from './protocol/encoding.js'
export { BaseError, type BaseErrorParameters, ConfigurationError } from './protocol/errors.js'
export { PaymentError, type Problem, type ProblemKind, problemType, problemTypes, unavailable } from './protocol/problem.js'
export { parseReceipt, type Receipt, serializeReceipt } from './protocol/receipt.js'
export { type MemoryStoreOptions, memoryStore } from './stores/memory.js'
export type { ClaimClass, ClaimRecord, ClaimState, ClaimStore } from './stores/store.js'
export { StoreUnavailableError } from './stores/store.js'
export {
  type ChargeOptions,
  type Mpp,
  type MppOptions,
  mpp,
  type PaidHandler,
  type PaymentEvent,
  type PaymentInfo,
  type SettleTiming,
} from './transports/http.js'
