/**
 * JSON-RPC over Streamable HTTP, as the MCP transport needs it: the messages of a handler's
 * answer (a JSON body or an SSE stream), error answers, and editing one result in place.
 */
import type { Context } from 'hono'

export type JsonRpcId = string | number | null
export type Message = { jsonrpc?: unknown; id?: JsonRpcId; method?: unknown; params?: unknown; _meta?: unknown; result?: unknown; error?: unknown }

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export function rpcError(id: JsonRpcId, code: number, message: string, data: Record<string, unknown>) {
  return { jsonrpc: '2.0', id, error: { code, message, data } }
}

export function jsonResponse(value: unknown): Response {
  // JSON-RPC errors travel in a 200: Streamable HTTP clients read them from the body.
  return new Response(JSON.stringify(value), { status: 200, headers: { 'content-type': 'application/json', 'cache-control': 'no-store' } })
}

/** The JSON-RPC messages of a handler's answer: a JSON body (one message or a batch) or an SSE stream. */
export function messagesIn(text: string, contentType: string | null): Message[] {
  const parse = (json: string): Message[] => {
    try {
      const value = JSON.parse(json) as unknown
      return (Array.isArray(value) ? value : [value]).filter(isObject) as Message[]
    } catch {
      return []
    }
  }
  if (contentType?.includes('text/event-stream')) return sseEvents(text).flatMap((event) => (event.data === undefined ? [] : parse(event.data)))
  return parse(text)
}

function sseEvents(text: string): { lines: string[]; data: string | undefined }[] {
  return text
    .split(/\r?\n\r?\n/)
    .filter((block) => block.length > 0)
    .map((block) => {
      const lines = block.split(/\r?\n/)
      const data = lines.filter((line) => line.startsWith('data:')).map((line) => line.slice(line.startsWith('data: ') ? 6 : 5))
      return { lines: lines.filter((line) => !line.startsWith('data:')), data: data.length ? data.join('\n') : undefined }
    })
}

/**
 * Edits the `result` of the answer to request `id` in `c.res` (JSON or a finished SSE stream).
 * Answers without that result (errors, other messages) pass unchanged.
 */
export async function rewriteResult(c: Context, id: JsonRpcId | undefined, edit: (result: Record<string, unknown>) => void): Promise<void> {
  const response = c.res
  const contentType = response.headers.get('content-type')
  const sse = contentType?.includes('text/event-stream') ?? false
  if (!sse && !contentType?.includes('json')) return
  const text = await response.text()
  const editOne = (json: string): string => {
    try {
      const value = JSON.parse(json) as unknown
      const list = Array.isArray(value) ? value : [value]
      let changed = false
      for (const message of list)
        if (isObject(message) && message.id === id && isObject(message.result)) {
          edit(message.result)
          changed = true
        }
      return changed ? JSON.stringify(value) : json
    } catch {
      return json
    }
  }
  const body = sse
    ? `${sseEvents(text)
        .map((event) =>
          [
            ...event.lines,
            ...(event.data === undefined
              ? []
              : editOne(event.data)
                  .split('\n')
                  .map((line) => `data: ${line}`)),
          ].join('\n'),
        )
        .join('\n\n')}\n\n`
    : editOne(text)
  const headers = new Headers(response.headers)
  headers.delete('content-length')
  c.res = undefined
  c.res = new Response(body, { status: response.status, statusText: response.statusText, headers })
}
