/**
 * A throwaway real `redis-server` for tests: free loopback port, no persistence. A missing
 * binary is an error that says how to install it — the Redis tests never skip.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { connect } from 'node:net'
import { freePort } from '../../scripts/local-chain.js'

export type RedisServer = { port: number; url: string; stop(): Promise<void> }

const binary = process.env.REDIS_SERVER ?? 'redis-server'

export function assertRedisServerInstalled(): void {
  const probe = spawnSync(binary, ['--version'], { encoding: 'utf8' })
  if (probe.error || probe.status !== 0)
    throw new Error(
      `redis-server is required by the Redis store tests but \`${binary} --version\` failed (${probe.error?.message ?? `exit ${probe.status}`}). ` +
        'Install it: `apt-get update && apt-get install -y redis-server` (Debian/Ubuntu; .ci/run does this), ' +
        'or point REDIS_SERVER at the binary.',
    )
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(500, () => done(false))
    socket.on('error', () => done(false))
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk) => done(String(chunk).startsWith('+PONG')))
  })
}

export async function startRedisServer(): Promise<RedisServer> {
  assertRedisServerInstalled()
  const port = await freePort()
  const child: ChildProcess = spawn(
    binary,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let stderr = ''
  child.stderr?.on('data', (chunk) => (stderr += String(chunk)))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const deadline = Date.now() + 10_000
  while (!(await ping(port))) {
    if (child.exitCode !== null) throw new Error(`redis-server exited (${child.exitCode}): ${stderr.slice(0, 500)}`)
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`redis-server did not answer on port ${port} within 10 s: ${stderr.slice(0, 500)}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode !== null) return
      child.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3_000))])
      if (child.exitCode === null) {
        child.kill('SIGKILL')
        await exited
      }
    },
  }
}
