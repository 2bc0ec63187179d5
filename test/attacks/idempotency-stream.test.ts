/**
 * C10 `Idempotency-Key` against streamed answers. A paid answer is kept for replay only up to a
 * bound; it must never be read whole before the first byte leaves, or an endless event stream
 * never answers and a long body sits in the server's memory. Paid by the reference client (mppx,
 * pull mode) on the local chain, through the real middleware.
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { Mppx, tempo as tempoClient } from 'mppx/client'
import { createClient, http } from 'viem'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { fundedAccount, localChain } from '../../scripts/local-chain.js'
import { type MppOptions, mpp } from '../../src/index.js'
import { memoryStore } from '../../src/stores/memory.js'
import { tempo } from '../../src/tempo/index.js'
import { challengesOf } from '../helpers/http.js'
import { fresh, origin, rpcUrl, secret } from './support.js'

let payer: Awaited<ReturnType<typeof fundedAccount>>
let client: { createCredential(response: Response, context: { mode: 'pull' | 'push' }): Promise<string> }

beforeAll(async () => {
  payer = await fundedAccount(rpcUrl(), { funder: 3, amount: '20' })
  const url = rpcUrl()
  client = Mppx.create({
    polyfill: false,
    methods: [tempoClient.charge({ account: payer, getClient: () => createClient({ chain: localChain(url), transport: http(url) }) })],
  })
})

const MiB = 1024 * 1024
const encoder = new TextEncoder()

/** A body produced on demand, one chunk per read: counts what the handler was asked for. */
function producer(chunk: (i: number) => Uint8Array | undefined) {
  const state = { produced: 0, cancelled: false }
  let onCancel: () => void = () => {}
  const cancelled = new Promise<void>((resolve) => (onCancel = resolve))
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const next = chunk(state.produced)
      if (next === undefined) controller.close()
      else {
        state.produced++
        controller.enqueue(next)
      }
    },
    cancel() {
      state.cancelled = true
      onCancel()
    },
  })
  return { stream, state, cancelled }
}

/** A shop whose paid route answers whatever `answer` builds; the store is inspectable. */
function streamingShop(answer: () => Response, options: Partial<MppOptions> = {}) {
  const store = memoryStore()
  const pay = mpp({ secret, methods: [tempo({ rpcUrl: rpcUrl(), chainId: 31337, recipient: fresh() })], store, ...options })
  let runs = 0
  const app = new Hono().get('/stream', pay.charge({ amount: '0.01' }), () => {
    runs++
    return answer()
  })
  const paidCredential = async (fetchOn: (init?: RequestInit) => Promise<Response>) => {
    const unpaid = await fetchOn()
    expect(unpaid.status).toBe(402)
    const challenge = challengesOf(unpaid)[0]!
    return { authorization: await client.createCredential(unpaid, { mode: 'pull' }), challengeId: challenge.id }
  }
  const kept = async (challengeId: string) => {
    const record = await store.get(`mpp:challenge:${challengeId}`)
    expect(record?.state).toBe('settled')
    return (JSON.parse(record!.data!) as { response?: { body: string } }).response
  }
  return { app, store, runs: () => runs, paidCredential, kept }
}

const used = /already been used/

describe('C10: Idempotency-Key with streamed answers', () => {
  let server: ReturnType<typeof serve> | undefined
  afterAll(() => {
    const http = server as Server | undefined
    http?.closeAllConnections()
    http?.close()
  })

  test('C10: an endless event stream (SSE) with an Idempotency-Key answers at once over real HTTP, and is not kept', async () => {
    // Endless; but a server that reads two million events ahead of the client (tens of MB, past
    // any socket buffer) is buffering the stream: the stream errors then, so the test fails fast.
    const events = producer((i) => {
      if (i >= 2_000_000) throw new Error('the server read the event stream far ahead of its client')
      return encoder.encode(`id: ${i}\ndata: tick ${i}\n\n`)
    })
    const shop = streamingShop(() => new Response(events.stream, { headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } }))
    server = serve({ fetch: shop.app.fetch, port: 0, hostname: '127.0.0.1' })
    await new Promise<void>((resolve) => server!.once('listening', () => resolve()))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/stream`
    const { authorization } = await shop.paidCredential(() => fetch(url))

    const response = await fetch(url, { headers: { authorization, 'idempotency-key': 'sse-1' } })
    expect(response.status).toBe(200)
    expect(response.headers.get('payment-receipt')).toBeTruthy()
    expect(response.headers.get('content-type')).toBe('text/event-stream')
    expect(response.headers.get('idempotency-replay')).toBe('unavailable')
    expect(response.headers.get('idempotency-replay-limit')).toBe('65536')
    const reader = response.body!.getReader()
    const first = await reader.read()
    expect(new TextDecoder().decode(first.value)).toContain('data: tick 0')
    await reader.cancel()
    // The client left: the server stops reading the handler's endless stream.
    await events.cancelled
    expect(events.state.cancelled).toBe(true)

    // Nothing was kept, so the same credential and key are refused, not replayed.
    const retry = await fetch(url, { headers: { authorization, 'idempotency-key': 'sse-1' } })
    expect(retry.status).toBe(402)
    expect(((await retry.json()) as { detail: string }).detail).toMatch(used)
    expect(shop.runs()).toBe(1)
  })

  test('C10: a long body of unknown length streams through as it is produced; no more than the limit is copied, and nothing is kept', async () => {
    const total = 32
    const body = producer((i) => (i < total ? new Uint8Array(MiB).fill(i) : undefined))
    const shop = streamingShop(() => new Response(body.stream, { headers: { 'content-type': 'application/octet-stream' } }))
    const get = (init?: RequestInit) => Promise.resolve(shop.app.request(`${origin}/stream`, init))
    const { authorization, challengeId } = await shop.paidCredential(get)

    const response = await get({ headers: { authorization, 'idempotency-key': 'big-1' } })
    expect(response.status).toBe(200)
    expect(response.headers.get('payment-receipt')).toBeTruthy()
    expect(response.headers.get('idempotency-replay-limit')).toBe('65536')
    const reader = response.body!.getReader()
    const first = await reader.read()
    expect(first.value?.byteLength).toBe(MiB)
    // The first megabyte arrived while the handler had produced only a few: nothing is buffered whole.
    expect(body.state.produced).toBeLessThan(4)
    let received = first.value!.byteLength
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      received += value.byteLength
    }
    expect(received).toBe(total * MiB)
    expect(body.state.produced).toBe(total)

    // Over the limit: no copy was kept with the claim, and a retry is refused rather than replayed.
    expect(await shop.kept(challengeId)).toBeUndefined()
    expect(shop.store.usage.paid.bytes).toBeLessThan(64 * 1024)
    const retry = await get({ headers: { authorization, 'idempotency-key': 'big-1' } })
    expect(retry.status).toBe(402)
    expect(((await retry.json()) as { detail: string }).detail).toMatch(used)
    expect(shop.runs()).toBe(1)
  })

  test('C10: a Content-Length over the configured limit says up front that the answer will not be kept', async () => {
    const bytes = new Uint8Array(4096).fill(7)
    const shop = streamingShop(() => new Response(bytes, { headers: { 'content-type': 'application/octet-stream', 'content-length': '4096' } }), {
      idempotency: { maxReplayBytes: 1024 },
    })
    const get = (init?: RequestInit) => Promise.resolve(shop.app.request(`${origin}/stream`, init))
    const { authorization, challengeId } = await shop.paidCredential(get)
    const response = await get({ headers: { authorization, 'idempotency-key': 'cl-1' } })
    expect(response.status).toBe(200)
    expect(response.headers.get('idempotency-replay')).toBe('unavailable')
    expect(response.headers.get('idempotency-replay-limit')).toBe('1024')
    expect(new Uint8Array(await response.arrayBuffer())).toEqual(bytes)
    expect(await shop.kept(challengeId)).toBeUndefined()
  })

  test('C10: a short answer streamed in pieces is kept as it passes and replayed whole', async () => {
    const pieces = ['{"part":1,', '"part2":"', 'x'.repeat(1000), '"}']
    const shop = streamingShop(() => {
      const body = producer((i) => (i < pieces.length ? encoder.encode(pieces[i]) : undefined))
      return new Response(body.stream, { status: 201, headers: { 'content-type': 'application/json', 'x-order': 'o-1' } })
    })
    const get = (init?: RequestInit) => Promise.resolve(shop.app.request(`${origin}/stream`, init))
    const { authorization, challengeId } = await shop.paidCredential(get)
    const first = await get({ headers: { authorization, 'idempotency-key': 'small-1' } })
    expect(first.status).toBe(201)
    expect(first.headers.get('idempotency-replay')).toBeNull()
    const text = await first.text()
    expect(text).toBe(pieces.join(''))
    expect(await shop.kept(challengeId)).toBeDefined()

    const retry = await get({ headers: { authorization, 'idempotency-key': 'small-1' } })
    expect(retry.status).toBe(201)
    expect(retry.headers.get('idempotent-replayed')).toBe('true')
    expect(retry.headers.get('x-order')).toBe('o-1')
    expect(retry.headers.get('payment-receipt')).toBe(first.headers.get('payment-receipt'))
    expect(await retry.text()).toBe(text)
    expect(shop.runs()).toBe(1)
  })

  test('C10: a client that cancels in the middle of a short answer leaves no partial answer to replay', async () => {
    let release: () => void = () => {}
    const gate = new Promise<void>((resolve) => (release = resolve))
    let onCancel: () => void = () => {}
    const cancelled = new Promise<void>((resolve) => (onCancel = resolve))
    const shop = streamingShop(() => {
      let part = 0
      const stream = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (part++ === 0) return controller.enqueue(encoder.encode('first half, '))
          // The second half comes only after the gate opens; the client will be gone by then.
          await gate
          controller.enqueue(encoder.encode('second half'))
          controller.close()
        },
        cancel: () => onCancel(),
      })
      return new Response(stream, { headers: { 'content-type': 'text/plain' } })
    })
    const get = (init?: RequestInit) => Promise.resolve(shop.app.request(`${origin}/stream`, init))
    const { authorization, challengeId } = await shop.paidCredential(get)
    const response = await get({ headers: { authorization, 'idempotency-key': 'cut-1' } })
    const reader = response.body!.getReader()
    expect(new TextDecoder().decode((await reader.read()).value)).toBe('first half, ')
    await reader.cancel('client went away')
    // The cancel reaches the handler's stream.
    await cancelled
    release()
    await new Promise((resolve) => setTimeout(resolve, 20))

    expect(await shop.kept(challengeId)).toBeUndefined()
    const retry = await get({ headers: { authorization, 'idempotency-key': 'cut-1' } })
    expect(retry.status).toBe(402)
    expect(((await retry.json()) as { detail: string }).detail).toMatch(used)
  })
})
