/**
 * The package as a user installs it: `npm pack`, then a fresh project that installs the tarball
 * beside its own Hono and viem (older and newer than the versions we develop against), typechecks
 * strictly (library declarations included) and answers one request. Hono and viem are peers, so
 * the project must end up with one copy of each: a second Hono would make `c.get('payment')`
 * `unknown`, a second viem would make `http(url)` unassignable to our `transport` option.
 */
import { execFileSync, spawn } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'

const root = resolve(import.meta.dirname, '../..')
const fixture = join(root, 'test/package/consumer')
const tsc = join(root, 'node_modules/.bin/tsc')
const work = mkdtempSync(join(tmpdir(), 'hono-mpp-consumer-'))
let tarball = ''

const run = (command: string, args: string[], cwd: string) =>
  execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 240_000 })

beforeAll(() => {
  if (!existsSync(join(root, 'dist/index.js'))) run('npm', ['run', 'build'], root)
  const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', work], root)) as { filename: string; files: { path: string }[] }[]
  tarball = join(work, packed[0]!.filename)
  expect(packed[0]!.files.map((file) => file.path).filter((path) => /\.test\.ts$|^test\//.test(path))).toEqual([])
}, 120_000)

// Two node_modules trees: removed in the background, so a loaded machine does not time the hook out.
afterAll(() => spawn('rm', ['-rf', work], { detached: true, stdio: 'ignore' }).unref())

const peers = {
  // The floors of the peer ranges in package.json, older than what we develop against.
  older: { hono: '4.7.0', viem: '2.55.0' },
  // The newest releases the ranges admit (viem is newer than ours; Hono's newest is ours).
  newer: { hono: '^4.13.19', viem: '^2.57.20' },
}

describe.each(Object.entries(peers))('a consumer project with %s peers', (name, versions) => {
  const dir = join(work, name)

  test(`installs one copy of hono and viem beside the tarball (hono ${versions.hono}, viem ${versions.viem})`, () => {
    run('mkdir', ['-p', dir], work)
    const manifest = { name: `consumer-${name}`, private: true, type: 'module', dependencies: { ...versions, 'hono-mpp': `file:${tarball}` } }
    writeFileSync(join(dir, 'package.json'), JSON.stringify(manifest))
    for (const file of ['app.ts', 'run.ts', 'tsconfig.json']) copyFileSync(join(fixture, file), join(dir, file))
    run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], dir)
    for (const peer of ['hono', 'viem']) {
      expect(existsSync(join(dir, 'node_modules/hono-mpp/node_modules', peer)), `a nested ${peer}`).toBe(false)
      const installed = JSON.parse(readFileSync(join(dir, 'node_modules', peer, 'package.json'), 'utf8')) as { version: string }
      expect(installed.version).toMatch(/^\d+\.\d+\.\d+$/)
    }
  }, 300_000)

  test('typechecks strictly (no skipLibCheck) and answers an unpaid request with a 402 challenge', () => {
    run(tsc, ['-p', '.'], dir)
    const output = run('node', ['out/run.js'], dir)
    expect(JSON.parse(output)).toEqual({ status: 402, scheme: 'Payment' })
  }, 120_000)
})
