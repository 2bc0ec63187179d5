/**
 * Metered Server-Sent Events: a streamed answer priced per chunk, paid from the session channel
 * that paid its request. The request's voucher pays the first chunk; every further chunk is
 * charged (atomically, in the claim store) BEFORE it is written. When the vouchers do not cover
 * the next chunk, the stream sends `event: payment-need-voucher` (data: `channelId`,
 * `requiredCumulative`, `acceptedCumulative`, `deposit`) and waits for the client's voucher
 * (a bodiless POST to the same URL); if none comes within the timeout, or the client goes away,
 * it ends cleanly with a final `event: payment-receipt`. Nothing is written beyond what the
 * vouchers cover.
 */
import type { Context } from 'hono'
import type { SessionMeter, SessionPaymentInfo } from './index.js'
import type { ChannelState } from './state.js'

export type MeteredStreamOptions = {
  /** Called with the reason the stream ended early (`voucher-timeout`, `cancelled`, `closed`). */
  onStop?: (reason: 'voucher-timeout' | 'cancelled' | 'closed') => void
}

/** One SSE `message` event; multi-line data becomes several `data:` lines. */
function messageEvent(data: string): string {
  return `event: message\n${data
    .split('\n')
    .map((line) => `data: ${line}`)
    .join('\n')}\n\n`
}

const jsonEvent = (name: string, data: unknown) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`

/**
 * Answers the paid request with `chunks` as an SSE stream, one unit of the route's price per
 * chunk. Use it in a handler of a route priced with a `tempoSession()` method.
 *
 * @example
 * ```ts
 * app.on(['GET', 'POST'], '/stream', pay.charge({ amount: '0.0001', methods: [session] }), (c) =>
 *   meteredStream(c, tokens()),
 * )
 * ```
 */
export function meteredStream(c: Context, chunks: AsyncIterable<string> | Iterable<string>, options: MeteredStreamOptions = {}): Response {
  const payment = c.get('payment') as SessionPaymentInfo | undefined
  if (payment?.intent !== 'session' || !payment.session)
    throw new Error('meteredStream(): the route was not paid by a session voucher; price it with a tempoSession() method')
  return sseResponse(payment.session, chunks, c.req.raw.signal, options)
}

export function sseResponse(
  meter: SessionMeter,
  chunks: AsyncIterable<string> | Iterable<string>,
  signal: AbortSignal | undefined,
  options: MeteredStreamOptions,
): Response {
  const encoder = new TextEncoder()
  const iterator = Symbol.asyncIterator in chunks ? (chunks as AsyncIterable<string>)[Symbol.asyncIterator]() : (chunks as Iterable<string>)[Symbol.iterator]()
  const cancelled = new AbortController()
  signal?.addEventListener('abort', () => cancelled.abort())
  let first = true
  let finished = false

  const stop = async () => {
    try {
      await iterator.return?.()
    } catch {}
  }
  const finish = async (controller: ReadableStreamDefaultController<Uint8Array>, reason?: 'voucher-timeout' | 'cancelled' | 'closed') => {
    if (finished) return
    finished = true
    if (reason) options.onStop?.(reason)
    await stop()
    try {
      controller.enqueue(encoder.encode(jsonEvent('payment-receipt', meter.receipt(await meter.state()))))
    } catch {}
    controller.close()
  }

  /**
   * Charges one unit. When the channel does not cover it, says so with the state that showed it:
   * the voucher asked for and waited on must rise above that very state's `highest` (a state read
   * again later may already hold the voucher, which would then be asked for again and never come).
   */
  type Paid = 'paid' | 'voucher-timeout' | 'cancelled' | 'closed'
  type Charged = Paid | { need: ChannelState }
  const pay = async (): Promise<Charged> => {
    let state: ChannelState | undefined
    for (let tries = 0; tries < 8; tries++) {
      if (cancelled.signal.aborted) return 'cancelled'
      if (await meter.charge()) return 'paid'
      state = await meter.state()
      if (state.finalized || state.closing || state.closeRequested) return 'closed'
      if (state.highest - state.spent < meter.price) return { need: state }
      // A voucher arrived between the charge and the read: charge again.
    }
    // Vouchers keep arriving and other streams keep taking them: wait for the next one.
    return { need: state! }
  }

  return new Response(
    new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (finished) return
        try {
          const next = await iterator.next()
          if (next.done) return await finish(controller)
          if (first) first = false
          else {
            let paid: Charged = await pay().catch((): Paid => 'closed')
            while (typeof paid === 'object') {
              const state = paid.need
              controller.enqueue(
                encoder.encode(
                  jsonEvent('payment-need-voucher', {
                    channelId: meter.channelId,
                    requiredCumulative: (state.spent + meter.price).toString(),
                    acceptedCumulative: state.highest.toString(),
                    deposit: state.deposit.toString(),
                  }),
                ),
              )
              if (!(await meter.waitForVoucher(state.highest, cancelled.signal))) {
                paid = cancelled.signal.aborted ? 'cancelled' : 'voucher-timeout'
                break
              }
              paid = await pay().catch((): Paid => 'closed')
            }
            if (paid !== 'paid') return await finish(controller, paid)
          }
          controller.enqueue(encoder.encode(messageEvent(next.value)))
        } catch (error) {
          finished = true
          await stop()
          controller.error(error)
        }
      },
      async cancel() {
        cancelled.abort()
        finished = true
        await stop()
      },
    }),
    { headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform' } },
  )
}
