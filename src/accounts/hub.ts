/**
 * Many servers, one hub (issue #15). A hosted service runs `hub({ ledger })`; each paid server
 * holds a service token (stored hashed by the ledger, scoped to one realm, revocable) and bills
 * its users' API keys through `remoteMeter()`, which implements the same `Meter` contract as the
 * in-process ledger, so `accounts.charge()` does not know which one it talks to.
 *
 * The realm always comes from the service token, never from the request: a server can only hold
 * keys of its own realm, and only capture or release its own holds (hold ids are kept in a
 * namespace per realm, so two servers choosing the same id never meet).
 *
 * Wire format: JSON; money as decimal strings of base units; every refusal a problem JSON whose
 * `reason` member is the `MeterError` reason (or the hub's own: `invalid-service-token`, …) and,
 * for 402s, `balance`/`remaining`.
 */
import { Hono, type MiddlewareHandler } from 'hono'
import { ConfigurationError } from '../protocol/errors.js'
import { LedgerError, type LedgerErrorCode } from './ledger.js'
import { type Hold, type Meter, MeterError, type MeterRefusal, MeterUnavailableError } from './meter.js'
import type { Payouts } from './payout.js'
import { bearer, bearerSecret, problem, readJson } from './wire.js'

/** What the hub needs from the ledger (`createLedger()` provides it). */
export type HubLedger = Meter & {
  /** The token's server, or a `MeterError` (`invalid-key`, `key-revoked`) / null when it is not valid. */
  authenticateService(token: string): Promise<{ id: string; realm: string } | null | undefined>
  createServiceToken(realm: string, label?: string): Promise<{ token: string; id: string }>
  revokeServiceToken(id: string): Promise<unknown>
  earnings(realm: string): Promise<{ realm: string; accrued: bigint; paidOut: bigint; pending: bigint }>
  authenticate?(key: string, realm: string): Promise<unknown>
}

export type HubOptions = {
  ledger: HubLedger
  /**
   * The operator's secret (≥ 32 characters) for `/operator/*`: issuing and revoking service
   * tokens, any realm's earnings, payouts. Without it the operator routes are not mounted.
   */
  operatorSecret?: string
  /** Payouts (`payouts({ … })`): mounts the operator payout routes and lets a server pay out its own realm. */
  payouts?: Payouts
}

/** HTTP status of each refusal of a key. */
export const refusalStatus: Record<MeterRefusal, number> = {
  'invalid-key': 401,
  'key-revoked': 401,
  'key-expired': 401,
  'wrong-server': 403,
  'key-limit-exceeded': 402,
  'insufficient-balance': 402,
}

const holdIdPattern = /^[A-Za-z0-9._:~-]{1,128}$/
const baseUnits = /^(0|[1-9][0-9]{0,77})$/

/** The ledger's id of a server's hold: length-prefixed realm, so no two realms can meet. */
const scoped = (realm: string, holdId: string) => `${realm.length}:${realm}:${holdId}`

export type Service = { id: string; realm: string }
/** The hub app's context: the authenticated server (service token id and realm). */
export type HubEnv = { Variables: { service: Service } }

/** Ledger refusals that are not about a key: the request named something that does not fit. */
const requestRefusals: Record<string, number> = {
  'unknown-hold': 404,
  'hold-conflict': 409,
  // The hold id was used by a hold that is released: the caller holds anew under another id.
  'hold-released': 409,
  'invalid-request': 400,
}

function refusal(error: unknown): Response {
  const code = error instanceof LedgerError ? error.code : undefined
  const status = code === undefined ? undefined : requestRefusals[code]
  if (code !== undefined && status !== undefined) return problem(status, code, (error as Error).message)
  // A price in another currency than the ledger's: the calling server's configuration, not an outage.
  if (error instanceof ConfigurationError) return problem(400, 'invalid-request', error.message)
  if (error instanceof MeterError)
    return problem(refusalStatus[error.reason] ?? 402, error.reason, error.message, {
      ...(error.balance !== undefined && { balance: error.balance.toString() }),
      ...(error.remaining !== undefined && { remaining: error.remaining.toString() }),
    })
  // Unavailable, or anything unexpected: the server must not run the work; nothing was charged.
  return problem(503, 'ledger-unavailable', 'the ledger could not answer; nothing was charged')
}

/** JSON of a ledger value: bigints as decimal strings. */
function plain(value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString()
  if (value instanceof Date) return value.toISOString()
  if (Array.isArray(value)) return value.map(plain)
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]))
  return value
}

/**
 * The hub: a Hono app many servers call with `Authorization: Bearer <service token>`.
 *
 * Server routes: `POST /holds` `{ key, amount, currency, holdId, description?, ttlMs }` → 201
 * hold; `POST /holds/:holdId/capture`, `POST /holds/:holdId/release` → `{ balance }`;
 * `POST /holds/:holdId/extend` `{ ttlMs }` → `{ expiresAt }` (keeps a running call's hold open);
 * `POST /keys/validate` `{ key }`; `GET /earnings`; `POST /payouts` (with `payouts`).
 * Operator routes (`Authorization: Bearer <operatorSecret>`): `POST /operator/service-tokens`
 * `{ realm, label? }` → 201 `{ id, token, realm }` (the token is shown once),
 * `DELETE /operator/service-tokens/:id`, `GET /operator/earnings/:realm`, and the payout routes.
 *
 * @example
 * const app = new Hono().route('/hub', hub({ ledger, operatorSecret: process.env.HUB_OPERATOR_SECRET }))
 * @throws {ConfigurationError} when the ledger lacks what the hub needs or the secret is short.
 */
export function hub(options: HubOptions): Hono<HubEnv> {
  const { ledger } = options
  for (const method of ['hold', 'capture', 'release', 'extend', 'authenticateService', 'createServiceToken', 'revokeServiceToken', 'earnings'] as const)
    if (typeof ledger?.[method] !== 'function') throw new ConfigurationError(`hub({ ledger }): the ledger has no ${method}(); pass createLedger({ … })`)
  if (options.payouts && options.operatorSecret === undefined)
    throw new ConfigurationError('hub({ payouts }): payouts need an operatorSecret to authenticate the operator routes')

  const app = new Hono<HubEnv>()

  if (options.operatorSecret !== undefined) {
    const operator = new Hono()
    operator.use('*', bearerSecret(options.operatorSecret, 'hub({ operatorSecret })'))
    // A refusal of what the request named (e.g. a realm the ledger cannot store) is the operator's to fix; anything else is an outage.
    operator.onError((error) =>
      error instanceof LedgerError && requestRefusals[error.code] !== undefined
        ? refusal(error)
        : problem(503, 'ledger-unavailable', 'the ledger could not answer'),
    )
    operator.post('/service-tokens', async (c) => {
      const body = await readJson(c)
      if (body instanceof Response) return body
      if (typeof body.realm !== 'string' || body.realm === '' || (body.label !== undefined && typeof body.label !== 'string'))
        return problem(400, 'bad-request', 'the body is { "realm": string, "label"?: string }')
      const created = await ledger.createServiceToken(body.realm, body.label as string | undefined)
      return c.json({ id: created.id, token: created.token, realm: body.realm }, 201)
    })
    operator.delete('/service-tokens/:id', async (c) => {
      const revoked = await ledger.revokeServiceToken(c.req.param('id'))
      return revoked === false ? problem(404, 'unknown-service-token', 'no active service token has this id') : c.body(null, 204)
    })
    operator.get('/earnings/:realm', async (c) => c.json(plain(await ledger.earnings(c.req.param('realm'))) as object))
    if (options.payouts) operator.route('/', options.payouts.routes({ operatorSecret: options.operatorSecret }))
    app.route('/operator', operator)
  }

  // Per route (not `use('*')`), so it never answers for paths it does not serve.
  const authenticated: MiddlewareHandler<HubEnv> = async (c, next) => {
    const token = bearer(c)
    if (token === undefined) return problem(401, 'invalid-service-token', 'the hub needs Authorization: Bearer <service token>')
    let service: Service | null | undefined
    try {
      service = await ledger.authenticateService(token)
    } catch (error) {
      // The ledger refuses a bad service token as it refuses a bad key; here it is the server's
      // credential, not a user's key, so it must not come back as a key refusal.
      if (!(error instanceof MeterError)) return refusal(error)
      service = undefined
      if (error.reason === 'key-revoked') return problem(401, 'invalid-service-token', 'the service token was revoked')
    }
    if (!service) return problem(401, 'invalid-service-token', 'the service token is not valid')
    c.set('service', service)
    await next()
  }

  app.post('/holds', authenticated, async (c) => {
    const { realm } = c.get('service')
    const body = await readJson(c)
    if (body instanceof Response) return body
    const { key, amount, currency, holdId, description, ttlMs } = body
    if (
      typeof key !== 'string' ||
      typeof amount !== 'string' ||
      !baseUnits.test(amount) ||
      typeof currency !== 'string' ||
      typeof holdId !== 'string' ||
      !holdIdPattern.test(holdId) ||
      (description !== undefined && typeof description !== 'string') ||
      typeof ttlMs !== 'number' ||
      !Number.isSafeInteger(ttlMs) ||
      ttlMs <= 0
    )
      return problem(
        400,
        'bad-request',
        'the body is { key, amount: base units as a decimal string, currency, holdId: 1–128 of [A-Za-z0-9._:~-], description?, ttlMs: positive integer }',
      )
    try {
      const hold = await ledger.hold({
        key,
        realm,
        amount: BigInt(amount),
        currency,
        holdId: scoped(realm, holdId),
        ttlMs,
        ...(description !== undefined && { description: description as string }),
      })
      return c.json({ ...(plain(hold) as object), holdId }, 201)
    } catch (error) {
      return refusal(error)
    }
  })

  for (const step of ['capture', 'release'] as const)
    app.post(`/holds/:holdId/${step}`, authenticated, async (c) => {
      const holdId = c.req.param('holdId')
      if (!holdIdPattern.test(holdId)) return problem(400, 'bad-request', 'a hold id is 1–128 of [A-Za-z0-9._:~-]')
      try {
        const { balance } = await ledger[step](scoped(c.get('service').realm, holdId))
        return c.json({ balance: balance.toString() })
      } catch (error) {
        return refusal(error)
      }
    })

  app.post('/holds/:holdId/extend', authenticated, async (c) => {
    const holdId = c.req.param('holdId')
    const body = await readJson(c)
    if (body instanceof Response) return body
    const { ttlMs } = body
    if (!holdIdPattern.test(holdId) || typeof ttlMs !== 'number' || !Number.isSafeInteger(ttlMs) || ttlMs <= 0)
      return problem(400, 'bad-request', 'a hold id is 1–128 of [A-Za-z0-9._:~-]; the body is { ttlMs: positive integer }')
    try {
      const { expiresAt } = await ledger.extend(scoped(c.get('service').realm, holdId), ttlMs)
      return c.json({ expiresAt: expiresAt.toISOString() })
    } catch (error) {
      return refusal(error)
    }
  })

  app.post('/keys/validate', authenticated, async (c) => {
    if (typeof ledger.authenticate !== 'function') return problem(400, 'bad-request', 'this hub does not validate keys on their own')
    const body = await readJson(c)
    if (body instanceof Response) return body
    if (typeof body.key !== 'string') return problem(400, 'bad-request', 'the body is { "key": string }')
    try {
      const key = (await ledger.authenticate(body.key, c.get('service').realm)) as Record<string, unknown> | undefined
      if (!key) return problem(401, 'invalid-key', 'the API key is not valid')
      // What a server may know of a key: never its hash.
      const { hash: _hash, ...shown } = key
      return c.json({ valid: true, ...(plain(shown) as object) })
    } catch (error) {
      return refusal(error)
    }
  })

  app.get('/earnings', authenticated, async (c) => {
    try {
      return c.json(plain(await ledger.earnings(c.get('service').realm)) as object)
    } catch (error) {
      return refusal(error)
    }
  })

  const payouts = options.payouts
  if (payouts)
    // A server may ask for its own realm's payout; the address is the operator's configuration.
    app.post('/payouts', authenticated, async (c) => {
      try {
        const done = await payouts.payout({ realm: c.get('service').realm })
        const json = { ...done, amount: done.amount.toString() }
        if (done.status === 'cancelled') return problem(409, 'payout-cancelled', done.detail ?? 'the payout was cancelled', { payout: json })
        return c.json(json, done.status === 'paid' ? 200 : 202)
      } catch (error) {
        const reason = (error as { reason?: string }).reason
        if (reason === 'no-payout-address' || reason === 'nothing-to-pay') return problem(409, reason, (error as Error).message)
        return problem(503, 'ledger-unavailable', 'the ledger or the chain could not answer; a begun payout stays pending and is reconciled')
      }
    })

  return app
}

export type RemoteMeterOptions = {
  /** The hub's base URL (where `hub()` is mounted), e.g. `https://hub.example/v1`. */
  url: string
  /** This server's service token. */
  token: string
  /** A `fetch` to call the hub with (tests, service bindings). Default: the global one. */
  fetch?: (request: Request) => Promise<Response>
  /** Milliseconds before a call counts as unanswered. Default 5 000. */
  timeoutMs?: number
  /** Further attempts after an unanswered call or a 5xx (every call is idempotent on its holdId). Default 2. */
  retries?: number
}

const refusals = new Set<string>(Object.keys(refusalStatus))

type Answer = { status: number; body: Record<string, unknown> }

/**
 * A `Meter` over a hub's HTTP API, so `accounts.charge({ meter: remoteMeter({ … }) })` bills
 * keys held by the hub. The hub's refusals come back as `MeterError` with the same reason and
 * numbers, its refusals of a hold id (`unknown-hold`, `hold-conflict`, `hold-released`) as the
 * ledger's `LedgerError` with that code; an unreachable hub, a 5xx, a timeout or a refused service token as
 * `MeterUnavailableError` (the route answers 503 and runs nothing). Unanswered calls are
 * retried: a hold, capture or release is idempotent on its holdId, so a retry after a lost
 * answer never moves money twice.
 *
 * @throws {ConfigurationError} when the URL or token is missing.
 */
export function remoteMeter(options: RemoteMeterOptions): Meter {
  let base: URL
  try {
    base = new URL(options.url)
  } catch {
    throw new ConfigurationError(`remoteMeter({ url }): ${String(options.url)} is not a URL; give the hub's base URL`)
  }
  if (typeof options.token !== 'string' || options.token === '') throw new ConfigurationError('remoteMeter({ token }): give this server’s service token')
  const root = base.href.replace(/\/+$/, '')
  const send = options.fetch ?? ((request: Request) => fetch(request))
  const timeoutMs = options.timeoutMs ?? 5_000
  const retries = options.retries ?? 2

  async function once(path: string, body: unknown): Promise<Answer | undefined> {
    let response: Response
    try {
      response = await send(
        new Request(`${root}${path}`, {
          method: 'POST',
          headers: { authorization: `Bearer ${options.token}`, 'content-type': 'application/json' },
          body: JSON.stringify(body ?? {}),
          signal: AbortSignal.timeout(timeoutMs),
        }),
      )
    } catch {
      return undefined
    }
    if (response.status >= 500) {
      void response.body?.cancel().catch(() => {})
      return undefined
    }
    try {
      const parsed = (await response.json()) as unknown
      if (typeof parsed !== 'object' || parsed === null) return undefined
      return { status: response.status, body: parsed as Record<string, unknown> }
    } catch {
      return undefined
    }
  }

  async function call(path: string, body: unknown): Promise<Record<string, unknown>> {
    for (let attempt = 0; attempt <= retries; attempt++) {
      const answer = await once(path, body)
      if (answer === undefined) continue
      if (answer.status >= 200 && answer.status < 300) return answer.body
      const reason = String(answer.body.reason ?? '')
      const detail = typeof answer.body.detail === 'string' ? answer.body.detail : `the hub answered ${answer.status}`
      // The ledger's own refusals of a hold id come back as the same LedgerError, code and all.
      if (Object.hasOwn(requestRefusals, reason) && reason !== 'invalid-request') throw new LedgerError(reason as LedgerErrorCode, detail)
      if (refusals.has(reason)) {
        const numbers: { balance?: bigint; remaining?: bigint } = {}
        if (typeof answer.body.balance === 'string' && baseUnits.test(answer.body.balance)) numbers.balance = BigInt(answer.body.balance)
        if (typeof answer.body.remaining === 'string' && baseUnits.test(answer.body.remaining)) numbers.remaining = BigInt(answer.body.remaining)
        throw new MeterError(reason as MeterRefusal, detail, numbers)
      }
      // The hub refused this server (service token) or the request: this server cannot bill now.
      throw new MeterUnavailableError(`the hub refused the call (${answer.status} ${reason || 'error'}): ${detail}`)
    }
    throw new MeterUnavailableError(`the hub did not answer ${path} after ${retries + 1} attempt(s)`)
  }

  const units = (value: unknown, what: string): bigint => {
    if (typeof value === 'string' && baseUnits.test(value)) return BigInt(value)
    throw new MeterUnavailableError(`the hub answered without a valid ${what}`)
  }

  return {
    async hold(request): Promise<Hold> {
      const answer = await call('/holds', {
        key: request.key,
        amount: request.amount.toString(),
        currency: request.currency,
        holdId: request.holdId,
        ttlMs: request.ttlMs,
        ...(request.description !== undefined && { description: request.description }),
      })
      return {
        holdId: request.holdId,
        accountId: String(answer.accountId),
        keyId: String(answer.keyId),
        owner: String(answer.owner),
        amount: units(answer.amount, 'amount'),
        balance: units(answer.balance, 'balance'),
      }
    },
    async capture(holdId) {
      return { balance: units((await call(`/holds/${encodeURIComponent(holdId)}/capture`, {})).balance, 'balance') }
    },
    async release(holdId) {
      return { balance: units((await call(`/holds/${encodeURIComponent(holdId)}/release`, {})).balance, 'balance') }
    },
    async authenticate(key) {
      // The hub checks the key for this server's realm (the service token's), never one the request names.
      await call('/keys/validate', { key })
    },
    async extend(holdId, ttlMs) {
      const answer = await call(`/holds/${encodeURIComponent(holdId)}/extend`, { ttlMs })
      const expiresAt = new Date(String(answer.expiresAt))
      if (Number.isNaN(expiresAt.getTime())) throw new MeterUnavailableError('the hub answered without a valid expiresAt')
      return { expiresAt }
    },
  }
}
