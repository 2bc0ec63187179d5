/**
 * C10 over MCP: with an `Idempotency-Key` on the POST, a retry of the same paid call (same
 * credential, same key) gets the paid result again, receipt included, under its own JSON-RPC id;
 * the tool runs once and the payment settles once. Without the key, or with another, the used
 * credential is refused as before.
 */
import { Hono } from 'hono'
import { expect, test } from 'vitest'
import { mcpPayments } from '../../src/transports/mcp.js'
import { fakeMethod } from '../helpers/fake-method.js'

const secret = 'a test secret that is at least thirty-two bytes long'

test('C10 M4: a retry with the same credential and Idempotency-Key gets the same result and receipt; the tool runs once', async () => {
  const method = fakeMethod()
  method.vouchers.add('v1')
  let runs = 0
  const app = new Hono().post('/mcp', mcpPayments({ secret, methods: [method], tools: { report: { amount: '0.01' } } }), async (c) => {
    runs++
    const { id } = (await c.req.json()) as { id: number }
    return c.json({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: `report #${runs}` }] } })
  })
  const call = (id: number, meta: unknown, key?: string) =>
    app.request('/mcp', {
      method: 'POST',
      headers: { 'content-type': 'application/json', host: 'mcp.test', ...(key !== undefined && { 'idempotency-key': key }) },
      body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'report', arguments: {}, ...(meta !== undefined && { _meta: meta }) } }),
    })
  type Answer = {
    id: number
    result?: { content: { text: string }[]; _meta: Record<string, { reference: string; challengeId: string }> }
    error?: { code: number; data: { detail: string } }
  }

  const unpaid = (await (await call(1, undefined)).json()) as { error: { data: { challenges: unknown[] } } }
  const credential = { 'org.paymentauth/credential': { challenge: unpaid.error.data.challenges[0], payload: { type: 'voucher', token: 'v1' } } }

  const first = (await (await call(2, credential, 'order-7')).json()) as Answer
  expect(first.result!.content[0]!.text).toBe('report #1')
  const receipt = first.result!._meta['org.paymentauth/receipt']!
  expect(receipt.reference).toBe('ref-v1')

  const retry = await call(3, credential, 'order-7')
  expect(retry.headers.get('idempotent-replayed')).toBe('true')
  const replayed = (await retry.json()) as Answer
  expect(replayed.id).toBe(3)
  expect(replayed.result).toEqual(first.result)
  expect(runs).toBe(1)
  expect(method.calls.settle).toBe(1)

  for (const key of [undefined, 'order-8']) {
    const refused = (await (await call(4, credential, key)).json()) as Answer
    expect(refused.error!.code).toBe(-32043)
    expect(refused.error!.data.detail).toMatch(/already been used/)
  }
  expect(runs).toBe(1)
  expect(method.settledOnChain).toEqual(['v1'])
})

test('C10: a malformed Idempotency-Key is refused (-32602) before anything is charged', async () => {
  const method = fakeMethod()
  method.vouchers.add('v2')
  const app = new Hono().post('/mcp', mcpPayments({ secret, methods: [method], tools: { report: { amount: '0.01' } } }), (c) => c.json({}))
  const body = (meta?: unknown) =>
    JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'report', ...(meta !== undefined && { _meta: meta }) } })
  const unpaid = (await (await app.request('/mcp', { method: 'POST', headers: { 'content-type': 'application/json' }, body: body() })).json()) as {
    error: { data: { challenges: unknown[] } }
  }
  const meta = { 'org.paymentauth/credential': { challenge: unpaid.error.data.challenges[0], payload: { type: 'voucher', token: 'v2' } } }
  const refused = (await (
    await app.request('/mcp', { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': 'k'.repeat(300) }, body: body(meta) })
  ).json()) as { error: { code: number; data: { detail: string } } }
  expect(refused.error.code).toBe(-32602)
  expect(refused.error.data.detail).toMatch(/Idempotency-Key must be 1 to 255 printable ASCII characters/)
  expect(method.calls.settle).toBe(0)
})
