/**
 * hono-mpp/discovery (draft-payment-discovery-00): GET /openapi.json and GET /llms.txt built from
 * the same charge() definitions that issue the 402s. What is advertised is compared with what a
 * real unpaid request is charged; the document is checked against the draft's JSON Schema for
 * x-payment-info (encoded with zod), OpenAPI 3.1's required structure, and the reference SDK's
 * discovery validator (mppx/discovery).
 */
import { Hono } from 'hono'
import { mpp } from 'hono-mpp'
import { discovery, mergePaymentInfo, type OpenApiDocument, pricedMcpOperations } from 'hono-mpp/discovery'
import { mcpPayments } from 'hono-mpp/mcp'
import { validate } from 'mppx/discovery'
import { describe, expect, test } from 'vitest'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, requestOf } from '../helpers/http.js'
import { openApi31Problems } from '../helpers/openapi-check.js'

const secret = 'a discovery test secret, at least thirty-two bytes'

function shop() {
  const method = fakeMethod()
  const other = fakeMethod({ name: 'other', currency: 'OTHER', decimals: 2 })
  const pay = mpp({ secret, methods: [method] })
  const app = new Hono()
  app.get(
    '/articles/:id',
    pay.charge({ amount: '0.01', description: 'One article' }, (c) => c.json({ id: c.req.param('id') })),
  )
  app.post('/summarize', pay.charge({ amount: async (c) => String((await c.req.text()).length / 1000), description: '0.001 per character of the text' }), (c) =>
    c.json({ summary: '...' }),
  )
  app.get('/premium', pay.charge({ amount: '3', methods: [other], settle: 'after' }), (c) => c.json({ premium: true }))
  app.use('/api/*', pay.charge({ amount: '2' }))
  app.get('/api/items', (c) => c.json([]))
  app.post('/api/items/:item{[0-9]+}', (c) => c.json({}))
  app.get('/free', (c) => c.json({ free: true }))
  app.route(
    '/',
    discovery(app, { info: { title: 'Test shop', version: '1.2.3', description: 'Articles and summaries' }, serviceInfo: { categories: ['data'] } }),
  )
  return app
}

describe('hono-mpp/discovery', () => {
  test('GET /openapi.json: every priced operation with its offers and 402, static, dynamic and per-route methods; the free route is not listed', async () => {
    const app = shop()
    const response = await app.request('https://shop.example/openapi.json')
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toMatch(/^application\/json/)
    expect(response.headers.get('cache-control')).toBe('public, max-age=300')
    expect(response.headers.get('access-control-allow-origin')).toBe('*')
    const document = (await response.json()) as OpenApiDocument
    expect(document.openapi).toBe('3.1.0')
    expect(document.info).toEqual({ title: 'Test shop', version: '1.2.3', description: 'Articles and summaries' })
    expect(document['x-service-info']).toEqual({ categories: ['data'], docs: { llms: 'https://shop.example/llms.txt' } })
    const paths = document.paths!
    expect(Object.keys(paths).sort()).toEqual(['/api/items', '/api/items/{item}', '/articles/{id}', '/premium', '/summarize'])
    expect(paths['/articles/{id}']!.get).toEqual({
      summary: 'One article',
      parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
      'x-payment-info': { offers: [{ intent: 'charge', method: 'fake', amount: '10000', currency: 'FAKE', description: 'One article' }] },
      responses: { '200': { description: 'Successful response' }, '402': { description: 'Payment Required' } },
    })
    // A price function: no made-up number, the rule in words, the currency it is charged in.
    expect((paths['/summarize']!.post as Record<string, unknown>)['x-payment-info']).toEqual({
      offers: [{ intent: 'charge', method: 'fake', amount: null, currency: 'FAKE', description: '0.001 per character of the text' }],
    })
    expect((paths['/premium']!.get as Record<string, unknown>)['x-payment-info']).toEqual({
      offers: [{ intent: 'charge', method: 'other', amount: '300', currency: 'OTHER' }],
    })
    for (const [path, method] of [
      ['/api/items', 'get'],
      ['/api/items/{item}', 'post'],
    ] as const)
      expect((paths[path]![method] as Record<string, unknown>)['x-payment-info']).toEqual({
        offers: [{ intent: 'charge', method: 'fake', amount: '2000000', currency: 'FAKE' }],
      })

    expect(openApi31Problems(document)).toEqual([])
    // The reference SDK's validator: no error (warnings only, e.g. a POST without a requestBody schema).
    expect(validate(document).filter((issue) => issue.severity === 'error')).toEqual([])
  })

  test('what is advertised is what a real unpaid request is charged (method, intent, amount, currency)', async () => {
    const app = shop()
    const document = (await (await app.request('/openapi.json')).json()) as OpenApiDocument
    const requests: [string, string, string, RequestInit?][] = [
      ['/articles/{id}', 'get', '/articles/42'],
      ['/premium', 'get', '/premium'],
      ['/api/items', 'get', '/api/items'],
      ['/api/items/{item}', 'post', '/api/items/7', { method: 'POST' }],
      ['/summarize', 'post', '/summarize', { method: 'POST', body: 'x'.repeat(250) }],
    ]
    for (const [path, method, url, init] of requests) {
      const unpaid = await app.request(url, init)
      expect(unpaid.status).toBe(402)
      const [challenge] = challengesOf(unpaid)
      const charged = requestOf(challenge!)
      const [offer] = ((document.paths![path]![method] as Record<string, unknown>)['x-payment-info'] as { offers: Record<string, unknown>[] }).offers
      expect({ method: challenge!.method, intent: challenge!.intent, currency: charged.currency }).toEqual({
        method: offer!.method,
        intent: offer!.intent,
        currency: offer!.currency,
      })
      // A dynamic offer says null; its 402 states the amount.
      expect(offer!.amount).toBe(path === '/summarize' ? null : charged.amount)
    }
  })

  test('GET /llms.txt: what is sold, at what price, and how to pay', async () => {
    const app = shop()
    const response = await app.request('https://shop.example/llms.txt')
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/)
    const text = await response.text()
    expect(text).toMatch(/^# Test shop\n\n> Articles and summaries\n/)
    expect(text).toContain('- GET https://shop.example/articles/{id}: 0.01 (10000 base units of FAKE) via fake/charge. One article')
    expect(text).toContain('- POST https://shop.example/summarize: a price set per request (0.001 per character of the text) via fake/charge in FAKE')
    expect(text).toContain('- GET https://shop.example/premium: 3 (300 base units of OTHER) via other/charge, charged only when the request succeeds')
    expect(text).not.toContain('/free')
    expect(text).toContain('Authorization: Payment')
    expect(text).toContain('https://shop.example/openapi.json')
  })

  test('mergePaymentInfo: a hand-written OpenAPI document keeps its own content and gains x-payment-info and 402s', async () => {
    const app = shop()
    const mine: OpenApiDocument = {
      openapi: '3.1.0',
      info: { title: 'Mine', version: '9' },
      paths: {
        '/articles/{id}': {
          get: {
            summary: 'Read an article',
            parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'integer' } }],
            responses: { '200': { description: 'The article' }, '404': { description: 'No such article' } },
          },
          delete: { parameters: [{ name: 'id', in: 'path', required: true }], responses: { '204': { description: 'Deleted' } } },
        },
        '/free': { get: { responses: { '200': { description: 'Free' } } } },
      },
      components: { schemas: { Article: { type: 'object' } } },
    }
    const before = structuredClone(mine)
    const merged = mergePaymentInfo(mine, app)
    expect(mine).toEqual(before)
    const article = merged.paths!['/articles/{id}']!
    expect(article.get).toEqual({
      ...(before.paths!['/articles/{id}']!.get as object),
      'x-payment-info': { offers: [{ intent: 'charge', method: 'fake', amount: '10000', currency: 'FAKE', description: 'One article' }] },
      responses: { '200': { description: 'The article' }, '404': { description: 'No such article' }, '402': { description: 'Payment Required' } },
    })
    // Unpriced operations and the document's other parts are untouched; priced ones it lacked are added.
    expect(article.delete).toEqual(before.paths!['/articles/{id}']!.delete)
    expect(merged.paths!['/free']).toEqual(before.paths!['/free'])
    expect(merged.components).toEqual(before.components)
    expect(Object.keys(merged.paths!).sort()).toEqual(['/api/items', '/api/items/{item}', '/articles/{id}', '/free', '/premium', '/summarize'])
    expect(openApi31Problems(merged)).toEqual([])
    expect(validate(merged).filter((issue) => issue.severity === 'error')).toEqual([])

    // discovery({ document }) serves the merged document.
    const served = new Hono()
    const pay = mpp({ secret, methods: [fakeMethod()] })
    served.get('/articles/:id', pay.charge({ amount: '0.01', description: 'One article' }), (c) => c.text('article'))
    served.route('/', discovery(served, { info: { title: 'ignored', version: '0' }, document: () => mine, llms: false }))
    const document = (await (await served.request('/openapi.json')).json()) as OpenApiDocument
    expect(document.info.title).toBe('Mine')
    expect(document.paths!['/articles/{id}']!.get).toMatchObject({ summary: 'Read an article', 'x-payment-info': { offers: [{ amount: '10000' }] } })
    expect((await served.request('/llms.txt')).status).toBe(404)
  })

  test('priced routes of a sub-app with its own onError, mounted by app.route(), are listed (Hono wraps their handlers)', async () => {
    const method = fakeMethod()
    const pay = mpp({ secret, methods: [method] })
    const api = new Hono()
    api.onError((error, c) => c.json({ error: error.message }, 500))
    api.post('/top-up', pay.charge({ amount: async () => '1', description: 'Top up' }), (c) => c.json({ ok: true }))
    api.get('/reports/:id', pay.charge({ amount: '0.5' }), (c) => c.json({ ok: true }))
    api.post('/mcp', mcpPayments({ secret, methods: [method], tools: { lookup: { amount: '0.25' } } }), (c) => c.json({}))
    const app = new Hono()
    app.route('/v1', api)
    app.route('/', discovery(app, { info: { title: 'Nested', version: '1' } }))
    const document = (await (await app.request('https://shop.example/openapi.json')).json()) as OpenApiDocument
    expect(Object.keys(document.paths!).sort()).toEqual(['/v1/reports/{id}', '/v1/top-up'])
    const info = (path: string, method: string) => (document.paths![path] as Record<string, Record<string, unknown>>)[method]!['x-payment-info']
    expect(info('/v1/top-up', 'post')).toMatchObject({ offers: [{ intent: 'charge', amount: null, description: 'Top up' }] })
    expect(info('/v1/reports/{id}', 'get')).toMatchObject({ offers: [{ amount: '500000' }] })
    expect(pricedMcpOperations(app)).toMatchObject([{ endpoint: '/v1/mcp', kind: 'tool', name: 'lookup' }])
    // The wrapped routes still answer through the sub-app: an unpaid request is challenged.
    expect((await app.request('https://shop.example/v1/reports/7')).status).toBe(402)
  })

  test('discovery without a title or version is refused at construction', () => {
    expect(() => discovery(new Hono(), { info: { title: 'x' } } as never)).toThrow(/info: \{ title, version \}/)
  })
})
