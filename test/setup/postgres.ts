/**
 * One throwaway real PostgreSQL server for the whole test run (Debian's `postgresql` package:
 * initdb + pg_ctl in a temp dir, loopback only, on a free port, no durability), stopped at the end.
 * Test files create their own database in it (test/accounts/support.ts). Postgres refuses to run
 * as root, so as root the server runs as the `postgres` user. MPP_TEST_POSTGRES_URL points the
 * tests at an existing server instead (its user must be allowed to CREATE DATABASE).
 * A missing binary is an error that says how to install it: the Postgres tests never skip.
 */
import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { chown, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { TestProject } from 'vitest/node'
import { freePort } from '../../scripts/local-chain.js'

declare module 'vitest' {
  export interface ProvidedContext {
    /** An admin URL of a real PostgreSQL server for this run. */
    postgresUrl: string
  }
}

const run = promisify(execFile)

export type PostgresServer = { url: string; stop(): Promise<void> }

function binDir(): string {
  if (process.env.POSTGRES_BIN) return process.env.POSTGRES_BIN
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((version) => existsSync(join(root, version, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : []
  if (!versions[0])
    throw new Error(
      'PostgreSQL is required by the accounts ledger tests but no /usr/lib/postgresql/*/bin/initdb was found. ' +
        'Install it: `apt-get update && apt-get install -y postgresql` (Debian/Ubuntu; .ci/run does this), ' +
        'point POSTGRES_BIN at its bin directory, or set MPP_TEST_POSTGRES_URL to an existing server.',
    )
  return join(root, versions[0], 'bin')
}

export async function startPostgresServer(): Promise<PostgresServer> {
  const bin = binDir()
  const asRoot = process.getuid?.() === 0
  // As root, run the binaries as `postgres` (initdb and the server refuse root).
  const command = (binary: string, args: string[]) =>
    asRoot ? run('runuser', ['-u', 'postgres', '--', join(bin, binary), ...args]) : run(join(bin, binary), args)
  const dir = await mkdtemp(join(tmpdir(), 'mpp-postgres-'))
  if (asRoot) {
    const [uid, gid] = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .map((line) => line.split(':'))
      .filter((fields) => fields[0] === 'postgres')
      .map((fields) => [Number(fields[2]), Number(fields[3])])[0] ?? [Number.NaN, Number.NaN]
    if (!Number.isInteger(uid) || !Number.isInteger(gid))
      throw new Error('Running as root, the Postgres tests need the `postgres` user (installed with postgresql).')
    await chown(dir, uid!, gid!)
  }
  const data = join(dir, 'data')
  const port = await freePort()
  try {
    await command('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'])
    const settings = [
      `-p ${port}`,
      `-k ${dir}`,
      "-c listen_addresses='127.0.0.1'",
      '-c max_connections=300',
      '-c fsync=off',
      '-c synchronous_commit=off',
      '-c full_page_writes=off',
    ].join(' ')
    await command('pg_ctl', ['-D', data, '-l', join(dir, 'server.log'), '-o', settings, '-w', '-t', '30', 'start'])
  } catch (error) {
    const log = existsSync(join(dir, 'server.log')) ? readFileSync(join(dir, 'server.log'), 'utf8').slice(-1000) : ''
    await rm(dir, { recursive: true, force: true })
    throw new Error(`PostgreSQL did not start: ${(error as Error).message}\n${log}`)
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      await command('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined)
      await rm(dir, { recursive: true, force: true })
    },
  }
}

export default async function setup(project: TestProject) {
  const existing = process.env.MPP_TEST_POSTGRES_URL
  if (existing) {
    project.provide('postgresUrl', existing)
    return
  }
  const server = await startPostgresServer()
  project.provide('postgresUrl', server.url)
  return () => server.stop()
}
