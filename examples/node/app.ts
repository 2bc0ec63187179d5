/**
 * The example server's app, separate from start-up so tests and the demo can build it in-process.
 *
 * Routes (a public contract: extend, never break):
 * - `GET /free`           — no payment.
 * - `GET /paid`           — 0.01 of the currency, pull or push.
 * - `GET /paid-sponsored` — 0.01, pull with fees paid by the server's fee payer.
 * - `POST /paid-after`    — 0.01, charged only when the handler answers 2xx; a JSON body
 *                           `{ "fail": true }` makes the handler fail, so nothing is charged.
 * - `POST /mcp`           — an MCP server over Streamable HTTP (stateless, JSON answers; send
 *                           `Accept: application/json, text/event-stream`), paid through the
 *                           same secret, method and store as the HTTP routes:
 *                           tool `echo` { text } — free; tool `paid-echo` { text } — 0.01;
 *                           resource `file:///report.txt` — 0.01; prompt `paid-prompt` — 0.01.
 *                           An unpaid call gets JSON-RPC error -32042 with the challenges; the
 *                           paid retry carries `params._meta["org.paymentauth/credential"]` and
 *                           its result `_meta["org.paymentauth/receipt"]`.
 *                           `GET`/`DELETE /mcp` answer 405 (no sessions, no standalone stream).
 * - `GET /article`        — 0.01, an HTML article. A browser (`Accept: text/html`) gets the paywall
 *                           page (hono-mpp/paywall) that pays by push from an injected wallet;
 *                           other clients get the problem JSON as on every priced route.
 * - `GET /openapi.json`   — discovery (hono-mpp/discovery): the priced routes and their offers.
 * - `GET /llms.txt`       — what is sold and how to pay, for agents.
 *
 * Prepaid accounts (hono-mpp/accounts; the ledger is PGlite or DATABASE_URL's Postgres):
 * - `POST /account/top-up` — JSON `{"amount":"1.00"}` (bounds MPP_TOPUP_MIN/MAX): 402 Payment
 *                           challenge for that amount; paid: 200 `{ balance, …, apiKey? }` (a key
 *                           on the account's first top-up).
 * - `GET /account`         — Bearer key (or a zero-amount proof): balance, holds, keys, ledger.
 * - `POST /account/keys`, `GET /account/keys`, `PATCH`/`DELETE /account/keys/:id` — key management.
 * - `GET /metered`         — 0.01 from the balance with `Authorization: Bearer <key>` or
 *                           `X-API-Key`, or the usual 402 Payment challenge without one.
 * - `POST /metered-after`  — the same, charged only on success; body `{"fail":true}` fails it.
 * - `/operator/*`          — payouts of the earnings (MPP_OPERATOR_KEY + MPP_OPERATOR_SECRET):
 *                           `POST /operator/payouts`, `GET /operator/earnings/:realm`, …
 *   `POST /mcp` also accepts a key (Bearer or X-API-Key) for its priced operations.
 *
 * Sessions (pay-as-you-go by voucher, MPP_SESSION_KEY):
 * - `GET /session`         — 0.001 per request, by a session voucher (or a charge payment).
 * - `GET /stream`          — SSE, 0.0001 per chunk, vouchers asked for mid-stream.
 *   Both also take `POST`/`HEAD` without a body: the client's voucher-only updates and closes.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js'
import { type Context, Hono } from 'hono'
import type { ClaimStore } from 'hono-mpp'
import { mpp, type PaymentEvent } from 'hono-mpp'
import type { Ledger } from 'hono-mpp/accounts'
import { accounts } from 'hono-mpp/accounts'
import { discovery } from 'hono-mpp/discovery'
import { mcpPayments } from 'hono-mpp/mcp'
import { paywall } from 'hono-mpp/paywall'
import { meteredStream, type RpcCall, sessionIntent, type TempoSession, tempo } from 'hono-mpp/tempo'
import type { Address, LocalAccount } from 'viem'
import * as z from 'zod'

export type ExampleConfig = {
  rpcUrl: string
  chainId: number
  recipient: Address
  secret: string
  currency?: Address
  feePayer?: LocalAccount
  store?: ClaimStore
  onEvent?: (event: PaymentEvent) => void
  /** Told of every JSON-RPC call the Tempo method makes (metrics). */
  onRpcCall?: (call: RpcCall) => void
  /** Challenge lifetime in seconds (default 300). */
  expires?: number
  /** Prepaid accounts: the (migrated) ledger, the server's realm, the top-up bounds, and the operator's payout routes (`payouts(...).routes(...)`). */
  accounts?: { ledger: Ledger; realm: string; topUp: { min: string; max: string }; payouts?: Hono }
  /** The session method (tempoSession) for /session and /stream. */
  session?: TempoSession
}

/** A problem JSON 503 for a route the configuration left disabled, naming what to set. */
const disabled = (detail: string) => (c: Context) =>
  c.json({ type: 'https://paymentauth.org/problems/payment-unavailable', title: 'Payment Unavailable', status: 503, detail }, 503, {
    'content-type': 'application/problem+json',
  })

const reportUri = 'file:///report.txt'

export function createApp(config: ExampleConfig) {
  const common = {
    rpcUrl: config.rpcUrl,
    chainId: config.chainId,
    recipient: config.recipient,
    ...(config.currency && { currency: config.currency }),
    ...(config.onRpcCall && { onRpcCall: config.onRpcCall }),
  }
  const method = tempo(common)
  const session = config.session
  const pay = mpp({
    secret: config.secret,
    methods: [method],
    ...(session && { intents: [sessionIntent] }),
    ...(config.store && { store: config.store }),
    ...(config.onEvent && { onEvent: config.onEvent }),
    ...(config.expires !== undefined && { expires: config.expires }),
    unpaidResponse: paywall(),
  })
  // Prepaid accounts: their own mpp() (realm = the accounts' server) on the same claim store.
  const acct = config.accounts
    ? accounts({
        ledger: config.accounts.ledger,
        realm: config.accounts.realm,
        topUp: config.accounts.topUp,
        secret: config.secret,
        methods: [method],
        store: pay.store,
        ...(config.onEvent && { onEvent: config.onEvent }),
        ...(config.expires !== undefined && { expires: config.expires }),
      })
    : undefined
  // The MCP adapter shares the HTTP routes' store (the configured one, or mpp()'s in-memory
  // default), so a transaction that paid one cannot pay the other.
  const mcpPay = mcpPayments({
    secret: config.secret,
    methods: [method],
    store: pay.store,
    ...(config.onEvent && { onEvent: config.onEvent }),
    ...(acct && { schemes: [acct.scheme] }),
    tools: { 'paid-echo': { amount: '0.01', description: 'Paid echo' } },
    resources: { [reportUri]: { amount: '0.01', description: 'The paid report' } },
    prompts: { 'paid-prompt': { amount: '0.01', description: 'The paid prompt' } },
  })
  const sponsored = config.feePayer ? tempo({ ...common, modes: ['pull'], feePayer: { account: config.feePayer } }) : undefined

  const app = new Hono()
  app.get('/', (c) =>
    c.json({
      routes: {
        'GET /free': 'free',
        'GET /paid': '0.01, pull or push',
        'GET /paid-sponsored': config.feePayer ? '0.01, pull, fees sponsored' : 'disabled: set MPP_FEE_PAYER_KEY',
        'POST /paid-after': '0.01, charged only on success; body {"fail":true} fails the handler',
        'POST /mcp': `MCP over Streamable HTTP (stateless): tool echo free; tool paid-echo, resource ${reportUri}, prompt paid-prompt 0.01 each`,
        'GET /article': '0.01, an HTML article; browsers get a paywall page that pays from their wallet',
        'GET /openapi.json': 'discovery: the priced routes with their x-payment-info (draft-payment-discovery-00)',
        'GET /llms.txt': 'what is sold and how to pay, for agents',
        'POST /account/top-up': acct
          ? `{"amount":"1.00"} (${config.accounts!.topUp.min}–${config.accounts!.topUp.max}): top up a prepaid balance; the first top-up returns an API key`
          : 'disabled',
        'GET /account': 'balance, holds, keys and ledger (Authorization: Bearer <key>)',
        'POST /account/keys': 'a new API key (Bearer key or a zero-amount proof); DELETE /account/keys/:id revokes',
        'GET /metered': '0.01 from the balance with an API key (Bearer or X-API-Key), else pay per call',
        'POST /metered-after': '0.01 from the balance, charged only on success; body {"fail":true} fails the handler',
        'GET /session': session ? '0.001 per request, paid by a session voucher (or per call)' : 'disabled: set MPP_SESSION_KEY',
        'GET /stream': session ? 'SSE, 0.0001 per chunk, paid by session vouchers asked for mid-stream' : 'disabled: set MPP_SESSION_KEY',
      },
    }),
  )
  app.get('/free', (c) => c.json({ message: 'free content' }))
  app.get('/paid', pay.charge({ amount: '0.01', description: 'Paid content' }), (c) => {
    const payment = c.get('payment')
    return c.json({ message: 'paid content', payer: payment.payer, reference: payment.reference })
  })
  if (sponsored)
    app.get('/paid-sponsored', pay.charge({ amount: '0.01', description: 'Paid content, fees sponsored', methods: [sponsored] }), (c) => {
      const payment = c.get('payment')
      return c.json({ message: 'paid content (fees sponsored)', payer: payment.payer, reference: payment.reference })
    })
  else
    app.get('/paid-sponsored', (c) =>
      c.json(
        {
          type: 'https://paymentauth.org/problems/payment-unavailable',
          title: 'Payment Unavailable',
          status: 503,
          detail: 'fee sponsorship is not configured on this server: set MPP_FEE_PAYER_KEY',
        },
        503,
        { 'content-type': 'application/problem+json' },
      ),
    )
  app.post('/paid-after', pay.charge({ amount: '0.01', description: 'Charged only on success', settle: 'after' }), async (c) => {
    const body = (await c.req.json().catch(() => ({}))) as { fail?: unknown }
    if (body.fail === true) return c.json({ error: 'the work failed; you are not charged' }, 500)
    const payment = c.get('payment')
    return c.json({ message: 'work done', payer: payment.payer, reference: payment.reference })
  })
  app.get('/article', pay.charge({ amount: '0.01', description: 'The paid article' }), (c) =>
    c.html(
      '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>The paid article</title></head><body><article id="article"><h1>The paid article</h1><p>This article cost 0.01. Thank you for paying with your wallet.</p></article></body></html>',
    ),
  )
  if (acct) {
    app.route('/', acct.routes())
    app.get('/metered', acct.charge({ amount: '0.01', description: 'Metered content, from a prepaid balance or per call' }), (c) => {
      const payment = c.get('payment')
      return c.json({ message: 'metered content', payer: payment.payer, via: payment.credentialType, reference: payment.reference })
    })
    app.post('/metered-after', acct.charge({ amount: '0.01', description: 'Charged only on success', settle: 'after' }), async (c) => {
      const body = (await c.req.json().catch(() => ({}))) as { fail?: unknown }
      if (body.fail === true) return c.json({ error: 'the work failed; you are not charged' }, 500)
      const payment = c.get('payment')
      return c.json({ message: 'work done', payer: payment.payer, via: payment.credentialType, reference: payment.reference })
    })
  }
  const payouts = config.accounts?.payouts
  if (payouts) app.route('/operator', payouts)
  else app.all('/operator/*', disabled('payouts are not configured on this server: set MPP_OPERATOR_KEY and MPP_OPERATOR_SECRET'))
  if (session) {
    // GET serves; a bodiless POST or HEAD carries the client's voucher-only updates and its close.
    app.on(
      ['GET', 'POST', 'HEAD'],
      '/session',
      pay.charge({ amount: '0.001', description: 'Pay-as-you-go: 0.001 per request', methods: [session, method] }),
      (c) => {
        const payment = c.get('payment') as { payer?: string; channelId?: string; intent: string }
        return c.json({ message: 'session content', intent: payment.intent, payer: payment.payer, channelId: payment.channelId })
      },
    )
    app.on(['GET', 'POST', 'HEAD'], '/stream', pay.charge({ amount: '0.0001', description: 'A metered stream: 0.0001 per chunk', methods: [session] }), (c) =>
      meteredStream(c, streamChunks(20)),
    )
  } else {
    app.on(['GET', 'POST', 'HEAD'], ['/session', '/stream'], disabled('sessions are not configured on this server: set MPP_SESSION_KEY (the payee key)'))
  }
  // Stateless Streamable HTTP: a fresh MCP server and transport for each POST, behind the payment
  // middleware (which leaves the body unread for the transport).
  app.post('/mcp', mcpPay, async (c) => {
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true })
    await mcpServer().connect(transport)
    return transport.handleRequest(c.req.raw)
  })
  app.all('/mcp', (c) =>
    c.json(
      { jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed: this MCP server is stateless; POST JSON-RPC messages to /mcp' }, id: null },
      405,
      { allow: 'POST' },
    ),
  )
  app.route('/', discovery(app, { info: { title: 'hono-mpp example', version: '1.0.0', description: 'Paid content and a paid MCP server on Tempo' } }))
  return app
}

/** The metered stream's chunks: a short text, one word group at a time. */
function* streamChunks(count: number): Generator<string> {
  for (let i = 1; i <= count; i++) yield `chunk ${i} of ${count}`
}

/** The example's MCP server: what each operation answers once paid (prices are in createApp). */
function mcpServer(): McpServer {
  const server = new McpServer({ name: 'hono-mpp-example', version: '1.0.0' })
  const echo = async ({ text }: { text: string }) => ({ content: [{ type: 'text' as const, text }] })
  server.registerTool('echo', { description: 'Echoes the text back. Free.', inputSchema: { text: z.string() } }, echo)
  server.registerTool('paid-echo', { description: 'Echoes the text back. Costs 0.01.', inputSchema: { text: z.string() } }, echo)
  server.registerResource('report', reportUri, { description: 'A short report. Costs 0.01.', mimeType: 'text/plain' }, async (uri) => ({
    contents: [{ uri: uri.href, mimeType: 'text/plain', text: 'hono-mpp example report: this text cost 0.01.' }],
  }))
  server.registerPrompt('paid-prompt', { description: 'A ready-made prompt. Costs 0.01.' }, async () => ({
    messages: [{ role: 'user', content: { type: 'text', text: 'Summarise the hono-mpp example report in one sentence.' } }],
  }))
  return server
}
