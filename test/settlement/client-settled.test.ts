/**
 * A payment the client settled itself (push, proof) is delivered even when the store fails
 * while recording it: the verified payment is kept in the claim first, so a retry of the same
 * credential (after the failed attempt's lease) finishes the delivery — once.
 */
import { Hono } from 'hono'
import { expect, test } from 'vitest'
import { mpp } from '../../src/index.js'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, credentialFor } from '../helpers/http.js'
import { storeFailingToRecordSettlement } from '../helpers/stores.js'

test('C9 C12: a client-settled payment whose record fails is delivered once on retry, never lost', async () => {
  const flaky = storeFailingToRecordSettlement()
  const method = fakeMethod()
  method.vouchers.add('pushed')
  const pay = mpp({ secret: 'client-settled-secret-0123456789abcdef', methods: [method], store: flaky, leaseMs: 1_000 })
  let runs = 0
  const app = new Hono().get('/paid', pay.charge({ amount: '0.01' }), (c) => {
    runs++
    return c.json({ ok: true })
  })
  const [challenge] = challengesOf(await app.request('http://api.test/paid'))
  const authorization = credentialFor(challenge!, { type: 'receipt', token: 'pushed' })
  const first = await app.request('http://api.test/paid', { headers: { authorization } })
  expect(first.status).toBe(503)
  expect(((await first.json()) as { detail: string }).detail).toMatch(/payment was made/)
  expect(first.headers.get('retry-after')).toBe('1')
  expect(runs).toBe(0)
  await new Promise((resolve) => setTimeout(resolve, 1_100))
  const retry = await app.request('http://api.test/paid', { headers: { authorization } })
  expect(retry.status).toBe(200)
  expect(retry.headers.get('payment-receipt')).toBeTruthy()
  expect(runs).toBe(1)
  const again = await app.request('http://api.test/paid', { headers: { authorization } })
  expect(again.status).toBe(402)
  expect(runs).toBe(1)
})
