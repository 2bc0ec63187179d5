/**
 * What both Hono-based transports read of a request: the realm it is served under, its target,
 * and its body (for the digest a challenge binds).
 */
import type { Context } from 'hono'
import { contentDigest } from '../protocol/digest.js'

/** The configured realm, or the request's host. */
export function realmOf(c: Context, realm: string | undefined): string {
  if (realm !== undefined) return realm
  const host = c.req.header('host')
  if (host && !/[\r\n"\\]/.test(host)) return host
  const url = c.req.url
  const start = url.indexOf('//') + 2
  const end = url.indexOf('/', start)
  return url.slice(start, end === -1 ? undefined : end)
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

/** RFC 9530 digest of the body, or undefined when it is empty. */
export async function bodyDigest(c: Context): Promise<string | undefined> {
  const body = new Uint8Array(await c.req.arrayBuffer())
  return body.length === 0 ? undefined : contentDigest(body)
}
