/**
 * hono-mpp/otel: OpenTelemetry spans of every payment event, through `@opentelemetry/api` (an
 * optional peer: only this entry point imports it; without an SDK registered the API's tracer
 * is a no-op). Each event becomes a span `mpp.<event>` under the active span (the request's,
 * when an HTTP instrumentation made one); a settlement's span starts when the method's settle
 * call started, so its duration is the settle latency.
 *
 * Attributes carry nothing secret and nothing that identifies a payer or a challenge: no
 * credential, signature, key, payer, challenge id or refusal text. Route, method, intent,
 * outcome, reason, status, currency and amount only.
 */
import { type Attributes, SpanKind, SpanStatusCode, type Tracer, type TracerProvider, trace } from '@opentelemetry/api'
import type { PaymentEvent, PaymentEventListener } from './core/events.js'

export type PaymentTracingOptions = {
  /** The tracer to use (default: `tracerProvider`'s, or the global provider's, named `hono-mpp`). */
  tracer?: Tracer
  tracerProvider?: TracerProvider
}

/** The span of each event. */
const spanNames: Record<PaymentEvent['type'], string> = {
  challenge: 'mpp.challenge',
  rejected: 'mpp.refusal',
  error: 'mpp.error',
  verified: 'mpp.verify',
  settled: 'mpp.settle',
  'settlement-unknown': 'mpp.settle',
  'settlement-failed': 'mpp.settle',
  released: 'mpp.release',
  replayed: 'mpp.replay',
  delivered: 'mpp.deliver',
}

/**
 * Returns an `onEvent` listener that records each payment event as a span.
 *
 * @example
 * ```ts
 * import { paymentTracing } from 'hono-mpp/otel'
 * const pay = mpp({ secret, methods, onEvent: paymentTracing() })
 * ```
 */
export function paymentTracing(options: PaymentTracingOptions = {}): PaymentEventListener {
  const tracer = options.tracer ?? (options.tracerProvider ?? trace).getTracer('hono-mpp')
  return (event) => {
    const end = Date.now()
    const durationMs = 'durationMs' in event && typeof event.durationMs === 'number' ? event.durationMs : 0
    const span = tracer.startSpan(spanNames[event.type], { kind: SpanKind.INTERNAL, startTime: end - durationMs, attributes: attributesOf(event) })
    if (event.type === 'settlement-failed') span.setStatus({ code: SpanStatusCode.ERROR, message: 'settlement failed' })
    else if (event.type === 'settlement-unknown') span.setStatus({ code: SpanStatusCode.ERROR, message: 'settlement outcome unknown' })
    else if (event.type === 'error') span.setStatus({ code: SpanStatusCode.ERROR, message: "the route's price is misconfigured" })
    span.end(end)
  }
}

/** The attributes of an event: an allow-list, so a field added to an event later is not exported by accident. */
export function attributesOf(event: PaymentEvent): Attributes {
  const attributes: Attributes = { 'mpp.event': event.type }
  if (event.route !== undefined) attributes['http.route'] = event.route
  switch (event.type) {
    case 'challenge':
      attributes['mpp.challenges'] = event.challengeIds.length
      return attributes
    case 'rejected':
      attributes['mpp.reason'] = event.reason
      attributes['http.response.status_code'] = event.status
      return attributes
    case 'error':
      return attributes
  }
  attributes['mpp.method'] = event.method
  if (event.intent !== undefined) attributes['mpp.intent'] = event.intent
  switch (event.type) {
    case 'verified':
      attributes['mpp.credential_type'] = event.credentialType
      break
    case 'settled':
      attributes['mpp.outcome'] = event.recovered ? 'recovered' : 'settled'
      attributes['mpp.recovered'] = event.recovered
      if (event.amount !== undefined) attributes['mpp.amount'] = event.amount
      if (event.currency !== undefined) attributes['mpp.currency'] = event.currency
      break
    case 'settlement-failed':
      attributes['mpp.outcome'] = 'failed'
      attributes['mpp.after_handler'] = event.afterHandler
      break
    case 'settlement-unknown':
      attributes['mpp.outcome'] = 'unknown'
      break
    case 'delivered':
      attributes['mpp.outcome'] = 'delivered'
      attributes['mpp.amount'] = event.amount
      attributes['mpp.currency'] = event.currency
      break
  }
  if ('durationMs' in event && typeof event.durationMs === 'number') attributes['mpp.settle.duration_ms'] = event.durationMs
  return attributes
}
