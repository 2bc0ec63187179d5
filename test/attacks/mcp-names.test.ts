/**
 * Priced MCP operations under other names. The MCP SDK's McpServer resolves `resources/read` by
 * `new URL(uri).href` (then its uri templates), and `tools/call` / `prompts/get` by exact name;
 * `mcpPayments` must price exactly what the server would serve. Every attack goes through the
 * real stack: a Hono app, `mcpPayments`, and an MCP SDK server behind its Streamable HTTP
 * transport. The same server without `mcpPayments` is the oracle: a spelling is an attack when
 * the unguarded server serves the paid content for it.
 */
import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js'
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js'
import fc from 'fast-check'
import { Hono } from 'hono'
import { describe, expect, test } from 'vitest'
import type { PaymentEvent } from '../../src/index.js'
import { decodeJson } from '../../src/protocol/encoding.js'
import { type McpChallenge, type McpPaymentOptions, mcpPayments } from '../../src/transports/mcp.js'
import { fakeMethod } from '../helpers/fake-method.js'

const secret = 'mcp-names-secret-0123456789abcdef-0123456789'

type RpcAnswer = { jsonrpc: string; id: unknown; result?: Record<string, any>; error?: { code: number; message: string; data?: any } }

/** What a paid operation returns: its text starts with PAID. */
const paidText = (answer: RpcAnswer | undefined): boolean => JSON.stringify(answer?.result ?? null).includes('PAID')

const priced: Pick<McpPaymentOptions, 'tools' | 'resources' | 'prompts'> = {
  tools: { summarize: { amount: '0.01' } },
  resources: {
    'file:///report.pdf': { amount: '0.5' },
    'https://example.com/r': { amount: '0.25' },
    'file:///reports/{id}': { amount: '0.1' },
  },
  prompts: { expert: { amount: '0.001' } },
}

/** An MCP SDK server: the paid report, an https resource, a template of paid reports, free things. */
function mcpServer(runs: string[]): McpServer {
  const server = new McpServer({ name: 'shop', version: '1.0.0' })
  const read = (text: string) => async (uri: URL) => {
    runs.push(uri.href)
    return { contents: [{ uri: uri.href, text }] }
  }
  server.registerResource('report', 'file:///report.pdf', {}, read('PAID report'))
  server.registerResource('remote', 'https://example.com/r', {}, read('PAID remote'))
  server.registerResource('free', 'file:///free.txt', {}, read('free text'))
  server.registerResource('reports', new ResourceTemplate('file:///reports/{id}', { list: undefined }), {}, async (uri, { id }) => {
    runs.push(uri.href)
    return { contents: [{ uri: uri.href, text: `PAID report ${String(id)}` }] }
  })
  server.registerTool('summarize', { description: 'paid' }, async () => {
    runs.push('summarize')
    return { content: [{ type: 'text', text: 'PAID summary' }] }
  })
  server.registerTool('echo', { description: 'free' }, async () => ({ content: [{ type: 'text', text: 'echo' }] }))
  server.registerPrompt('expert', { description: 'paid' }, async () => {
    runs.push('expert')
    return { messages: [{ role: 'user', content: { type: 'text', text: 'PAID prompt' } }] }
  })
  return server
}

function setup(options: Partial<McpPaymentOptions> = {}) {
  const method = Object.assign(fakeMethod(), { deferrable: ['voucher'] })
  const events: PaymentEvent[] = []
  const runs: string[] = []
  const unguardedRuns: string[] = []
  const serve = (log: string[]) => async (c: { req: { raw: Request } }) => {
    // Stateless Streamable HTTP: one server and transport per request.
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true })
    await mcpServer(log).connect(transport)
    return transport.handleRequest(c.req.raw)
  }
  const app = new Hono()
  app.post('/mcp', mcpPayments({ secret, methods: [method], onEvent: (event) => events.push(event), ...priced, ...options }), serve(runs))
  app.post('/unguarded', serve(unguardedRuns))

  let nextId = 1
  const post = async (path: string, body: string): Promise<RpcAnswer> => {
    const response = await app.request(`http://mcp.test${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body,
    })
    expect(response.status).toBe(200)
    return (await response.json()) as RpcAnswer
  }
  const message = (method: string, params: unknown, meta?: unknown) =>
    JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params: meta === undefined ? params : { ...(params as object), _meta: meta } })
  const read = (uri: unknown, meta?: unknown) => post('/mcp', message('resources/read', { uri }, meta))
  const readUnguarded = (uri: unknown) => post('/unguarded', message('resources/read', { uri }))
  const pay = (challenge: McpChallenge, token: string) => {
    method.vouchers.add(token)
    return { 'org.paymentauth/credential': { challenge, payload: { type: 'voucher', token } } }
  }
  return { app, method, events, runs, unguardedRuns, post, message, read, readUnguarded, pay }
}

/** A -32042 answer: the payment challenge, bound to `target`; nothing was served. */
function expectChallenge(answer: RpcAnswer, target: string) {
  expect(answer.result).toBeUndefined()
  expect(answer.error?.code).toBe(-32042)
  const challenge = answer.error!.data.challenges[0] as McpChallenge
  expect((decodeJson(challenge.opaque) as { r: string }).r).toBe(target)
  return challenge
}

/** A -32602 answer from the payment layer, naming the reason; nothing was served. */
function expectInvalid(answer: RpcAnswer, detail: RegExp) {
  expect(answer.result).toBeUndefined()
  expect(answer.error?.code).toBe(-32602)
  expect(answer.error!.data.problem).toMatchObject({ type: 'https://paymentauth.org/problems/bad-request', status: 400 })
  expect(answer.error!.data.detail).toMatch(detail)
}

// Spellings the WHATWG URL parser (hence the MCP SDK) folds into a priced uri.
const reportSpellings = [
  'FILE:///report.pdf',
  'File:///report.pdf',
  'file:///a/../report.pdf',
  'file:///./report.pdf',
  'file:///a/b/../../report.pdf',
  'file:///%2e%2e/report.pdf',
  'file:///x/%2E%2e/report.pdf',
  'file:///x/.%2e/report.pdf',
  'file://localhost/report.pdf',
  'file://LOCALHOST/report.pdf',
  ' file:///report.pdf',
  'file:///report.pdf\n',
  '\t\u0000file:///report.pdf \u001f',
  'file:///rep\tort.pdf',
  'file:///rep\r\nort.pdf',
  'file:\\\\\\report.pdf',
  'file:///x\\..\\report.pdf',
  'file:report.pdf',
  'file:/report.pdf',
]
const remoteSpellings = [
  'https://EXAMPLE.com:443/a/../r',
  'HTTPS://example.com/r',
  'https://Example.COM/r',
  'https://example.com:443/r',
  'https://example.com:0443/r',
  'https://example.com/./r',
  'https://example.com\\r',
  'https:example.com/r',
  'https:/example.com/r',
  'https:\\\\example.com\\r',
  'https://ex%41mple.com/r',
  'https://exam\u00adple.com/r',
  'https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/r',
  ' https://example.com/r\t',
]
const templateSpellings: [string, string][] = [
  ['file:///reports/7', 'file:///reports/7'],
  ['FILE:///reports/7', 'file:///reports/7'],
  ['file://localhost/reports/x/../7', 'file:///reports/7'],
  ['file:///reports/%37', 'file:///reports/%37'],
  ['file:///reports/7?download', 'file:///reports/7?download'],
  ['file:///reports/7#page=2', 'file:///reports/7#page=2'],
]

describe('MCP resources are priced by the uri the server resolves', () => {
  test.each<[string, string]>([
    ...reportSpellings.map((uri): [string, string] => [uri, 'file:///report.pdf']),
    ...remoteSpellings.map((uri): [string, string] => [uri, 'https://example.com/r']),
    ...templateSpellings,
  ])('M1: resources/read %j, which the MCP SDK serves as a priced resource, gets the payment challenge (bound to %s)', async (uri, canonical) => {
    const s = setup()
    // The attack is real: the same server, unguarded, serves the paid content for this spelling.
    expect(paidText(await s.readUnguarded(uri))).toBe(true)
    expectChallenge(await s.read(uri), `resources/read ${canonical}`)
    expect(s.runs).toEqual([])
    expect(s.events.map((event) => event.type)).toEqual(['challenge'])
  })

  test.each([
    ['a fragment', 'file:///report.pdf#page=2', 'file:///report.pdf'],
    ['a percent-encoded letter', 'file:///report%2Epdf', 'file:///report.pdf'],
    ['a percent-encoded slash', 'file:///reports%2F7', 'file:///reports%2F7'],
  ])('M1: a spelling the SDK does not resolve but a decoding handler would (%s) is charged too, never served free', async (_name, uri, canonical) => {
    const s = setup()
    expectChallenge(await s.read(uri), `resources/read ${canonical}`)
    expect(s.runs).toEqual([])
  })

  test.each([
    ['a relative reference', 'report.pdf'],
    ['an empty string', ''],
    ['a network-path reference', '//example.com/r'],
    ['a scheme without host', 'https://'],
    ['a space in the host', 'https://exa mple.com/r'],
    ['an unclosed IPv6 host', 'http://[::1/r'],
    ['a port out of range', 'https://example.com:65536/r'],
  ])('M1: resources/read with a uri that does not parse (%s) gets -32602 and never reaches the server', async (_name, uri) => {
    const s = setup()
    expectInvalid(await s.read(uri), /params\.uri is not an absolute URL/)
    expect(s.runs).toEqual([])
    expect(s.events).toMatchObject([{ type: 'rejected', reason: 'bad-request', status: 400 }])
  })

  test.each([
    ['a number', 42],
    ['null', null],
    ['an array holding the priced uri', ['file:///report.pdf']],
    ['an object', { href: 'file:///report.pdf' }],
  ])('M1: resources/read whose uri is not a string (%s) gets -32602 and never reaches the server', async (_name, uri) => {
    const s = setup()
    expectInvalid(await s.read(uri), /resources\/read needs params\.uri as a string/)
    expect(s.runs).toEqual([])
  })

  test('M1: a uri only in the prototype of params (a "__proto__" key) or missing params are refused, not passed on', async () => {
    const s = setup()
    for (const body of [
      '{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"__proto__":{"uri":"file:///report.pdf"}}}',
      '{"jsonrpc":"2.0","id":2,"method":"resources/read"}',
      '{"jsonrpc":"2.0","id":3,"method":"resources/read","params":["file:///report.pdf"]}',
    ])
      expectInvalid(await s.post('/mcp', body), /needs params\.uri as a string/)
    expect(s.runs).toEqual([])
  })

  test('M1: with duplicated "uri" keys the last one counts, as in the server: the priced one last is challenged', async () => {
    const s = setup()
    const body = '{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///free.txt","uri":"FILE:///report.pdf"}}'
    expect(paidText(await s.post('/unguarded', body))).toBe(true)
    expectChallenge(await s.post('/mcp', body), 'resources/read file:///report.pdf')
    const reversed = '{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"FILE:///report.pdf","uri":"file:///free.txt"}}'
    expect((await s.post('/mcp', reversed)).result!.contents[0].text).toBe('free text')
    expect(s.runs).toEqual(['file:///free.txt'])
  })

  test('M1: a batch holding another spelling of a priced uri, or a uri that does not parse, is refused whole', async () => {
    const s = setup()
    for (const uri of ['FILE:///report.pdf', 'not a url']) {
      const body = JSON.stringify([
        { jsonrpc: '2.0', id: 1, method: 'resources/read', params: { uri: 'file:///free.txt' } },
        { jsonrpc: '2.0', id: 2, method: 'resources/read', params: { uri } },
      ])
      const answers = (await s.post('/mcp', body)) as unknown as RpcAnswer[]
      expect(answers.map((answer) => answer.error?.code)).toEqual([-32600, -32600])
    }
    expect(s.runs).toEqual([])
  })

  test('M2 M4: paid under one spelling, the credential pays the canonical uri once (same operation); it cannot pay another report of the template', async () => {
    const s = setup()
    const challenge = expectChallenge(await s.read('FILE://localhost/x/../report.pdf'), 'resources/read file:///report.pdf')
    const paid = await s.read('file:///report.pdf', s.pay(challenge, 'v1'))
    expect(paid.result!.contents[0].text).toBe('PAID report')
    expect(paid.result!._meta['org.paymentauth/receipt']).toMatchObject({ status: 'success', challengeId: challenge.id, reference: 'ref-v1' })
    expect(s.method.settledOnChain).toEqual(['v1'])

    const forSeven = expectChallenge(await s.read('file:///reports/7'), 'resources/read file:///reports/7')
    const other = await s.read('file:///reports/8', s.pay(forSeven, 'v2'))
    expect(other.error!.code).toBe(-32043)
    expect(other.error!.data.problem.detail).toBe('the challenge was issued for resources/read file:///reports/7, not for resources/read file:///reports/8')
    const seven = await s.read('FILE:///reports/7', s.pay(forSeven, 'v3'))
    expect(seven.result!.contents[0].text).toBe('PAID report 7')
    expect(s.runs).toEqual(['file:///report.pdf', 'file:///reports/7'])
    expect(s.method.settledOnChain).toEqual(['v1', 'v3'])
  })

  test('M1: free resources stay free under their own spellings', async () => {
    const s = setup()
    const answer = await s.read('FILE://localhost/free.txt')
    expect(answer.result!.contents[0].text).toBe('free text')
    expect(answer.result!._meta).toBeUndefined()
  })
})

describe('MCP tools and prompts are priced by exact name, as the server finds them', () => {
  const lookalikes = [
    'Summarize',
    'SUMMARIZE',
    ' summarize',
    'summarize ',
    'summarize\t',
    'summarize\u0000',
    '\uff53ummarize',
    'summarize\u200b',
    'toString',
    'constructor',
    '__proto__',
    'hasOwnProperty',
    'valueOf',
  ]

  test.each(lookalikes)('M1: tools/call %j is not the priced tool: the server never runs it (free or not, nothing paid leaks)', async (name) => {
    const s = setup()
    for (const path of ['/mcp', '/unguarded']) {
      const answer = await s.post(path, s.message('tools/call', { name, arguments: {} }))
      expect(paidText(answer)).toBe(false)
    }
    expect(s.runs).toEqual([])
    expect(s.unguardedRuns).toEqual([])
  })

  test.each([
    ['tools/call', 'name', 'summarize'],
    ['prompts/get', 'name', 'expert'],
  ])('M1: %s whose %s is not a string (an array holding the priced name, a number, missing) gets -32602', async (rpcMethod, field, name) => {
    const s = setup()
    for (const params of [{ [field]: [name] }, { [field]: 1 }, {}, { [field]: { toString: name } }])
      expectInvalid(await s.post('/mcp', s.message(rpcMethod, params)), new RegExp(`${rpcMethod} needs params\\.${field} as a string`))
    expect(s.runs).toEqual([])
  })

  test('M1: with duplicated "name" keys the last one counts, as in the server', async () => {
    const s = setup()
    const body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{},"name":"summarize"}}'
    expect(paidText(await s.post('/unguarded', body))).toBe(true)
    expectChallenge(await s.post('/mcp', body), 'tools/call summarize')
    const prompt = '{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"free","name":"expert"}}'
    expect(paidText(await s.post('/unguarded', prompt))).toBe(true)
    expectChallenge(await s.post('/mcp', prompt), 'prompts/get expert')
    expect(s.runs).toEqual([])
  })

  test('M1: names that are Object.prototype keys are priced like any other when listed (own keys, no prototype lookup)', async () => {
    const s = setup({ tools: { ['__proto__']: { amount: '1' }, toString: { amount: '1' }, constructor: { amount: '1' } } })
    for (const name of ['__proto__', 'toString', 'constructor']) expectChallenge(await s.post('/mcp', s.message('tools/call', { name })), `tools/call ${name}`)
    // and a table without them does not price them through its prototype
    const plain = setup()
    for (const name of ['__proto__', 'toString', 'constructor', 'hasOwnProperty'])
      expect((await plain.post('/mcp', plain.message('tools/call', { name }))).error?.code).not.toBe(-32042)
  })
})

describe('fuzz: whatever the spelling, what the server would serve as paid is charged', () => {
  const bases = ['file:///report.pdf', 'https://example.com/r', 'file:///reports/7', 'file:///free.txt']
  const whitespace = fc.constantFrom(' ', '\t', '\n', '\r', '\u0000', '\u001f', '\u000b')
  const mutation = fc.oneof(
    // scheme case
    fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }).map((flips) => (uri: string) => {
      const colon = uri.indexOf(':')
      return [...uri.slice(0, colon)].map((ch, i) => (flips[i % 8] ? ch.toUpperCase() : ch)).join('') + uri.slice(colon)
    }),
    // host case, default port, trailing-dot-free variants
    fc
      .constantFrom('EXAMPLE.com', 'Example.Com', 'example.com:443', 'EXAMPLE.COM:0443', 'ex%61mple.com')
      .map((host) => (uri: string) => uri.replace('example.com', host)),
    // file host spellings
    fc
      .constantFrom('file://localhost/', 'file://LocalHost/', 'file:/', 'file:', 'file:\\\\\\', 'file:////')
      .map((prefix) => (uri: string) => uri.replace('file:///', prefix)),
    // dot segments and their encodings, at a random slash
    fc.tuple(fc.nat(), fc.constantFrom('x/../', './', 'x/%2e%2e/', 'x/%2E./', '%2e/', 'x/y/../../', '../', 'x/.%2E/')).map(([at, insert]) => (uri: string) => {
      const slashes = [...uri.matchAll(/\//g)].map((m) => m.index!).filter((i) => i > uri.indexOf('://') + 2)
      if (slashes.length === 0) return uri
      const i = slashes[at % slashes.length]! + 1
      return uri.slice(0, i) + insert + uri.slice(i)
    }),
    // backslashes for slashes after the scheme
    fc.nat().map((at) => (uri: string) => {
      const slashes = [...uri.matchAll(/\//g)].map((m) => m.index!)
      if (slashes.length === 0) return uri
      const i = slashes[at % slashes.length]!
      return `${uri.slice(0, i)}\\${uri.slice(i + 1)}`
    }),
    // whitespace and controls around, or tab/newline inside
    fc.tuple(whitespace, fc.constantFrom('start', 'end', 'inside'), fc.nat()).map(([ch, where, at]) => (uri: string) => {
      if (where === 'start') return ch + uri
      if (where === 'end') return uri + ch
      const i = at % (uri.length + 1)
      return ch === '\t' || ch === '\n' || ch === '\r' ? uri.slice(0, i) + ch + uri.slice(i) : uri
    }),
    // a percent-encoded character of the path
    fc.nat().map((at) => (uri: string) => {
      const start = uri.lastIndexOf('/') + 1
      if (start >= uri.length) return uri
      const i = start + (at % (uri.length - start))
      return `${uri.slice(0, i)}%${uri.charCodeAt(i).toString(16).toUpperCase().padStart(2, '0')}${uri.slice(i + 1)}`
    }),
    // a query or a fragment
    fc.constantFrom('?', '#', '?a=1', '#x', '?#').map((suffix) => (uri: string) => uri + suffix),
  )

  test('M1: if the unguarded MCP SDK server serves paid content for a spelling, the guarded one challenges; the guarded one never serves it unpaid', async () => {
    const s = setup()
    let attacks = 0
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...bases), fc.array(mutation, { maxLength: 4 }), async (base, mutations) => {
        const uri = mutations.reduce((spelled, mutate) => mutate(spelled), base)
        const unguarded = await s.readUnguarded(uri)
        const guarded = await s.read(uri)
        expect(paidText(guarded)).toBe(false)
        if (paidText(unguarded)) {
          attacks++
          expect(guarded.error?.code).toBe(-32042)
        }
      }),
      { numRuns: 400 },
    )
    // Most spellings of a priced uri are served by the unguarded server: the property is not vacuous.
    expect(attacks).toBeGreaterThan(100)
    expect(s.runs.filter((uri) => uri !== 'file:///free.txt')).toEqual([])
  })

  test('M1: if the unguarded server runs the paid tool or prompt for a name, the guarded one challenges', async () => {
    const s = setup()
    const near = (name: string) =>
      fc.oneof(
        fc.constant(name),
        fc
          .tuple(fc.nat(), fc.constantFrom(' ', '\t', '\u0000', '\u200b', '\u00a0'))
          .map(([at, ch]) => name.slice(0, at % name.length) + ch + name.slice(at % name.length)),
        fc.nat().map((at) => name.slice(0, at % name.length) + name[at % name.length]!.toUpperCase() + name.slice((at % name.length) + 1)),
        fc.constant(`${name.normalize('NFKD')}\u0301`),
        fc.constantFrom('toString', '__proto__', 'constructor', 'valueOf'),
      )
    let attacks = 0
    const call = fc.oneof(
      near('summarize').map((name) => ['tools/call', name] as const),
      near('expert').map((name) => ['prompts/get', name] as const),
    )
    await fc.assert(
      fc.asyncProperty(call, async ([rpcMethod, name]) => {
        const unguarded = await s.post('/unguarded', s.message(rpcMethod, { name }))
        const guarded = await s.post('/mcp', s.message(rpcMethod, { name }))
        expect(paidText(guarded)).toBe(false)
        if (paidText(unguarded)) {
          attacks++
          expect(guarded.error?.code).toBe(-32042)
        }
      }),
      { numRuns: 150 },
    )
    expect(attacks).toBeGreaterThan(5)
    expect(s.runs).toEqual([])
  })
})

describe('priced resource keys are checked at construction', () => {
  test('a priced uri that does not parse, two spellings of one uri or template, or an unclosed template throw, saying what to fix', () => {
    const make = (resources: Record<string, { amount: string }>) => () => mcpPayments({ secret, methods: [fakeMethod()], resources })
    expect(make({ 'report.pdf': { amount: '1' } })).toThrow(/resources\["report\.pdf"\] is not an absolute URL.*e\.g\. "file:\/\/\/report\.pdf"/)
    expect(make({ 'file:///report.pdf': { amount: '1' }, 'FILE://localhost/report.pdf': { amount: '0.01' } })).toThrow(
      /resources\["FILE:\/\/localhost\/report\.pdf"\] names the same resource as "file:\/\/\/report\.pdf".*price it once/,
    )
    expect(make({ 'file:///report.pdf': { amount: '1' }, 'file:///report%2Epdf': { amount: '0.01' } })).toThrow(/differ only by percent-encoding/)
    expect(make({ 'file:///reports/{id': { amount: '1' } })).toThrow(/resources\["file:\/\/\/reports\/\{id"\] is a uri template .*unclosed/)
    expect(make({ 'FILE:///reports/{id}': { amount: '1' }, 'file:///a/../reports/{id}': { amount: '1' } })).toThrow(
      /same template as "FILE:\/\/\/reports\/\{id\}"/,
    )
  })

  test('M1: a priced template with adjacent expressions is matched without backtracking: a long hostile uri is answered, not stuck', async () => {
    const s = setup({ resources: { 'file:///{a}{b}{c}{d}.pdf': { amount: '0.1' } } })
    const answer = await s.read(`file:///${'a'.repeat(200_000)}`)
    expect(answer.error?.code).not.toBe(-32042)
    expect(paidText(answer)).toBe(false)
    expectChallenge(await s.read('file:///abcd.pdf'), 'resources/read file:///abcd.pdf')
  })

  test('M1: a template priced in a non-canonical spelling still prices what the server resolves', async () => {
    const s = setup({ resources: { 'FILE://localhost/x/../reports/{id}': { amount: '0.1' } } })
    expect(paidText(await s.readUnguarded('file:///reports/9'))).toBe(true)
    expectChallenge(await s.read('file:///reports/9'), 'resources/read file:///reports/9')
    expect(s.runs).toEqual([])
  })

  test('M1: a template with no canonical form (an expression in the port) is matched as written, as the SDK matches it', async () => {
    const s = setup({ resources: { 'http://example.com:{port}/r': { amount: '0.1' } } })
    expectChallenge(await s.read('HTTP://EXAMPLE.com:8080/x/../r'), 'resources/read http://example.com:8080/r')
    expect(s.runs).toEqual([])
  })
})
