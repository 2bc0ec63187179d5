/**
 * Inputs the database cannot store or the ledger cannot represent are the client's mistake, not an
 * outage: through the real account routes and the real hub on both databases (PGlite and a real
 * PostgreSQL server), a NUL in a label, a key id or a realm, a cursor past Postgres's bigint, a
 * page size over the documented bound, a hold time past the representable dates, or a price in
 * another currency than the ledger's are refused 400 problem JSON naming the field, and nothing
 * is created or charged. A 503 would tell the client to retry what can never succeed.
 */
import { Hono } from 'hono'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { accounts } from '../../src/accounts/index.js'
import type { Ledger } from '../../src/accounts/ledger.js'
import { tempo } from '../../src/tempo/index.js'
import { backends, expectBalanced, openLedger, type TestDatabase } from './support.js'

const secret = 'input-refusals-secret-0123456789abcdefghij'
const operatorSecret = 'input-refusals-operator-0123456789abcdefghij'
const realm = 'api.inputs.test'
const origin = `http://${realm}`

type Problem = { type: string; status: number; detail: string; reason?: string }

describe.each(backends)('bad input is a 400 naming the field, never a 503, on $name', (backend) => {
  let database: TestDatabase
  let ledger: Ledger
  let app: Hono
  let key: string
  let accountId: string
  let currency: string

  beforeAll(async () => {
    database = await backend.open()
    const method = tempo({ rpcUrl: inject('rpcUrl'), chainId: 31337, recipient: privateKeyToAccount(generatePrivateKey()).address })
    currency = method.request({ amount: '1' }).currency
    ledger = await openLedger(database.sql, { currency })
    const acct = accounts({ ledger, realm, secret, methods: [method] })
    app = new Hono()
    app.route('/', acct.routes())
    app.route('/hub', acct.hub({ operatorSecret }))
    const owner = privateKeyToAccount(generatePrivateKey()).address
    const topUp = await ledger.topUp({ owner, amount: 1_000_000n, reference: `0x${'ab'.repeat(32)}`, realm })
    key = topUp.apiKey!
    accountId = topUp.accountId
  })
  afterAll(async () => {
    await expectBalanced(ledger)
    await database?.close()
  })

  const call = (path: string, init: RequestInit & { headers?: Record<string, string> } = {}) =>
    app.request(`${origin}${path}`, { ...init, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...init.headers } })
  async function expect400(response: Response, detail: RegExp) {
    expect(response.status).toBe(400)
    expect(response.headers.get('content-type')).toContain('application/problem+json')
    const problem = (await response.json()) as Problem
    expect(problem.detail).toMatch(detail)
    expect(JSON.stringify(problem)).not.toContain(key)
  }

  test('account routes: a NUL in a label or a key id, a cursor past bigint, a page over 500', async () => {
    const keys = (await ledger.listKeys(accountId)).length
    await expect400(await call('/account/keys', { method: 'POST', body: JSON.stringify({ label: 'lap\u0000top' }) }), /`label` must be/)
    await expect400(await call('/account/top-up', { method: 'POST', body: JSON.stringify({ amount: '1.00', label: 'lap\u0000top' }) }), /`label` must be/)
    expect(await ledger.listKeys(accountId)).toHaveLength(keys)
    await expect400(await call('/account/keys/key%00x', { method: 'DELETE' }), /this account has no key with that id/)
    await expect400(await call('/account/keys/key%00x', { method: 'PATCH', body: JSON.stringify({ limit: '1.00' }) }), /this account has no key with that id/)
    await expect400(await call('/account?cursor=9999999999999999999'), /`cursor` must be the `next` value of a previous page/)
    await expect400(await call('/account?limit=600'), /`limit` must be a whole number from 1 to 500/)
    expect((await call('/account?limit=500')).status).toBe(200)
  })

  test('key routes: a body that is not a JSON object is refused with an example of the right body for that route', async () => {
    const keys = (await ledger.listKeys(accountId)).length
    const keyId = (await ledger.listKeys(accountId))[0]!.id
    for (const body of ['null', '[1]', '"5.00"', '{oops'])
      await expect400(await call(`/account/keys/${keyId}`, { method: 'PATCH', body }), /^the body must be (a JSON object|JSON), e\.g\. \{"limit":"5\.00"\}$/)
    for (const body of ['null', '{oops'])
      await expect400(
        await call('/account/keys', { method: 'POST', body }),
        /^the body must be (a JSON object|JSON), e\.g\. \{"label":"laptop","limit":"5\.00"\} \(both optional\)$/,
      )
    await expect400(await call('/account/top-up', { method: 'POST', body: '[]' }), /^the body must be a JSON object, e\.g\. \{"amount":"1\.00"\}$/)
    expect(await ledger.listKeys(accountId)).toHaveLength(keys)
  })

  test('hub: a NUL or blank realm or label for a service token, a hold time past any date, a price in another currency', async () => {
    const operator = { authorization: `Bearer ${operatorSecret}` }
    const issue = (body: unknown) => call('/hub/operator/service-tokens', { method: 'POST', headers: operator, body: JSON.stringify(body) })
    const before = await database.sql.query<{ n: number }>('select count(*)::int as n from mpp_service_tokens')
    await expect400(await issue({ realm: 'x\u0000y' }), /`realm` must be/)
    await expect400(await issue({ realm: '   ' }), /`realm` must be/)
    await expect400(await issue({ realm: 'r'.repeat(600) }), /`realm` must be/)
    await expect400(await issue({ realm: 'ok.example', label: 'a\u0000' }), /`label` must be/)
    expect(await database.sql.query<{ n: number }>('select count(*)::int as n from mpp_service_tokens')).toEqual(before)
    const unknown = await call('/hub/operator/service-tokens/svc%00x', { method: 'DELETE', headers: operator })
    expect(unknown.status).toBe(404)
    expect(((await unknown.json()) as Problem).reason).toBe('unknown-service-token')

    const issued = (await (await issue({ realm })).json()) as { token: string }
    const service = { authorization: `Bearer ${issued.token}` }
    const hold = (body: Record<string, unknown>) =>
      call('/hub/holds', {
        method: 'POST',
        headers: service,
        body: JSON.stringify({ key, amount: '1', currency, holdId: `h-${crypto.randomUUID()}`, ttlMs: 60_000, ...body }),
      })
    await expect400(await hold({ ttlMs: Number.MAX_SAFE_INTEGER }), /`ttlMs` must be/)
    await expect400(await hold({ currency: '0x20c0000000000000000000000000000000000099' }), /cannot be held by a ledger in/)
    // A description is the server's note of what was bought: kept without what Postgres cannot store.
    const noted = await hold({ holdId: 'noted', description: 'tools/call a\u0000b' })
    expect(noted.status).toBe(201)
    await expect400(
      await call('/hub/holds/noted/extend', { method: 'POST', headers: service, body: JSON.stringify({ ttlMs: Number.MAX_SAFE_INTEGER }) }),
      /`ttlMs` must be/,
    )
    expect((await call('/hub/holds/noted/release', { method: 'POST', headers: service })).status).toBe(200)
    expect((await ledger.account(accountId))!.balance).toBe(1_000_000n)
  })
})
