/**
 * hono-mpp/metrics: Prometheus counters and histograms of every payment event, through
 * `prom-client` (an optional peer: only this entry point imports it). Works beside
 * `@hono/prometheus` when both are given the same registry.
 *
 * Labels are bounded and carry nothing secret: the route as the app declared it, the method,
 * the intent, the outcome, the refusal reason and the currency. Never a credential, a signature,
 * a payer, a challenge id or a request path.
 */
import { Counter, register as globalRegistry, Histogram, type Registry } from 'prom-client'
import type { PaymentEvent, PaymentEventListener } from './core/events.js'

export type PaymentMetricsOptions = {
  /** The registry to register on (default: prom-client's global one). Share it with `@hono/prometheus`. */
  registry?: Registry
  /** Prefix of every metric name (default `mpp_`). */
  prefix?: string
  /** Settle latency buckets, seconds (default 0.05 s to 30 s). */
  buckets?: number[]
  /** Label events with the route as declared (`/articles/:id`); default true. `false` drops the label. */
  routeLabel?: boolean
}

export type PaymentMetrics = {
  /** Pass as `onEvent` (or combine with yours: `combineListeners(metrics.onEvent, mine)`). */
  onEvent: PaymentEventListener
  challenges: Counter<'route'>
  payments: Counter<'route' | 'method' | 'intent' | 'outcome'>
  amount: Counter<'method' | 'intent' | 'currency'>
  refusals: Counter<'route' | 'reason' | 'status'>
  errors: Counter<'route'>
  settleDuration: Histogram<'method' | 'intent' | 'outcome'>
  /** Pass as `tempo({ onRpcCall })`: counts the payment method's JSON-RPC calls. */
  onRpcCall: (call: { method: string; outcome: string; durationMs: number }) => void
  rpcCalls: Counter<'method' | 'outcome'>
  rpcDuration: Histogram<'method'>
}

/** The outcome label of each pipeline event. */
const outcomes = {
  verified: 'verified',
  settled: 'settled',
  released: 'released',
  'settlement-unknown': 'settlement_unknown',
  'settlement-failed': 'settlement_failed',
  replayed: 'replayed',
  delivered: 'delivered',
} as const

/**
 * Registers the payment metrics on `registry` (reusing ones already registered under the same
 * names, so calling it twice is harmless) and returns the listener that updates them.
 *
 * - `<prefix>challenges_total{route}`: 402 challenges issued.
 * - `<prefix>payments_total{route,method,intent,outcome}`: outcome `verified`, `settled`,
 *   `recovered` (an unknown settlement found settled), `settlement_unknown`, `settlement_failed`,
 *   `released` (given back, nothing charged), `replayed` (an Idempotency-Key replay),
 *   `delivered` (the paid work's result handed back with its receipt, once per payment).
 * - `<prefix>amount_base_units_total{method,intent,currency}`: what was settled, in the token's
 *   base units (a float: exact up to 2^53 base units in total).
 * - `<prefix>refusals_total{route,reason,status}`: refusals by their problem type.
 * - `<prefix>errors_total{route}`: the operator's errors (a misconfigured price).
 * - `<prefix>settle_duration_seconds{method,intent,outcome}`: how long the method's settle (or
 *   recovery) call took; outcome `settled`, `recovered`, `failed` or `unknown`.
 * - `<prefix>rpc_calls_total{method,outcome}` and `<prefix>rpc_duration_seconds{method}`: the
 *   payment method's JSON-RPC calls (wire `tempo({ onRpcCall: metrics.onRpcCall })`); `method` is
 *   the JSON-RPC method name, `outcome` `answered`, `refused` or `unanswered`.
 *
 * @example
 * ```ts
 * import { Registry } from 'prom-client'
 * import { paymentMetrics } from 'hono-mpp/metrics'
 *
 * const registry = new Registry()
 * const metrics = paymentMetrics({ registry })
 * const pay = mpp({ secret, methods, onEvent: metrics.onEvent })
 * app.get('/metrics', async (c) => c.text(await registry.metrics(), 200, { 'content-type': registry.contentType }))
 * ```
 */
export function paymentMetrics(options: PaymentMetricsOptions = {}): PaymentMetrics {
  const registry = options.registry ?? globalRegistry
  const prefix = options.prefix ?? 'mpp_'
  const withRoute = options.routeLabel !== false
  const routeLabels = withRoute ? (['route'] as const) : ([] as const)

  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> => {
    const existing = registry.getSingleMetric(prefix + name)
    if (existing) return existing as Counter<L>
    return new Counter<L>({ name: prefix + name, help, labelNames, registers: [registry] })
  }
  const challenges = counter<'route'>('challenges_total', 'Payment challenges issued (402 answers).', routeLabels)
  const payments = counter<'route' | 'method' | 'intent' | 'outcome'>('payments_total', 'Payment credentials by outcome.', [
    ...routeLabels,
    'method',
    'intent',
    'outcome',
  ])
  const amount = counter<'method' | 'intent' | 'currency'>('amount_base_units_total', 'Amount settled, in the currency token base units.', [
    'method',
    'intent',
    'currency',
  ])
  const refusals = counter<'route' | 'reason' | 'status'>('refusals_total', 'Refused payment requests by reason (problem type).', [
    ...routeLabels,
    'reason',
    'status',
  ])
  const errors = counter<'route'>('errors_total', "Operator errors (e.g. a route's price is misconfigured).", routeLabels)
  const durationName = `${prefix}settle_duration_seconds`
  const settleDuration =
    (registry.getSingleMetric(durationName) as Histogram<'method' | 'intent' | 'outcome'> | undefined) ??
    new Histogram<'method' | 'intent' | 'outcome'>({
      name: durationName,
      help: "Duration of the payment method's settle (or recovery) call, seconds.",
      labelNames: ['method', 'intent', 'outcome'],
      buckets: options.buckets ?? [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers: [registry],
    })

  const rpcCalls = counter<'method' | 'outcome'>('rpc_calls_total', "The payment method's JSON-RPC calls by outcome.", ['method', 'outcome'])
  const rpcDurationName = `${prefix}rpc_duration_seconds`
  const rpcDuration =
    (registry.getSingleMetric(rpcDurationName) as Histogram<'method'> | undefined) ??
    new Histogram<'method'>({
      name: rpcDurationName,
      help: "Duration of the payment method's JSON-RPC calls, seconds.",
      labelNames: ['method'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    })
  // JSON-RPC method names are a small fixed set; anything else is counted as `other` (bounded labels).
  const rpcMethod = (name: string) => (/^[a-z]+_[A-Za-z]+$/.test(name) && name.length <= 40 ? name : 'other')
  const onRpcCall: PaymentMetrics['onRpcCall'] = (call) => {
    const method = rpcMethod(call.method)
    rpcCalls.inc({ method, outcome: call.outcome })
    rpcDuration.observe({ method }, call.durationMs / 1000)
  }

  const route = (event: PaymentEvent): { route?: string } => (withRoute ? { route: event.route ?? '' } : {})

  const onEvent: PaymentEventListener = (event) => {
    switch (event.type) {
      case 'challenge':
        challenges.inc(route(event))
        return
      case 'rejected':
        refusals.inc({ ...route(event), reason: event.reason, status: String(event.status) })
        return
      case 'error':
        errors.inc(route(event))
        return
    }
    const intent = event.intent ?? ''
    const outcome = event.type === 'settled' && event.recovered ? 'recovered' : outcomes[event.type]
    payments.inc({ ...route(event), method: event.method, intent, outcome })
    if (event.type === 'settled' && event.amount !== undefined && event.currency !== undefined) {
      const units = Number(event.amount)
      if (Number.isFinite(units) && units > 0) amount.inc({ method: event.method, intent, currency: event.currency }, units)
    }
    if ('durationMs' in event && typeof event.durationMs === 'number') {
      const settleOutcome = event.type === 'settled' ? (event.recovered ? 'recovered' : 'settled') : event.type === 'settlement-failed' ? 'failed' : 'unknown'
      settleDuration.observe({ method: event.method, intent, outcome: settleOutcome }, event.durationMs / 1000)
    }
  }

  return { onEvent, challenges, payments, amount, refusals, errors, settleDuration, onRpcCall, rpcCalls, rpcDuration }
}
