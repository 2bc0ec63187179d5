/**
 * Idempotent replay over HTTP (C10): a paid answer is kept with its claim, and a retry of the
 * same credential with the same `Idempotency-Key` gets it again.
 */
import type { ReplayHooks } from '../core/intent.js'
import { base64url, bytesFromBase64url } from '../protocol/encoding.js'

/** Paid answers larger than this are not kept for idempotent replay. */
export const maxReplayBytes = 64 * 1024

type KeptResponse = { status: number; headers: [string, string][]; body: string }

/** Returns the response to deliver; calls `keep(answer)` with it whole, before the client has its end, when it is small enough. */
export function keepForReplay(response: Response, keep: (answer: unknown) => Promise<void>): Response {
    const length = Number(response.headers.get('content-length') ?? '0')
    if (length > maxReplayBytes) return response
    // Read whole, then delivered from the copy.
    const chunks = response.arrayBuffer().then((buffer) => new Uint8Array(buffer))
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        const bytes = await chunks
        // Kept before the client has the whole answer, so that a retry always finds it.
        if (bytes.length <= maxReplayBytes)
          await keep({ status: response.status, headers: [...response.headers].filter(([name]) => name !== 'set-cookie'), body: base64url(bytes) } satisfies KeptResponse)
        controller.enqueue(bytes)
        controller.close()
      },
    })
    return new Response(body, response)
}

export const replayHooks: ReplayHooks<Response> = {
  restore(answer) {
    const kept = answer as KeptResponse
    const headers = new Headers(kept.headers)
    headers.set('Idempotent-Replayed', 'true')
    return new Response(bytesFromBase64url(kept.body) as Uint8Array<ArrayBuffer>, { status: kept.status, headers })
  },
}
