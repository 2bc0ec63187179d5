/**
 * What every adapter (HTTP, MCP) checks of a credential before the settlement layer sees it:
 * the HMAC binding, the realm, the expiry, the target the challenge was issued for, the body
 * digest, and that the echoed charge is what is charged now. Also how a credential is recognised
 * when it comes back (its fingerprint).
 */
import { Hex } from 'ox'
import { verifyChallengeId } from '../protocol/challenge.js'
import type { ParsedCredential } from '../protocol/credential.js'
import { canonicalize, decodeJson, encodeJson, utf8 } from '../protocol/encoding.js'
import { type HmacKey, sha256 } from '../protocol/hmac.js'
import { PaymentError } from '../protocol/problem.js'
import type { Receipt } from '../protocol/receipt.js'
import { parseRfc3339 } from '../protocol/rfc3339.js'
import type { ChargeRequest, Credential } from '../protocol/types.js'
import type { Offer } from './offer.js'

/** What a route or operation charges, as issued in its challenges. */
export type ChargedOffer = { request: ChargeRequest; encoded: string; intent: string }

export type BindingExpectations = {
  offer: ChargedOffer
  realm: string
  /** What the challenge's opaque binds: `METHOD path?query` on HTTP, the operation on MCP. */
  target: string
  /** The body digest the request has now (undefined: no body). */
  digest: string | undefined
  /** How refusals name what is charged ("this route", "tools/call summarize"). */
  subject?: string
  /** The intent's own rule for a request other than the bound one (see `Intent.sameTarget`). */
  sameTarget?: (bound: string, current: string, hasBody: boolean) => boolean
}

/** Checks everything the HMAC and the target bind; returns the challenge expiry. */
export function checkBinding(keys: readonly HmacKey[], credential: ParsedCredential, expected: BindingExpectations): Date {
  const echoed = credential.challenge
  const subject = expected.subject ?? 'this route'
  const encoded = credential.requestEncoded === expected.offer.encoded ? expected.offer.encoded : encodeJson(echoed.request)
  const slots = {
    realm: echoed.realm,
    method: echoed.method,
    intent: echoed.intent,
    request: encoded,
    ...(echoed.expires !== undefined && { expires: echoed.expires }),
    ...(echoed.digest !== undefined && { digest: echoed.digest }),
    ...(echoed.opaque !== undefined && { opaque: echoed.opaque }),
  }
  if (!verifyChallengeId(keys, echoed.id, slots))
    throw new PaymentError(
      'invalid-challenge',
      'the challenge id does not match its parameters: it was altered, forged, or issued under a secret this server does not hold',
    )
  if (echoed.intent !== expected.offer.intent)
    throw new PaymentError('invalid-challenge', `intent "${echoed.intent}" is not charged here; ${subject} charges with intent "${expected.offer.intent}"`)
  if (echoed.realm !== expected.realm) throw new PaymentError('invalid-challenge', 'the challenge was issued for another realm (host) than this one')
  if (echoed.expires === undefined) throw new PaymentError('invalid-challenge', 'the challenge has no expires; this server only accepts challenges that expire')
  const instant = parseRfc3339(echoed.expires)
  if (instant === undefined)
    throw new PaymentError(
      'invalid-challenge',
      'the challenge expires is not an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS with Z or a ±HH:MM offset, in range); this server issues no other form',
    )
  const expires = new Date(instant)
  if (instant <= Date.now()) throw new PaymentError('payment-expired', `the challenge expired at ${echoed.expires}; request a new one`)
  let boundTarget: unknown
  try {
    boundTarget = echoed.opaque === undefined ? undefined : (decodeJson(echoed.opaque) as { r?: unknown }).r
  } catch {
    boundTarget = undefined
  }
  const exact = boundTarget === expected.target && echoed.digest === expected.digest
  // An intent may let a credential pay another request than the one its challenge was bound to
  // (the session intent: a bodiless payment-only update to the same URL).
  const relaxed = !exact && typeof boundTarget === 'string' && expected.sameTarget?.(boundTarget, expected.target, expected.digest !== undefined) === true
  if (boundTarget !== expected.target && !relaxed)
    throw new PaymentError(
      'invalid-challenge',
      typeof boundTarget === 'string'
        ? `the challenge was issued for ${boundTarget}, not for ${expected.target}`
        : 'the challenge is not bound to a request of this server',
    )
  if (echoed.digest !== expected.digest && !relaxed)
    throw new PaymentError(
      'verification-failed',
      expected.digest === undefined
        ? 'the challenge was issued for a request with a body, and this one has none'
        : 'the request body differs from the one the challenge was issued for (content digest mismatch)',
    )
  if (encoded !== expected.offer.encoded) throw requestMismatch(echoed.request, expected.offer.request, subject)
  return expires
}

function requestMismatch(echoed: ChargeRequest, current: ChargeRequest, subject: string): PaymentError {
  let echoedAmount: bigint | undefined
  try {
    echoedAmount = BigInt(echoed.amount)
  } catch {}
  if (echoedAmount !== undefined && echoedAmount < BigInt(current.amount))
    return new PaymentError(
      'payment-insufficient',
      `the challenge pays ${echoed.amount} base units but ${subject} now charges ${current.amount}; request a new challenge`,
    )
  const fields = ['amount', 'currency', 'recipient', 'description', 'externalId', 'methodDetails'] as const
  const differing = fields.filter((f) => canonicalize(echoed[f] ?? null) !== canonicalize(current[f] ?? null))
  const extra = Object.keys(echoed).filter((k) => !(fields as readonly string[]).includes(k))
  return new PaymentError(
    'verification-failed',
    `the challenge's ${[...differing, ...extra].join(', ') || 'request'} differs from what ${subject} charges now; request a new challenge`,
  )
}

/** Identifies this exact credential (its payload and source), to recognise a retry of it. */
export function credentialFingerprint(credential: Credential): string {
  return Hex.fromBytes(sha256(utf8(canonicalize({ payload: credential.payload ?? null, source: credential.source ?? null }))))
}

/** What the paid work finds in `c.get('payment')` (HTTP) or is shown (MCP). */
export type PaymentInfo = {
  method: string
  /** The intent that charged (`charge`). */
  intent: string
  challengeId: string
  /** Base units, as charged. */
  amount: string
  /** The price as the route wrote it, in the token's units ("0.01"). */
  decimalAmount: string
  currency: string
  recipient: string | undefined
  payer: string | undefined
  /** Transaction hash (challenge id for proofs). */
  reference: string
  /** "transaction" (pull), "hash" (push), "proof". */
  credentialType: string
  /** False while a `settle: 'after'` route's handler runs: it is charged only if it succeeds. */
  settled: boolean
  receipt: Receipt | undefined
}

/** What the work is shown for a verified payment, before it settles. */
export function paymentInfoOf(offer: Offer, credential: Credential, verified: { payer?: string; reference: string; type: string }): PaymentInfo {
  return {
    method: offer.method,
    intent: offer.intent,
    challengeId: credential.challenge.id,
    amount: offer.request.amount,
    decimalAmount: offer.decimalAmount,
    currency: offer.request.currency,
    recipient: offer.request.recipient,
    payer: verified.payer,
    reference: verified.reference,
    credentialType: verified.type,
    settled: false,
    receipt: undefined,
  }
}
