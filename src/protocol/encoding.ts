/**
 * Wire encodings of the Payment scheme: base64url without padding, JCS (RFC 8785) and UTF-8.
 * Thin wrappers over the `ox` that viem ships, so the edge bundle carries one copy of each.
 */
import { Base64, Json } from 'ox'

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export function utf8(value: string): Uint8Array {
  return encoder.encode(value)
}

export function base64url(value: string | Uint8Array): string {
  return typeof value === 'string'
    ? Base64.fromString(value, { url: true, pad: false })
    : Base64.fromBytes(value, { url: true, pad: false })
}

const base64urlPattern = /^[A-Za-z0-9_-]*$/

/** Decodes base64url (padding tolerated) to UTF-8 text; throws on anything else. */
export function fromBase64url(value: string): string {
  const trimmed = value.replace(/=+$/, '')
  if (!base64urlPattern.test(trimmed) || trimmed.length % 4 === 1) throw new Error('not base64url')
  return decoder.decode(Base64.toBytes(trimmed))
}

/** JCS (RFC 8785) serialisation. */
export function canonicalize(value: unknown): string {
  return Json.canonicalize(value)
}

/** base64url(JCS(value)): the form of `request` and `opaque` auth-params. */
export function encodeJson(value: unknown): string {
  return base64url(canonicalize(value))
}

/** Parses base64url JSON; throws on bad encoding or bad JSON. */
export function decodeJson(value: string): unknown {
  return JSON.parse(fromBase64url(value))
}

/** Compares two strings in time independent of where they differ. */
export function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i)
  return diff === 0
}
