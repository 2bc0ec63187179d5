/**
 * hono-mpp/otel: every payment event becomes a span through @opentelemetry/api. No SDK is
 * installed, so a minimal TracerProvider implementing the API's interfaces records the spans; it
 * is registered as the global provider, as an SDK would be. Span attributes carry no credential,
 * payer, challenge id or refusal text.
 */
import {
  type Context,
  type Span,
  type SpanAttributes,
  type SpanAttributeValue,
  type SpanContext,
  type SpanOptions,
  type SpanStatus,
  SpanStatusCode,
  type TimeInput,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api'
import { Hono } from 'hono'
import { mpp, type PaymentEvent } from 'hono-mpp'
import { paymentTracing } from 'hono-mpp/otel'
import { afterAll, describe, expect, test } from 'vitest'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, credentialFor } from '../helpers/http.js'

const secret = 'an otel test secret, at least thirty-two bytes long'

type Recorded = { name: string; attributes: SpanAttributes; status: SpanStatus | undefined; start: number; end: number | undefined; tracer: string }

/** A TracerProvider that records what the API is asked to record. */
class RecordingProvider implements TracerProvider {
  readonly spans: Recorded[] = []
  getTracer(name: string): Tracer {
    const spans = this.spans
    const startSpan = (spanName: string, options: SpanOptions = {}, _context?: Context): Span => {
      const recorded: Recorded = {
        name: spanName,
        attributes: { ...options.attributes },
        status: undefined,
        start: toMs(options.startTime ?? Date.now()),
        end: undefined,
        tracer: name,
      }
      spans.push(recorded)
      const span: Span = {
        spanContext: (): SpanContext => ({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 }),
        setAttribute: (key: string, value: SpanAttributeValue) => {
          recorded.attributes[key] = value
          return span
        },
        setAttributes: (attributes: SpanAttributes) => {
          Object.assign(recorded.attributes, attributes)
          return span
        },
        addEvent: () => span,
        addLink: () => span,
        addLinks: () => span,
        setStatus: (status: SpanStatus) => {
          recorded.status = status
          return span
        },
        updateName: (updated: string) => {
          recorded.name = updated
          return span
        },
        end: (time?: TimeInput) => {
          recorded.end = toMs(time ?? Date.now())
        },
        isRecording: () => true,
        recordException: () => {},
      }
      return span
    }
    return {
      startSpan,
      startActiveSpan: ((spanName: string, ...rest: unknown[]) => {
        const fn = rest.at(-1) as (span: Span) => unknown
        return fn(startSpan(spanName, (rest.length > 1 ? rest[0] : {}) as SpanOptions))
      }) as Tracer['startActiveSpan'],
    }
  }
}

function toMs(time: TimeInput): number {
  if (typeof time === 'number') return time
  if (time instanceof Date) return time.getTime()
  return time[0] * 1000 + time[1] / 1e6
}

const provider = new RecordingProvider()
trace.setGlobalTracerProvider(provider)
afterAll(() => trace.disable())

describe('hono-mpp/otel', () => {
  test('challenge, verify, settle, refusal and a failed settlement are spans with bounded, non-identifying attributes', async () => {
    const method = fakeMethod()
    const events: PaymentEvent[] = []
    const tracing = paymentTracing()
    const pay = mpp({
      secret,
      methods: [method],
      onEvent: (event) => {
        events.push(event)
        tracing(event)
      },
    })
    const app = new Hono()
    app.get('/reports/:id', pay.charge({ amount: '0.02' }), (c) => c.json({ id: c.req.param('id') }))
    const hidden: string[] = [secret]
    const attempt = async (token: string) => {
      const challenge = challengesOf(await app.request('/reports/77'))[0]!
      method.vouchers.add(token)
      const authorization = credentialFor(challenge, { type: 'voucher', token })
      hidden.push(token, authorization.slice(8, 48), challenge.id)
      return app.request('/reports/77', { headers: { authorization } })
    }

    expect((await attempt('tok-otel-paid-1a')).status).toBe(200)
    method.nextSettle = 'fail'
    expect((await attempt('tok-otel-fail-2b')).status).toBe(402)
    method.nextSettle = 'ok'
    const challenge = challengesOf(await app.request('/reports/77'))[0]!
    const forged = credentialFor(challenge, { type: 'voucher', token: 'tok-otel-forged-3c' })
    hidden.push('tok-otel-forged-3c', forged.slice(8, 48), challenge.id)
    expect((await app.request('/reports/77', { headers: { authorization: forged } })).status).toBe(402)

    const spans = provider.spans
    expect(spans.every((span) => span.tracer === 'hono-mpp' && span.end !== undefined && span.end >= span.start)).toBe(true)
    expect(spans.filter((span) => span.name === 'mpp.challenge')).toHaveLength(3)
    expect(spans.filter((span) => span.name === 'mpp.verify')).toHaveLength(2)
    const settles = spans.filter((span) => span.name === 'mpp.settle')
    expect(settles).toEqual([
      expect.objectContaining({
        attributes: expect.objectContaining({
          'mpp.event': 'settled',
          'mpp.outcome': 'settled',
          'mpp.method': 'fake',
          'mpp.intent': 'charge',
          'mpp.amount': '20000',
          'mpp.currency': 'FAKE',
          'http.route': '/reports/:id',
          'mpp.settle.duration_ms': expect.any(Number),
        }),
        status: undefined,
      }),
      expect.objectContaining({
        attributes: expect.objectContaining({ 'mpp.event': 'settlement-failed', 'mpp.outcome': 'failed', 'mpp.after_handler': false }),
        status: expect.objectContaining({ code: SpanStatusCode.ERROR }),
      }),
    ])
    // The settle span lasts as long as the method's settle call did.
    for (const span of settles) expect(span.end! - span.start).toBe(span.attributes['mpp.settle.duration_ms'])
    expect(spans.filter((span) => span.name === 'mpp.refusal').map((span) => span.attributes)).toEqual([
      expect.objectContaining({ 'mpp.reason': 'settlement-failed', 'http.response.status_code': 402, 'http.route': '/reports/:id' }),
      expect.objectContaining({ 'mpp.reason': 'verification-failed', 'http.response.status_code': 402 }),
    ])
    expect(spans.filter((span) => span.name === 'mpp.release')).toHaveLength(2)

    // The events carry payers, challenge ids and refusal text; the spans carry none of them.
    const payers = events.flatMap((event) => ('payer' in event && event.payer ? [event.payer] : []))
    const details = events.flatMap((event) => ('detail' in event ? [event.detail] : []))
    expect(payers.length).toBeGreaterThan(0)
    const recorded = JSON.stringify(spans)
    for (const value of [...hidden, ...payers, ...details, '/reports/77', 'ref-tok']) expect(recorded).not.toContain(value)
  })

  test('a tracer passed in is used instead of the global one', async () => {
    const own = new RecordingProvider()
    const pay = mpp({ secret, methods: [fakeMethod()], onEvent: paymentTracing({ tracerProvider: own }) })
    const app = new Hono()
    app.get('/x', pay.charge({ amount: '1' }), (c) => c.text('ok'))
    const before = provider.spans.length
    expect((await app.request('/x')).status).toBe(402)
    expect(own.spans.map((span) => span.name)).toEqual(['mpp.challenge'])
    expect(provider.spans.length).toBe(before)
  })
})
