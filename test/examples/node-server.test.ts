/**
 * `npm run serve` is a public contract: its environment variables and routes. This runs the real
 * server process (as `npm run serve` does) and holds it to that contract: the HTTP routes paid by
 * mppx's client, `/mcp` paid by mppx's MCP client over the MCP SDK client.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { Credential } from 'mppx'
import { Mppx, tempo } from 'mppx/client'
import { McpClient } from 'mppx/mcp/client'
import { createClient as createRedisClient } from 'redis'
import { createClient, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { balanceOf, freePort, fund, fundedAccount, localChain } from '../../scripts/local-chain.js'
import { parseReceipt } from '../../src/index.js'
import { type RedisServer, startRedisServer } from '../stores/redis-server.js'
import { type ServerProcess, spawnServer } from './server-process.js'

const rpcUrl = inject('rpcUrl')

describe('examples/node start-up refuses bad configuration, naming the variable', () => {
  const secret = 'x'.repeat(64)
  const recipient = privateKeyToAccount(generatePrivateKey()).address
  test.each([
    ['missing TEMPO_RPC_URL', { MPP_RECIPIENT: recipient, MPP_SECRET: secret }, /TEMPO_RPC_URL is missing/],
    ['missing MPP_RECIPIENT', { TEMPO_RPC_URL: 'http://127.0.0.1:1', MPP_SECRET: secret }, /MPP_RECIPIENT is missing/],
    ['MPP_RECIPIENT not an address', { TEMPO_RPC_URL: 'http://127.0.0.1:1', MPP_RECIPIENT: '0x1234', MPP_SECRET: secret }, /MPP_RECIPIENT is not an address/],
    ['MPP_SECRET under 32 bytes', { TEMPO_RPC_URL: 'http://127.0.0.1:1', MPP_RECIPIENT: recipient, MPP_SECRET: 'short' }, /MPP_SECRET is too short/],
    [
      'MPP_FEE_PAYER_KEY not a key',
      { TEMPO_RPC_URL: 'http://127.0.0.1:1', MPP_RECIPIENT: recipient, MPP_SECRET: secret, MPP_FEE_PAYER_KEY: '0xabc' },
      /MPP_FEE_PAYER_KEY must be a private key/,
    ],
    [
      'MPP_CURRENCY not an address',
      { TEMPO_RPC_URL: 'http://127.0.0.1:1', MPP_RECIPIENT: recipient, MPP_SECRET: secret, MPP_CURRENCY: 'usd' },
      /MPP_CURRENCY must be a TIP-20 token address/,
    ],
    [
      'MPP_METRICS not 0 or 1',
      { TEMPO_RPC_URL: 'http://127.0.0.1:1', MPP_RECIPIENT: recipient, MPP_SECRET: secret, MPP_METRICS: 'yes' },
      /MPP_METRICS must be 1/,
    ],
    ['PORT not a number', { TEMPO_RPC_URL: 'http://127.0.0.1:1', MPP_RECIPIENT: recipient, MPP_SECRET: secret, PORT: 'eighty' }, /PORT must be a port number/],
  ])('%s', async (_name, env, message) => {
    const server = spawnServer(env as Record<string, string>)
    expect(await server.exited).toBe(1)
    expect(server.output()).toMatch(message as RegExp)
    expect(server.output()).not.toContain(secret)
  })
})

describe('examples/node serves the documented routes, with claims in Redis', () => {
  let redis: RedisServer
  let server: ServerProcess
  let url: string
  const recipient = privateKeyToAccount(generatePrivateKey()).address
  const feePayerKey = generatePrivateKey()
  let payer: Awaited<ReturnType<typeof fundedAccount>>
  let client: { createCredential(response: Response, context: { mode: 'pull' | 'push' }): Promise<string> }

  beforeAll(async () => {
    redis = await startRedisServer()
    payer = await fundedAccount(rpcUrl, { amount: '5', funder: 6 })
    await fund(rpcUrl, privateKeyToAccount(feePayerKey).address, { amount: '5', funder: 6 })
    const port = await freePort()
    url = `http://127.0.0.1:${port}`
    server = spawnServer({
      PORT: String(port),
      TEMPO_RPC_URL: rpcUrl,
      MPP_RECIPIENT: recipient,
      MPP_SECRET: 'node-example-test-secret-0123456789abcdef',
      MPP_FEE_PAYER_KEY: feePayerKey,
      MPP_REDIS_URL: redis.url,
      MPP_METRICS: '1',
    })
    // Generous: under load the server's TypeScript load and PGlite start can take a while.
    const deadline = Date.now() + 90_000
    for (;;) {
      try {
        if ((await fetch(`${url}/free`)).ok) break
      } catch {}
      if (server.child.exitCode !== null || Date.now() > deadline) throw new Error(`server did not start: ${server.output()}`)
      await new Promise((r) => setTimeout(r, 150))
    }
    client = Mppx.create({
      polyfill: false,
      methods: [tempo.charge({ account: payer, getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }) })],
    })
  }, 120_000)
  afterAll(async () => {
    server?.child.kill('SIGTERM')
    await server?.exited
    await redis?.stop()
  })

  const pay = async (path: string, mode: 'pull' | 'push', init: RequestInit = {}) => {
    const unpaid = await fetch(url + path, init)
    expect(unpaid.status).toBe(402)
    const authorization = await client.createCredential(unpaid, { mode })
    const headers = { ...(init.headers as Record<string, string>), authorization }
    return { paid: await fetch(url + path, { ...init, headers }), replay: () => fetch(url + path, { ...init, headers }) }
  }

  test('GET /free answers without payment', async () => {
    const response = await fetch(`${url}/free`)
    expect(response.status).toBe(200)
  })

  test.each([
    ['/paid', 'pull'],
    ['/paid', 'push'],
    ['/paid-sponsored', 'pull'],
  ] as const)('GET %s paid in %s mode: 200, receipt, +0.01 to the recipient, replay refused', async (path, mode) => {
    const before = await balanceOf(rpcUrl, recipient)
    const { paid, replay } = await pay(path, mode)
    expect(paid.status).toBe(200)
    expect(parseReceipt(paid.headers.get('payment-receipt')!).status).toBe('success')
    expect((await balanceOf(rpcUrl, recipient)) - before).toBe(10_000n)
    expect((await replay()).status).toBe(402)
  })

  test('POST /paid-after: a failing handler charges nothing; a succeeding one is charged once', async () => {
    const init = (fail: boolean): RequestInit => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ fail }) })
    const before = await balanceOf(rpcUrl, recipient)
    const failed = await pay('/paid-after', 'pull', init(true))
    expect(failed.paid.status).toBe(500)
    expect(failed.paid.headers.get('payment-receipt')).toBeNull()
    expect(await balanceOf(rpcUrl, recipient)).toBe(before)
    const ok = await pay('/paid-after', 'pull', init(false))
    expect(ok.paid.status).toBe(200)
    expect((await balanceOf(rpcUrl, recipient)) - before).toBe(10_000n)
  })

  describe("POST /mcp: the MCP server, paid by mppx's MCP client", () => {
    type Receipt = { status: string; method: string; challengeId: string; reference: string }
    type Paid = { _meta?: Record<string, unknown> }
    let mcp: Client
    let charge: ReturnType<typeof tempo.charge>
    const sent: string[] = []

    beforeAll(async () => {
      charge = tempo.charge({ account: payer, getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }) })
      const transport = new StreamableHTTPClientTransport(new URL(`${url}/mcp`), {
        fetch: (input, init) => {
          sent.push(typeof init?.body === 'string' ? init.body : '')
          return fetch(input, init)
        },
      })
      mcp = new Client({ name: 'example-test', version: '1.0.0' })
      await mcp.connect(transport)
      McpClient.wrap(mcp, { methods: [charge] })
    })
    afterAll(async () => {
      await mcp?.close()
    })

    /** mppx's McpClient pays tools/call only; resources and prompts are paid with its parts: the same challenge check, method and credential. */
    const payWith = async <R extends Paid>(send: (meta?: Record<string, unknown>) => Promise<R>): Promise<R> => {
      const refused = await send().then(
        () => undefined,
        (error: unknown) => error,
      )
      if (!McpClient.isPaymentRequiredError(refused)) throw new Error(`expected a payment-required error, got ${String(refused)}`)
      expect(refused.code).toBe(-32042)
      const challenge = refused.data.challenges[0] as Parameters<typeof charge.createCredential>[0]['challenge']
      const credential = await charge.createCredential({ challenge, context: {} })
      return send({ 'org.paymentauth/credential': Credential.deserialize(credential) })
    }
    const lastPaidBody = () => [...sent].reverse().find((body) => body.includes('org.paymentauth/credential'))!
    const post = async (body: string) => {
      const response = await fetch(`${url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body,
      })
      return (await response.json()) as { result?: unknown; error?: { code: number; data: { problem: { detail: string } } } }
    }

    test('initialize advertises the payment method; tool echo is free: one request, no challenge, no receipt, no charge', async () => {
      expect(mcp.getServerCapabilities()?.experimental?.payment).toEqual({ methods: { tempo: { intents: ['charge'] } } })
      const before = await balanceOf(rpcUrl, recipient)
      const requests = sent.length
      const result = (await mcp.callTool({ name: 'echo', arguments: { text: 'free hello' } })) as Paid & { content: { text: string }[] }
      expect(result.content[0]!.text).toBe('free hello')
      expect(result._meta?.['org.paymentauth/receipt']).toBeUndefined()
      expect(sent.length - requests).toBe(1)
      expect(await balanceOf(rpcUrl, recipient)).toBe(before)
    })

    test.each([
      {
        operation: 'tool paid-echo',
        pay: () => mcp.callTool({ name: 'paid-echo', arguments: { text: 'paid hello' } }) as Promise<Paid & { content: { text: string }[] }>,
        check: (result: Paid) => expect((result as { content: { text: string }[] }).content[0]!.text).toBe('paid hello'),
      },
      {
        operation: 'resource file:///report.txt',
        pay: () => payWith((meta) => mcp.readResource({ uri: 'file:///report.txt', ...(meta && { _meta: meta }) })),
        check: (result: Paid) =>
          expect((result as { contents: { uri: string; text: string }[] }).contents[0]).toMatchObject({
            uri: 'file:///report.txt',
            text: expect.stringContaining('report'),
          }),
      },
      {
        operation: 'prompt paid-prompt',
        pay: () => payWith((meta) => mcp.getPrompt({ name: 'paid-prompt', ...(meta && { _meta: meta }) })),
        check: (result: Paid) => expect((result as { messages: { role: string }[] }).messages[0]!.role).toBe('user'),
      },
    ])(
      '$operation at 0.01: result + receipt in _meta, +0.01 to the recipient, logged, in Redis; the credential replayed is refused',
      async ({ pay, check }) => {
        const before = await balanceOf(rpcUrl, recipient)
        const result = await pay()
        check(result)
        const receipt = result._meta?.['org.paymentauth/receipt'] as Receipt
        expect(receipt).toMatchObject({ status: 'success', method: 'tempo' })
        expect(receipt.reference).toMatch(/^0x[0-9a-f]{64}$/)
        const paidBody = lastPaidBody()
        const credential = (JSON.parse(paidBody) as { params: { _meta: Record<string, { challenge: { id: string } }> } }).params._meta[
          'org.paymentauth/credential'
        ]!
        expect(credential.challenge.id).toBe(receipt.challengeId)
        expect((await balanceOf(rpcUrl, recipient)) - before).toBe(10_000n)

        // The same onEvent logging and the same (Redis) store as the HTTP routes.
        const deadline = Date.now() + 30_000
        while (!server.output().includes(`settled tempo ${receipt.reference} on /mcp`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
        expect(server.output()).toContain(`settled tempo ${receipt.reference} on /mcp`)
        const redisClient = await createRedisClient({ url: redis.url }).connect()
        try {
          const keys = await redisClient.keys('*')
          expect(keys.some((key) => key.endsWith(`mpp:challenge:${receipt.challengeId}`))).toBe(true)
          expect(keys.some((key) => key.toLowerCase().endsWith(`tempo:tx:${receipt.reference}`))).toBe(true)
        } finally {
          await redisClient.quit()
        }

        const replay = await post(paidBody)
        expect(replay.result).toBeUndefined()
        expect(replay.error!.code).toBe(-32043)
        expect(replay.error!.data.problem.detail).toMatch(/already been used/)
        expect((await balanceOf(rpcUrl, recipient)) - before).toBe(10_000n)
      },
    )

    test('GET and DELETE /mcp answer 405 (stateless: no sessions, no standalone stream)', async () => {
      for (const method of ['GET', 'DELETE']) {
        const response = await fetch(`${url}/mcp`, { method, headers: { accept: 'text/event-stream' } })
        expect(response.status).toBe(405)
        expect(response.headers.get('allow')).toBe('POST')
      }
    })
  })

  test('GET /openapi.json describes the priced routes as they charge; GET /llms.txt lists them', async () => {
    const document = (await (await fetch(`${url}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { 'x-payment-info': { offers: { amount: string; currency: string }[] } }>>
    }
    // The accounts' metered routes are priced by the same charge() and listed too (their API-key scheme is another way to pay them),
    // and so is the top-up, whose amount the payer chooses.
    expect(Object.keys(document.paths).sort()).toEqual(['/account/top-up', '/article', '/metered', '/metered-after', '/paid', '/paid-after', '/paid-sponsored'])
    expect(document.paths['/account/top-up']!.post!['x-payment-info'].offers).toEqual([
      expect.objectContaining({
        method: 'tempo',
        intent: 'charge',
        amount: null,
        description: expect.stringMatching(/^Account top-up: the payer chooses the amount .* from \d/),
      }),
    ])
    const unpaid = await fetch(`${url}/paid`)
    const request = JSON.parse(Buffer.from(unpaid.headers.get('www-authenticate')!.match(/request="([^"]+)"/)![1]!, 'base64url').toString()) as {
      amount: string
      currency: string
    }
    expect(document.paths['/paid']!.get!['x-payment-info'].offers).toEqual([
      expect.objectContaining({ method: 'tempo', intent: 'charge', amount: request.amount, currency: request.currency }),
    ])
    const llms = await (await fetch(`${url}/llms.txt`)).text()
    expect(llms).toContain(`GET ${url}/paid: 0.01 (10000 base units of ${request.currency}) via tempo/charge`)
  })

  test('GET /article: a browser gets the paywall page, any other client the problem JSON', async () => {
    const page = await fetch(`${url}/article`, { headers: { accept: 'text/html' } })
    expect(page.status).toBe(402)
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8')
    expect(page.headers.get('www-authenticate')).toMatch(/^Payment /)
    expect(await page.text()).toContain('<h1>The paid article</h1>')
    const api = await fetch(`${url}/article`, { headers: { accept: 'application/json' } })
    expect(api.status).toBe(402)
    expect(api.headers.get('content-type')).toBe('application/problem+json')
    expect(((await api.json()) as { type: string }).type).toBe('https://paymentauth.org/problems/payment-required')
  })

  test('MPP_METRICS=1: GET /metrics, scraped after the real payments above, counts them by route, method and outcome, and names no payer, transaction or challenge', async () => {
    const response = await fetch(`${url}/metrics`)
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/)
    const text = await response.text()
    const value = (prefix: string) =>
      text
        .split('\n')
        .filter((line) => line.startsWith(prefix))
        .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0)
    const settled = (route: string) => value(`mpp_payments_total{route="${route}",method="tempo",intent="charge",outcome="settled"}`)
    expect(settled('/paid')).toBe(2)
    expect(settled('/paid-sponsored')).toBe(1)
    expect(settled('/paid-after')).toBe(1)
    expect(settled('/mcp')).toBe(3)
    expect(value('mpp_payments_total{route="/paid-after",method="tempo",intent="charge",outcome="released"}')).toBe(1)
    // Seven payments of 0.01 (10 000 base units each); three unpaid requests (one by the discovery test) and two replays of /paid.
    expect(value('mpp_amount_base_units_total{')).toBe(70_000)
    expect(value('mpp_challenges_total{route="/paid"}')).toBe(3)
    expect(value('mpp_refusals_total{route="/paid",')).toBe(2)
    // Server-settled (pull) payments have a settle latency; push payments were settled by the client.
    expect(value('mpp_settle_duration_seconds_count{method="tempo",intent="charge",outcome="settled"}')).toBeGreaterThanOrEqual(3)
    // The Tempo method's JSON-RPC calls: every pull payment one broadcast, every push payment one receipt look-up.
    expect(value('mpp_rpc_calls_total{method="eth_sendRawTransactionSync",outcome="answered"}')).toBeGreaterThanOrEqual(3)
    expect(value('mpp_rpc_calls_total{method="eth_getTransactionReceipt",outcome="answered"}')).toBeGreaterThanOrEqual(1)
    expect(value('mpp_rpc_duration_seconds_count{method="eth_sendRawTransactionSync"}')).toBe(value('mpp_rpc_calls_total{method="eth_sendRawTransactionSync",'))
    expect(text.toLowerCase()).not.toContain(payer.address.toLowerCase().slice(2))
    expect(text).not.toMatch(/[0-9a-fA-F]{64}/)
    expect(text).not.toContain('node-example-test-secret')
  })

  test('MPP_REDIS_URL: the server keeps its claims in Redis', async () => {
    const redisClient = await createRedisClient({ url: redis.url }).connect()
    try {
      const keys = await redisClient.keys('*')
      expect(keys.some((key) => key.includes('mpp:challenge:'))).toBe(true)
      expect(keys.some((key) => key.includes('tempo:tx:'))).toBe(true)
    } finally {
      await redisClient.quit()
    }
  })
})
