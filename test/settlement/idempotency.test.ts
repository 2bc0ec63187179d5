/**
 * C10: `Idempotency-Key` lets a client retry a paid request safely. A client whose connection
 * dropped after it paid retries the same credential with the same key and receives the same
 * answer — the handler does not run again and nothing is charged again.
 */
import { Hono } from 'hono'
import { expect, test } from 'vitest'
import { mpp, parseReceipt } from '../../src/index.js'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, credentialFor } from '../helpers/http.js'

function setup() {
  const method = fakeMethod()
  method.vouchers.add('v1')
  const pay = mpp({ secret: 'idempotency-test-secret-0123456789abcdef', methods: [method] })
  let runs = 0
  const app = new Hono().post('/orders', pay.charge({ amount: '0.01' }), async (c) => {
    runs++
    const body = (await c.req.json()) as { item: string }
    return c.json({ order: `order-${runs}`, item: body.item }, 201, { 'x-order': `order-${runs}` })
  })
  const post = (headers: Record<string, string>) =>
    app.request('http://shop.test/orders', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"item":"book"}' })
  return { method, post, runs: () => runs }
}

test('C10: a retry with the same credential and Idempotency-Key gets the same answer; the handler runs once, one settlement', async () => {
  const s = setup()
  const [challenge] = challengesOf(await s.post({}))
  const authorization = credentialFor(challenge!, { type: 'voucher', token: 'v1' })
  const first = await s.post({ authorization, 'idempotency-key': 'order-42' })
  expect(first.status).toBe(201)
  const firstBody = await first.text()
  const receipt = first.headers.get('payment-receipt')!
  expect(parseReceipt(receipt).reference).toBe('ref-v1')

  const retry = await s.post({ authorization, 'idempotency-key': 'order-42' })
  expect(retry.status).toBe(201)
  expect(await retry.text()).toBe(firstBody)
  expect(retry.headers.get('payment-receipt')).toBe(receipt)
  expect(retry.headers.get('x-order')).toBe('order-1')
  expect(retry.headers.get('idempotent-replayed')).toBe('true')
  expect(s.runs()).toBe(1)
  expect(s.method.settledOnChain).toEqual(['v1'])
})

test('C10 C9: another key, or no key, with a used credential is still refused', async () => {
  const s = setup()
  const [challenge] = challengesOf(await s.post({}))
  const authorization = credentialFor(challenge!, { type: 'voucher', token: 'v1' })
  expect((await s.post({ authorization, 'idempotency-key': 'a' })).status).toBe(201)
  for (const headers of [{ authorization, 'idempotency-key': 'b' }, { authorization }] as Record<string, string>[]) {
    const response = await s.post(headers)
    expect(response.status).toBe(402)
    expect(response.headers.get('payment-receipt')).toBeNull()
  }
  expect(s.runs()).toBe(1)
})

test('C10: without a key the first answer is not kept, and a bad key is refused before anything is charged', async () => {
  const s = setup()
  const [challenge] = challengesOf(await s.post({}))
  const authorization = credentialFor(challenge!, { type: 'voucher', token: 'v1' })
  const bad = await s.post({ authorization, 'idempotency-key': 'x'.repeat(300) })
  expect(bad.status).toBe(400)
  expect(((await bad.json()) as { detail: string }).detail).toMatch(/Idempotency-Key/)
  expect(s.method.settledOnChain).toEqual([])
  expect((await s.post({ authorization })).status).toBe(201)
  expect((await s.post({ authorization })).status).toBe(402)
})

test('C10: idempotency.maxReplayBytes is checked at construction, and 0 keeps no answer', async () => {
  const method = fakeMethod()
  const secret = 'idempotency-test-secret-0123456789abcdef'
  for (const maxReplayBytes of [-1, 1.5, Number.NaN, 32 * 1024 * 1024, '1024' as unknown as number])
    expect(() => mpp({ secret, methods: [method], idempotency: { maxReplayBytes } })).toThrow(
      /`idempotency.maxReplayBytes` must be a whole number of bytes from 0 to 16777216/,
    )
  method.vouchers.add('v0')
  const pay = mpp({ secret, methods: [method], idempotency: { maxReplayBytes: 0 } })
  const app = new Hono().get('/thing', pay.charge({ amount: '0.01' }), (c) => c.text('x'))
  const get = (headers: Record<string, string> = {}) => app.request('http://shop.test/thing', { headers })
  const [challenge] = challengesOf(await get())
  const authorization = credentialFor(challenge!, { type: 'voucher', token: 'v0' })
  const first = await get({ authorization, 'idempotency-key': 'k' })
  expect(first.status).toBe(200)
  expect(first.headers.get('idempotency-replay-limit')).toBe('0')
  expect(first.headers.get('idempotency-replay')).toBe('unavailable')
  expect(await first.text()).toBe('x')
  expect((await get({ authorization, 'idempotency-key': 'k' })).status).toBe(402)
})
