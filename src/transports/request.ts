/**
 * What both Hono-based transports read of a request: the realm it is served under, its target,
 * and its body (for the digest a challenge binds).
 */
import type { Context } from 'hono'
import type { CredentialScheme } from '../core/intent.js'
import type { PaymentCore } from '../core/payments.js'
import { contentDigest } from '../protocol/digest.js'
import { invalidHost, requestHost } from '../protocol/host.js'
import { PaymentError } from '../protocol/problem.js'
import { readBody } from './body.js'

/** The configured realm, or the request's host when it is a valid `host[:port]` (else undefined). */
export function realmOrUndefined(c: Context, realm: string | undefined): string | undefined {
  return realm ?? requestHost(c.req.header('host'), c.req.url)
}

/** The configured realm, or the request's host; a request whose host is not valid is refused (400). */
export function realmOf(c: Context, realm: string | undefined): string {
  const found = realmOrUndefined(c, realm)
  if (found === undefined) throw new PaymentError('bad-request', invalidHost(c.req.header('host')))
  return found
}

/** `path?query` of a URL, without the fragment. */
export function pathAndQuery(url: string): string {
  const start = url.indexOf('/', url.indexOf('//') + 2)
  if (start === -1) return '/'
  const hash = url.indexOf('#', start)
  return hash === -1 ? url.slice(start) : url.slice(start, hash)
}

export function mayHaveBody(c: Context): boolean {
  const method = c.req.method
  if (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') return false
  if (c.req.header('content-length') === '0') return false
  return !!c.req.raw.body
}

/** RFC 9530 digest of the body (read up to `limit` bytes, else 413), or undefined when it is empty. */
export async function bodyDigest(c: Context, limit: number): Promise<string | undefined> {
  const body = await readBody(c, limit)
  return body.length === 0 ? undefined : contentDigest(body)
}

/**
 * The route the request matched as the app declared it (`/articles/:id`), for `onEvent`: unlike
 * the path, its values are bounded by the app's routes. `c.req.routePath` is read (deprecated
 * for `hono/route`'s helper, which the oldest Hono this package supports does not have).
 */
export function routeOf(c: Context): string | undefined {
  try {
    return c.req.routePath
  } catch {
    return undefined
  }
}

/**
 * A configured scheme's token (an API key), from `Authorization: <scheme> <token>` or the
 * scheme's own header (`X-API-Key: <token>`); two different ones are refused. A Payment
 * credential is not read here (each transport finds its own first).
 */
export function schemeTokenOf(c: Context, core: Pick<PaymentCore, 'schemes' | 'schemeHeaders'>): { scheme: CredentialScheme; token: string } | undefined {
  if (core.schemes.size === 0) return undefined
  let found: { scheme: CredentialScheme; token: string } | undefined
  const header = c.req.header('authorization')
  if (header) {
    const space = header.indexOf(' ')
    const scheme = core.schemes.get((space === -1 ? header : header.slice(0, space)).toLowerCase())
    if (scheme) found = { scheme, token: space === -1 ? '' : header.slice(space + 1).trim() }
  }
  for (const [scheme, name] of core.schemeHeaders) {
    const value = c.req.header(name)?.trim()
    if (value === undefined) continue
    if (found && !(found.scheme === scheme && found.token === value))
      throw new PaymentError('bad-request', `the request carries two different credentials (Authorization and ${name}); send one`)
    found = { scheme, token: value }
  }
  return found
}

/** Whether the request carries a header a credential may be read from. */
export function carriesCredential(c: Context, core: Pick<PaymentCore, 'schemeHeaders'>): boolean {
  if (c.req.header('authorization') !== undefined) return true
  for (const name of core.schemeHeaders.values()) if (c.req.header(name) !== undefined) return true
  return false
}
