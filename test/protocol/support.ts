/**
 * Shared pieces of the conformance tests: an app around the fake method that records what
 * happened, an independent HMAC and JCS (node:crypto, no project code), and the assertions every
 * refusal must pass.
 */
import { createHash, createHmac } from 'node:crypto'
import { type Context, Hono } from 'hono'
import { expect } from 'vitest'
import { type ChargeOptions, type MppOptions, mpp, type PaymentEvent, type PaymentInfo } from '../../src/index.js'
import type { Challenge } from '../../src/protocol/challenge.js'
import { type FakeMethod, fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, credentialFor } from '../helpers/http.js'

export const secret = 'conformance-secret-0123456789abcdef-0123456789'
export const origin = 'http://api.test'
export const problemBase = 'https://paymentauth.org/problems/'

/**
 * Which form of `charge` the harness mounts: the middleware (`charge(options)`, then the
 * handler) or the handler form (`charge(options, handler)`). checklist-handler-form.test.ts
 * runs every conformance test again in the second.
 */
export const harnessForm: { value: 'middleware' | 'handler' } = { value: 'middleware' }

export type Harness = {
  app: Hono
  method: FakeMethod
  events: PaymentEvent[]
  /** How many times a paid handler ran, and what it saw in `c.get('payment')`. */
  ran: { count: number; seen: PaymentInfo[] }
  pay: ReturnType<typeof mpp>
}

export type HarnessOptions = Partial<Omit<MppOptions, 'methods' | 'onEvent'>> & {
  methods?: MppOptions['methods']
  route?: Partial<ChargeOptions>
  /** Status the paid handler answers (default 200). */
  status?: number | (() => number)
  /** Makes the paid handler throw. */
  throws?: boolean
}

/** A Hono app charging `/*` (any method, any path) with a fake method whose voucher tokens are `vouchers`. */
export function harness(options: HarnessOptions = {}, vouchers: string[] = ['v1']): Harness {
  const method = fakeMethod()
  for (const voucher of vouchers) method.vouchers.add(voucher)
  const events: PaymentEvent[] = []
  const { route, status, throws, methods, ...rest } = options
  const pay = mpp({ secret, ...rest, methods: methods ?? [method], onEvent: (event) => events.push(event) })
  const ran = { count: 0, seen: [] as PaymentInfo[] }
  const app = new Hono()
  // a handler that throws answers 500 (quietly: the failure is the point of those tests)
  app.onError((_error, c) => c.json({ error: 'handler failed' }, 500))
  const paid = (c: Context) => {
    ran.count++
    ran.seen.push({ ...c.get('payment') })
    if (throws) throw new Error('handler exploded')
    const code = typeof status === 'function' ? status() : (status ?? 200)
    return c.json({ delivered: 'the paid resource' }, code as 200)
  }
  if (harnessForm.value === 'handler') app.all('/*', pay.charge({ amount: '0.01', ...route }, paid))
  else app.all('/*', pay.charge({ amount: '0.01', ...route }), paid)
  return { app, method, events, ran, pay }
}

/** Gets a challenge for `path` (and returns the 402 for further checks). */
export async function challengeFrom(app: Hono, path = '/paid', init: RequestInit = {}): Promise<{ challenge: Challenge; response: Response }> {
  const response = await app.request(origin + path, init)
  expect(response.status).toBe(402)
  const [challenge] = challengesOf(response)
  return { challenge: challenge!, response }
}

export const voucher = (token = 'v1') => ({ type: 'voucher', token })

/** The base64url part of an `Authorization: Payment` value. */
export function tokenOf(authorization: string): string {
  return authorization.slice('Payment '.length)
}

export async function pay(app: Hono, path: string, authorization: string, init: RequestInit = {}): Promise<Response> {
  return app.request(origin + path, { ...init, headers: { ...(init.headers as Record<string, string>), authorization } })
}

export { credentialFor }

/**
 * The challenge id, computed here with node:crypto from the seven slots, independently of src/:
 * C3's `|`-joined form with `\` and `|` inside a slot escaped as `\\` and `\|`.
 */
export function expectedId(
  key: string,
  slots: { realm: string; method: string; intent: string; request: string; expires?: string; digest?: string; opaque?: string },
): string {
  const input = [slots.realm, slots.method, slots.intent, slots.request, slots.expires ?? '', slots.digest ?? '', slots.opaque ?? '']
    .map((slot) => slot.replace(/[\\|]/g, (char) => `\\${char}`))
    .join('|')
  return createHmac('sha256', key).update(input, 'utf8').digest('base64url')
}

/** RFC 8785 for the JSON this project produces (strings, finite numbers, booleans, null, arrays, objects). */
export function jcs(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(jcs).join(',')}]`
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined)
  // RFC 8785 sorts by UTF-16 code units, which is what the default sort compares.
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${jcs(v)}`).join(',')}}`
}

export function fromB64url(value: string): string {
  return Buffer.from(value, 'base64url').toString('utf8')
}

export function sha256Digest(body: string | Uint8Array): string {
  return `sha-256=:${createHash('sha256').update(body).digest('base64')}:`
}

export const rfc3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/

export type ProblemBody = { type: string; title: string; status: number; detail: string; challengeId?: string }

/**
 * Everything a refusal must satisfy: status, problem JSON of the given kind with a `detail`, no
 * receipt, no secret; with a fresh challenge (other than `usedId`) when `challenge` is expected,
 * and none of the `secrets` (credentials) anywhere in the answer.
 */
export async function expectRefusal(
  response: Response,
  kind: string,
  options: { status?: number; challenge?: boolean; usedId?: string; secrets?: string[]; detail?: RegExp } = {},
): Promise<ProblemBody> {
  const status = options.status ?? 402
  const text = await response.text()
  expect({ status: response.status, text }).toMatchObject({ status })
  expect(response.headers.get('content-type')).toBe('application/problem+json')
  expect(response.headers.get('payment-receipt')).toBeNull()
  const body = JSON.parse(text) as ProblemBody
  expect(body.type).toBe(problemBase + kind)
  expect(body.status).toBe(status)
  expect(typeof body.title).toBe('string')
  expect(body.detail.length).toBeGreaterThan(10)
  if (options.detail) expect(body.detail).toMatch(options.detail)
  const wantsChallenge = options.challenge ?? status === 402
  const header = response.headers.get('www-authenticate')
  if (wantsChallenge) {
    const challenges = challengesOf(response)
    expect(challenges.length).toBeGreaterThan(0)
    expect(body.challengeId).toBe(challenges[0]!.id)
    if (options.usedId) for (const fresh of challenges) expect(fresh.id).not.toBe(options.usedId)
  } else {
    expect(header).toBeNull()
    expect(body.challengeId).toBeUndefined()
  }
  const everything = text + JSON.stringify([...response.headers])
  for (const hidden of [secret, ...(options.secrets ?? [])]) expect(everything).not.toContain(hidden)
  return body
}
