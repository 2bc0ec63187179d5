/**
 * Bounded request bodies. A body is read (and hashed, for its digest) before a request is known
 * to be paid, so an unpaid request must not make the server buffer an arbitrary amount: past
 * `maxBodyBytes` the request is refused with 413, from its Content-Length when it declares one,
 * else as soon as the bytes read pass the bound (at most the bound plus one chunk is held).
 */
import type { Context } from 'hono'
import { concatBytes } from '../protocol/encoding.js'
import { PaymentError } from '../protocol/problem.js'

function tooLarge(limit: number, what: string): PaymentError {
  return new PaymentError('content-too-large', `${what}; this server reads at most ${limit} bytes of a request body`)
}

/** Refuses a declared Content-Length over the bound, before anything is read. */
function checkDeclared(c: Context, limit: number): void {
  const declared = c.req.header('content-length')
  if (declared !== undefined && /^\s*\d+\s*$/.test(declared) && Number(declared) > limit)
    throw tooLarge(limit, `the request body is ${declared.trim()} bytes (Content-Length)`)
}

/** Reads a stream to its end, refusing it as soon as more than `limit` bytes have arrived. */
async function readBounded(stream: ReadableStream<Uint8Array>, limit: number): Promise<Uint8Array<ArrayBuffer>> {
  const reader = stream.getReader()
  const chunks: Uint8Array[] = []
  let total = 0
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      total += value.byteLength
      // The rest is left unread: the runtime drains or closes the connection after the answer.
      if (total > limit) throw tooLarge(limit, `the request body is larger than ${limit} bytes`)
      chunks.push(value)
    }
  } finally {
    reader.releaseLock()
  }
  return concatBytes(chunks, total)
}

/**
 * The request body, at most `limit` bytes, else `PaymentError('content-too-large')`. Hono's body
 * cache keeps it, so the handler's `c.req.json()`, `c.req.text()`… still read it. With
 * `keepRaw`, `c.req.raw` is also replaced by the same request carrying the bytes read, for a
 * handler that reads the raw request (as MCP transports do).
 */
export async function readBody(c: Context, limit: number, keepRaw = false): Promise<Uint8Array<ArrayBuffer>> {
  checkDeclared(c, limit)
  if (c.req.raw.bodyUsed || Object.keys(c.req.bodyCache).length > 0) {
    // Read before this middleware ran: already in memory, only its size is checked.
    const body = new Uint8Array(await c.req.arrayBuffer())
    if (body.length > limit) throw tooLarge(limit, `the request body is ${body.length} bytes`)
    return body
  }
  const stream = c.req.raw.body
  if (!stream) return new Uint8Array(0)
  const body = await readBounded(stream, limit)
  ;(c.req.bodyCache as Record<string, Promise<unknown>>).arrayBuffer = Promise.resolve(body.buffer)
  if (keepRaw) c.req.raw = new Request(c.req.raw, { body })
  return body
}

/**
 * Replaces the body the handler reads (`c.req.json()`, `c.req.raw`) with `bytes`, for a request
 * whose body was read by `readBody`.
 */
export function replaceBody(c: Context, bytes: Uint8Array<ArrayBuffer>): void {
  const headers = new Headers(c.req.raw.headers)
  headers.set('content-length', String(bytes.byteLength))
  c.req.raw = new Request(c.req.raw, { body: bytes, headers })
  const cache = c.req.bodyCache as Record<string, Promise<unknown>>
  for (const key of Object.keys(cache)) delete cache[key]
  cache.arrayBuffer = Promise.resolve(bytes.buffer)
}
