/**
 * The example server (`npm run serve`) as a real child process, started with only the
 * environment a test gives it (the caller's PORT, HOST, TEMPO_*, MPP_* and DATABASE_URL are
 * left out), its stdout and stderr collected.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../..', import.meta.url))
const tsx = fileURLToPath(new URL('../../node_modules/tsx/dist/cli.mjs', import.meta.url))

export type ServerProcess = { child: ChildProcess; output: () => string; exited: Promise<number | null> }

export function spawnServer(env: Record<string, string>): ServerProcess {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^(PORT|HOST|TEMPO_|MPP_|DATABASE_URL)/.test(key))) as Record<string, string>
  const child = spawn(process.execPath, [tsx, 'examples/node/server.ts'], { cwd: root, env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (chunk) => (output += String(chunk)))
  child.stderr?.on('data', (chunk) => (output += String(chunk)))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return { child, output: () => output, exited }
}
