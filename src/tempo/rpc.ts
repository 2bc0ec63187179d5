/**
 * The JSON-RPC connection to a Tempo node: one request function with a hard timeout, and the
 * one distinction everything above depends on — did the node ANSWER with an error (it saw the
 * request and refused it), or did the request not come back (unreachable, timeout, 5xx: the
 * outcome is unknown)? A broadcast that was refused was definitely not charged; a broadcast that
 * did not come back may have been.
 */
import type { Chain, Transport } from 'viem'
import { BaseError } from '../protocol/errors.js'

export type RpcConfig = {
  rpcUrl?: string
  transport?: Transport
  chainId: number
  /** Milliseconds before a request counts as not answered. */
  timeout: number
  /** Told of every JSON-RPC call (for metrics); a listener that throws changes nothing. */
  onCall?: (call: RpcCall) => void
}

/** One JSON-RPC call as `onCall` sees it: the method, how it ended, and how long it took. */
export type RpcCall = {
  method: string
  /** `answered`: a result; `refused`: a JSON-RPC error (the node saw it); `unanswered`: the outcome is unknown. */
  outcome: 'answered' | 'refused' | 'unanswered'
  durationMs: number
}

export type Rpc = {
  request<T = unknown>(method: string, params: unknown[]): Promise<T>
}

/** The node answered with a JSON-RPC error: it saw the request and refused it. */
export class RpcAnswerError extends BaseError {
  override name = 'RpcAnswerError'
  constructor(
    readonly code: number,
    /** The node's own message, with long hex (transactions, signatures) cut out. */
    readonly reason: string,
    options: { cause?: unknown } = {},
  ) {
    super(`node answered ${code}: ${reason}`, options)
  }
}

/** No answer: unreachable, timed out, HTTP 5xx, rate limited. The outcome is unknown. */
export class RpcTransportError extends BaseError {
  override name = 'RpcTransportError'
}

function chainFor(chainId: number, rpcUrl?: string): Chain {
  return {
    id: chainId,
    name: 'Tempo',
    nativeCurrency: { name: 'USD', symbol: 'USD', decimals: 18 },
    rpcUrls: { default: { http: rpcUrl ? [rpcUrl] : [] } },
  }
}

/**
 * A URL gets a plain JSON-RPC client over `fetch` (one POST per call, no retries: a broadcast
 * must not be repeated behind our back); a viem transport (fallbacks, custom fetch options)
 * is used as given.
 */
export function createRpc(config: RpcConfig): Rpc {
  const rpc = config.transport === undefined ? fetchRpc(config.rpcUrl!, config.timeout) : transportRpc(config, config.transport)
  return config.onCall ? observed(rpc, config.onCall) : rpc
}

/** The RPC a method's configuration names: its `rpcUrl` or `transport`, and its `onRpcCall` listener. */
export function rpcOf(config: Pick<RpcConfig, 'rpcUrl' | 'transport'> & { onRpcCall?: (call: RpcCall) => void }, chainId: number, timeout: number): Rpc {
  return createRpc({
    ...(config.rpcUrl !== undefined && { rpcUrl: config.rpcUrl }),
    ...(config.transport !== undefined && { transport: config.transport }),
    chainId,
    timeout,
    ...(config.onRpcCall !== undefined && { onCall: config.onRpcCall }),
  })
}

/** Reports each call to `onCall`, never letting the listener change the call. */
function observed(rpc: Rpc, onCall: (call: RpcCall) => void): Rpc {
  const report = (method: string, outcome: RpcCall['outcome'], started: number) => {
    try {
      onCall({ method, outcome, durationMs: Date.now() - started })
    } catch {
      // Observability never decides a payment.
    }
  }
  return {
    async request<T>(method: string, params: unknown[]): Promise<T> {
      const started = Date.now()
      try {
        const result = await rpc.request<T>(method, params)
        report(method, 'answered', started)
        return result
      } catch (error) {
        report(method, error instanceof RpcAnswerError ? 'refused' : 'unanswered', started)
        throw error
      }
    },
  }
}

/** A viem transport (fallbacks, custom fetch options), used as given, with a hard timeout. */
function transportRpc(config: RpcConfig, transport: Transport): Rpc {
  const { request } = transport({ chain: chainFor(config.chainId, config.rpcUrl), retryCount: 0, timeout: config.timeout })
  return {
    async request<T>(method: string, params: unknown[]): Promise<T> {
      let timer: ReturnType<typeof setTimeout> | undefined
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new RpcTransportError(`${method} did not answer within ${config.timeout} ms`)), config.timeout)
      })
      try {
        return (await Promise.race([request({ method, params } as never, { retryCount: 0 }), timedOut])) as T
      } catch (error) {
        throw classify(method, error)
      } finally {
        clearTimeout(timer)
      }
    },
  }
}

type JsonRpcAnswer = { result?: unknown; error?: { code?: unknown; message?: unknown } }

/**
 * JSON-RPC over `fetch`, sorting every failure as `classify` does: an `error` member is the
 * node's answer (except the codes that mean "not processed"); no answer, a timeout, HTTP 5xx or
 * 429, or a body that is not JSON-RPC leave the outcome unknown.
 */
function fetchRpc(url: string, timeout: number): Rpc {
  let id = 0
  return {
    async request<T>(method: string, params: unknown[]): Promise<T> {
      let response: Response
      try {
        response = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }),
          signal: AbortSignal.timeout(timeout),
        })
      } catch (error) {
        const timedOut = (error as { name?: string })?.name === 'TimeoutError'
        throw new RpcTransportError(
          timedOut ? `${method} did not answer within ${timeout} ms` : `${method} did not get an answer: ${describe(error as ErrorLike)}`,
          { cause: error },
        )
      }
      const status = response.status
      let answer: JsonRpcAnswer | undefined
      try {
        answer = status >= 500 || status === 429 ? undefined : ((await response.json()) as JsonRpcAnswer)
      } catch (error) {
        throw new RpcTransportError(`${method} did not get a JSON-RPC answer (HTTP ${status})`, { cause: error })
      } finally {
        // Unread (5xx, 429): let the connection go without waiting for the rest of the body.
        if (!response.bodyUsed) void response.body?.cancel().catch(() => {})
      }
      if (answer === undefined || typeof answer !== 'object' || answer === null) throw new RpcTransportError(`${method} did not get an answer (HTTP ${status})`)
      const error = answer.error
      if (error !== undefined && error !== null) {
        const code = typeof error.code === 'number' ? error.code : undefined
        if (code === undefined || notProcessed.has(code))
          throw new RpcTransportError(`${method} was not processed: ${sanitize(String(error.message ?? 'error'))}`)
        throw new RpcAnswerError(code, sanitize(String(error.message ?? 'error')) || 'error')
      }
      if (!('result' in answer) || status >= 300) throw new RpcTransportError(`${method} did not get a JSON-RPC answer (HTTP ${status})`)
      return answer.result as T
    },
  }
}

/** Cuts long hex (raw transactions, signatures) out of a node message and bounds its length. */
export function sanitize(message: string): string {
  return message
    .replace(/0x[0-9a-fA-F]{80,}/g, '0x…')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 240)
}

type ErrorLike = {
  name?: string
  code?: unknown
  status?: unknown
  details?: unknown
  shortMessage?: unknown
  message?: unknown
  cause?: unknown
}

/** JSON-RPC codes that mean "not processed, try later" rather than a refusal. */
const notProcessed = new Set([-1, 429, -32005, -32603])

export function classify(method: string, error: unknown): RpcAnswerError | RpcTransportError {
  if (error instanceof RpcAnswerError || error instanceof RpcTransportError) return error
  // Walk the cause chain: viem wraps the transport's error (HttpRequestError, TimeoutError,
  // RpcRequestError) in a typed RpcError whose `code` is the node's.
  const chain: ErrorLike[] = []
  let current: unknown = error
  for (let depth = 0; current && typeof current === 'object' && depth < 8; depth++) {
    chain.push(current as ErrorLike)
    current = (current as ErrorLike).cause
  }
  const httpFailure = chain.find(
    (e) =>
      e.name === 'HttpRequestError' ||
      e.name === 'TimeoutError' ||
      e.name === 'WebSocketRequestError' ||
      e.name === 'SocketClosedError' ||
      (typeof e.status === 'number' && (e.status >= 500 || e.status === 429)),
  )
  if (httpFailure) return new RpcTransportError(`${method} did not get an answer: ${describe(httpFailure)}`, { cause: error })
  const answered = chain.find((e) => typeof e.code === 'number' && !notProcessed.has(e.code))
  if (answered) {
    const reason = sanitize(String(answered.details ?? answered.shortMessage ?? answered.message ?? 'error'))
    return new RpcAnswerError(answered.code as number, reason || 'error', { cause: error })
  }
  return new RpcTransportError(`${method} did not get an answer: ${describe(chain[0] ?? {})}`, { cause: error })
}

function describe(error: ErrorLike): string {
  const text = String(error.shortMessage ?? error.message ?? error.name ?? 'unknown error')
  const status = typeof error.status === 'number' ? ` (HTTP ${error.status})` : ''
  return sanitize(text.split('\n')[0] ?? text) + status
}
