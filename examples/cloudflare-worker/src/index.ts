/**
 * hono-mpp on Cloudflare Workers: `GET /free`, and `GET /paid` for 0.01 pathUSD on Tempo.
 *
 * Configuration comes from the Worker's bindings (wrangler.toml `[vars]` and secrets), never
 * from `process.env`: Workers have no process, and this Worker runs without `nodejs_compat`.
 *
 * - `MPP_SECRET` (secret, ≥ 32 bytes): binds challenges; `wrangler secret put MPP_SECRET`.
 * - `TEMPO_RPC_URL`: JSON-RPC URL of a Tempo node. Put it in as a secret when it holds an API key.
 * - `MPP_RECIPIENT`: address that receives the payments.
 * - `MPP_CURRENCY` (optional): TIP-20 token address (default pathUSD).
 * - `TEMPO_CHAIN_ID` (optional): chain id (default: the tempo() method's default chain).
 * - `CLAIMS` (optional, Durable Object namespace of `ClaimStoreObject`): shares the single-use
 *   claims between every isolate. Without it each isolate keeps its own in-memory claims, which
 *   cannot stop a credential from being replayed against another isolate: bind it in production.
 *
 * The middleware is built once per isolate, on the first paid request, and reused while the
 * bindings object stays the same. A missing or wrong binding answers a 500 problem naming it
 * (free routes keep working), and is logged for the operator.
 */
import { Hono, type MiddlewareHandler } from 'hono'
import { mpp } from 'hono-mpp'
import { ClaimStoreObject, type DurableObjectNamespaceLike, durableObjectStore } from 'hono-mpp/stores/durable-object'
import { tempo } from 'hono-mpp/tempo'

export { ClaimStoreObject }

export type Env = {
  MPP_SECRET?: string
  TEMPO_RPC_URL?: string
  MPP_RECIPIENT?: string
  MPP_CURRENCY?: string
  TEMPO_CHAIN_ID?: string
  CLAIMS?: DurableObjectNamespaceLike
}

type Payments = { paid: MiddlewareHandler }

/** Thrown while reading the bindings; its message names the binding and how to fix it. */
class BindingError extends Error {
  override name = 'BindingError'
}

const addressPattern = /^0x[0-9a-fA-F]{40}$/

function build(env: Env): Payments {
  const problems: string[] = []
  const secret = env.MPP_SECRET
  if (!secret) problems.push('MPP_SECRET is not set: run `wrangler secret put MPP_SECRET` with at least 32 bytes (e.g. `openssl rand -hex 32`)')
  const rpcUrl = env.TEMPO_RPC_URL
  if (!rpcUrl) problems.push('TEMPO_RPC_URL is not set: the JSON-RPC URL of a Tempo node, in [vars] or as a secret')
  else if (!/^https?:\/\//.test(rpcUrl)) problems.push('TEMPO_RPC_URL must be an http(s) URL')
  const recipient = env.MPP_RECIPIENT
  if (!recipient) problems.push('MPP_RECIPIENT is not set: the address (0x + 40 hex digits) that receives payments, in [vars]')
  else if (!addressPattern.test(recipient)) problems.push('MPP_RECIPIENT is not an address (0x followed by 40 hex digits)')
  const currency = env.MPP_CURRENCY || undefined
  if (currency !== undefined && !addressPattern.test(currency))
    problems.push('MPP_CURRENCY must be a TIP-20 token address (0x followed by 40 hex digits), or left unset for pathUSD')
  const chainIdText = env.TEMPO_CHAIN_ID || undefined
  const chainId = chainIdText === undefined ? undefined : Number(chainIdText)
  if (chainId !== undefined && (!Number.isSafeInteger(chainId) || chainId <= 0))
    problems.push('TEMPO_CHAIN_ID must be a positive integer (e.g. 4217 for Tempo mainnet)')
  if (problems.length) throw new BindingError(problems.join('; '))

  const pay = mpp({
    secret: secret!,
    methods: [
      tempo({
        rpcUrl: rpcUrl!,
        recipient: recipient as `0x${string}`,
        ...(chainId !== undefined && { chainId }),
        ...(currency !== undefined && { currency: currency as `0x${string}` }),
      }),
    ],
    ...(env.CLAIMS && { store: durableObjectStore({ namespace: env.CLAIMS }) }),
  })
  return { paid: pay.charge({ amount: '0.01', description: 'Paid content' }) }
}

// One per isolate; rebuilt only if the runtime hands us another bindings object.
let cached: { env: Env; payments: Payments } | undefined

function paymentsFor(env: Env): Payments {
  if (cached?.env === env) return cached.payments
  const payments = build(env)
  cached = { env, payments }
  return payments
}

/** Runs the paid route's middleware, or answers 500 saying which binding to fix. */
const paid: MiddlewareHandler<{ Bindings: Env }> = async (c, next) => {
  let payments: Payments
  try {
    payments = paymentsFor(c.env)
  } catch (error) {
    // Construction errors name the setting to fix and never contain the secret itself.
    const detail = `the payment middleware is misconfigured: ${error instanceof Error ? error.message : String(error)}`
    console.error(`hono-mpp example: ${detail}`)
    return new Response(JSON.stringify({ type: 'about:blank', title: 'Server Misconfigured', status: 500, detail }), {
      status: 500,
      headers: { 'Content-Type': 'application/problem+json', 'Cache-Control': 'no-store' },
    })
  }
  return payments.paid(c, next)
}

const app = new Hono<{ Bindings: Env }>()

app.get('/free', (c) => c.json({ message: 'free content' }))

app.get('/paid', paid, (c) => {
  const payment = c.get('payment')
  return c.json({ message: 'paid content', payer: payment.payer, reference: payment.reference })
})

export default app
