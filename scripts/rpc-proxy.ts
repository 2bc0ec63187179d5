/**
 * A JSON-RPC proxy between a server under test and the local chain: counts calls by method
 * and injects faults (drop the response after forwarding, answer 5xx, hang). Used by the
 * settlement tests, the adversarial suite and the benchmarks.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

export type Fault = {
  /** JSON-RPC method this fault applies to. */
  method: string
  /** `drop`: forward, then cut the connection without answering (outcome unknown to the caller). `5xx`: answer 503 without forwarding. `hang`: never answer. */
  action: 'drop' | '5xx' | 'hang'
  /** How many times (default 1). */
  times?: number
}

export type RpcProxy = {
  url: string
  /** Calls seen per method since the last reset. */
  counts: Map<string, number>
  total(): number
  reset(): void
  inject(fault: Fault): void
  close(): Promise<void>
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = ''
    request.setEncoding('utf8')
    request.on('data', (chunk) => (body += chunk))
    request.on('end', () => resolve(body))
    request.on('error', reject)
  })
}

export async function startRpcProxy(upstream: string): Promise<RpcProxy> {
  const counts = new Map<string, number>()
  const faults: Required<Fault>[] = []
  const hanging = new Set<() => void>()
  const server: Server = createServer(async (request, response) => {
    const body = await readBody(request)
    let methods: string[] = []
    try {
      const parsed = JSON.parse(body) as { method?: string } | { method?: string }[]
      methods = (Array.isArray(parsed) ? parsed : [parsed]).map((call) => String(call.method))
    } catch {}
    for (const method of methods) counts.set(method, (counts.get(method) ?? 0) + 1)
    const fault = faults.find((f) => f.times > 0 && methods.includes(f.method))
    if (fault) fault.times--
    if (fault?.action === '5xx') {
      response.writeHead(503, { 'content-type': 'text/plain' }).end('upstream unavailable (injected)')
      return
    }
    if (fault?.action === 'hang') {
      hanging.add(() => response.destroy())
      return
    }
    try {
      const upstreamResponse = await fetch(upstream, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
      const text = await upstreamResponse.text()
      if (fault?.action === 'drop') {
        response.socket?.destroy()
        return
      }
      response.writeHead(upstreamResponse.status, { 'content-type': 'application/json' }).end(text)
    } catch {
      response.writeHead(502).end()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    counts,
    total: () => [...counts.values()].reduce((a, b) => a + b, 0),
    reset: () => counts.clear(),
    inject: (fault) => faults.push({ times: 1, ...fault }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const release of hanging) release()
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
