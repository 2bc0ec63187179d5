/**
 * 1. The 402 path: requests per second and latency of a bare Hono JSON route, of our 402 and of
 * mppx/hono's 402 for the same charge, each server in its own process, driven side by side by
 * autocannon from this process. Rounds alternate the order (A B C, C B A); comparisons are the
 * median over rounds of each round's ratio (see pairedRatio).
 */
import autocannon from 'autocannon'
import { route, type ServerConfig } from './config.js'
import { type RunningServer, startServer } from './processes.js'

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

export async function check(name: string, url: string, expected: number, headers: Record<string, string> = {}): Promise<void> {
  const response = await fetch(url + route, { headers })
  if (response.status !== expected) throw new Error(`bench: ${name} answered ${response.status}, expected ${expected}`)
  if (expected === 402 && !/^Payment /.test(response.headers.get('www-authenticate') ?? ''))
    throw new Error(`bench: ${name} answered 402 without a Payment challenge`)
  await response.arrayBuffer()
}

async function drive(url: string, connections: number, seconds: number, headers: Record<string, string>): Promise<autocannon.Result> {
  return autocannon({ url: url + route, connections, duration: seconds, headers })
}

/** One measured window of `server` (after a warm-up), every answer checked against `expected`; `headers` go with every request. */
export async function measure(
  name: string,
  server: RunningServer,
  expected: number,
  options: ThroughputOptions,
  headers: Record<string, string> = {},
): Promise<Throughput> {
  await drive(server.url, options.connections, options.warmSeconds, headers)
  const before = await server.cpu()
  const clientBefore = process.cpuUsage()
  const result = await drive(server.url, options.connections, options.seconds, headers)
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

/** Per kind: medians over the rounds, and every round (a round measures each kind once, one after the other). */
export type ThroughputResults = { summary: Record<ThroughputKind, Throughput>; rounds: Record<ThroughputKind, Throughput[]> }

export const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/**
 * How `a` compares with `b`, round by round: the median of the ratios of measurements made moments
 * apart. A shared machine's speed drifts over minutes; a ratio of two medians (or of two best
 * rounds) would mix its fast and slow moments, a paired ratio compares like with like.
 */
export function pairedRatio(results: ThroughputResults, a: ThroughputKind, b: ThroughputKind, by: 'rps' | 'cpu'): number {
  return median(
    results.rounds[a].map((ra, i) => {
      const rb = results.rounds[b][i]!
      return by === 'rps' ? ra.rps / rb.rps : rb.cpuPerRequest / ra.cpuPerRequest
    }),
  )
}

/** The servers of the 402 benchmark: ours in both forms of `charge`. */
export const throughputKinds = ['bare', 'static402', 'ours', 'oursMiddleware', 'mppx'] as const
export type ThroughputKind = (typeof throughputKinds)[number]

export async function throughput(base: Omit<ServerConfig, 'kind'>, options: ThroughputOptions, log: (line: string) => void): Promise<ThroughputResults> {
  const kinds = throughputKinds
  const expected = { bare: 200, static402: 402, ours: 402, oursMiddleware: 402, mppx: 402 }
  const config = (kind: ThroughputKind): ServerConfig => (kind === 'oursMiddleware' ? { ...base, kind: 'ours', form: 'middleware' } : { ...base, kind })
  const servers: Partial<Record<ThroughputKind, RunningServer>> = {}
  try {
    for (const kind of kinds) {
      servers[kind] = await startServer(config(kind))
      await check(kind, servers[kind]!.url, expected[kind])
    }
    const rounds = Object.fromEntries(kinds.map((kind) => [kind, [] as Throughput[]])) as Record<ThroughputKind, Throughput[]>
    for (let round = 0; round < options.rounds; round++) {
      const order = round % 2 === 0 ? kinds : [...kinds].reverse()
      for (const kind of order) {
        const result = await measure(kind, servers[kind]!, expected[kind], options)
        log(
          `  round ${round + 1} ${kind.padEnd(14)} ${result.rps.toFixed(0).padStart(6)} req/s  p50 ${result.p50} ms  p99 ${result.p99} ms  ${result.cpuPerRequest.toFixed(0)} µs server CPU/req, ${result.clientCpuPerRequest.toFixed(0)} µs client CPU/req`,
        )
        rounds[kind].push(result)
      }
    }
    const summary = Object.fromEntries(
      kinds.map((kind) => {
        const all = rounds[kind]
        const mid = <K extends 'rps' | 'p50' | 'p99' | 'cpuPerRequest' | 'clientCpuPerRequest'>(key: K) => median(all.map((r) => r[key]))
        return [
          kind,
          {
            ...all[0]!,
            rps: mid('rps'),
            p50: mid('p50'),
            p99: mid('p99'),
            cpuPerRequest: mid('cpuPerRequest'),
            clientCpuPerRequest: mid('clientCpuPerRequest'),
          },
        ]
      }),
    ) as Record<ThroughputKind, Throughput>
    return { summary, rounds }
  } finally {
    await Promise.all(Object.values(servers).map((s) => s?.stop()))
  }
}
