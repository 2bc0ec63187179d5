/**
 * Challenges: the HMAC binding of C3, serialisation into `WWW-Authenticate` (C2), and a parser
 * (for clients, the demo and tests).
 *
 * id = base64url(HMAC-SHA256(secret, realm|method|intent|request|expires|digest|opaque)), all
 * seven slots present, empty when absent, and `\` and `|` inside a slot escaped as `\\` and `\|`
 * (see `bindingSlot`). Several secrets rotate: the first signs, all verify.
 */
import { base64url, constantTimeEqual, utf8 } from './encoding.js'
import { type HmacKey, type HmacState, hmacAbsorb, hmacFinish, hmacKey } from './hmac.js'

export type Challenge = {
  id: string
  realm: string
  method: string
  intent: string
  /** base64url(JCS(request)) */
  request: string
  expires?: string
  digest?: string
  description?: string
  opaque?: string
}

export type ChallengeSlots = Omit<Challenge, 'id' | 'description'>

/** A secret must carry at least 256 bits. */
const minimumSecretBytes = 32

export type SecretKeys = readonly Uint8Array[]

/** Validates and encodes the binding secrets once, at construction. */
export function secretKeys(secret: string | Uint8Array | readonly (string | Uint8Array)[]): SecretKeys {
  const list = Array.isArray(secret) ? secret : [secret]
  if (list.length === 0) throw new Error('mpp: `secret` must be a string of at least 32 bytes, or a non-empty list of them.')
  return list.map((value, index) => {
    const bytes = typeof value === 'string' ? utf8(value) : value
    if (!(bytes instanceof Uint8Array) || bytes.length < minimumSecretBytes)
      throw new Error(
        `mpp: secret${list.length > 1 ? ` #${index}` : ''} is ${bytes?.length ?? 0} bytes; it must be at least ${minimumSecretBytes} bytes (e.g. 64 random hex characters from \`openssl rand -hex 32\`).`,
      )
    return bytes
  })
}

const bindingSpecial = /[|\\]/
const bindingSpecials = /[|\\]/g

/**
 * One slot of the binding input: `\` and `|` escaped (`\\`, `\|`), so that one tuple of slots
 * has exactly one input and no slot can run into the next (C3's plain `|` join is ambiguous when
 * a slot, such as a realm taken from a Host header, contains `|`). Slots with neither character,
 * which is every slot of a challenge issued for a valid host, are unchanged: the input is then
 * byte for byte C3's recommended form.
 */
export function bindingSlot(value: string | undefined): string {
  if (value === undefined) return ''
  return bindingSpecial.test(value) ? value.replace(bindingSpecials, '\\$&') : value
}

function bindingInput(slots: ChallengeSlots): string {
  return `${bindingPrefixInput(slots)}${bindingSlot(slots.expires)}|${bindingSlot(slots.digest)}|${bindingSlot(slots.opaque)}`
}

function bindingPrefixInput(slots: Pick<ChallengeSlots, 'realm' | 'method' | 'intent' | 'request'>): string {
  return `${bindingSlot(slots.realm)}|${bindingSlot(slots.method)}|${bindingSlot(slots.intent)}|${bindingSlot(slots.request)}|`
}

const imported = (key: Uint8Array | HmacKey): HmacKey => (key instanceof Uint8Array ? hmacKey(key) : key)

/** The id of a challenge: base64url(HMAC-SHA256(key, binding input)). Pass an imported key on hot paths. */
export function challengeId(key: Uint8Array | HmacKey, slots: ChallengeSlots): string {
  return base64url(hmacFinish(imported(key), bindingInput(slots)))
}

/**
 * The keyed state after `realm|method|intent|request|` (slots escaped), the part of the binding
 * input a route fixes: challenges then hash only their own `expires|digest|opaque` (see
 * `midstate` in middleware.ts, which escapes those with `bindingSlot`).
 */
export function bindingPrefix(key: HmacKey, slots: Pick<ChallengeSlots, 'realm' | 'method' | 'intent' | 'request'>): HmacState {
  return hmacAbsorb(key, bindingPrefixInput(slots))
}

/** Whether `id` binds `slots` under any of the keys (constant-time per key). */
export function verifyChallengeId(keys: readonly (Uint8Array | HmacKey)[], id: string, slots: ChallengeSlots): boolean {
  const input = bindingInput(slots)
  let ok = false
  for (const key of keys) ok = constantTimeEqual(base64url(hmacFinish(imported(key), input)), id) || ok
  return ok
}

// CR/LF would split the header; NUL is refused by every fetch Headers implementation, so a
// value with one would make each 402 of the route fail at request time instead of here.
const unsendable = /[\r\n\0]/
// biome-ignore lint/suspicious/noControlCharactersInRegex: the range is Latin-1; what is outside it is escaped.
const needsEscape = /["\\]|[^\x00-\xff]/

/** A quoted-string auth-param value; CR, LF and NUL never reach a header. */
export function quote(name: string, value: string): string {
  if (unsendable.test(value)) throw new Error(`mpp: the ${name} of a challenge cannot contain CR or LF (nor NUL).`)
  if (!needsEscape.test(value)) return `${name}="${value}"`
  const escaped = value
    .replace(/[\\"]/g, (char) => `\\${char}`)
    // Header values are byte strings: characters above Latin-1 travel as \uXXXX, as the
    // reference client expects.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the range is Latin-1; what is outside it is escaped.
    .replace(/[^\x00-\xff]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`)
  return `${name}="${escaped}"`
}

export function serializeChallenge(challenge: Challenge): string {
  let header = `Payment ${quote('id', challenge.id)}, ${quote('realm', challenge.realm)}, method="${challenge.method}", intent="${challenge.intent}", request="${challenge.request}"`
  if (challenge.description !== undefined) header += `, ${quote('description', challenge.description)}`
  if (challenge.digest !== undefined) header += `, digest="${challenge.digest}"`
  if (challenge.expires !== undefined) header += `, expires="${challenge.expires}"`
  if (challenge.opaque !== undefined) header += `, opaque="${challenge.opaque}"`
  return header
}

/**
 * Parses every Payment challenge in a `WWW-Authenticate` value (several may be joined with
 * commas). Other schemes are skipped. Throws on malformed quoted strings.
 */
export function parseChallenges(header: string): Challenge[] {
  const challenges: Challenge[] = []
  let i = 0
  let current: Record<string, string> | undefined
  const flush = () => {
    if (current) challenges.push(toChallenge(current))
    current = undefined
  }
  while (i < header.length) {
    while (i < header.length && /[\s,]/.test(header[i]!)) i++
    if (i >= header.length) break
    const start = i
    while (i < header.length && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(header[i]!)) i++
    const token = header.slice(start, i)
    if (!token) throw new Error('malformed WWW-Authenticate: expected a token')
    let j = i
    while (j < header.length && header[j] === ' ') j++
    if (header[j] === '=') {
      // auth-param of the current scheme
      i = j + 1
      while (i < header.length && header[i] === ' ') i++
      let value = ''
      if (header[i] === '"') {
        i++
        for (;;) {
          if (i >= header.length) throw new Error('malformed WWW-Authenticate: unterminated quoted-string')
          const char = header[i++]!
          if (char === '"') break
          if (char === '\\') {
            const next = header[i++] ?? ''
            const hex = next === 'u' ? header.slice(i, i + 4) : ''
            if (/^[0-9A-Fa-f]{4}$/.test(hex)) {
              value += String.fromCharCode(Number.parseInt(hex, 16))
              i += 4
            } else value += next
          } else value += char
        }
      } else {
        const valueStart = i
        while (i < header.length && header[i] !== ',') i++
        value = header.slice(valueStart, i).trim()
      }
      if (current) {
        const name = token.toLowerCase()
        if (name in current) throw new Error(`malformed WWW-Authenticate: duplicate ${name}`)
        current[name] = value
      }
    } else {
      // a new scheme
      flush()
      if (token.toLowerCase() === 'payment') current = Object.create(null) as Record<string, string>
    }
  }
  flush()
  return challenges
}

function toChallenge(params: Record<string, string>): Challenge {
  for (const name of ['id', 'realm', 'method', 'intent', 'request'] as const) if (!params[name]) throw new Error(`malformed Payment challenge: missing ${name}`)
  return {
    id: params.id!,
    realm: params.realm!,
    method: params.method!,
    intent: params.intent!,
    request: params.request!,
    ...(params.expires !== undefined && { expires: params.expires }),
    ...(params.digest !== undefined && { digest: params.digest }),
    ...(params.description !== undefined && { description: params.description }),
    ...(params.opaque !== undefined && { opaque: params.opaque }),
  }
}
