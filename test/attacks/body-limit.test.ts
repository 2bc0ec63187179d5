/**
 * Unbounded bodies before payment. A request body is read and hashed (its digest is bound into
 * the challenge) before the request is known to be paid: an unpaid 200 MB POST used to be read
 * whole, blocking the event loop. Now `maxBodyBytes` (default 1 MiB) bounds it, on the HTTP and
 * the MCP adapter: a declared Content-Length over it is refused unread, and a streamed body is
 * refused as soon as the bytes read pass it. Bytes pulled from the client's stream are counted.
 */
import { once } from 'node:events'
import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { describe, expect, test } from 'vitest'
import { mpp } from '../../src/index.js'
import { mcpPayments } from '../../src/transports/mcp.js'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf } from '../helpers/http.js'
import { challengeFrom, credentialFor, expectRefusal, harness, origin, pay, secret, sha256Digest, voucher } from '../protocol/support.js'

const MiB = 1024 * 1024
const chunkSize = 64 * 1024

/**
 * A request body of `total` bytes produced on demand, `chunkSize` at a time, that records how
 * many bytes were pulled from it (highWaterMark 0: nothing is produced before it is read).
 */
function streamedBody(total: number) {
  const counter = { pulled: 0 }
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        if (counter.pulled >= total) return controller.close()
        const size = Math.min(chunkSize, total - counter.pulled)
        counter.pulled += size
        controller.enqueue(new Uint8Array(size).fill(0x61))
      },
    },
    { highWaterMark: 0 },
  )
  return { stream, counter }
}

const post = (body: ReadableStream<Uint8Array>, headers: Record<string, string> = {}): RequestInit =>
  ({ method: 'POST', body, duplex: 'half', headers }) as RequestInit

describe('HTTP adapter', () => {
  test('C7: an unpaid 200 MB POST streamed without Content-Length gets 413 after at most the limit plus one chunk is pulled', async () => {
    const { app, ran, method, events } = harness()
    const { stream, counter } = streamedBody(200 * MiB)
    const response = await app.request(`${origin}/upload`, post(stream))
    await expectRefusal(response, 'content-too-large', { status: 413, challenge: false, detail: /at most 1048576 bytes/ })
    expect(counter.pulled).toBeLessThanOrEqual(MiB + chunkSize)
    expect(counter.pulled).toBeGreaterThan(MiB)
    expect(ran.count).toBe(0)
    expect(method.calls.verify).toBe(0)
    expect(events.at(-1)).toMatchObject({ type: 'rejected', reason: 'content-too-large', status: 413 })
  })

  test('C7: a Content-Length over the limit is refused with 413 before a byte is read, paid or not', async () => {
    const { app, ran } = harness({ maxBodyBytes: 4096 })
    const { challenge } = await challengeFrom(app)
    for (const authorization of [undefined, credentialFor(challenge, voucher())]) {
      const { stream, counter } = streamedBody(200 * MiB)
      const headers: Record<string, string> = { 'content-length': String(200 * MiB), ...(authorization && { authorization }) }
      const response = await app.request(`${origin}/upload`, post(stream, headers))
      await expectRefusal(response, 'content-too-large', { status: 413, challenge: false, detail: /209715200 bytes \(Content-Length\).*at most 4096 bytes/ })
      expect(counter.pulled).toBe(0)
    }
    expect(ran.count).toBe(0)
  })

  test('C7: a body of exactly maxBodyBytes is read, digested and paid; one byte more is refused', async () => {
    const { app, ran } = harness({ maxBodyBytes: 1000 }, ['v1'])
    const atLimit = 'x'.repeat(1000)
    const { challenge } = await challengeFrom(app, '/upload', { method: 'POST', body: atLimit })
    expect(challenge.digest).toBe(sha256Digest(atLimit))
    expect((await pay(app, '/upload', credentialFor(challenge, voucher()), { method: 'POST', body: atLimit })).status).toBe(200)
    const over = streamedBody(1001)
    await expectRefusal(await app.request(`${origin}/upload`, post(over.stream)), 'content-too-large', { status: 413, challenge: false })
    expect(ran.count).toBe(1)
  })

  test('C7: the paid handler still reads the body the middleware read (c.req.json, c.req.text)', async () => {
    const method = fakeMethod()
    method.vouchers.add('v1')
    const pay = mpp({ secret, methods: [method] })
    const app = new Hono()
    app.post('/echo', pay.charge({ amount: '0.01' }), async (c) => c.json({ json: await c.req.json(), text: await c.req.text() }))
    const body = JSON.stringify({ hello: 'wörld' })
    const first = await app.request(`${origin}/echo`, { method: 'POST', body, headers: { 'content-type': 'application/json' } })
    expect(first.status).toBe(402)
    const [challenge] = challengesOf(first)
    const paid = await app.request(`${origin}/echo`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', authorization: credentialFor(challenge!, voucher()) },
    })
    expect(paid.status).toBe(200)
    expect(await paid.json()).toEqual({ json: { hello: 'wörld' }, text: body })
  })

  test('C7: over real HTTP (node-server), a request declaring 200 MB gets its 413 while the client has sent 1 KB', async () => {
    const { app, ran } = harness()
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' })
    try {
      await once(server, 'listening')
      const { port } = server.address() as AddressInfo
      const request = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/upload', headers: { 'content-length': String(200 * MiB) } })
      request.on('error', () => {})
      request.write(Buffer.alloc(1024, 0x61))
      const [response] = (await once(request, 'response')) as [import('node:http').IncomingMessage]
      let text = ''
      for await (const chunk of response) text += String(chunk)
      request.destroy()
      expect(response.statusCode).toBe(413)
      expect(JSON.parse(text)).toMatchObject({ type: 'https://paymentauth.org/problems/content-too-large', status: 413 })
      expect(ran.count).toBe(0)
    } finally {
      server.close()
    }
  })

  test('maxBodyBytes is validated at construction, naming the option', () => {
    const methods = [fakeMethod()]
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '1000' as unknown as number]) {
      expect(() => mpp({ secret, methods, maxBodyBytes: bad })).toThrow(/`maxBodyBytes`.*whole number of bytes/)
      expect(() => mcpPayments({ secret, methods, maxBodyBytes: bad })).toThrow(/mcpPayments: `maxBodyBytes`/)
    }
  })
})

describe('MCP adapter', () => {
  function mcp(maxBodyBytes?: number) {
    const method = fakeMethod()
    let calls = 0
    const app = new Hono()
    app.post('/mcp', mcpPayments({ secret, methods: [method], tools: { summarize: { amount: '0.01' } }, ...(maxBodyBytes && { maxBodyBytes }) }), async (c) => {
      calls++
      const message = (await c.req.raw.json()) as { id: number }
      return c.json({ jsonrpc: '2.0', id: message.id, result: { content: [] } })
    })
    return { app, method, calls: () => calls }
  }

  test('M1: an MCP POST streaming 200 MB without Content-Length gets an HTTP 413 problem after at most the limit plus one chunk is pulled', async () => {
    const s = mcp()
    const { stream, counter } = streamedBody(200 * MiB)
    const response = await s.app.request('http://mcp.test/mcp', post(stream, { 'content-type': 'application/json' }))
    await expectRefusal(response, 'content-too-large', { status: 413, challenge: false, detail: /at most 1048576 bytes/ })
    expect(counter.pulled).toBeLessThanOrEqual(MiB + chunkSize)
    expect(s.calls()).toBe(0)
  })

  test('M1: an MCP POST whose Content-Length is over maxBodyBytes gets 413 before a byte is read', async () => {
    const s = mcp(2048)
    const { stream, counter } = streamedBody(200 * MiB)
    const response = await s.app.request('http://mcp.test/mcp', post(stream, { 'content-type': 'application/json', 'content-length': String(200 * MiB) }))
    await expectRefusal(response, 'content-too-large', { status: 413, challenge: false, detail: /at most 2048 bytes/ })
    expect(counter.pulled).toBe(0)
    expect(s.calls()).toBe(0)
  })

  test('M1: under the limit, a priced call is challenged and a free call reaches the handler with its body intact', async () => {
    const s = mcp(2048)
    const send = (body: unknown) =>
      s.app.request('http://mcp.test/mcp', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const priced = (await (
      await send({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'summarize', arguments: { text: 'x'.repeat(1500) } } })
    ).json()) as {
      error: { code: number }
    }
    expect(priced.error.code).toBe(-32042)
    const free = (await (await send({ jsonrpc: '2.0', id: 2, method: 'tools/list' })).json()) as { id: number; result: unknown }
    expect(free).toMatchObject({ id: 2, result: { content: [] } })
    expect(s.calls()).toBe(1)
  })
})
