/**
 * The example server's accounts and session routes, part of the `npm run serve` contract: the
 * real server process, paid by the reference client (mppx) on the local chain. Accounts run on
 * the embedded PGlite and on a real Postgres server (DATABASE_URL); sessions on the escrow the
 * server deploys on a local chain when MPP_ESCROW is left out, in the default currency.
 */
import { Mppx, tempo } from 'mppx/client'
import postgres from 'postgres'
import { type Address, createClient, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, balanceOf, freePort, fund, fundedAccount, localChain, sessionPayerClient } from '../../scripts/local-chain.js'
import { parseChallenges } from '../../src/index.js'
import { decodeJson } from '../../src/protocol/encoding.js'
import { type ServerProcess, spawnServer } from './server-process.js'

const rpcUrl = inject('rpcUrl')
const secret = 'node-example-accounts-secret-0123456789abcdef'

type Server = ServerProcess & { url: string }

async function startServer(env: Record<string, string>): Promise<Server> {
  const port = await freePort()
  const server = spawnServer({ ...env, PORT: String(port) })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 90_000
  for (;;) {
    try {
      if ((await fetch(`${url}/free`)).ok) return { ...server, url }
    } catch {}
    if (server.child.exitCode !== null || Date.now() > deadline) throw new Error(`server did not start: ${server.output()}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

async function stopServer(server: Server | undefined) {
  if (!server) return
  server.child.kill('SIGTERM')
  await server.exited
}

describe('examples/node start-up refuses bad accounts and session configuration, naming the variable', () => {
  const recipient = privateKeyToAccount(generatePrivateKey()).address
  const base = { TEMPO_RPC_URL: 'http://127.0.0.1:1', TEMPO_CHAIN_ID: '31337', MPP_RECIPIENT: recipient, MPP_SECRET: secret }
  test.each([
    ['DATABASE_URL not postgres', { DATABASE_URL: 'mysql://x' }, /DATABASE_URL must be a postgres:\/\//],
    ['MPP_TOPUP_MIN not a decimal', { MPP_TOPUP_MIN: '1e3' }, /MPP_TOPUP_MIN must be a decimal amount/],
    ['MPP_PLATFORM_FEE_BPS out of range', { MPP_PLATFORM_FEE_BPS: '10001' }, /MPP_PLATFORM_FEE_BPS must be whole basis points/],
    ['MPP_OPERATOR_KEY without MPP_OPERATOR_SECRET', { MPP_OPERATOR_KEY: generatePrivateKey() }, /payouts need both MPP_OPERATOR_KEY/],
    ['MPP_OPERATOR_SECRET too short', { MPP_OPERATOR_KEY: generatePrivateKey(), MPP_OPERATOR_SECRET: 'short' }, /MPP_OPERATOR_SECRET is too short/],
    ['MPP_SESSION_KEY not a key', { MPP_SESSION_KEY: '0x1234' }, /MPP_SESSION_KEY must be a private key/],
    ['MPP_ESCROW not an address', { MPP_ESCROW: 'escrow' }, /MPP_ESCROW is not an address/],
  ])('%s', async (_name, env, message) => {
    const server = spawnServer({ ...base, ...(env as Record<string, string>) })
    expect(await server.exited).toBe(1)
    expect(server.output()).toMatch(message as RegExp)
    expect(server.output()).not.toContain(secret)
  })
})

const paymentClient = (account: Awaited<ReturnType<typeof fundedAccount>>) =>
  Mppx.create({ polyfill: false, methods: [tempo.charge({ account, getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }) })] })

describe.each(['pglite', 'postgres'] as const)('examples/node accounts on %s: top up, spend with a key, keys, payouts', (database) => {
  let server: Server
  let dropDatabase: (() => Promise<void>) | undefined
  const operatorKey = generatePrivateKey()
  const operator = privateKeyToAccount(operatorKey).address
  const developer = privateKeyToAccount(generatePrivateKey()).address
  const operatorSecret = 'operator-secret-for-the-example-test-0123'
  const realm = `example-${database}.test`
  let client: ReturnType<typeof paymentClient>
  let apiKey: string

  beforeAll(async () => {
    const env: Record<string, string> = {
      TEMPO_RPC_URL: rpcUrl,
      MPP_RECIPIENT: operator,
      MPP_SECRET: secret,
      MPP_REALM: realm,
      MPP_PLATFORM_FEE_BPS: '1000',
      MPP_OPERATOR_KEY: operatorKey,
      MPP_OPERATOR_SECRET: operatorSecret,
      MPP_PAYOUT_ADDRESS: developer,
    }
    if (database === 'postgres') {
      const admin = postgres(inject('postgresUrl'), { max: 1, onnotice: () => {} })
      const name = `mpp_example_${crypto.randomUUID().replaceAll('-', '')}`
      await admin.unsafe(`create database ${name}`)
      const url = new URL(inject('postgresUrl'))
      url.pathname = `/${name}`
      env.DATABASE_URL = url.toString()
      dropDatabase = async () => {
        await admin.unsafe(`drop database if exists ${name} with (force)`)
        await admin.end({ timeout: 1 })
      }
    }
    await fund(rpcUrl, operator, { amount: '1', funder: 5, tokens: [alphaUsd] })
    client = paymentClient(await fundedAccount(rpcUrl, { amount: '5', funder: 5 }))
    server = await startServer(env)
  }, 120_000)
  afterAll(async () => {
    await stopServer(server)
    await dropDatabase?.()
  })

  const balance = async (key = apiKey) => {
    const response = await fetch(`${server.url}/account`, { headers: { authorization: `Bearer ${key}` } })
    expect(response.status).toBe(200)
    return ((await response.json()) as { balance: string }).balance
  }

  test('POST /account/top-up {"amount":"1.00"}: a 402 for exactly 1.00, paid by mppx: 200 with the balance and a first API key', async () => {
    const init = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"amount":"1.00"}' }
    const unpaid = await fetch(`${server.url}/account/top-up`, init)
    expect(unpaid.status).toBe(402)
    const [challenge] = parseChallenges(unpaid.headers.get('www-authenticate')!)
    expect((decodeJson(challenge!.request) as { amount: string }).amount).toBe('1000000')
    const authorization = await client.createCredential(unpaid, { mode: 'pull' } as never)
    const paid = await fetch(`${server.url}/account/top-up`, { ...init, headers: { ...init.headers, authorization } })
    expect(paid.status).toBe(200)
    const body = (await paid.json()) as { balance: string; apiKey: string }
    expect(body.balance).toBe('1.00')
    expect(body.apiKey).toMatch(/^mpp_live_/)
    apiKey = body.apiKey
    // The same payment again credits nothing.
    expect((await fetch(`${server.url}/account/top-up`, { ...init, headers: { ...init.headers, authorization } })).status).toBe(402)
    expect(await balance()).toBe('1.00')
    // Outside the bounds (MPP_TOPUP_MIN/MAX defaults 0.10 and 100): 400 before any challenge.
    const low = await fetch(`${server.url}/account/top-up`, { ...init, body: '{"amount":"0.05"}' })
    expect(low.status).toBe(400)
    expect(((await low.json()) as { detail: string }).detail).toMatch(/0\.1/)
  })

  test('GET /metered: 0.01 from the balance with a Bearer key or X-API-Key; the usual 402 without one; POST /metered-after {"fail":true} costs nothing', async () => {
    const bearer = await fetch(`${server.url}/metered`, { headers: { authorization: `Bearer ${apiKey}` } })
    expect(bearer.status).toBe(200)
    expect(bearer.headers.get('payment-receipt')).toBeTruthy()
    expect(await balance()).toBe('0.99')
    expect((await fetch(`${server.url}/metered`, { headers: { 'x-api-key': apiKey } })).status).toBe(200)
    expect(await balance()).toBe('0.98')
    const unpaid = await fetch(`${server.url}/metered`)
    expect(unpaid.status).toBe(402)
    expect(unpaid.headers.get('www-authenticate')).toMatch(/^Payment /)
    const failed = await fetch(`${server.url}/metered-after`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: '{"fail":true}',
    })
    expect(failed.status).toBe(500)
    expect(await balance()).toBe('0.98')
    const ok = await fetch(`${server.url}/metered-after`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: '{}',
    })
    expect(ok.status).toBe(200)
    expect(await balance()).toBe('0.97')
  })

  test('POST /account/keys: 201 with a new key that spends the same balance; DELETE /account/keys/:id revokes it (401 after)', async () => {
    const created = await fetch(`${server.url}/account/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: '{"label":"ide"}',
    })
    expect(created.status).toBe(201)
    const { apiKey: second, id } = (await created.json()) as { apiKey: string; id: string }
    expect(second).not.toBe(apiKey)
    expect((await fetch(`${server.url}/metered`, { headers: { authorization: `Bearer ${second}` } })).status).toBe(200)
    expect(await balance()).toBe('0.96')
    const revoked = await fetch(`${server.url}/account/keys/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${apiKey}` } })
    expect(revoked.status).toBe(200)
    const refused = await fetch(`${server.url}/metered`, { headers: { authorization: `Bearer ${second}` } })
    expect(refused.status).toBe(401)
    const problem = (await refused.json()) as { detail: string }
    expect(problem.detail).toMatch(/revoked/)
    expect(JSON.stringify(problem)).not.toContain(second)
    expect(server.output()).not.toContain(second)
  })

  test('/operator: earnings less the platform fee, paid out on chain to MPP_PAYOUT_ADDRESS; refused without the operator secret', async () => {
    expect((await fetch(`${server.url}/operator/earnings/${realm}`)).status).toBe(401)
    const headers = { authorization: `Bearer ${operatorSecret}`, 'content-type': 'application/json' }
    const earnings = (await (await fetch(`${server.url}/operator/earnings/${realm}`, { headers })).json()) as { accrued: string }
    // 0.04 spent (four calls of 0.01), less the 10% fee.
    expect(earnings.accrued).toBe('36000')
    const before = await balanceOf(rpcUrl, developer)
    const payout = await fetch(`${server.url}/operator/payouts`, { method: 'POST', headers, body: JSON.stringify({ realm }) })
    expect(payout.status).toBe(200)
    expect(((await payout.json()) as { status: string }).status).toBe('paid')
    expect((await balanceOf(rpcUrl, developer)) - before).toBe(36_000n)
  })
})

describe('examples/node sessions: /session and /stream paid by mppx session vouchers', () => {
  let server: Server
  const payeeKey = generatePrivateKey()
  const payee = privateKeyToAccount(payeeKey)

  beforeAll(async () => {
    await fund(rpcUrl, payee.address, { amount: '5', funder: 5, tokens: [alphaUsd] })
    server = await startServer({ TEMPO_RPC_URL: rpcUrl, MPP_RECIPIENT: payee.address, MPP_SECRET: secret, MPP_SESSION_KEY: payeeKey })
  }, 120_000)
  afterAll(() => stopServer(server))

  test('open, 5 requests by voucher, a stream of 20 chunks with mid-stream vouchers, close: the payee captures exactly what was spent', async () => {
    const unpaid = await fetch(`${server.url}/session`)
    expect(unpaid.status).toBe(402)
    const offer = parseChallenges(unpaid.headers.get('www-authenticate')!).find((challenge) => challenge.intent === 'session')!
    const escrow = (decodeJson(offer.request) as { methodDetails: { escrowContract: Address } }).methodDetails.escrowContract
    const payer = await fundedAccount(rpcUrl, { amount: '3', funder: 5 })
    const manager = tempo.sessionLegacy({ account: payer, client: sessionPayerClient(rpcUrl) as never, escrowContract: escrow, maxDeposit: '1' })
    const before = await balanceOf(rpcUrl, payee.address)
    for (let i = 1; i <= 5; i++) {
      const response = await manager.fetch(`${server.url}/session`)
      expect(response.status).toBe(200)
      expect((response.receipt as { spent: string }).spent).toBe(String(i * 1000))
    }
    const chunks: string[] = []
    for await (const chunk of await manager.sse(`${server.url}/stream`)) chunks.push(chunk)
    expect(chunks).toHaveLength(20)
    expect(chunks[0]).toBe('chunk 1 of 20')
    const closed = await manager.close()
    expect(closed?.txHash).toMatch(/^0x[0-9a-f]{64}$/)
    expect((await balanceOf(rpcUrl, payee.address)) - before).toBe(5n * 1000n + 20n * 100n)
  })

  test('without MPP_SESSION_KEY, /session and /stream answer 503 problem JSON naming the variable; existing routes are unchanged', async () => {
    const plain = await startServer({ TEMPO_RPC_URL: rpcUrl, MPP_RECIPIENT: payee.address, MPP_SECRET: secret })
    try {
      for (const path of ['/session', '/stream']) {
        const response = await fetch(`${plain.url}${path}`)
        expect(response.status).toBe(503)
        expect(((await response.json()) as { detail: string }).detail).toMatch(/MPP_SESSION_KEY/)
      }
      expect((await fetch(`${plain.url}/paid`)).status).toBe(402)
    } finally {
      await stopServer(plain)
    }
  })
})
