/** Helpers to talk to a Hono app like a Payment client would. */
import { base64url, type Challenge, parseChallenges } from '../../src/index.js'
import { decodeJson } from '../../src/protocol/encoding.js'

export function challengesOf(response: Response): Challenge[] {
  const header = response.headers.get('www-authenticate')
  if (!header) throw new Error(`no WWW-Authenticate on a ${response.status}`)
  return parseChallenges(header)
}

/** A credential for `challenge` with `payload`, as a client serialises it. */
export function credentialFor(challenge: Challenge, payload: unknown, extra: Record<string, unknown> = {}): string {
  const { description, ...echoed } = challenge
  const wire = { challenge: { ...echoed, ...(description !== undefined && { description }) }, payload, ...extra }
  return `Payment ${base64url(JSON.stringify(wire))}`
}

export function requestOf(challenge: Challenge): Record<string, unknown> {
  return decodeJson(challenge.request) as Record<string, unknown>
}
