/**
 * hono-mpp: HTTP 402 payment gating for Hono — the "Payment" authentication scheme with the
 * `charge` intent. Methods live in their own entry points (`hono-mpp/tempo`), the MCP transport
 * in `hono-mpp/mcp`, claim stores in `hono-mpp/stores/*`.
 */
export { mpp, type ChargeOptions, type Mpp, type MppOptions, type PaidHandler, type PaymentEvent, type PaymentInfo, type SettleTiming } from './transports/http.js'
export type { CredentialScheme, Delivery, Intent, Attempt, Outcome, ReplayHooks, RunPaid, TokenAttempt } from './core/intent.js'
export type { Offer } from './core/pricing.js'
export { PriceError } from './core/pricing.js'
export type { SettleEvent, PaymentEventListener } from './core/events.js'
export type { ChargeRequest, Credential, EchoedChallenge, PaymentMethod, RouteCharge, Settled, Verified, VerifyParameters } from './method.js'
export { SettlementUnknownError } from './method.js'
export { BaseError, type BaseErrorParameters, ConfigurationError } from './protocol/errors.js'
export { PaymentError, problemType, problemTypes, type Problem, type ProblemKind, unavailable } from './protocol/problem.js'
export { type Challenge, parseChallenges, serializeChallenge } from './protocol/challenge.js'
export { parseCredential, paymentTokens } from './protocol/credential.js'
export { type Receipt, parseReceipt, serializeReceipt } from './protocol/receipt.js'
export { rankOffers } from './protocol/accept-payment.js'
export { contentDigest } from './protocol/digest.js'
export { canonicalize, encodeJson, decodeJson, base64url } from './protocol/encoding.js'
export type { ClaimClass, ClaimRecord, ClaimState, ClaimStore } from './stores/store.js'
export { StoreUnavailableError } from './stores/store.js'
export { memoryStore, type MemoryStoreOptions } from './stores/memory.js'
