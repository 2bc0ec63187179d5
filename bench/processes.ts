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
  stop(): Promise<void>
}

export async function startServer(config: ServerConfig, options: { execArgv?: string[] } = {}): Promise<RunningServer> {
  const child: ChildProcess = fork(await compiled('server'), [], {
    execArgv: options.execArgv ?? [],
    env: { ...process.env, BENCH_SERVER: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bench: ${config.kind} server did not start within 30 s`)), 30_000)
    child.once('exit', (code) => reject(new Error(`bench: ${config.kind} server exited (${code}) before listening`)))
    child.on('message', (message: { type?: string; port?: number }) => {
      if (message.type === 'ready') {
        clearTimeout(timer)
        resolve(message.port!)
      }
    })
  })
  return {
    url: `http://127.0.0.1:${port}`,
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

function ask<T>(child: ChildProcess, type: string, field: string): Promise<T> {
  return new Promise((resolve) => {
    const listener = (message: Record<string, unknown>) => {
      if (message.type !== type) return
      child.off('message', listener)
      resolve(message[field] as T)
    }
    child.on('message', listener)
    child.send({ type })
  })
}
