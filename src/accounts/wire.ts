/**
 * What the hub and the operator routes share on the wire: problem JSON answers (RFC 9457) that
 * carry their reason as a member, bearer-secret authentication compared in constant time, and a
 * bounded JSON body reader. Web-standard APIs only.
 */
import type { Context, MiddlewareHandler } from 'hono'
import { ConfigurationError } from '../protocol/errors.js'
import { problemType } from '../protocol/problem.js'

const titles: Record<string, string> = {
  'bad-request': 'Bad Request',
  'invalid-key': 'Invalid API Key',
  'key-revoked': 'API Key Revoked',
  'key-expired': 'API Key Expired',
  'wrong-server': 'API Key For Another Server',
  'key-limit-exceeded': 'Key Limit Exceeded',
  'insufficient-balance': 'Insufficient Balance',
  'invalid-service-token': 'Invalid Service Token',
  'unknown-service-token': 'Unknown Service Token',
  'invalid-operator-secret': 'Invalid Operator Secret',
  'unknown-hold': 'Unknown Hold',
  'hold-conflict': 'Hold Conflict',
  'hold-released': 'Hold Released',
  'invalid-request': 'Invalid Request',
  'ledger-unavailable': 'Ledger Unavailable',
  'no-payout-address': 'No Payout Address',
  'nothing-to-pay': 'Nothing To Pay',
  'payout-cancelled': 'Payout Cancelled',
  'content-too-large': 'Content Too Large',
}

/** A problem JSON answer whose `reason` member names why (the type URI ends with it too). */
export function problem(status: number, reason: string, detail: string, extra: Record<string, unknown> = {}): Response {
  const body = {
    ...extra,
    type: problemType(reason as never),
    title: titles[reason] ?? reason,
    status,
    detail,
    reason,
  }
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/problem+json', ...(status === 503 && { 'retry-after': '2' }) },
  })
}

const encoder = new TextEncoder()

export async function sha256(value: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', encoder.encode(value)))
}

/** Equal digests, compared without an early exit (the inputs are digests, so of equal length). */
export function sameDigest(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  let difference = 0
  for (let i = 0; i < a.length; i++) difference |= (a[i] as number) ^ (b[i] as number)
  return difference === 0
}

/** The token of an `Authorization: Bearer <token>` header, if any. */
export function bearer(c: Context): string | undefined {
  const header = c.req.header('authorization')
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i)
  return match?.[1]
}

/**
 * Admits requests that carry `Authorization: Bearer <secret>`. Only the secret's digest is kept;
 * digests are compared in constant time. The secret is never echoed.
 */
export function bearerSecret(secret: string, where: string): MiddlewareHandler {
  if (typeof secret !== 'string' || secret.length < 32)
    throw new ConfigurationError(`${where}: the operator secret must be a string of at least 32 characters (e.g. 32 random bytes, base64url)`)
  const expected = sha256(secret)
  return async (c, next) => {
    const given = bearer(c)
    if (given === undefined || !sameDigest(await sha256(given), await expected))
      return problem(401, 'invalid-operator-secret', 'these routes need Authorization: Bearer <operator secret>')
    await next()
  }
}

/** Reads a JSON object body of at most `limit` bytes, or answers the problem. */
export async function readJson(c: Context, limit = 16_384): Promise<Record<string, unknown> | Response> {
  const length = Number(c.req.header('content-length') ?? '0')
  if (length > limit) return problem(413, 'content-too-large', `the body is over ${limit} bytes`)
  let text: string
  try {
    text = await c.req.text()
  } catch {
    return problem(400, 'bad-request', 'the body could not be read')
  }
  if (text.length > limit) return problem(413, 'content-too-large', `the body is over ${limit} bytes`)
  try {
    const value = JSON.parse(text === '' ? '{}' : text) as unknown
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>
  } catch {}
  return problem(400, 'bad-request', 'the body must be a JSON object')
}
