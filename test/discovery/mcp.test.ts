/**
 * hono-mpp/discovery and MCP: the priced tools, resources and prompts of an `mcpPayments()`
 * endpoint the app mounts are described in /llms.txt from the same price tables that issue their
 * challenges (the discovery draft has no OpenAPI form for MCP operations, so /openapi.json lists
 * only HTTP operations). What is advertised is what an unpaid call is challenged for.
 */
import { Hono } from 'hono'
import { mpp } from 'hono-mpp'
import { discovery, type OpenApiDocument, pricedMcpOperations } from 'hono-mpp/discovery'
import { mcpPayments } from 'hono-mpp/mcp'
import { describe, expect, test } from 'vitest'
import { fakeMethod } from '../helpers/fake-method.js'

const secret = 'a discovery mcp test secret, at least thirty-two bytes'

function app() {
  const method = Object.assign(fakeMethod(), { deferrable: ['voucher'] })
  const pay = mpp({ secret, methods: [method] })
  const app = new Hono()
  app.get('/articles/:id', pay.charge({ amount: '0.01' }), (c) => c.text('article'))
  app.post(
    '/mcp',
    mcpPayments({
      secret,
      methods: [method],
      tools: { summarize: { amount: '0.25', description: 'One summary', settle: 'after' } },
      resources: { 'file:///reports/{id}': { amount: '1.5' } },
      prompts: { expert: { amount: '0.001' } },
    }),
    (c) => c.json({ jsonrpc: '2.0', id: 1, result: {} }),
  )
  app.route('/', discovery(app, { info: { title: 'Tools shop', version: '1' } }))
  return app
}

describe('discovery of MCP operations', () => {
  test('/llms.txt lists each priced tool, resource and prompt with its price, and how an MCP client pays', async () => {
    const shop = app()
    const text = await (await shop.request('https://shop.example/llms.txt')).text()
    expect(text).toContain('## Paid MCP operations')
    expect(text).toContain('MCP server (Streamable HTTP, JSON-RPC over POST) at https://shop.example/mcp:')
    expect(text).toContain(
      '- tool `summarize` (tools/call): 0.25 (250000 base units of FAKE) via fake/charge, charged only when the call succeeds. One summary',
    )
    expect(text).toContain('- resource `file:///reports/{id}` (resources/read): 1.5 (1500000 base units of FAKE) via fake/charge')
    expect(text).toContain('- prompt `expert` (prompts/get): 0.001 (1000 base units of FAKE) via fake/charge')
    expect(text).toContain('-32042')
    expect(text).toContain('params._meta["org.paymentauth/credential"]')
    // The HTTP route is still listed as before.
    expect(text).toContain('- GET https://shop.example/articles/{id}: 0.01 (10000 base units of FAKE) via fake/charge')
  })

  test('what /llms.txt advertises for a tool is what an unpaid tools/call is challenged for; /openapi.json lists no MCP operation', async () => {
    const shop = app()
    const [summarize] = pricedMcpOperations(shop).filter((operation) => operation.name === 'summarize')
    expect(summarize).toMatchObject({ endpoint: '/mcp', kind: 'tool', settle: 'after' })
    const answer = (await (
      await shop.request('/mcp', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'summarize', arguments: {} } }),
      })
    ).json()) as { error: { code: number; data: { challenges: { method: string; intent: string; request: { amount: string; currency: string } }[] } } }
    expect(answer.error.code).toBe(-32042)
    const [challenge] = answer.error.data.challenges
    expect(summarize!.offers).toEqual([
      {
        intent: challenge!.intent,
        method: challenge!.method,
        amount: challenge!.request.amount,
        currency: challenge!.request.currency,
        description: 'One summary',
      },
    ])
    const document = (await (await shop.request('/openapi.json')).json()) as OpenApiDocument
    expect(Object.keys(document.paths!)).toEqual(['/articles/{id}'])
  })

  test('an app without mcpPayments has no MCP section', async () => {
    const plain = new Hono()
    plain.get('/x', mpp({ secret, methods: [fakeMethod()] }).charge({ amount: '1' }), (c) => c.text('x'))
    plain.route('/', discovery(plain, { info: { title: 'Plain', version: '1' } }))
    expect(await (await plain.request('/llms.txt')).text()).not.toContain('MCP')
    expect(pricedMcpOperations(plain)).toEqual([])
  })
})
