/**
 * The example server's app, separate from start-up so tests and the demo can build it in-process.
 *
 * Routes (a public contract: extend, never break):
 * - `GET /free`           — no payment.
 * - `GET /paid`           — 0.01 of the currency, pull or push.
 * - `GET /paid-sponsored` — 0.01, pull with fees paid by the server's fee payer.
 * - `POST /paid-after`    — 0.01, charged only when the handler answers 2xx; a JSON body
 *                           `{ "fail": true }` makes the handler fail, so nothing is charged.
 */
import { Hono } from 'hono'
import type { Address, LocalAccount } from 'viem'
import { mpp, type PaymentEvent } from 'hono-mpp'
import type { ClaimStore } from 'hono-mpp'
import { tempo } from 'hono-mpp/tempo'

export type ExampleConfig = {
  rpcUrl: string
  chainId: number
  recipient: Address
  secret: string
  currency?: Address
  feePayer?: LocalAccount
  store?: ClaimStore
  onEvent?: (event: PaymentEvent) => void
}

export function createApp(config: ExampleConfig) {
  const common = {
    rpcUrl: config.rpcUrl,
    chainId: config.chainId,
    recipient: config.recipient,
    ...(config.currency && { currency: config.currency }),
  }
  const pay = mpp({
    secret: config.secret,
    methods: [tempo(common)],
    ...(config.store && { store: config.store }),
    ...(config.onEvent && { onEvent: config.onEvent }),
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
  return app
}
