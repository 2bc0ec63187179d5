/**
 * Paid MCP against the real MCP SDK server (stateless Streamable HTTP, JSON and SSE answers) on
 * the local chain, paid three ways: a Payment credential made by mppx's client, an API key of a
 * PGlite ledger (accounts), and nothing (the -32042 challenge). Each case checks what was
 * charged: the recipient's balance on chain, or the account's balance in the ledger.
 */
import { PGlite } from '@electric-sql/pglite'
import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js'
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js'
import { Hono } from 'hono'
import { Credential } from 'mppx'
import { tempo as tempoClient } from 'mppx/client'
import { type Address, createClient, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { z } from 'zod'
import { balanceOf, fundedAccount, localChain } from '../../scripts/local-chain.js'
import { accounts } from '../../src/accounts/index.js'
import { createLedger, type Ledger } from '../../src/accounts/ledger.js'
import { fromPglite } from '../../src/accounts/sql.js'
import { tempo } from '../../src/tempo/index.js'
import { type McpChallenge, mcpPayments } from '../../src/transports/mcp.js'

const rpcUrl = inject('rpcUrl')
const secret = 'mcp-sdk-server-secret-0123456789abcdef'
const realm = 'mcp.sdk.test'
const recipient: Address = privateKeyToAccount(generatePrivateKey()).address
let payer: Awaited<ReturnType<typeof fundedAccount>>
let db: PGlite
let ledger: Ledger
let apiKey: string
let accountId: string
let app: Hono
/** What the SDK server's handlers ran, in order. */
const runs: string[] = []

type RpcAnswer = { jsonrpc: string; id: unknown; result?: Record<string, any>; error?: { code: number; message: string; data?: any } }

beforeAll(async () => {
  payer = await fundedAccount(rpcUrl, { amount: '5', funder: 1 })
  const method = tempo({ rpcUrl, chainId: 31337, recipient })
  db = new PGlite()
  await db.waitReady
  ledger = createLedger({ sql: fromPglite(db), currency: method.request({ amount: '1' }).currency })
  await ledger.migrate()
  const owner = privateKeyToAccount(generatePrivateKey()).address
  const topUp = await ledger.topUp({ owner, amount: 1_000_000n, reference: `0x${crypto.randomUUID().replaceAll('-', '')}`, realm })
  apiKey = topUp.apiKey!
  accountId = topUp.accountId
  const acct = accounts({ ledger, realm, secret, methods: [method] })
  app = new Hono()
  for (const sse of [false, true])
    app.all(
      sse ? '/sse' : '/mcp',
      mcpPayments({
        secret,
        realm,
        methods: [method],
        schemes: [acct.scheme],
        tools: { summarize: { amount: '0.01' }, flaky: { amount: '0.01', settle: 'after' } },
        resources: { 'file:///reports/{id}': { amount: '0.02' } },
        prompts: { expert: { amount: '0.03' } },
      }),
      async (c) => {
        // Stateless Streamable HTTP: one server and transport per request.
        const server = new McpServer({ name: 'paid-tools', version: '1.0.0' })
        server.registerTool('summarize', { inputSchema: { text: z.string().optional() } }, async ({ text }) => {
          runs.push(`summarize ${text}`)
          return { content: [{ type: 'text', text: `summary of ${text}` }] }
        })
        server.registerTool('flaky', { inputSchema: { fail: z.string().optional() } }, async ({ fail }) => {
          runs.push(`flaky ${fail}`)
          if (fail === 'throw') throw new Error('the tool broke')
          if (fail === 'isError') return { content: [{ type: 'text', text: 'no' }], isError: true }
          return { content: [{ type: 'text', text: 'ok' }] }
        })
        server.registerTool('free', {}, async () => ({ content: [{ type: 'text', text: 'free' }] }))
        server.registerResource('report', new ResourceTemplate('file:///reports/{id}', { list: undefined }), {}, async (uri, { id }) => {
          runs.push(`report ${id}`)
          return { contents: [{ uri: uri.href, text: `report ${id}` }] }
        })
        server.registerPrompt('expert', {}, async () => {
          runs.push('expert')
          return { messages: [{ role: 'user', content: { type: 'text', text: 'be an expert' } }] }
        })
        const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: !sse })
        await server.connect(transport)
        return transport.handleRequest(c.req.raw)
      },
    )
})

afterAll(() => db.close())

/** POSTs one body as an MCP client would; parses a JSON or SSE answer. */
async function post(body: unknown, headers: Record<string, string> = {}, path = '/mcp') {
  const response = await app.request(`http://${realm}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify(body),
  })
  const text = await response.text()
  const json = response.headers.get('content-type')?.includes('text/event-stream')
    ? text
        .split('\n')
        .find((line) => line.startsWith('data: '))!
        .slice(6)
    : text
  return { response, text, answer: (json ? JSON.parse(json) : undefined) as RpcAnswer }
}

const toolCall = (name: string, args: Record<string, unknown> = {}, id: unknown = 1, meta?: unknown) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name, arguments: args, ...(meta !== undefined && { _meta: meta }) },
})

async function challengeFor(body: unknown): Promise<McpChallenge> {
  const { answer } = await post(body)
  expect(answer.error?.code).toBe(-32042)
  return answer.error!.data.challenges[0] as McpChallenge
}

/** A credential for `challenge`, made by mppx's Tempo client (a signed transaction the server broadcasts). */
async function credentialFor(challenge: McpChallenge): Promise<Record<string, unknown>> {
  const method = tempoClient.charge({ account: payer, getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }) })
  return Credential.deserialize(await method.createCredential({ challenge } as never)) as unknown as Record<string, unknown>
}

const meta = (credential: unknown) => ({ 'org.paymentauth/credential': credential })
const received = () => balanceOf(rpcUrl, recipient)
const accountBalance = async () => (await ledger.account(accountId))!.balance

describe('malformed JSON-RPC envelopes', () => {
  test.each([
    ['id null', { id: null }],
    ['a fractional id', { id: 1.5 }],
    ['an object id', { id: { n: 1 } }],
    ['no jsonrpc member', { jsonrpc: undefined }],
    ['jsonrpc "1.0"', { jsonrpc: '1.0' }],
    ['a member JSON-RPC does not define', { extra: true }],
  ])(
    'M1: a priced call with %s is refused -32600 before anything is charged, by credential or by key; the same credential then pays the well-formed call',
    async (_, change) => {
      const before = await received()
      const balance = await accountBalance()
      const ran = runs.length
      const challenge = await challengeFor(toolCall('summarize'))
      const credential = await credentialFor(challenge)
      const malformed = { ...toolCall('summarize', { text: 'bad' }, 7, meta(credential)), ...change }
      for (const headers of [{}, { authorization: `Bearer ${apiKey}` }] as Record<string, string>[]) {
        const { response, answer } = await post(headers.authorization ? { ...malformed, params: { name: 'summarize', arguments: {} } } : malformed, headers)
        expect(response.status).toBe(200)
        expect(answer.error?.code).toBe(-32600)
        expect(answer.id).toBe(typeof malformed.id === 'string' || Number.isInteger(malformed.id) ? malformed.id : null)
        expect(answer.error!.data.problem.type).toBe('https://paymentauth.org/problems/bad-request')
        expect(answer.error!.data.detail).toMatch(/priced call/)
        expect(JSON.stringify(answer)).not.toContain(apiKey)
      }
      expect(runs.length).toBe(ran)
      expect(await received()).toBe(before)
      expect(await accountBalance()).toBe(balance)

      // Nothing was consumed: the same credential pays the call sent well-formed.
      const { answer } = await post(toolCall('summarize', { text: 'good' }, 8, meta(credential)))
      expect(answer.result!.content[0].text).toBe('summary of good')
      expect(answer.result!._meta['org.paymentauth/receipt']).toMatchObject({ status: 'success', method: 'tempo', challengeId: challenge.id })
      expect(await received()).toBe(before + 10_000n)
    },
  )

  test('M2 M4: a credential at the message root pays a tool of an MCP SDK server (which takes no root _meta): one charge, the result with its receipt', async () => {
    const before = await received()
    const challenge = await challengeFor(toolCall('summarize'))
    const credential = await credentialFor(challenge)
    const { response, answer } = await post({ ...toolCall('summarize', { text: 'root' }, 'r1'), _meta: meta(credential) })
    expect(response.status).toBe(200)
    expect(answer.error).toBeUndefined()
    expect(answer.id).toBe('r1')
    expect(answer.result!.content[0].text).toBe('summary of root')
    expect(answer.result!._meta['org.paymentauth/receipt']).toMatchObject({ status: 'success', method: 'tempo', challengeId: challenge.id })
    expect(await received()).toBe(before + 10_000n)
  })
})

describe('Idempotency-Key', () => {
  test('C10 M4: a retry with the same Idempotency-Key but other arguments is refused, not answered with the first call’s result; the same arguments are replayed, charged once (credential and key, JSON and SSE)', async () => {
    for (const path of ['/mcp', '/sse']) {
      const before = await received()
      const balance = await accountBalance()
      const challenge = await challengeFor(toolCall('summarize'))
      const credential = await credentialFor(challenge)
      const ways = [
        { name: 'credential', headers: {} as Record<string, string>, meta: meta(credential) },
        { name: 'key', headers: { authorization: `Bearer ${apiKey}` }, meta: undefined },
      ]
      for (const way of ways) {
        const key = `order-${way.name}-${path.slice(1)}-${crypto.randomUUID()}`
        const send = (text: string, id: number) => post(toolCall('summarize', { text }, id, way.meta), { ...way.headers, 'idempotency-key': key }, path)
        const first = await send('A', 1)
        expect(first.answer.result!.content[0].text).toBe('summary of A')
        const ran = runs.length
        const other = await send('B', 2)
        expect(other.answer.result).toBeUndefined()
        expect(other.answer.id).toBe(2)
        expect(other.answer.error!.code).toBe(-32602)
        expect(other.answer.error!.data.detail).toMatch(/Idempotency-Key was already used .*another call/)
        const same = await send('A', 3)
        expect(same.response.headers.get('idempotent-replayed')).toBe('true')
        expect(same.answer.id).toBe(3)
        expect(same.answer.result).toEqual(first.answer.result)
        expect(runs.length).toBe(ran)
      }
      expect(await received()).toBe(before + 10_000n)
      expect(await accountBalance()).toBe(balance - 10_000n)
    }
  })
})

describe('credentials where no payment is due', () => {
  test('M2: a credential at the message root of a free tool call is ignored: the MCP SDK server answers it, nothing is charged, no receipt', async () => {
    const before = await received()
    const challenge = await challengeFor(toolCall('summarize'))
    const credential = await credentialFor(challenge)
    const { answer } = await post({ ...toolCall('free', {}, 'f1'), _meta: meta(credential) })
    expect(answer.error).toBeUndefined()
    expect(answer.result!.content[0].text).toBe('free')
    expect(answer.result!._meta).toBeUndefined()
    expect(await received()).toBe(before)
    // Unused, it still pays the tool it was bought for.
    const paid = await post(toolCall('summarize', { text: 'later' }, 2, meta(credential)))
    expect(paid.answer.result!._meta['org.paymentauth/receipt']).toMatchObject({ challengeId: challenge.id })
    expect(await received()).toBe(before + 10_000n)
  })
})

describe('who pays', () => {
  test('M2 M4: a call with both a _meta credential and an API key is paid by the credential alone; list methods never charge a key', async () => {
    const before = await received()
    const balance = await accountBalance()
    const challenge = await challengeFor(toolCall('summarize'))
    const credential = await credentialFor(challenge)
    const { answer } = await post(toolCall('summarize', { text: 'both' }, 1, meta(credential)), { authorization: `Bearer ${apiKey}` })
    expect(answer.result!._meta['org.paymentauth/receipt']).toMatchObject({ method: 'tempo', challengeId: challenge.id })
    expect(await received()).toBe(before + 10_000n)
    for (const method of ['tools/list', 'prompts/list', 'resources/templates/list']) {
      const listed = await post({ jsonrpc: '2.0', id: 2, method }, { authorization: `Bearer ${apiKey}` })
      expect(listed.answer.result!._meta).toBeUndefined()
    }
    expect(await accountBalance()).toBe(balance)
  })

  test("M4 I3: under settle 'after', a tool that throws or answers isError costs nothing by credential or by key (JSON and SSE); the same credential then pays a success", async () => {
    for (const path of ['/mcp', '/sse']) {
      const before = await received()
      const balance = await accountBalance()
      const credential = await credentialFor(await challengeFor(toolCall('flaky')))
      for (const fail of ['throw', 'isError'])
        for (const way of [
          { meta: meta(credential), headers: {} },
          { meta: undefined, headers: { 'x-api-key': apiKey } },
        ]) {
          const { answer } = await post(toolCall('flaky', { fail }, 3, way.meta), way.headers as Record<string, string>, path)
          expect(answer.result!.isError).toBe(true)
          expect(answer.result!._meta).toBeUndefined()
        }
      expect(await received()).toBe(before)
      expect(await accountBalance()).toBe(balance)
      const { answer } = await post(toolCall('flaky', {}, 4, meta(credential)), {}, path)
      expect(answer.result!._meta['org.paymentauth/receipt']).toMatchObject({ method: 'tempo' })
      expect(await received()).toBe(before + 10_000n)
    }
  })
})
