// A consumer project's code, typechecked strictly against the packed tarball and its own Hono
// and viem (test/package/consumer.test.ts). It must compile without casts.
import { Hono } from 'hono'
import { mpp, type PaymentInfo } from 'hono-mpp'
import {
  accounts,
  createLedger,
  type HubOptions,
  hub,
  LedgerError,
  type Meter,
  PayoutError,
  type PayoutResult,
  type Payouts,
  payouts,
  remoteMeter,
  type SqlClient,
} from 'hono-mpp/accounts'
import { mcpPayments } from 'hono-mpp/mcp'
import { memoryStore } from 'hono-mpp/stores/memory'
import { tempo } from 'hono-mpp/tempo'
import { createClient, defineChain, http } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'

const sponsor = privateKeyToAccount('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d')
const recipient = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8'

const pay = mpp({
  secret: 'a consumer secret that is at least thirty-two bytes long',
  store: memoryStore(),
  methods: [tempo({ transport: http('http://127.0.0.1:1'), chainId: 31337, recipient })],
})
const sponsored = tempo({ transport: http('http://127.0.0.1:1'), chainId: 31337, recipient, feePayer: { account: sponsor } })

export const app = new Hono()
app.get('/paid', pay.charge({ amount: '0.01', description: 'One answer' }), (c) => {
  const payment: PaymentInfo = c.get('payment')
  const payer: string | undefined = payment.payer
  return c.json({ payer, reference: payment.reference })
})
app.get(
  '/sponsored',
  pay.charge({ amount: '0.01', methods: [sponsored] }, (c) => c.json({ payer: c.get('payment').payer })),
)
app.post(
  '/mcp',
  mcpPayments({
    secret: 'a consumer secret that is at least thirty-two bytes long',
    methods: [tempo({ rpcUrl: 'http://127.0.0.1:1', chainId: 31337, recipient })],
    tools: { summarize: { amount: '0.01' } },
  }),
  (c) => c.json({ jsonrpc: '2.0', id: 1, result: {} }),
)

// Prepaid accounts: a ledger over any SqlClient (here one that answers nothing; never queried by run.ts).
const sql: SqlClient = { query: async () => [], transaction: (fn) => fn(sql) }
const acct = accounts({
  ledger: createLedger({ sql, currency: '0x20c0000000000000000000000000000000000000' }),
  realm: 'consumer.test',
  secret: 'a consumer secret that is at least thirty-two bytes long',
  methods: [tempo({ rpcUrl: 'http://127.0.0.1:1', chainId: 31337, recipient })],
})
app.route('/', acct.routes())
app.get('/metered', acct.charge({ amount: '0.01' }), (c) => {
  const payment: PaymentInfo = c.get('payment')
  return c.json({ payer: payment.payer, via: payment.credentialType })
})
// The hub model: the hub (with payouts from the operator's wallet) and a server billing through it.
const local = defineChain({
  id: 31337,
  name: 'local',
  nativeCurrency: { name: 'USD', symbol: 'USD', decimals: 18 },
  rpcUrls: { default: { http: ['http://127.0.0.1:1'] } },
})
const wallet = createClient({ account: sponsor, chain: local, transport: http() })
const hubAccounts = accounts({
  ledger: createLedger({ sql, currency: '0x20c0000000000000000000000000000000000000' }),
  realm: 'hub.consumer.test',
  secret: 'a consumer secret that is at least thirty-two bytes long',
  methods: [tempo({ rpcUrl: 'http://127.0.0.1:1', chainId: 31337, recipient })],
  payouts: { wallet, payoutAddress: { 'consumer.test': recipient } },
})
const operatorSecret = 'an operator secret that is at least thirty-two bytes long'
app.route('/hub', hubAccounts.hub({ operatorSecret }))
app.route('/servers/consumer.test', hubAccounts.routes({ realm: 'consumer.test' }))
const p: Payouts | undefined = hubAccounts.payouts
export const payOut = (): Promise<PayoutResult> => hubAccounts.payout({ realm: 'consumer.test' })
export const isRefusal = (error: unknown): boolean => error instanceof PayoutError || error instanceof LedgerError
const standalone: HubOptions = { ledger: createLedger({ sql, currency: '0x20c0000000000000000000000000000000000000' }), operatorSecret }
app.route('/hub2', hub(standalone))
if (p) app.route('/operator', p.routes({ operatorSecret }))
export const standalonePayouts: Payouts = payouts({
  ledger: createLedger({ sql, currency: '0x20c0000000000000000000000000000000000000' }),
  wallet,
  currency: '0x20c0000000000000000000000000000000000000',
  payoutAddress: (realm) => (realm === 'consumer.test' ? recipient : undefined),
})
const meter: Meter = remoteMeter({ url: 'http://127.0.0.1:1/hub', token: 'mpp_svc_consumer' })
const remote = accounts({
  meter,
  realm: 'consumer.test',
  secret: 'a consumer secret that is at least thirty-two bytes long',
  methods: [tempo({ rpcUrl: 'http://127.0.0.1:1', chainId: 31337, recipient })],
  topUpUrl: 'https://hub.example/servers/consumer.test/account/top-up',
})
app.get('/metered-remote', remote.charge({ amount: '0.01' }), (c) => c.json({ payer: c.get('payment').payer }))

app.post(
  '/mcp-keys',
  mcpPayments({
    secret: 'a consumer secret that is at least thirty-two bytes long',
    methods: [sponsored],
    schemes: [acct.scheme],
    tools: { t: { amount: '0.01' } },
  }),
)
