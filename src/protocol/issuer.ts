/**
 * The one challenge issuer, for every transport: fresh challenges for a set of offers, bound by
 * HMAC (C3) to the realm, the offer, the expiry, the body digest and the request target, each
 * with a random nonce. Built for the unpaid path, which is the commonest answer a paid route
 * gives: the keyed HMAC state is absorbed once per offer and realm, and once per target and
 * expiry second, so a challenge hashes only its last block and the outer one.
 *
 * opaque = base64url(`{"r":<target>,"s":"<salt><nonce>"}`): `r` binds the request target (an
 * HTTP `METHOD path?query`, an MCP operation), `s` is this process's salt (0 to 47 characters,
 * as many as put the nonce's bytes into the last block) then 16 random characters (96 bits).
 */
import { bindingPrefix, bindingSlot, quote } from './challenge.js'
import { base64url, utf8 } from './encoding.js'
import { type HmacKey, type HmacState, hmacAbsorb, hmacFinish } from './hmac.js'
import { rfc3339 } from './receipt.js'

/** What the issuer needs of an offer; it keeps its per-realm HMAC states in `bindings`. */
export type IssuableOffer = {
  method: string
  intent: string
  /** base64url(JCS(request)). */
  encoded: string
  /** `, method="…", intent="…", request="…"[, description="…"]`: the fixed middle of its challenge header. */
  header: string
  /** Per realm (bounded): the keyed state after the offer's fixed binding input, and per target the states of the current expiry second. */
  bindings: Map<string, RealmBinding>
}

type RealmBinding = { prefix: HmacState; expires: string; targets: Map<string, Midstate> }

/** The HMAC state of one offer, realm, expiry, digest and target, up to the nonce, and the opaque up to it. */
type Midstate = {
  state: HmacState
  opaqueHead: string
  carry: Uint8Array
  /** The challenge header from after the id to the opaque's variable end, as one flat string. */
  header: string
}

/** A fresh challenge: its id, its `WWW-Authenticate` serialisation, and the parts a JSON transport sends. */
export type Issued = { id: string; header: string; expires: string; opaque: string }

/** What a challenge binds besides its offer. */
export type IssueTarget = {
  realm: string
  /** `METHOD path?query` on HTTP, the operation (`tools/call name`) on MCP. */
  target: string
  /** RFC 9530 digest of the request body, when it has one. */
  digest: string | undefined
}

export type Issuer = (offers: readonly IssuableOffer[], where: IssueTarget) => Issued[]

/** The fixed middle of an offer's challenge header. */
export function offerHeader(method: string, intent: string, encoded: string, description: string | undefined): string {
  return `, method="${method}", intent="${intent}", request="${encoded}"${description === undefined ? '' : `, ${quote('description', description)}`}`
}

/** An issuer signing with `key`, for challenges that live `ttl` seconds. */
export function createIssuer(key: HmacKey, ttl: number): Issuer {
  let lastRealm = ''
  let lastQuoted = ''
  return (offers, { realm, target, digest }) => {
    const expires = expiresAt(ttl)
    if (realm !== lastRealm || lastQuoted === '') {
      lastQuoted = quote('realm', realm)
      lastRealm = realm
    }
    const middle = `${digest === undefined ? '' : `, digest="${digest}"`}, expires="${expires}", opaque="`
    return offers.map((offer) => {
      const binding = realmBinding(key, offer, realm, expires)
      // Requests with a body differ by digest: those are not worth keeping.
      let mid = digest === undefined ? binding.targets.get(target) : undefined
      if (!mid) {
        const absorbed = midstate(binding.prefix, expires, digest, target)
        // Same order and quoting as serializeChallenge: id, realm, method, intent, request, description, digest, expires, opaque.
        mid = { ...absorbed, header: flat(`", ${lastQuoted}${offer.header}${middle}${absorbed.opaqueHead}`) }
        if (digest === undefined) {
          if (binding.targets.size >= 64) binding.targets.clear()
          binding.targets.set(target, mid)
        }
      }
      const tail = opaqueTail(mid.carry)
      const id = base64url(hmacFinish(mid.state, tail))
      return { id, header: `Payment id="${id}${mid.header}${tail}"`, expires, opaque: mid.opaqueHead + tail }
    })
  }
}

function realmBinding(key: HmacKey, offer: IssuableOffer, realm: string, expires: string): RealmBinding {
  let binding = offer.bindings.get(realm)
  if (!binding) {
    // Bounded: the realm may come from the Host header.
    if (offer.bindings.size >= 64) offer.bindings.clear()
    binding = { prefix: bindingPrefix(key, { realm, method: offer.method, intent: offer.intent, request: offer.encoded }), expires, targets: new Map() }
    offer.bindings.set(realm, binding)
  }
  if (binding.expires !== expires) {
    binding.expires = expires
    binding.targets.clear()
  }
  return binding
}

/**
 * The same text as one flat string. A template literal makes a rope that is flattened each time
 * the runtime reads it whole (Node checks every header value with a regular expression, then
 * writes it); a value reused for a second of challenges is better flattened once. `Number()`
 * reads the whole string, which flattens it in place.
 */
function flat(text: string): string {
  Number(text)
  return text
}

let expiresCache = { second: 0, ttl: 0, value: '' }

function expiresAt(ttl: number): string {
  const second = Math.floor(Date.now() / 1000)
  if (expiresCache.second !== second || expiresCache.ttl !== ttl) expiresCache = { second, ttl, value: rfc3339(new Date((second + ttl) * 1000)) }
  return expiresCache.value
}

const base64urlAlphabet = new TextEncoder().encode('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_')
// Random bytes are drawn in bulk: one getRandomValues call per 256 challenges, not one each.
const randomPool = new Uint8Array(16 * 256)
let randomUsed = randomPool.length
// The variable end of an opaque's JSON: up to 2 carried bytes, 16 nonce characters, `"}`.
const opaqueEnd = new Uint8Array(20)

/**
 * The per-request end of a challenge's opaque: base64url of the carried bytes, a fresh nonce of
 * 16 random base64url characters (96 bits, drawn directly) and the closing `"}`.
 */
function opaqueTail(carry: Uint8Array): string {
  if (randomUsed === randomPool.length) {
    crypto.getRandomValues(randomPool)
    randomUsed = 0
  }
  let n = 0
  for (; n < carry.length; n++) opaqueEnd[n] = carry[n]!
  for (let i = 0; i < 16; i++) opaqueEnd[n++] = base64urlAlphabet[randomPool[randomUsed++]! & 63]!
  opaqueEnd[n++] = 0x22 // "
  opaqueEnd[n++] = 0x7d // }
  return base64url(opaqueEnd.subarray(0, n))
}

let salt: Uint8Array | undefined
/** 63 random base64url characters, drawn once per process (lazily: Workers forbid it at load). */
function instanceSalt(): Uint8Array {
  if (!salt) {
    const random = crypto.getRandomValues(new Uint8Array(63))
    salt = random.map((byte) => base64urlAlphabet[byte & 63]!)
  }
  return salt
}

/**
 * The HMAC state of one offer, realm, expiry second, digest and target, absorbed up to the
 * nonce, so a challenge hashes one inner block and the outer one (where hashing the whole
 * input costs four or five). Only the base64 of the nonce's 3-byte groups changes per
 * challenge; everything before is absorbed here, once a second.
 */
function midstate(prefix: HmacState, expires: string, digest: string | undefined, target: string): Omit<Midstate, 'header'> {
  const head = `${bindingSlot(expires)}|${bindingSlot(digest)}|`
  const json = utf8(`{"r":${JSON.stringify(target)},"s":"`)
  const filler = instanceSalt()
  let chosen = 0
  for (let f = 0; f < filler.length; f++) {
    const length = json.length + f
    const whole = length - (length % 3)
    const variable = Math.ceil(((length - whole + 18) * 4) / 3)
    const tail = (prefix.length + head.length + (whole / 3) * 4) % 64
    if (tail + variable + 9 <= 64) {
      chosen = f
      break
    }
  }
  const start = new Uint8Array(json.length + chosen)
  start.set(json)
  start.set(filler.subarray(0, chosen), json.length)
  const whole = start.length - (start.length % 3)
  const opaqueHead = base64url(start.subarray(0, whole))
  return { state: hmacAbsorb(prefix, head + opaqueHead), opaqueHead, carry: start.slice(whole) }
}
