/**
 * Credentials: `Authorization: Payment <base64url(JSON)>` (C4). Parsed strictly with zod; unknown
 * fields are ignored; a size bound refuses absurd input before any decoding.
 */
import * as z from 'zod/mini'
import { decodeJson, fromBase64url } from './encoding.js'
import { PaymentError } from './problem.js'
import type { ChargeRequest, Credential } from './types.js'

/** Credentials of at least 4 KB must be accepted (C4); far larger ones are refused unread. */
export const maxCredentialLength = 16 * 1024

const text = z.string().check(z.maxLength(4096))

const echoedChallengeSchema = z.object({
  id: z.string().check(z.minLength(1), z.maxLength(256)),
  realm: text,
  method: z.string().check(z.regex(/^[a-z][a-z0-9:_-]*$/), z.maxLength(64)),
  intent: z.string().check(z.minLength(1), z.maxLength(64)),
  request: z.string().check(z.minLength(1), z.maxLength(8192)),
  expires: z.optional(text),
  digest: z.optional(text),
  description: z.optional(text),
  opaque: z.optional(text),
})

const credentialSchema = z.object({
  challenge: echoedChallengeSchema,
  payload: z.unknown(),
  source: z.optional(text),
})

const requestSchema = z.looseObject({
  amount: z.string(),
  currency: z.string(),
  recipient: z.optional(z.string()),
  description: z.optional(z.string()),
  externalId: z.optional(z.string()),
  methodDetails: z.optional(z.record(z.string(), z.unknown())),
})

/** A parsed credential plus the echoed `request` exactly as the client sent it (base64url). */
export type ParsedCredential = Credential & { requestEncoded: string }

/**
 * Finds the Payment credentials in an `Authorization` value (several headers arrive joined by
 * commas; base64url has none). Returns their tokens.
 */
export function paymentTokens(authorization: string | null | undefined): string[] {
  if (!authorization) return []
  const tokens: string[] = []
  for (const part of authorization.split(',')) {
    const trimmed = part.trim()
    if (trimmed.length > 8 && trimmed.slice(0, 8).toLowerCase() === 'payment ') tokens.push(trimmed.slice(8).trim())
    else if (trimmed.toLowerCase() === 'payment') tokens.push('')
  }
  return tokens
}

function malformed(detail: string): PaymentError {
  return new PaymentError('malformed-credential', detail)
}

/** Decodes one credential token. Throws `PaymentError('malformed-credential')` naming the fault. */
/**
 * @param known - The decoded request of an echoed `request` string the server issued itself (the
 *   route's own offers): that one needs no decoding or validation again.
 */
export function parseCredential(token: string, known?: (encoded: string) => ChargeRequest | undefined): ParsedCredential {
  if (token.length === 0) throw malformed('the Payment credential is empty')
  if (token.length > maxCredentialLength) throw malformed(`the credential is ${token.length} characters; at most ${maxCredentialLength} are accepted`)
  let json: string
  try {
    json = fromBase64url(token)
  } catch {
    throw malformed('the credential is not base64url (RFC 4648 §5, no padding) of UTF-8 JSON')
  }
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch {
    throw malformed('the credential is base64url but its content is not JSON')
  }
  const parsed = credentialSchema.safeParse(value)
  if (!parsed.success) throw malformed(`the credential JSON has the wrong shape: ${describeIssue(parsed.error)}`)
  const { challenge, payload, source } = parsed.data
  return {
    challenge: { ...challenge, request: known?.(challenge.request) ?? parseRequest(challenge.request) },
    payload,
    ...(source !== undefined && { source }),
    requestEncoded: challenge.request,
  }
}

function parseRequest(encoded: string): ChargeRequest {
  let request: unknown
  try {
    request = decodeJson(encoded)
  } catch {
    throw malformed('challenge.request is not base64url of JSON')
  }
  const parsed = requestSchema.safeParse(request)
  if (!parsed.success) throw malformed(`challenge.request has the wrong shape: ${describeIssue(parsed.error)}`)
  return parsed.data as ChargeRequest
}

function describeIssue(error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] }): string {
  const issue = error.issues[0]
  if (!issue) return 'invalid'
  const path = issue.path.map(String).join('.')
  return path ? `${path}: ${issue.message}` : issue.message
}
