/**
 * Interop on the local Tempo chain: mppx's MCP client (over the MCP SDK client and its Streamable
 * HTTP transport) pays a tool of an MCP SDK server mounted behind `mcpPayments`.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js'
import { Hono } from 'hono'
import { tempo as tempoClient } from 'mppx/client'
import { McpClient } from 'mppx/mcp/client'
import { type Address, createClient, type Hex, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { getTransactionReceipt } from 'viem/actions'
import { beforeAll, describe, expect, inject, test } from 'vitest'
import { balanceOf, fundedAccount, localChain } from '../../scripts/local-chain.js'
import { tempo } from '../../src/tempo/index.js'
import { mcpPayments } from '../../src/transports/mcp.js'

const rpcUrl = inject('rpcUrl')
let payer: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  payer = await fundedAccount(rpcUrl, { amount: '5', funder: 1 })
})

async function setup(options: { sse: boolean }) {
  const recipient: Address = privateKeyToAccount(generatePrivateKey()).address
  let paidRuns = 0
  const app = new Hono()
  app.all(
    '/mcp',
    mcpPayments({
      secret: 'mcp-interop-secret-0123456789abcdef',
      methods: [tempo({ rpcUrl, chainId: 31337, recipient })],
      tools: { summarize: { amount: '0.01', description: 'one summary' } },
    }),
    async (c) => {
      // Stateless Streamable HTTP: one server and transport per request.
      const server = new McpServer({ name: 'paid-tools', version: '1.0.0' })
      server.registerTool('summarize', { description: 'a paid summary' }, async () => {
        paidRuns++
        return { content: [{ type: 'text', text: `summary paid by ${c.get('payment').payer}` }] }
      })
      server.registerTool('echo', { description: 'free' }, async () => ({ content: [{ type: 'text', text: 'echo' }] }))
      const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: !options.sse })
      await server.connect(transport)
      return transport.handleRequest(c.req.raw)
    },
  )
  const sent: string[] = []
  const contentTypes: string[] = []
  const transport = new StreamableHTTPClientTransport(new URL('http://mcp.test/mcp'), {
    fetch: async (url, init) => {
      sent.push(typeof init?.body === 'string' ? init.body : '')
      const response = await app.fetch(new Request(url, init))
      contentTypes.push(response.headers.get('content-type') ?? '')
      return response
    },
  })
  const client = new Client({ name: 'paying-agent', version: '1.0.0' })
  await client.connect(transport)
  McpClient.wrap(client, {
    methods: [tempoClient.charge({ account: payer, getClient: () => createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }) })],
  })
  return { app, client, recipient, sent, contentTypes, paidRuns: () => paidRuns }
}

describe('mppx MCP client pays an MCP SDK server on the local chain', () => {
  test.each([{ sse: false }, { sse: true }])(
    'M1 M2 M4 M5 C9: a priced tool is paid once (result + receipt, recipient +amount exactly), the credential replayed is refused, a free tool needs no payment (sse: $sse)',
    async ({ sse }) => {
      const s = await setup({ sse })
      expect(s.client.getServerCapabilities()?.experimental?.payment).toEqual({ methods: { tempo: { intents: ['charge'] } } })

      const result = (await s.client.callTool({ name: 'summarize', arguments: {} })) as {
        content: { text: string }[]
        receipt?: { status: string; method: string; reference: Hex; challengeId: string; timestamp: string }
        _meta?: Record<string, unknown>
      }
      expect(result.content[0]!.text).toBe(`summary paid by ${payer.address}`)
      const receipt = result.receipt!
      expect(receipt).toMatchObject({ status: 'success', method: 'tempo' })
      expect(receipt.reference).toMatch(/^0x[0-9a-f]{64}$/)
      expect(result._meta!['org.paymentauth/receipt']).toEqual(receipt)
      const onChain = await getTransactionReceipt(createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) }), { hash: receipt.reference })
      expect(onChain.status).toBe('success')
      expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
      expect(s.paidRuns()).toBe(1)

      // The paid retry carried the credential in params._meta; it pays once only.
      const paidIndex = s.sent.findIndex((body) => body.includes('org.paymentauth/credential'))
      const paidBody = s.sent[paidIndex]!
      // The receipt travelled in the transport's own framing (JSON or an SSE event).
      expect(s.contentTypes[paidIndex]).toContain(sse ? 'text/event-stream' : 'application/json')
      const paid = JSON.parse(paidBody) as { params: { _meta: Record<string, { challenge: { id: string } }> } }
      expect(paid.params._meta['org.paymentauth/credential']!.challenge.id).toBe(receipt.challengeId)
      const replay = await s.app.request('http://mcp.test/mcp', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: paidBody,
      })
      const replayText = await replay.text()
      const replayAnswer = JSON.parse(sse && replayText.startsWith('event') ? replayText.split('data: ')[1]! : replayText) as {
        error?: { code: number; data: { problem: { detail: string } } }
        result?: unknown
      }
      expect(replayAnswer.result).toBeUndefined()
      expect(replayAnswer.error!.code).toBe(-32043)
      expect(replayAnswer.error!.data.problem.detail).toMatch(/already been used/)
      expect(s.paidRuns()).toBe(1)
      expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)

      const before = s.sent.length
      const free = (await s.client.callTool({ name: 'echo', arguments: {} })) as { content: { text: string }[]; receipt?: unknown }
      expect(free.content[0]!.text).toBe('echo')
      expect(free.receipt).toBeUndefined()
      // One request, no challenge round trip.
      expect(s.sent.length - before).toBe(1)
      expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
      await s.client.close()
    },
  )
})
