/**
 * A paid answer's Cache-Control. The receipt path used to overwrite the handler's header with
 * `private`, so a handler's `no-store` (a one-time secret, a download token) became storable in
 * the client's cache. Now a paid answer is always at least `private` (C6) and keeps every
 * stricter directive of the handler; what only a shared cache reads (`public`, `s-maxage`) goes.
 */
import { Hono } from 'hono'
import { describe, expect, test } from 'vitest'
import type { SettleTiming } from '../../src/index.js'
import { mpp } from '../../src/index.js'
import { fakeMethod } from '../helpers/fake-method.js'
import { challengesOf, credentialFor } from '../helpers/http.js'
import { origin, secret, voucher } from '../protocol/support.js'

function app(form: 'middleware' | 'handler', settle: SettleTiming) {
  const method = Object.assign(fakeMethod(), { deferrable: ['voucher'] })
  const pay = mpp({ secret, methods: [method] })
  const app = new Hono()
  const handler = (c: { req: { query(name: string): string | undefined }; json(value: unknown, status: 200, headers?: Record<string, string>): Response }) => {
    const value = c.req.query('cc')
    return c.json({ secret: 'one-time' }, 200, value === undefined ? {} : { 'cache-control': value })
  }
  if (form === 'handler') app.get('/paid', pay.charge({ amount: '0.01', settle }, handler as never))
  else app.get('/paid', pay.charge({ amount: '0.01', settle }), handler as never)
  let n = 0
  const paid = async (cacheControl?: string): Promise<Response> => {
    const path = cacheControl === undefined ? '/paid' : `/paid?cc=${encodeURIComponent(cacheControl)}`
    const challenge = challengesOf(await app.request(origin + path))[0]!
    const token = `v${n++}`
    method.vouchers.add(token)
    const response = await app.request(origin + path, { headers: { authorization: credentialFor(challenge, voucher(token)) } })
    expect(response.status).toBe(200)
    expect(response.headers.get('payment-receipt')).not.toBeNull()
    return response
  }
  return paid
}

const cases: [string | undefined, string][] = [
  [undefined, 'private'],
  ['no-store', 'private, no-store'],
  ['no-store, max-age=0', 'private, no-store, max-age=0'],
  ['public, no-store', 'private, no-store'],
  ['public, max-age=60', 'private, max-age=60'],
  ['max-age=60, s-maxage=600, proxy-revalidate', 'private, max-age=60'],
  ['private="set-cookie", max-age=60', 'private, max-age=60'],
  ['private="set-cookie, x-token", no-store', 'private, no-store'],
  ['private, no-cache', 'private, no-cache'],
  ['PUBLIC, Max-Age=5', 'private, Max-Age=5'],
]

describe.each([
  ['middleware', 'before'],
  ['middleware', 'after'],
  ['handler', 'before'],
  ['handler', 'after'],
] as const)('charge(%s form), settle %s', (form, settle) => {
  test.each(cases)('C6: a handler Cache-Control of %j is answered as %j: at least private, no-store kept, never public', async (given, expected) => {
    const paid = app(form, settle)
    const response = await paid(given)
    expect(response.headers.get('cache-control')).toBe(expected)
  })
})
