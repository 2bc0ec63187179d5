/**
 * HMAC-SHA256 for challenge ids with the key imported once (C3). Every 402 computes one id per
 * offer, so the per-request cost matters: the key's inner and outer pad blocks are hashed at
 * construction, and the part of the binding input that is fixed per route and realm
 * (`realm|method|intent|request|`) is absorbed once and reused. A challenge then costs only the
 * blocks of its own `expires|digest|opaque` plus one outer block, where a plain HMAC re-hashes
 * the key and the whole input every time.
 *
 * Plain SHA-256 (FIPS 180-4) on 32-bit integers; checked against ox's HMAC (noble) by
 * hmac.test.ts. Web Crypto is not used because `crypto.subtle.sign` is asynchronous and, on
 * Node, goes through a thread pool: slower per call than hashing here.
 */

// prettier-ignore
const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74,
  0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d,
  0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e,
  0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5,
  0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
])
// prettier-ignore
const IV = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19])

const W = new Int32Array(64)
const innerState = new Int32Array(8)
const outerState = new Int32Array(8)

/** One SHA-256 compression of the 64-byte block at `bytes[offset]` into `state`. */
function compress(state: Int32Array, bytes: Uint8Array, offset: number): void {
  for (let i = 0; i < 16; i++, offset += 4) W[i] = (bytes[offset]! << 24) | (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!
  for (let i = 16; i < 64; i++) {
    const x = W[i - 15]!
    const y = W[i - 2]!
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3)
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10)
    W[i] = (W[i - 16]! + s0 + W[i - 7]! + s1) | 0
  }
  let a = state[0]!
  let b = state[1]!
  let c = state[2]!
  let d = state[3]!
  let e = state[4]!
  let f = state[5]!
  let g = state[6]!
  let h = state[7]!
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))
    const t1 = (h + s1 + ((e & f) ^ (~e & g)) + K[i]! + W[i]!) | 0
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0
    h = g
    g = f
    f = e
    e = (d + t1) | 0
    d = c
    c = b
    b = a
    a = (t1 + t2) | 0
  }
  state[0] = (state[0]! + a) | 0
  state[1] = (state[1]! + b) | 0
  state[2] = (state[2]! + c) | 0
  state[3] = (state[3]! + d) | 0
  state[4] = (state[4]! + e) | 0
  state[5] = (state[5]! + f) | 0
  state[6] = (state[6]! + g) | 0
  state[7] = (state[7]! + h) | 0
}

/** A keyed hash that has absorbed some input: whole blocks in `state`, the rest in `tail`. */
export type HmacState = {
  readonly state: Int32Array
  readonly tail: Uint8Array
  /** Bytes absorbed so far, the 64-byte key block included. */
  readonly length: number
  /** The outer state (key ⊕ opad hashed). */
  readonly outer: Int32Array
}

/** An HMAC-SHA256 key with its pad blocks hashed: build once, use for every challenge. */
export type HmacKey = HmacState & { readonly kind: 'hmac-sha256-key' }

const encoder = new TextEncoder()
// Scratch space reused by every call (JavaScript runs one call at a time; nothing here awaits).
let scratch = new Uint8Array(1024)

function scratchFor(bytes: number): Uint8Array {
  if (scratch.length < bytes) scratch = new Uint8Array(Math.max(bytes, scratch.length * 2))
  return scratch
}

/** SHA-256 (FIPS 180-4) of `bytes`. */
export function sha256(bytes: Uint8Array): Uint8Array {
  const state = IV.slice()
  const total = Math.ceil((bytes.length + 9) / 64) * 64
  const buffer = new Uint8Array(total)
  buffer.set(bytes)
  pad(buffer, bytes.length, bytes.length, total)
  for (let offset = 0; offset < total; offset += 64) compress(state, buffer, offset)
  return digestBytes(state)
}

/** Writes the 0x80 marker, zeros and the 64-bit big-endian bit length of `messageBytes`. */
function pad(buffer: Uint8Array, used: number, messageBytes: number, total: number): void {
  buffer[used] = 0x80
  buffer.fill(0, used + 1, total - 8)
  const high = Math.floor(messageBytes / 0x20000000)
  const low = (messageBytes << 3) >>> 0
  buffer[total - 8] = high >>> 24
  buffer[total - 7] = high >>> 16
  buffer[total - 6] = high >>> 8
  buffer[total - 5] = high
  buffer[total - 4] = low >>> 24
  buffer[total - 3] = low >>> 16
  buffer[total - 2] = low >>> 8
  buffer[total - 1] = low
}

function digestBytes(state: Int32Array, into: Uint8Array = new Uint8Array(32), offset = 0): Uint8Array {
  for (let i = 0; i < 8; i++) {
    const word = state[i]!
    into[offset + i * 4] = word >>> 24
    into[offset + i * 4 + 1] = word >>> 16
    into[offset + i * 4 + 2] = word >>> 8
    into[offset + i * 4 + 3] = word
  }
  return into
}

/** Imports an HMAC-SHA256 key: hashes its inner and outer pad blocks once. */
export function hmacKey(key: Uint8Array): HmacKey {
  const block = new Uint8Array(64)
  block.set(key.length > 64 ? sha256(key) : key)
  const inner = IV.slice()
  const outer = IV.slice()
  const padded = new Uint8Array(64)
  for (let i = 0; i < 64; i++) padded[i] = block[i]! ^ 0x36
  compress(inner, padded, 0)
  for (let i = 0; i < 64; i++) padded[i] = block[i]! ^ 0x5c
  compress(outer, padded, 0)
  return { kind: 'hmac-sha256-key', state: inner, tail: new Uint8Array(0), length: 64, outer }
}

/** Absorbs `prefix` (UTF-8) into a keyed state, for inputs that all start with it. */
export function hmacAbsorb(from: HmacState, prefix: string): HmacState {
  const buffer = scratchFor(from.tail.length + prefix.length * 3)
  buffer.set(from.tail)
  const used = from.tail.length + encoder.encodeInto(prefix, buffer.subarray(from.tail.length)).written
  const state = from.state.slice()
  const whole = used - (used % 64)
  for (let offset = 0; offset < whole; offset += 64) compress(state, buffer, offset)
  return { state, tail: buffer.slice(whole, used), length: from.length + used - from.tail.length, outer: from.outer }
}

/** HMAC-SHA256 of everything absorbed in `from` followed by `rest` (UTF-8 text, or bytes). */
export function hmacFinish(from: HmacState, rest: string | Uint8Array): Uint8Array {
  const buffer = scratchFor(from.tail.length + rest.length * 3 + 72)
  buffer.set(from.tail)
  let used = from.tail.length
  if (typeof rest === 'string') used += encoder.encodeInto(rest, buffer.subarray(used)).written
  else {
    buffer.set(rest, used)
    used += rest.length
  }
  const total = Math.ceil((used + 9) / 64) * 64
  // The inner hash's length counts every byte since its start, the key block included.
  pad(buffer, used, from.length + used - from.tail.length, total)
  const state = innerState
  state.set(from.state)
  for (let offset = 0; offset < total; offset += 64) compress(state, buffer, offset)
  const outerBlock = buffer.subarray(0, 64)
  digestBytes(state, outerBlock, 0)
  pad(outerBlock, 32, 96, 64)
  const outer = outerState
  outer.set(from.outer)
  compress(outer, outerBlock, 0)
  return digestBytes(outer)
}

/** HMAC-SHA256(key, message) for a key imported with `hmacKey`. */
export function hmacSha256(key: HmacKey, message: string): Uint8Array {
  return hmacFinish(key, message)
}
