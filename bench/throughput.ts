/**
 * 1. The 402 path: requests per second and latency of a bare Hono JSON route, of our 402 and of
 * mppx/hono's 402 for the same charge, each server in its own process, driven side by side by
 * autocannon from this process. Rounds alternate the order (A B C, C B A) and each server's best
 * round counts (highest req/s, lowest CPU per request): a shared machine only ever makes a run slower.
 */
import autocannon from 'autocannon'
import { startServer, type RunningServer } from './processes.js'
import { route, type ServerConfig } from './config.js'

export type Throughput = {
  name: string
  /** Mean requests per second over the measured window. */
  rps: number
  p50: number
  p99: number
  /** Server CPU time per request, microseconds. */
  cpuPerRequest: number
  /** Load generator (autocannon, this process) CPU time per request, microseconds. */
  clientCpuPerRequest: number
  status: number
}

export type ThroughputOptions = { connections: number; warmSeconds: number; seconds: number; rounds: number }

async function check(name: string, url: string, expected: number): Promise<void> {
  const response = await fetch(url + route)
  if (response.status !== expected) throw new Error(`bench: ${name} answered ${response.status}, expected ${expected}`)
  if (expected === 402 && !/^Payment /.test(response.headers.get('www-authenticate') ?? ''))
    throw new Error(`bench: ${name} answered 402 without a Payment challenge`)
  await response.arrayBuffer()
}

async function drive(url: string, connections: number, seconds: number): Promise<autocannon.Result> {
  return autocannon({ url: url + route, connections, duration: seconds })
}

async function measure(name: string, server: RunningServer, expected: number, options: ThroughputOptions): Promise<Throughput> {
  await drive(server.url, options.connections, options.warmSeconds)
  const before = await server.cpu()
  const clientBefore = process.cpuUsage()
  const result = await drive(server.url, options.connections, options.seconds)
  const client = process.cpuUsage(clientBefore)
  const cpu = (await server.cpu()) - before
  const answered = result.statusCodeStats?.[String(expected) as '200'] ?? { count: 0 }
  if (result.errors > 0 || answered.count !== result.requests.total)
    throw new Error(`bench: ${name}: ${result.errors} errors, ${answered.count}/${result.requests.total} answered ${expected}`)
  return {
    name,
    rps: result.requests.total / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    cpuPerRequest: cpu / result.requests.total,
    clientCpuPerRequest: (client.user + client.system) / result.requests.total,
    status: expected,
  }
}

export async function throughput(
  base: Omit<ServerConfig, 'kind'>,
  options: ThroughputOptions,
  log: (line: string) => void,
): Promise<Record<'bare' | 'static402' | 'ours' | 'mppx', Throughput>> {
  const kinds = ['bare', 'static402', 'ours', 'mppx'] as const
  const expected = { bare: 200, static402: 402, ours: 402, mppx: 402 }
  const servers: Partial<Record<(typeof kinds)[number], RunningServer>> = {}
  try {
    for (const kind of kinds) {
      servers[kind] = await startServer({ ...base, kind })
      await check(kind, servers[kind]!.url, expected[kind])
    }
    const best: Partial<Record<(typeof kinds)[number], Throughput>> = {}
    for (let round = 0; round < options.rounds; round++) {
      const order = round % 2 === 0 ? kinds : [...kinds].reverse()
      for (const kind of order) {
        const result = await measure(kind, servers[kind]!, expected[kind], options)
        log(`  round ${round + 1} ${kind.padEnd(9)} ${result.rps.toFixed(0).padStart(6)} req/s  p50 ${result.p50} ms  p99 ${result.p99} ms  ${result.cpuPerRequest.toFixed(0)} µs server CPU/req, ${result.clientCpuPerRequest.toFixed(0)} µs client CPU/req`)
        // Noise on a shared machine only ever slows a run: keep each figure's best round.
        const previous = best[kind]
        best[kind] = !previous
          ? result
          : {
              ...(result.rps > previous.rps ? result : previous),
              cpuPerRequest: Math.min(result.cpuPerRequest, previous.cpuPerRequest),
              clientCpuPerRequest: Math.min(result.clientCpuPerRequest, previous.clientCpuPerRequest),
            }
      }
    }
    return best as Record<(typeof kinds)[number], Throughput>
  } finally {
    await Promise.all(Object.values(servers).map((s) => s?.stop()))
  }
}
