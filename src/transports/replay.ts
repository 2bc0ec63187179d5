/**
 * Idempotent replay over HTTP (C10): a paid answer is kept with its claim, and a retry of the
 * same credential with the same `Idempotency-Key` gets it again. The answer is never held back:
 * it streams through as the handler produces it, and a copy is kept only while it stays within
 * the replay limit.
 */
import type { Context } from 'hono'
import type { ReplayHooks } from '../core/intent.js'
import { base64url, bytesFromBase64url, concatBytes } from '../protocol/encoding.js'
import { ConfigurationError } from '../protocol/errors.js'
import { PaymentError } from '../protocol/problem.js'

/** Paid answers larger than this are not kept for idempotent replay (default). */
export const defaultMaxReplayBytes = 64 * 1024

/**
 * Sent with every paid answer to a request with an `Idempotency-Key`: the most bytes of a body
 * kept for replay. A body that ends within it is kept; a longer one is streamed through and not
 * kept (the headers left before its length was known).
 */
export const replayLimitHeader = 'Idempotency-Replay-Limit'
/** `unavailable` when the answer is known, before its body, not to be kept (too long, an event stream). */
export const replayHeader = 'Idempotency-Replay'

const idempotencyKeyPattern = /^[\x21-\x7e][\x20-\x7e]{0,254}$/

/** The request's `Idempotency-Key`, if any; a malformed one is refused (400). */
export function idempotencyKeyOf(c: Context): string | undefined {
  const key = c.req.header('idempotency-key')
  if (key !== undefined && !idempotencyKeyPattern.test(key))
    throw new PaymentError('bad-request', 'Idempotency-Key must be 1 to 255 printable ASCII characters')
  return key
}

type KeptResponse = { status: number; headers: [string, string][]; body: string }

/** Validates `idempotency.maxReplayBytes` at construction. */
export function maxReplayBytesOf(value: number | undefined): number {
  const limit = value ?? defaultMaxReplayBytes
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 0 || limit > 16 * 1024 * 1024)
    throw new ConfigurationError(`mpp: \`idempotency.maxReplayBytes\` must be a whole number of bytes from 0 to 16777216 (16 MiB); got ${String(value)}.`)
  return limit
}

/**
 * The answer to deliver for a request with an Idempotency-Key. A body that ends within `limit`
 * is kept (through `keep`) before the stream closes, so a retry always finds it; a longer one,
 * a body that fails, or one the client cancelled is not kept. `keep` is best effort and never
 * breaks the answer.
 */
export async function keepForReplay(response: Response, keep: (answer: unknown) => Promise<void>, limit: number): Promise<Response> {
  const headers = new Headers(response.headers)
  headers.set(replayLimitHeader, String(limit))
  const answer = (body: BodyInit | null) => new Response(body, { status: response.status, statusText: response.statusText, headers })
  const store = (bytes: Uint8Array) =>
    keep({
      status: response.status,
      headers: [...response.headers].filter(([name]) => name !== 'set-cookie'),
      body: base64url(bytes),
    } satisfies KeptResponse).catch(() => {})

  const length = response.headers.get('content-length')
  const type = response.headers.get('content-type') ?? ''
  if (limit === 0 || (length !== null && !(Number(length) <= limit)) || /^\s*text\/event-stream\b/i.test(type)) {
    headers.set(replayHeader, 'unavailable')
    return answer(response.body)
  }
  const source = response.body?.getReader()
  if (!source) {
    // Nothing to stream: kept before the answer leaves.
    await store(new Uint8Array(0))
    return answer(null)
  }
  return answer(teeWithinLimit(source, limit, store))
}

/** Forwards every chunk at once; keeps a copy while it stays within `limit`, and hands it to `store` before closing. */
function teeWithinLimit(
  source: ReadableStreamDefaultReader<Uint8Array>,
  limit: number,
  store: (bytes: Uint8Array) => Promise<void>,
): ReadableStream<Uint8Array> {
  let copy: Uint8Array[] | undefined = []
  let copied = 0
  let cancelled = false
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let read: ReadableStreamReadResult<Uint8Array>
        try {
          read = await source.read()
        } catch (error) {
          copy = undefined
          controller.error(error)
          return
        }
        // Cancelled meanwhile (the read ended because the client went away): nothing to forward.
        if (cancelled) return
        if (read.done) {
          if (copy) {
            const bytes = concatBytes(copy, copied)
            copy = undefined
            // The answer is whole: kept even if the client leaves while it is written.
            await store(bytes)
          }
          if (!cancelled) controller.close()
          return
        }
        const chunk = read.value
        if (copy) {
          if (!(chunk instanceof Uint8Array) || copied + chunk.byteLength > limit) copy = undefined
          else {
            copy.push(chunk.slice())
            copied += chunk.byteLength
          }
        }
        controller.enqueue(chunk)
      },
      cancel(reason) {
        // The client went away: what it got is partial, so nothing is kept.
        cancelled = true
        copy = undefined
        return source.cancel(reason)
      },
    },
    // Reads ahead up to the limit even before the client reads (a short answer is kept even
    // when the client is gone by then), and no further: a long body flows at the client's pace.
    { highWaterMark: limit, size: (chunk) => (chunk instanceof Uint8Array ? chunk.byteLength : 1) },
  )
}

export const replayHooks: ReplayHooks<Response> = {
  restore(answer) {
    const kept = answer as KeptResponse
    const headers = new Headers(kept.headers)
    headers.set('Idempotent-Replayed', 'true')
    return new Response(bytesFromBase64url(kept.body) as Uint8Array<ArrayBuffer>, { status: kept.status, headers })
  },
}
