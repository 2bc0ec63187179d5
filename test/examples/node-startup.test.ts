/**
 * `npm run serve` start-up failures past the variables' syntax: what cannot be reached, cannot be
 * listened on or cannot be prepared stops the real server process with exit code 1 and a message
 * naming the variable to fix, and never the secrets in it (passwords or API keys in URLs, keys).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { describe, expect, inject, test } from 'vitest'
import { freePort } from '../../scripts/local-chain.js'
import { spawnServer } from './server-process.js'

const secret = 'node-example-startup-secret-0123456789abcdef'
const recipient = privateKeyToAccount(generatePrivateKey()).address
const base = { TEMPO_RPC_URL: 'http://127.0.0.1:1', TEMPO_CHAIN_ID: '31337', MPP_RECIPIENT: recipient, MPP_SECRET: secret }

/** Runs the server to its exit (a server that stays up is killed when the test times out). */
async function exitOf(env: Record<string, string>) {
  const server = spawnServer(env)
  const killer = setTimeout(() => server.child.kill('SIGKILL'), 45_000)
  try {
    return { code: await server.exited, output: server.output() }
  } finally {
    clearTimeout(killer)
  }
}

describe('examples/node start-up: unreachable or unusable settings exit 1 naming the variable, never its secrets', () => {
  test('MPP_REDIS_URL that cannot be reached: exit 1 naming MPP_REDIS_URL, without its password (it used to hang, silent)', async () => {
    const port = await freePort()
    const { code, output } = await exitOf({ ...base, MPP_REDIS_URL: `redis://:redis-password-1234@127.0.0.1:${port}` })
    expect(code).toBe(1)
    expect(output).toMatch(/MPP_REDIS_URL/)
    expect(output).not.toContain('redis-password-1234')
    expect(output).not.toContain(secret)
  }, 60_000)

  test.each([
    ['user:password@ in the URL', 'http://rpc-user:rpc-password-1234@127.0.0.1:1/rpc-api-key-5678'],
    ['a scheme that is not http(s)', 'wss://127.0.0.1:1/rpc-api-key-5678'],
  ])(
    'TEMPO_RPC_URL with %s: exit 1 naming TEMPO_RPC_URL, never echoing its password or key',
    async (_name, url) => {
      const { TEMPO_CHAIN_ID: _, ...env } = base
      const { code, output } = await exitOf({ ...env, TEMPO_RPC_URL: url })
      expect(code).toBe(1)
      expect(output).toMatch(/TEMPO_RPC_URL/)
      expect(output).not.toContain('rpc-password-1234')
      expect(output).not.toContain('rpc-api-key-5678')
    },
    60_000,
  )

  test('TEMPO_RPC_URL that does not answer: the message names it by host only, never its path (an API key)', async () => {
    const { TEMPO_CHAIN_ID: _, ...env } = base
    const port = await freePort()
    const { code, output } = await exitOf({ ...env, TEMPO_RPC_URL: `http://127.0.0.1:${port}/v2/rpc-api-key-5678` })
    expect(code).toBe(1)
    expect(output).toMatch(/TEMPO_RPC_URL \(127\.0\.0\.1:\d+\) did not answer eth_chainId/)
    expect(output).not.toContain('rpc-api-key-5678')
  }, 60_000)

  test.each([
    ['MPP_TOPUP_MIN above MPP_TOPUP_MAX', { MPP_TOPUP_MIN: '5', MPP_TOPUP_MAX: '1' }, /MPP_TOPUP_MIN \(5\) must not be above MPP_TOPUP_MAX \(1\)/],
    ['MPP_TOPUP_MIN zero', { MPP_TOPUP_MIN: '0' }, /MPP_TOPUP_MIN must be above 0/],
    ['MPP_TOPUP_MAX zero', { MPP_TOPUP_MAX: '0.00' }, /MPP_TOPUP_MAX must be above 0/],
    ['MPP_TOPUP_MIN with more decimals than the token has', { MPP_TOPUP_MIN: '0.0000001' }, /MPP_TOPUP_MIN has more than 6 decimals/],
  ])(
    '%s: exit 1 with one line naming the variable, no stack trace',
    async (_name, env, message) => {
      const { code, output } = await exitOf({ ...base, ...env })
      expect(code).toBe(1)
      expect(output).toMatch(message)
      expect(output).not.toMatch(/\n\s+at /)
    },
    60_000,
  )

  test('MPP_PGLITE_DIR that cannot be used: exit 1 naming MPP_PGLITE_DIR', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mpp-pglite-'))
    try {
      // A file where the directory should be.
      const file = join(dir, 'not-a-directory')
      await writeFile(file, 'x')
      const { code, output } = await exitOf({ ...base, MPP_PGLITE_DIR: join(file, 'ledger') })
      expect(code).toBe(1)
      expect(output).toMatch(/MPP_PGLITE_DIR/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }, 60_000)

  test('DATABASE_URL that cannot be reached: exit 1 naming DATABASE_URL by host, never its password', async () => {
    const port = await freePort()
    const { code, output } = await exitOf({ ...base, DATABASE_URL: `postgres://ledger:pg-password-1234@127.0.0.1:${port}/ledger` })
    expect(code).toBe(1)
    expect(output).toMatch(new RegExp(`DATABASE_URL \\(127\\.0\\.0\\.1:${port}\\) could not be prepared`))
    expect(output).not.toContain('pg-password-1234')
  }, 60_000)

  test('PORT already in use: exit 1 naming PORT (and HOST), no unhandled error dump', async () => {
    const taken = createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    const port = (taken.address() as { port: number }).port
    try {
      const { code, output } = await exitOf({ ...base, PORT: String(port) })
      expect(code).toBe(1)
      expect(output).toMatch(new RegExp(`PORT ${port} is already in use`))
      expect(output).not.toMatch(/Unhandled 'error' event/)
    } finally {
      await new Promise((resolve) => taken.close(resolve))
    }
  }, 60_000)

  test('HOST that is not an address of this machine: exit 1 naming HOST', async () => {
    const { code, output } = await exitOf({ ...base, HOST: '192.0.2.1', PORT: String(await freePort()) })
    expect(code).toBe(1)
    expect(output).toMatch(/cannot listen on HOST 192\.0\.2\.1/)
    expect(output).not.toMatch(/Unhandled 'error' event/)
  }, 60_000)

  test('MPP_SESSION_KEY whose account cannot deploy the local escrow (no fee tokens): exit 1 naming MPP_SESSION_KEY, not the key, no transaction dump', async () => {
    const sessionKey = generatePrivateKey()
    const rpcUrl = inject('rpcUrl')
    const { code, output } = await exitOf({ ...base, TEMPO_RPC_URL: rpcUrl, MPP_SESSION_KEY: sessionKey, PORT: String(await freePort()) })
    expect(code).toBe(1)
    expect(output).toMatch(/MPP_SESSION_KEY/)
    expect(output).toMatch(/MPP_ESCROW/)
    expect(output).toContain(privateKeyToAccount(sessionKey).address)
    expect(output).not.toContain(sessionKey.slice(2))
    expect(output).not.toMatch(/Request body|eth_sendRawTransaction/)
  }, 60_000)
})

describe('examples/node start-up: a variable that has no effect in this configuration is named, the server still starts', () => {
  test('MPP_ESCROW without MPP_SESSION_KEY, MPP_PAYOUT_ADDRESS without the operator, MPP_PGLITE_DIR beside DATABASE_URL: one warning each', async () => {
    const port = await freePort()
    const server = spawnServer({
      ...base,
      PORT: String(port),
      MPP_ESCROW: privateKeyToAccount(generatePrivateKey()).address,
      MPP_PAYOUT_ADDRESS: privateKeyToAccount(generatePrivateKey()).address,
    })
    try {
      for (;;) {
        if (server.child.exitCode !== null) throw new Error(`server exited: ${server.output()}`)
        try {
          if ((await fetch(`http://127.0.0.1:${port}/free`)).ok) break
        } catch {}
        await new Promise((r) => setTimeout(r, 150))
      }
      expect(server.output()).toMatch(/warning: MPP_ESCROW is ignored: sessions are off without MPP_SESSION_KEY/)
      expect(server.output()).toMatch(/warning: MPP_PAYOUT_ADDRESS is ignored: payouts are off without MPP_OPERATOR_KEY/)
      expect((await fetch(`http://127.0.0.1:${port}/session`)).status).toBe(503)
    } finally {
      server.child.kill('SIGTERM')
      await server.exited
    }
    // DATABASE_URL wins over MPP_PGLITE_DIR (the database is unreachable here: start-up stops after the warning).
    const { output } = await exitOf({ ...base, DATABASE_URL: `postgres://ledger@127.0.0.1:${await freePort()}/ledger`, MPP_PGLITE_DIR: tmpdir() })
    expect(output).toMatch(/warning: MPP_PGLITE_DIR is ignored: the ledger is on DATABASE_URL/)
  }, 90_000)
})
