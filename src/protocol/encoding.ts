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

// biome-ignore lint/suspicious/noControlCharactersInRegex: the range is ASCII, control characters included.
const ascii = /^[\x00-\x7f]*$/

/** base64 → base64url without padding. */
function urlSafe(base64: string): string {
  let end = base64.length
  while (end > 0 && base64.charCodeAt(end - 1) === 61 /* = */) end--
  return base64.slice(0, end).replace(/\+/g, '-').replace(/\//g, '_')
}

const alphabet = new TextEncoder().encode('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_')
const asciiDecoder = new TextDecoder()

// Output space for short inputs (ids, digests), reused: nothing between fill and decode awaits.
const shortOut = new Uint8Array(256)

/** base64url without padding of bytes, by table (every challenge id is one of these). */
function bytesToBase64url(bytes: Uint8Array): string {
  const size = Math.ceil((bytes.length * 4) / 3)
  const out = size <= shortOut.length ? shortOut : new Uint8Array(size)
  let j = 0
  let i = 0
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!
    out[j++] = alphabet[n >> 18]!
    out[j++] = alphabet[(n >> 12) & 63]!
    out[j++] = alphabet[(n >> 6) & 63]!
    out[j++] = alphabet[n & 63]!
  }
  const left = bytes.length - i
  if (left > 0) {
    const n = (bytes[i]! << 16) | (left === 2 ? bytes[i + 1]! << 8 : 0)
    out[j++] = alphabet[n >> 18]!
    out[j++] = alphabet[(n >> 12) & 63]!
    if (left === 2) out[j++] = alphabet[(n >> 6) & 63]!
  }
  return asciiDecoder.decode(out.subarray(0, j))
}

/**
 * base64url without padding of UTF-8 text or bytes. ASCII text goes through the runtime's
 * native `btoa` and bytes through a table (every 402 encodes a few of these); other text
 * through ox.
 */
/** The chunks of a stream as one array of `length` bytes. */
export function concatBytes(chunks: readonly Uint8Array[], length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length)
  let offset = 0
  for (const chunk of chunks) {
    bytes.set(chunk, offset)
    offset += chunk.byteLength
  }
  return bytes
}

export function base64url(value: string | Uint8Array): string {
  if (typeof value === 'string') return ascii.test(value) ? urlSafe(btoa(value)) : Base64.fromString(value, { url: true, pad: false })
  return bytesToBase64url(value)
}

const base64urlPattern = /^[A-Za-z0-9_-]*$/

/** Decodes base64url (padding tolerated) to UTF-8 text; throws on anything else. */
export function fromBase64url(value: string): string {
  const trimmed = value.replace(/=+$/, '')
  if (!base64urlPattern.test(trimmed) || trimmed.length % 4 === 1) throw new Error('not base64url')
  return decoder.decode(Base64.toBytes(trimmed))
}

/** Decodes base64url (no padding) to bytes. */
export function bytesFromBase64url(value: string): Uint8Array {
  return Base64.toBytes(value)
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
