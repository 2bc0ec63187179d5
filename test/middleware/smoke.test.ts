import { Hono } from 'hono'
import { expect, test } from 'vitest'
import { mpp, parseReceipt } from '../../src/index.js'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, credentialFor } from '../helpers/http.js'

test('C1 C6: unpaid gets 402 with a challenge; paid retry gets the resource and a receipt', async () => {
  const method = fakeMethod()
  method.vouchers.add('v1')
  const pay = mpp({ secret: 's'.repeat(32), methods: [method] })
  let ran = 0
  const app = new Hono().get('/paid', pay.charge({ amount: '0.01' }), (c) => {
    ran++
    return c.json({ payer: c.get('payment').payer })
  })
  const first = await app.request('http://api.test/paid')
  expect(first.status).toBe(402)
  expect(first.headers.get('cache-control')).toBe('no-store')
  expect(first.headers.get('content-type')).toBe('application/problem+json')
  const [challenge] = challengesOf(first)
  expect(challenge!.realm).toBe('api.test')
  expect(ran).toBe(0)
  const paid = await app.request('http://api.test/paid', { headers: { authorization: credentialFor(challenge!, { type: 'voucher', token: 'v1' }) } })
  expect(paid.status).toBe(200)
  expect(await paid.json()).toEqual({ payer: 'payer-of-v1' })
  const receipt = parseReceipt(paid.headers.get('payment-receipt')!)
  expect(receipt).toMatchObject({ status: 'success', method: 'fake', reference: 'ref-v1' })
  expect(paid.headers.get('cache-control')).toBe('private')
  expect(method.settledOnChain).toEqual(['v1'])
  const replay = await app.request('http://api.test/paid', { headers: { authorization: credentialFor(challenge!, { type: 'voucher', token: 'v1' }) } })
  expect(replay.status).toBe(402)
  expect(replay.headers.get('payment-receipt')).toBeNull()
  expect(ran).toBe(1)
})
