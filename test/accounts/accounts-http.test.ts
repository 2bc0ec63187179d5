/**
 * hono-mpp/accounts end to end (#15), through the real server on the real local chain and a real
 * PGlite ledger: the reference client (mppx) tops up an account, the key it receives pays routes
 * (Bearer and X-API-Key) and an MCP tool (Bearer) from the balance, failures cost nothing, every
 * refusal names its reason, keys are managed by a key or by the owner's zero-amount proof, an
 * Idempotency-Key retry is served and charged once, a ledger that is down or slow runs nothing,
 * and a top-up is credited exactly once across retries and a crash in its recovery window.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js'
import { Hono } from 'hono'
import { Mppx, tempo as mppxTempo } from 'mppx/client'
import { createClient, http } from 'viem'
import { generatePrivateKey, type LocalAccount, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { balanceOf, fundedAccount, localChain } from '../../scripts/local-chain.js'
import { accounts } from '../../src/accounts/index.js'
import { createLedger, type Ledger } from '../../src/accounts/ledger.js'
import { fromPglite } from '../../src/accounts/sql.js'
import { type ClaimStore, memoryStore, type PaymentEvent, StoreUnavailableError } from '../../src/index.js'
import { decodeJson } from '../../src/protocol/encoding.js'
import { tempo } from '../../src/tempo/index.js'
import { mcpPayments } from '../../src/transports/mcp.js'
import { challengesOf } from '../helpers/http.js'
import { backends } from './support.js'

const secret = 'accounts-http-secret-0123456789abcdefghij'
const realm = 'api.accounts.test'
const origin = `http://${realm}`
let rpcUrl: string
let payer: LocalAccount
const recipient = privateKeyToAccount(generatePrivateKey()).address
let method: ReturnType<typeof tempo>
let currency: string

type Problem = { type: string; status: number; detail: string; balance?: string; price?: string; topUp?: string; remaining?: string }

/** A server with accounts: the account routes, metered routes, and an MCP endpoint. */
async function server(options: {
  ledger: Ledger
  store?: ClaimStore
  timeoutMs?: number
  leaseMs?: number
  realm?: string
  onEvent?: (event: PaymentEvent) => void
}) {
  const acct = accounts({
    ledger: options.ledger,
    realm: options.realm ?? realm,
    secret,
    methods: [method],
    ...(options.store && { store: options.store }),
    ...(options.timeoutMs !== undefined && { timeoutMs: options.timeoutMs }),
    ...(options.leaseMs !== undefined && { leaseMs: options.leaseMs }),
    ...(options.onEvent && { onEvent: options.onEvent }),
  })
  const runs = { metered: 0, after: 0, thrown: 0, tool: 0 }
  const app = new Hono()
  app.route('/', acct.routes())
  app.get('/metered', acct.charge({ amount: '0.01' }), (c) => {
    runs.metered++
    return c.json({ by: c.get('payment').payer, via: c.get('payment').credentialType, n: runs.metered })
  })
  app.post('/metered-after', acct.charge({ amount: '0.01' }), async (c) => {
    runs.after++
    const body = (await c.req.json()) as { fail?: boolean }
    return body.fail ? c.json({ error: 'the handler failed' }, 500) : c.json({ ok: true })
  })
  app.get(
    '/throws',
    acct.charge({ amount: '0.01' }, () => {
      runs.thrown++
      throw new Error('the handler threw')
    }),
  )
  app.post(
    '/mcp',
    mcpPayments({
      secret,
      realm: options.realm ?? realm,
      methods: [method],
      schemes: [acct.scheme],
      tools: { summarize: { amount: '0.01' }, broken: { amount: '0.01' } },
    }),
    async (c) => {
      const message = (await c.req.json()) as { id: number; params: { name: string } }
      runs.tool++
      const broken = message.params.name === 'broken'
      return c.json({
        jsonrpc: '2.0',
        id: message.id,
        result: { content: [{ type: 'text', text: broken ? 'failed' : 'summary' }], ...(broken && { isError: true }) },
      })
    },
  )
  return { acct, app, runs }
}

/** The mppx client paying through `app`; remembers the credentials it sent. */
function client(app: Hono, account: LocalAccount, mode?: 'pull' | 'push') {
  const sent: string[] = []
  const mppx = Mppx.create({
    polyfill: false,
    methods: [mppxTempo.charge({ account, ...(mode && { mode }), getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }) })],
    fetch: async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init)
      const authorization = request.headers.get('authorization')
      if (authorization) sent.push(authorization)
      return app.fetch(request)
    },
  })
  return { fetch: (path: string, init?: RequestInit) => mppx.fetch(`${origin}${path}`, init), sent }
}

const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify(body),
})
const withKey = (key: string, init: RequestInit = {}, header: 'bearer' | 'x-api-key' = 'bearer'): RequestInit => ({
  ...init,
  headers: { ...(init.headers as Record<string, string>), ...(header === 'bearer' ? { authorization: `Bearer ${key}` } : { 'x-api-key': key }) },
})
const get = async (app: Hono, path: string, init: RequestInit = {}): Promise<Response> => app.request(`${origin}${path}`, init)

async function openLedger(dataDir?: string): Promise<{ db: PGlite; ledger: Ledger }> {
  const db = new PGlite(dataDir)
  await db.waitReady
  const ledger = createLedger({ sql: fromPglite(db), currency })
  await ledger.migrate()
  return { db, ledger }
}

async function expectBalanced(ledger: Ledger) {
  expect(await ledger.audit()).toEqual({ sum: 0n, negativeBalances: 0, mismatchedBooks: 0, unbalancedMovements: 0, mismatchedHolds: 0 })
}

/** An account funded straight in the ledger (as a top-up would), and its first key. */
async function funded(ledger: Ledger, amount: bigint, where = realm) {
  const owner = privateKeyToAccount(generatePrivateKey()).address
  const topUp = await ledger.topUp({ owner, amount, reference: `0x${crypto.randomUUID().replaceAll('-', '')}`, realm: where })
  return { owner, accountId: topUp.accountId, key: topUp.apiKey! }
}

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  payer = await fundedAccount(rpcUrl, { funder: 8, amount: '20' })
  method = tempo({ rpcUrl, chainId: 31337, recipient })
  currency = method.request({ amount: '1' }).currency
})

describe('top up with the reference client, then spend the key', () => {
  let db: PGlite
  let ledger: Ledger
  let s: Awaited<ReturnType<typeof server>>
  let apiKey: string

  beforeAll(async () => {
    ;({ db, ledger } = await openLedger())
    s = await server({ ledger })
  })
  afterAll(() => db.close())

  test('POST /account/top-up: a 402 for exactly the chosen amount; mppx pays it on chain; 200 with the balance and a first API key; the credential replayed credits nothing', async () => {
    const unpaid = await get(s.app, '/account/top-up', json({ amount: '2.50' }))
    expect(unpaid.status).toBe(402)
    expect((decodeJson(challengesOf(unpaid)[0]!.request) as { amount: string }).amount).toBe('2500000')

    const { fetch, sent } = client(s.app, payer)
    const before = await balanceOf(rpcUrl, recipient)
    const paid = await fetch('/account/top-up', json({ amount: '1.00' }))
    expect(paid.status).toBe(200)
    expect(paid.headers.get('cache-control')).toContain('no-store')
    const body = (await paid.json()) as { balance: string; apiKey: string; owner: string; credited: string }
    expect(body).toMatchObject({ balance: '1.00', credited: '1.00', owner: payer.address })
    expect(body.apiKey).toMatch(/^mpp_live_/)
    apiKey = body.apiKey
    expect(await balanceOf(rpcUrl, recipient)).toBe(before + 1_000_000n)

    const replayed = await get(s.app, '/account/top-up', {
      ...json({ amount: '1.00' }),
      headers: { 'content-type': 'application/json', authorization: sent[0]! },
    })
    expect(replayed.status).toBe(402)
    const account = await ledger.account((await ledger.accountOf(payer.address))!.accountId)
    expect(account!.balance).toBe(1_000_000n)

    // A second top-up credits the same account and issues no key unless asked; asked, it does.
    const second = (await (await fetch('/account/top-up', json({ amount: '0.50' }))).json()) as { balance: string; apiKey?: string }
    expect(second).toMatchObject({ balance: '1.50' })
    expect(second.apiKey).toBeUndefined()
    const third = (await (await fetch('/account/top-up', json({ amount: '0.10', newKey: true, label: 'laptop' }))).json()) as {
      balance: string
      apiKey?: string
    }
    expect(third.balance).toBe('1.60')
    expect(third.apiKey).toMatch(/^mpp_live_/)
    expect(third.apiKey).not.toBe(apiKey)
    await expectBalanced(ledger)
  })

  test('a pushed top-up (the client broadcasts, sends the hash) is credited once too; the hash replayed credits nothing', async () => {
    const pusher = await fundedAccount(rpcUrl, { funder: 8, amount: '2' })
    const { fetch, sent } = client(s.app, pusher, 'push')
    const paid = await fetch('/account/top-up', json({ amount: '0.25' }))
    expect(paid.status).toBe(200)
    const body = (await paid.json()) as { balance: string; apiKey: string; accountId: string }
    expect(body.balance).toBe('0.25')
    expect(body.apiKey).toMatch(/^mpp_live_/)
    const replayed = await get(s.app, '/account/top-up', {
      ...json({ amount: '0.25' }),
      headers: { 'content-type': 'application/json', authorization: sent[0]! },
    })
    expect(replayed.status).toBe(402)
    expect((await ledger.account(body.accountId))!.balance).toBe(250_000n)
    await expectBalanced(ledger)
  })

  test('the label sent with an account’s first top-up names the key that top-up issues', async () => {
    const first = await fundedAccount(rpcUrl, { funder: 8, amount: '1' })
    const { fetch } = client(s.app, first)
    const paid = await fetch('/account/top-up', json({ amount: '0.10', label: 'laptop' }))
    expect(paid.status).toBe(200)
    const body = (await paid.json()) as { apiKey: string; keyId: string; note?: string }
    expect(body.note).toBeUndefined()
    const listed = (await (await get(s.app, '/account/keys', withKey(body.apiKey))).json()) as { keys: { id: string; label: string | null }[] }
    expect(listed.keys).toEqual([expect.objectContaining({ id: body.keyId, label: 'laptop' })])
  })

  test.each([
    [{ amount: '0.05' }, /a top-up must be from 0.10 to 100; got 0.05/],
    [{ amount: '100.01' }, /a top-up must be from 0.10 to 100; got 100.01/],
    [{ amount: 1 }, /`amount` must be a decimal string such as "1.00" \(a string, not a number\)/],
    [{ amount: '1e2' }, /`amount` must be a decimal string/],
    [{ amount: '0.0000001' }, /more than 6 decimals/],
    [{}, /send the amount to top up as a decimal string/],
  ])('a top-up of %j is refused 400 with the reason, before any challenge', async (body, detail) => {
    const response = await get(s.app, '/account/top-up', json(body))
    expect(response.status).toBe(400)
    expect(response.headers.get('www-authenticate')).toBeNull()
    expect(((await response.json()) as Problem).detail).toMatch(detail)
  })

  test('the key pays per call from the balance, as Bearer and as X-API-Key; without a key the route still answers the Payment challenge', async () => {
    const runs = s.runs.metered
    const first = await get(s.app, '/metered', withKey(apiKey))
    expect(first.status).toBe(200)
    expect(await first.json()).toMatchObject({ by: payer.address.toLowerCase(), via: 'api-key' })
    expect(first.headers.get('payment-receipt')).toBeTruthy()
    const second = await get(s.app, '/metered', withKey(apiKey, {}, 'x-api-key'))
    expect(second.status).toBe(200)
    expect(s.runs.metered).toBe(runs + 2)
    const account = (await (await get(s.app, '/account', withKey(apiKey))).json()) as {
      balance: string
      held: string
      keys: { id: string; spent: string; lastUsed: string | null; prefix: string }[]
      entries: { kind: string; amount: string }[]
    }
    expect(account.balance).toBe('1.58')
    expect(account.held).toBe('0.00')
    const used = account.keys.find((key) => apiKey.startsWith(key.prefix))!
    expect(used.spent).toBe('0.02')
    expect(used.lastUsed).not.toBeNull()
    expect(account.entries.filter((entry) => entry.kind === 'capture')).toHaveLength(2)
    expect(JSON.stringify(account)).not.toContain(apiKey)

    const unpaid = await get(s.app, '/metered')
    expect(unpaid.status).toBe(402)
    expect(challengesOf(unpaid)[0]!.method).toBe('tempo')
    expect(s.runs.metered).toBe(runs + 2)
  })

  test('a failing handler (500), a thrown one, or an isError MCP result costs nothing; a good MCP call is paid by Bearer', async () => {
    const balance = async () => (await ledger.account((await ledger.accountOf(payer.address))!.accountId))!
    const start = (await balance()).balance
    const failed = await get(s.app, '/metered-after', withKey(apiKey, json({ fail: true })))
    expect(failed.status).toBe(500)
    expect(failed.headers.get('payment-receipt')).toBeNull()
    const thrown = await get(s.app, '/throws', withKey(apiKey))
    expect(thrown.status).toBe(500)
    expect(s.runs.thrown).toBe(1)
    expect((await balance()).balance).toBe(start)
    expect((await balance()).held).toBe(0n)

    const call = (name: string, id: number, key?: string) =>
      get(s.app, '/mcp', {
        ...json({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } }),
        headers: { 'content-type': 'application/json', ...(key && { authorization: `Bearer ${key}` }) },
      }).then((r) => r.json() as Promise<{ result?: { isError?: boolean; _meta?: Record<string, { method: string }> }; error?: { code: number } }>)
    const broken = await call('broken', 1, apiKey)
    expect(broken.result!.isError).toBe(true)
    expect(broken.result!._meta).toBeUndefined()
    expect((await balance()).balance).toBe(start)
    const good = await call('summarize', 2, apiKey)
    expect(good.result!._meta!['org.paymentauth/receipt']!.method).toBe('account')
    expect((await balance()).balance).toBe(start - 10_000n)
    const unpaid = await call('summarize', 3)
    expect(unpaid.error!.code).toBe(-32042)
    await expectBalanced(ledger)
  })

  test('an MCP SDK client configured with only a header (X-API-Key, as an IDE would) calls a priced tool of an MCP SDK server; the balance pays it', async () => {
    const app = new Hono()
    let runs = 0
    app.all('/sdk', mcpPayments({ secret, realm, methods: [method], schemes: [s.acct.scheme], tools: { summarize: { amount: '0.01' } } }), async (c) => {
      const mcp = new McpServer({ name: 'keyed-tools', version: '1.0.0' })
      mcp.registerTool('summarize', { description: 'a paid summary' }, async () => {
        runs++
        return { content: [{ type: 'text', text: `summary for ${c.get('payment').payer}` }] }
      })
      const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true })
      await mcp.connect(transport)
      return transport.handleRequest(c.req.raw)
    })
    const accountId = (await ledger.accountOf(payer.address))!.accountId
    const before = (await ledger.account(accountId))!.balance
    const sdk = new Client({ name: 'ide', version: '1.0.0' })
    await sdk.connect(
      new StreamableHTTPClientTransport(new URL(`${origin}/sdk`), {
        requestInit: { headers: { 'x-api-key': apiKey } },
        fetch: async (url, init) => app.fetch(new Request(url, init)),
      }),
    )
    const result = (await sdk.callTool({ name: 'summarize', arguments: {} })) as { content: { text: string }[]; _meta?: Record<string, { method: string }> }
    expect(result.content[0]!.text).toBe(`summary for ${payer.address.toLowerCase()}`)
    expect(result._meta!['org.paymentauth/receipt']!.method).toBe('account')
    expect(runs).toBe(1)
    expect((await ledger.account(accountId))!.balance).toBe(before - 10_000n)
    await sdk.close()
  })

  test('a key created by proof with an Idempotency-Key is shown once: its answer is not kept in the claim store nor replayed', async () => {
    // Everything written to the claim store, with kept answers' bodies (base64url) decoded.
    const written: string[] = []
    const record = (value: unknown) => {
      const text = JSON.stringify(value) ?? ''
      written.push(text)
      for (const [, body] of text.matchAll(/\\"body\\":\\"([A-Za-z0-9_-]*)\\"/g)) written.push(Buffer.from(body!, 'base64url').toString())
    }
    const inner = memoryStore()
    const recording: ClaimStore = {
      claim(key, next) {
        record(next)
        return inner.claim(key, next)
      },
      transition(key, from, next, owner) {
        record(next)
        return inner.transition(key, from, next, owner)
      },
      get: (key) => inner.get(key),
    }
    const own = await server({ ledger, store: recording })
    const owner = await fundedAccount(rpcUrl, { funder: 8, amount: '1' })
    const { fetch, sent } = client(own.app, owner)
    expect((await fetch('/account/top-up', json({ amount: '0.10' }))).status).toBe(200)
    const created = await fetch('/account/keys', json({ label: 'ide' }, { 'idempotency-key': 'create-ide' }))
    expect(created.status).toBe(201)
    const { apiKey } = (await created.json()) as { apiKey: string }
    expect(written.join('\n')).not.toContain(apiKey)
    const retry = await get(own.app, '/account/keys', {
      ...json({ label: 'ide' }),
      headers: { 'content-type': 'application/json', 'idempotency-key': 'create-ide', authorization: sent[sent.length - 1]! },
    })
    expect(retry.status).not.toBe(201)
    expect(retry.headers.get('content-type')).toContain('application/problem+json')
    const problem = await retry.text()
    expect(problem).not.toContain(apiKey)
    expect(JSON.parse(problem).detail).toBeTruthy()
    expect(written.join('\n')).not.toContain(apiKey)
  })

  test('keys are managed by a key of the account or by the owner’s zero-amount proof (mppx signs it): create, list, limit, revoke', async () => {
    const { fetch } = client(s.app, payer)
    const created = await fetch('/account/keys', json({ label: 'ide' }))
    expect(created.status).toBe(201)
    const key = (await created.json()) as { apiKey: string; id: string; label: string; prefix: string }
    expect(key).toMatchObject({ label: 'ide' })
    expect(key.apiKey.startsWith(key.prefix)).toBe(true)

    const byKey = await get(s.app, '/account/keys', withKey(apiKey, json({ label: 'ci', limit: '0.01' })))
    expect(byKey.status).toBe(201)
    const limited = (await byKey.json()) as { apiKey: string; id: string; limit: string }
    expect(limited.limit).toBe('0.01')

    const listed = (await (await get(s.app, '/account/keys', withKey(apiKey))).json()) as { keys: { id: string; label: string | null; spent: string }[] }
    expect(listed.keys.map((k) => k.label)).toEqual(expect.arrayContaining(['ide', 'ci', 'laptop']))
    expect(JSON.stringify(listed)).not.toMatch(/mpp_live_[A-Za-z0-9_-]{20,}/)

    // The per-key limit: one call fits, the next is refused 402 with the numbers.
    expect((await get(s.app, '/metered', withKey(limited.apiKey))).status).toBe(200)
    const over = await get(s.app, '/metered', withKey(limited.apiKey))
    expect(over.status).toBe(402)
    const overProblem = (await over.json()) as Problem
    expect(overProblem).toMatchObject({ type: 'https://paymentauth.org/problems/key-limit-exceeded', remaining: '0.00', price: '0.01' })
    expect(challengesOf(over)[0]!.method).toBe('tempo')
    const raised = await get(s.app, `/account/keys/${limited.id}`, { ...withKey(apiKey, json({ limit: null })), method: 'PATCH' })
    expect(((await raised.json()) as { limit: string | null }).limit).toBeNull()
    expect((await get(s.app, '/metered', withKey(limited.apiKey))).status).toBe(200)

    const revoked = await get(s.app, `/account/keys/${key.id}`, { ...withKey(apiKey), method: 'DELETE' })
    expect(revoked.status).toBe(200)
    const refused = await get(s.app, '/metered', withKey(key.apiKey))
    expect(refused.status).toBe(401)
    expect(((await refused.json()) as Problem).type).toBe('https://paymentauth.org/problems/key-revoked')

    // A proof from an address without an account is told so (it proved its own address: nothing leaks).
    const stranger = client(s.app, privateKeyToAccount(generatePrivateKey()))
    const none = await stranger.fetch('/account/keys', json({}))
    expect(none.status).toBe(403)
    expect(((await none.json()) as Problem).detail).toMatch(/this address has no account here yet; top up first/)
  })
})

describe('every refusal of a key names its reason, never the key', () => {
  let db: PGlite
  let ledger: Ledger
  let s: Awaited<ReturnType<typeof server>>
  let other: Awaited<ReturnType<typeof server>>
  const events: PaymentEvent[] = []

  beforeAll(async () => {
    ;({ db, ledger } = await openLedger())
    // PGlite runs one statement at a time: 1 000 concurrent holds queue up behind each other.
    s = await server({ ledger, onEvent: (event) => events.push(event), timeoutMs: 120_000 })
    other = await server({ ledger, realm: 'other.accounts.test' })
  })
  afterAll(() => db.close())

  test.each([
    ['an unknown key of our format', () => `mpp_live_${'A'.repeat(43)}`, 401, 'invalid-key', /the API key is not valid here/],
    ['a malformed key', () => 'not-a-key', 401, 'invalid-key', /the API key is not valid here/],
  ])('%s → %i %s', async (_name, key, status, kind, detail) => {
    const value = key()
    const response = await get(s.app, '/metered', withKey(value))
    expect(response.status).toBe(status)
    const problem = (await response.json()) as Problem
    expect(problem.type).toBe(`https://paymentauth.org/problems/${kind}`)
    expect(problem.detail).toMatch(detail)
    expect(JSON.stringify(problem)).not.toContain(value)
    expect(challengesOf(response)[0]!.method).toBe('tempo')
  })

  test('revoked → 401 key-revoked; expired → 401 key-expired; another server’s → 403 wrong-server; none runs the handler', async () => {
    const runs = s.runs.metered
    const revoked = await funded(ledger, 1_000_000n)
    await ledger.revokeKey(revoked.accountId, (await ledger.authenticate(revoked.key, realm)).id)
    const expired = await ledger.createKey(revoked.accountId, realm, { expiresAt: new Date(Date.now() - 1_000) })
    const elsewhere = await funded(ledger, 1_000_000n, 'other.accounts.test')
    const cases = [
      [revoked.key, 401, 'key-revoked', /this API key was revoked; create a new key/],
      [expired.apiKey, 401, 'key-expired', /this API key has expired/],
      [elsewhere.key, 403, 'wrong-server', /this API key was issued for another server/],
    ] as const
    for (const [key, status, kind, detail] of cases) {
      const response = await get(s.app, '/metered', withKey(key, {}, 'x-api-key'))
      expect(response.status).toBe(status)
      const problem = (await response.json()) as Problem
      expect(problem.type).toBe(`https://paymentauth.org/problems/${kind}`)
      expect(problem.detail).toMatch(detail)
      expect(JSON.stringify(problem)).not.toContain(key)
    }
    // The other server's key works on its own server.
    expect((await get(other.app, '/metered', withKey(elsewhere.key))).status).toBe(200)
    expect(s.runs.metered).toBe(runs)
    // Keys never reach events.
    const seen = JSON.stringify(events)
    for (const [key] of cases) expect(seen).not.toContain(key)
  })

  test('insufficient balance → 402 insufficient-balance with the balance, the price, the top-up URL and a Payment challenge (HTTP and MCP)', async () => {
    const poor = await funded(ledger, 5_000n)
    const response = await get(s.app, '/metered', withKey(poor.key))
    expect(response.status).toBe(402)
    const problem = (await response.json()) as Problem
    expect(problem).toMatchObject({
      type: 'https://paymentauth.org/problems/insufficient-balance',
      status: 402,
      balance: '0.005',
      price: '0.01',
      topUp: '/account/top-up',
    })
    expect(problem.detail).toBe(
      "the account's balance is 0.005 and this route costs 0.01; top up at /account/top-up, or pay this call with one of the offered challenges",
    )
    expect(challengesOf(response)[0]!.method).toBe('tempo')
    const mcp = (await (
      await get(s.app, '/mcp', {
        ...json({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'summarize' } }),
        headers: { 'content-type': 'application/json', authorization: `Bearer ${poor.key}` },
      })
    ).json()) as { error: { code: number; data: { problem: Problem; challenges: unknown[] } } }
    expect(mcp.error.code).toBe(-32042)
    expect(mcp.error.data.problem).toMatchObject({ balance: '0.005', price: '0.01', topUp: '/account/top-up' })
    expect(mcp.error.data.challenges).toHaveLength(1)
    expect(s.runs.tool).toBe(0)
  })

  test("an account cannot see, limit or revoke another account's key; GET /account works by the owner's proof", async () => {
    const mine = await funded(ledger, 1_000_000n)
    const theirs = await funded(ledger, 1_000_000n)
    const theirKey = await ledger.authenticate(theirs.key, realm)
    const revoke = await get(s.app, `/account/keys/${theirKey.id}`, { ...withKey(mine.key), method: 'DELETE' })
    expect(revoke.status).toBe(400)
    expect(((await revoke.json()) as Problem).detail).toBe('this account has no key with that id')
    const limit = await get(s.app, `/account/keys/${theirKey.id}`, { ...withKey(mine.key, json({ limit: '0' })), method: 'PATCH' })
    expect(limit.status).toBe(400)
    expect((await get(s.app, '/metered', withKey(theirs.key))).status).toBe(200)
    const listed = (await (await get(s.app, '/account/keys', withKey(mine.key))).json()) as { keys: { id: string }[] }
    expect(listed.keys.map((key) => key.id)).not.toContain(theirKey.id)

    const owner = await fundedAccount(rpcUrl, { funder: 8, amount: '1' })
    const { fetch } = client(s.app, owner)
    expect((await fetch('/account/top-up', json({ amount: '0.10' }))).status).toBe(200)
    const view = await fetch('/account?limit=1')
    expect(view.status).toBe(200)
    const body = (await view.json()) as { owner: string; balance: string; entries: unknown[]; next?: string }
    expect(body).toMatchObject({ owner: owner.address.toLowerCase(), balance: '0.10' })
    expect(body.entries).toHaveLength(1)
  })

  test("a key of this server cannot revoke or limit the same account's key for another server (keys are scoped to one server)", async () => {
    const here = await funded(ledger, 1_000_000n)
    const owner = (await ledger.account(here.accountId))!.owner
    const there = await ledger.topUp({ owner, amount: 1n, reference: `0x${crypto.randomUUID().replaceAll('-', '')}`, realm: 'other.accounts.test' })
    const thereKey = await ledger.authenticate(there.apiKey!, 'other.accounts.test')
    expect(thereKey.accountId).toBe(here.accountId)
    const revoke = await get(s.app, `/account/keys/${thereKey.id}`, { ...withKey(here.key), method: 'DELETE' })
    expect(revoke.status).toBe(400)
    expect(((await revoke.json()) as Problem).detail).toBe('this account has no key with that id')
    const limit = await get(s.app, `/account/keys/${thereKey.id}`, { ...withKey(here.key, json({ limit: '0' })), method: 'PATCH' })
    expect(limit.status).toBe(400)
    expect(((await limit.json()) as Problem).detail).toBe('this account has no key with that id')
    const untouched = (await ledger.listKeys(here.accountId)).find((key) => key.id === thereKey.id)!
    expect(untouched).toMatchObject({ revokedAt: null, limit: null })
    expect((await get(other.app, '/metered', withKey(there.apiKey!))).status).not.toBe(401)
    // Its own server manages it.
    expect((await get(other.app, `/account/keys/${thereKey.id}`, { ...withKey(there.apiKey!), method: 'DELETE' })).status).toBe(200)
  })

  test("GET /account shows this server's activity only: the same account's calls at another server (their keys and descriptions) are not listed", async () => {
    const here = await funded(ledger, 1_000_000n)
    const owner = (await ledger.account(here.accountId))!.owner
    const there = await ledger.topUp({ owner, amount: 500_000n, reference: `0x${crypto.randomUUID().replaceAll('-', '')}`, realm: 'other.accounts.test' })
    expect((await get(other.app, '/metered', withKey(there.apiKey!))).status).toBe(200)
    expect((await get(s.app, '/metered', withKey(here.key))).status).toBe(200)
    const thereKey = await ledger.authenticate(there.apiKey!, 'other.accounts.test')
    type View = { balance: string; entries: { keyId: string | null; kind: string; description: string | null }[] }
    const view = (await (await get(s.app, '/account', withKey(here.key))).json()) as View
    expect(view.entries.some((entry) => entry.keyId === thereKey.id)).toBe(false)
    expect(view.entries.some((entry) => entry.kind === 'capture' && entry.keyId !== null)).toBe(true)
    // The balance is the account's, across servers; the other server lists its own call.
    const elsewhere = (await (await get(other.app, '/account', withKey(there.apiKey!))).json()) as View
    expect(elsewhere.balance).toBe(view.balance)
    expect(elsewhere.entries.some((entry) => entry.keyId === thereKey.id)).toBe(true)
    // The ledger itself, asked for no server, lists both.
    const all = (await ledger.account(here.accountId))!.entries
    expect(all.some((entry) => entry.keyId === thereKey.id)).toBe(true)
  })

  test('an Idempotency-Key retry with a key revoked since is refused 401 key-revoked, not served the kept answer (HTTP and MCP)', async () => {
    const { key, accountId } = await funded(ledger, 1_000_000n)
    const runs = s.runs.metered
    const headers = { 'idempotency-key': 'before-revoke' }
    expect((await get(s.app, '/metered', withKey(key, { headers }))).status).toBe(200)
    const mcpCall = () =>
      get(s.app, '/mcp', {
        ...json({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'summarize', arguments: {} } }),
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'idempotency-key': 'tool-before-revoke' },
      })
    expect(((await (await mcpCall()).json()) as { result?: unknown }).result).toBeDefined()
    const keyId = (await ledger.authenticate(key, realm)).id
    expect(await ledger.revokeKey(accountId, keyId)).toBe(true)

    const retry = await get(s.app, '/metered', withKey(key, { headers }))
    expect(retry.status).toBe(401)
    expect(retry.headers.get('idempotent-replayed')).toBeNull()
    const problem = (await retry.json()) as Problem
    expect(problem.type).toBe('https://paymentauth.org/problems/key-revoked')
    expect(JSON.stringify(problem)).not.toContain(key)
    const tool = (await (await mcpCall()).json()) as { result?: unknown; error?: { data: { problem: Problem } } }
    expect(tool.result).toBeUndefined()
    expect(tool.error!.data.problem.type).toBe('https://paymentauth.org/problems/key-revoked')
    expect(s.runs.metered).toBe(runs + 1)
    expect((await ledger.account(accountId))!.balance).toBe(980_000n)
  })

  test('a key is read the same way by the account routes as by priced routes: `Bearer` without a key is 401 invalid-key on both', async () => {
    for (const path of ['/account', '/account/keys', '/metered']) {
      const empty = await get(s.app, path, { headers: { authorization: 'Bearer' } })
      expect(empty.status).toBe(401)
      expect(((await empty.json()) as Problem).type).toBe('https://paymentauth.org/problems/invalid-key')
      const blank = await get(s.app, path, { headers: { 'x-api-key': '' } })
      expect(blank.status).toBe(401)
    }
    // A tab is not the separator Authorization uses (RFC 9110: one or more spaces): neither kind of route takes a key from it.
    const { key, accountId } = await funded(ledger, 1_000_000n)
    const tabbed = { headers: { authorization: `Bearer\t${key}` } }
    expect((await get(s.app, '/metered', tabbed)).status).toBe(402)
    expect((await get(s.app, '/account', tabbed)).status).toBe(402)
    expect((await ledger.account(accountId))!.balance).toBe(1_000_000n)
  })

  test('two different keys in Authorization and X-API-Key are refused 400', async () => {
    const a = await funded(ledger, 1_000_000n)
    const response = await get(s.app, '/metered', { headers: { authorization: `Bearer ${a.key}`, 'x-api-key': `mpp_live_${'B'.repeat(43)}` } })
    expect(response.status).toBe(400)
    expect(((await response.json()) as Problem).detail).toMatch(/two different credentials/)
  })

  test('an Idempotency-Key retry is served once and charged once; the same key for another request is refused', async () => {
    const { key, accountId } = await funded(ledger, 1_000_000n)
    const runs = s.runs.metered
    const first = await get(s.app, '/metered', withKey(key, { headers: { 'idempotency-key': 'order-1' } }))
    expect(first.status).toBe(200)
    const firstBody = await first.text()
    const retry = await get(s.app, '/metered', withKey(key, { headers: { 'idempotency-key': 'order-1' } }))
    expect(retry.status).toBe(200)
    expect(retry.headers.get('idempotent-replayed')).toBe('true')
    expect(await retry.text()).toBe(firstBody)
    expect(s.runs.metered).toBe(runs + 1)
    expect((await ledger.account(accountId))!.balance).toBe(990_000n)
    // The same over MCP: the retry of a tools/call with the same Idempotency-Key is answered again, charged once.
    const tools = s.runs.tool
    const mcpCall = (id: number) =>
      get(s.app, '/mcp', {
        ...json({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'summarize', arguments: {} } }),
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'idempotency-key': 'call-7' },
      })
    const once = (await (await mcpCall(1)).json()) as { result: { content: unknown } }
    const again = await mcpCall(2)
    expect(again.headers.get('idempotent-replayed')).toBe('true')
    expect(((await again.json()) as { id: number; result: { content: unknown } }).result.content).toEqual(once.result.content)
    expect(s.runs.tool).toBe(tools + 1)
    expect((await ledger.account(accountId))!.balance).toBe(980_000n)
    const elsewhere = await get(
      s.app,
      '/metered-after',
      withKey(key, { ...json({}), headers: { 'idempotency-key': 'order-1', 'content-type': 'application/json' } }),
    )
    expect(elsewhere.status).toBe(400)
    expect((await ledger.account(accountId))!.balance).toBe(980_000n)
    await expectBalanced(ledger)
  })
})

describe.each(backends)('1 000 concurrent calls on $name, over two app instances on one database', (backend) => {
  test('one key, a balance covering exactly 100 calls: exactly 100 handlers run and are captured, the balance ends at 0, the books balance', async () => {
    const db = await backend.open()
    try {
      const ledgers = [createLedger({ sql: db.sql, currency }), createLedger({ sql: db.another(), currency })]
      for (const ledger of ledgers) await ledger.migrate()
      // PGlite runs one statement at a time, a pool ten: 1 000 concurrent holds queue up behind each other.
      const [a, b] = await Promise.all(ledgers.map((ledger) => server({ ledger, timeoutMs: 120_000 })))
      const { key, accountId } = await funded(ledgers[0]!, 100n * 10_000n)
      const statuses = await Promise.all(
        Array.from({ length: 1000 }, (_, i) => get((i % 2 === 0 ? a : b)!.app, '/metered', withKey(key)).then((response) => response.status)),
      )
      expect(statuses.filter((status) => status === 200)).toHaveLength(100)
      expect(statuses.filter((status) => status === 402)).toHaveLength(900)
      expect(a!.runs.metered + b!.runs.metered).toBe(100)
      const account = (await ledgers[1]!.account(accountId))!
      expect(account.balance).toBe(0n)
      expect(account.held).toBe(0n)
      expect(account.keys[0]!.spent).toBe(100n * 10_000n)
      await expectBalanced(ledgers[0]!)
    } finally {
      await db.close()
    }
  })
})

describe('a ledger that is down or slow: 503, the handler does not run, nothing is charged', () => {
  test('down: the key-paid route and the account routes answer 503 problem JSON', async () => {
    const { db, ledger } = await openLedger()
    const s = await server({ ledger })
    const { key } = await funded(ledger, 1_000_000n)
    await db.close()
    const response = await get(s.app, '/metered', withKey(key))
    expect(response.status).toBe(503)
    const problem = (await response.json()) as Problem
    expect(problem.type).toBe('https://paymentauth.org/problems/payment-unavailable')
    expect(problem.detail).toMatch(/the accounts ledger is unavailable; nothing was charged/)
    expect(JSON.stringify(problem)).not.toContain(key)
    expect(response.headers.get('retry-after')).toBe('2')
    expect(s.runs.metered).toBe(0)
    expect((await get(s.app, '/account', withKey(key))).status).toBe(503)
  })

  test('slow: a hold that does not answer in time is a 503; the handler does not run and the late hold is given back', async () => {
    const { db, ledger } = await openLedger()
    const s = await server({ ledger, timeoutMs: 200 })
    const { key, accountId } = await funded(ledger, 1_000_000n)
    // PGlite runs one statement at a time: a long one keeps the ledger busy.
    const busy = db.query('select pg_sleep(1.5)')
    const response = await get(s.app, '/metered', withKey(key))
    expect(response.status).toBe(503)
    expect(((await response.json()) as Problem).detail).toMatch(/the accounts ledger is not answering in time; nothing was charged/)
    await busy
    expect(s.runs.metered).toBe(0)
    // Whatever the late hold reserved goes back (released at once, or by the sweeper after its ttl).
    await ledger.sweep(new Date(Date.now() + 10 * 60_000))
    const account = (await ledger.account(accountId))!
    expect(account.balance).toBe(1_000_000n)
    expect(account.held).toBe(0n)
    await expectBalanced(ledger)
    await db.close()
  })
})

describe('a top-up is credited exactly once across a crash in its window', () => {
  test('the ledger is down when the payment settles: 503; after a restart the same credential recovers it and credits it once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'accounts-crash-'))
    try {
      const store = memoryStore()
      const first = await openLedger(dir)
      const a = await server({ ledger: first.ledger, store })
      await first.db.close()
      const { fetch, sent } = client(a.app, payer)
      const before = await balanceOf(rpcUrl, recipient)
      const down = await fetch('/account/top-up', json({ amount: '0.30' }))
      expect(down.status).toBe(503)
      expect(((await down.json()) as Problem).detail).toMatch(/retry with the same credential/)
      // The payment happened on chain.
      expect(await balanceOf(rpcUrl, recipient)).toBe(before + 300_000n)

      // Restart: a new process on the same database and claim store.
      const second = await openLedger(dir)
      const b = await server({ ledger: second.ledger, store })
      const retry = await get(b.app, '/account/top-up', {
        ...json({ amount: '0.30' }),
        headers: { 'content-type': 'application/json', authorization: sent[0]! },
      })
      expect(retry.status).toBe(200)
      const body = (await retry.json()) as { balance: string; apiKey: string; accountId: string }
      expect(body.balance).toBe('0.30')
      expect(body.apiKey).toMatch(/^mpp_live_/)
      const again = await get(b.app, '/account/top-up', {
        ...json({ amount: '0.30' }),
        headers: { 'content-type': 'application/json', authorization: sent[0]! },
      })
      expect(again.status).toBe(402)
      expect((await second.ledger.account(body.accountId))!.balance).toBe(300_000n)
      expect(await balanceOf(rpcUrl, recipient)).toBe(before + 300_000n)
      await expectBalanced(second.ledger)
      await second.db.close()
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  test('raced: one credential submitted to two instances at once (one database, one claim store) credits once', async () => {
    const { db, ledger } = await openLedger()
    const store = memoryStore()
    const [a, b] = await Promise.all([server({ ledger, store }), server({ ledger, store })])
    const racer = await fundedAccount(rpcUrl, { funder: 8, amount: '2' })
    const statuses: number[] = []
    const mppx = Mppx.create({
      polyfill: false,
      methods: [mppxTempo.charge({ account: racer, getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }) })],
      fetch: async (input: RequestInfo | URL, init?: RequestInit) => {
        const request = new Request(input, init)
        if (!request.headers.get('authorization')) return a!.app.fetch(request)
        // The paid retry goes to both instances at the same moment.
        const answers = await Promise.all([a!.app.fetch(request.clone()), b!.app.fetch(request.clone())])
        statuses.push(...answers.map((answer) => answer.status))
        return answers.find((answer) => answer.status === 200) ?? answers[0]!
      },
    })
    const paid = await mppx.fetch(`${origin}/account/top-up`, json({ amount: '0.40' }))
    expect(paid.status).toBe(200)
    expect(statuses.filter((status) => status === 200)).toHaveLength(1)
    const accountId = (await ledger.accountOf(racer.address))!.accountId
    expect((await ledger.account(accountId))!.balance).toBe(400_000n)
    await expectBalanced(ledger)
    await db.close()
  })

  test('credited, then the claim store fails to record it: the retry (after the lease) recovers, credits nothing more, and hands out a key', async () => {
    const { db, ledger } = await openLedger()
    const inner = memoryStore()
    let failNextSettle = true
    const store: ClaimStore = {
      claim: (key, record) => inner.claim(key, record),
      get: (key) => inner.get(key),
      async transition(key, from, next, owner) {
        if (failNextSettle && key.startsWith('mpp:challenge:') && next?.state === 'settled') {
          failNextSettle = false
          throw new StoreUnavailableError('the claim store went away')
        }
        return inner.transition(key, from, next, owner)
      },
    }
    const s = await server({ ledger, store, leaseMs: 1_000 })
    const someone = await fundedAccount(rpcUrl, { funder: 8, amount: '2' })
    const { fetch, sent } = client(s.app, someone)
    const failed = await fetch('/account/top-up', json({ amount: '0.20' }))
    expect(failed.status).toBe(503)
    const accountId = (await ledger.accountOf(someone.address))!.accountId
    expect((await ledger.account(accountId))!.balance).toBe(200_000n)

    const retry = () => get(s.app, '/account/top-up', { ...json({ amount: '0.20' }), headers: { 'content-type': 'application/json', authorization: sent[0]! } })
    let answer = await retry()
    // Until the failed attempt's lease runs out, the payment is "in progress".
    for (let i = 0; i < 50 && answer.status === 402 && /in progress/.test(await answer.clone().text()); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      answer = await retry()
    }
    expect(answer.status).toBe(200)
    const body = (await answer.json()) as { balance: string; credited: string; apiKey?: string }
    expect(body).toMatchObject({ balance: '0.20', credited: '0.00' })
    // Its first key was issued with the credit but never shown: a fresh one is.
    expect(body.apiKey).toMatch(/^mpp_live_/)
    expect((await ledger.account(accountId))!.balance).toBe(200_000n)
    await expectBalanced(ledger)
    await db.close()
  })
})
