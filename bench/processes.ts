/** Forks a server under test (bench/server.ts) and talks to it over IPC. */
import { type ChildProcess, fork } from 'node:child_process'
import { compiled } from './build.js'
import type { ServerConfig } from './config.js'
import type { Timings } from './server.js'

export type RunningServer = {
  url: string
  /** Process CPU time (user + system) so far, microseconds. */
  cpu(): Promise<number>
  /** Where paid requests' time went since the last call (ours only), then resets it. */
  timings(): Promise<Timings>
  /** `account` servers: the API key of the account topped up at start. */
  apiKey?: string
  /** `account` servers: hold + capture pairs straight on the ledger, `concurrency` at a time for `seconds`. */
  ledger(seconds: number, concurrency: number): Promise<LedgerLoop>
  /** `account` servers: the account's balance and held amount, and the books' audit sum (base units). */
  balance(): Promise<{ available: string; held: string; sum: string }>
  stop(): Promise<void>
}

/** Pairs done, the measured seconds, and the server's CPU time over them (µs). */
export type LedgerLoop = { pairs: number; seconds: number; cpu: number }

export async function startServer(config: ServerConfig, options: { execArgv?: string[] } = {}): Promise<RunningServer> {
  const child: ChildProcess = fork(await compiled('server'), [], {
    execArgv: options.execArgv ?? [],
    env: { ...process.env, BENCH_SERVER: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const ready = await new Promise<{ port: number; apiKey?: string }>((resolve, reject) => {
    // An `account` server migrates and tops up its ledger first (PGlite starts a WASM Postgres).
    const limit = config.kind === 'account' ? 120 : 30
    const timer = setTimeout(() => reject(new Error(`bench: ${config.kind} server did not start within ${limit} s`)), limit * 1000)
    child.once('exit', (code) => reject(new Error(`bench: ${config.kind} server exited (${code}) before listening`)))
    child.on('message', (message: { type?: string; port?: number; apiKey?: string }) => {
      if (message.type === 'ready') {
        clearTimeout(timer)
        resolve({ port: message.port!, ...(message.apiKey && { apiKey: message.apiKey }) })
      }
    })
  })
  return {
    url: `http://127.0.0.1:${ready.port}`,
    ...(ready.apiKey && { apiKey: ready.apiKey }),
    async ledger(seconds, concurrency) {
      const loop = await ask<LedgerLoop & { error?: string }>(child, 'ledger', 'loop', { seconds, concurrency })
      if (loop.error) throw new Error(`bench: ledger loop failed: ${loop.error}`)
      return loop
    },
    balance: () => ask(child, 'balance', 'balance'),
    cpu: async () => {
      const usage = await ask<NodeJS.CpuUsage>(child, 'cpu', 'usage')
      return usage.user + usage.system
    },
    timings: () => ask<Timings>(child, 'timings', 'timings'),
    async stop() {
      if (child.exitCode !== null) return
      child.send({ type: 'stop' })
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))])
      if (child.exitCode === null) child.kill('SIGKILL')
    },
  }
}

function ask<T>(child: ChildProcess, type: string, field: string, extra: Record<string, unknown> = {}): Promise<T> {
  return new Promise((resolve) => {
    const listener = (message: Record<string, unknown>) => {
      if (message.type !== type) return
      child.off('message', listener)
      resolve(message[field] as T)
    }
    child.on('message', listener)
    child.send({ type, ...extra })
  })
}
