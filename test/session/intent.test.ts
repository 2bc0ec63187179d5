/**
 * The session offer and the credential's shape, through the real server (no chain needed: a
 * challenge and a refused payload cost no RPC call): the offer's fields as the reference client
 * reads them, beside a charge offer on the same route (ordered by Accept-Payment), unknown
 * actions and malformed payloads refused, and misconfiguration reported at construction.
 */
import { Hono } from 'hono'
import { privateKeyToAccount } from 'viem/accounts'
import { describe, expect, test } from 'vitest'
import { ConfigurationError, mpp } from '../../src/index.js'
import { sessionIntent, tempo, tempoSession } from '../../src/tempo/index.js'
import { challengesOf, credentialFor, requestOf } from '../helpers/http.js'

const payee = privateKeyToAccount('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d')
const escrow = '0x1111111111111111111111111111111111111111'
const rpcUrl = 'http://127.0.0.1:1'
const secret = 'session-intent-secret-session-intent-secret'

function app() {
  const session = tempoSession({ rpcUrl, chainId: 31337, escrow, account: payee, suggestedDeposit: '1', minVoucherDelta: '0.0005', unitType: 'request' })
  const pay = mpp({ secret, methods: [tempo({ rpcUrl, chainId: 31337, recipient: payee.address }), session], intents: [sessionIntent] })
  return new Hono().on(['GET', 'POST'], '/paid', pay.charge({ amount: '0.001' }), (c) => c.text('paid'))
}

describe('the session offer (S9) and payload (S19)', () => {
  test('S9: the session offer carries price per unit, currency, payee, escrow, chain, suggested deposit, minimum increment, v1 — beside charge', async () => {
    const response = await app().request('http://api.test/paid')
    expect(response.status).toBe(402)
    const challenges = challengesOf(response)
    expect(challenges.map((c) => `${c.method}/${c.intent}`)).toEqual(['tempo/charge', 'tempo/session'])
    expect(requestOf(challenges[1]!)).toEqual({
      amount: '1000',
      currency: '0x20c0000000000000000000000000000000000000',
      recipient: payee.address,
      unitType: 'request',
      suggestedDeposit: '1000000',
      methodDetails: { escrowContract: escrow, chainId: 31337, minVoucherDelta: '500', sessionProtocol: 'v1' },
    })
    expect(challenges[1]!.expires).toBeDefined()
    // Accept-Payment puts the session offer first.
    const preferred = await app().request('http://api.test/paid', { headers: { 'accept-payment': 'tempo/session, tempo/charge;q=0.5' } })
    expect(challengesOf(preferred).map((c) => c.intent)).toEqual(['session', 'charge'])
  })

  test('S19: an unknown action and malformed payloads are refused naming the fault, before any chain call', async () => {
    const server = app()
    const challenge = challengesOf(await server.request('http://api.test/paid')).find((c) => c.intent === 'session')!
    const send = (payload: unknown) => server.request('http://api.test/paid', { headers: { authorization: credentialFor(challenge, payload) } })
    const channelId = `0x${'ab'.repeat(32)}`
    const cases: [unknown, RegExp][] = [
      [{ action: 'withdraw', channelId }, /unknown action "withdraw"; expected one of open, voucher, topUp, close/],
      [{ action: 'voucher', channelId: '0x12', cumulativeAmount: '1', signature: `0x${'11'.repeat(65)}` }, /`channelId` must be a bytes32 hex string/],
      [{ action: 'voucher', channelId, cumulativeAmount: '-1', signature: `0x${'11'.repeat(65)}` }, /`cumulativeAmount` must be a base-unit integer string/],
      [{ action: 'voucher', channelId, cumulativeAmount: (1n << 128n).toString(), signature: `0x${'11'.repeat(65)}` }, /exceeds uint128/],
      [{ action: 'voucher', channelId, cumulativeAmount: '1', signature: '0x1234' }, /`signature` must be a 0x-prefixed hex string/],
      [{ action: 'open', channelId, cumulativeAmount: '1', signature: `0x${'11'.repeat(65)}`, transaction: '0x76' }, /`type: "transaction"`/],
    ]
    for (const [payload, detail] of cases) {
      const response = await send(payload)
      expect(response.status).toBe(402)
      const problem = (await response.json()) as { type: string; detail: string }
      expect(problem.type).toBe('https://paymentauth.org/problems/malformed-credential')
      expect(problem.detail).toMatch(detail)
    }
  })

  test('misconfiguration is reported at construction, saying what to fix', () => {
    const config = { rpcUrl, escrow, account: payee } as const
    expect(() => tempoSession({ ...config, escrow: undefined as never })).toThrow(ConfigurationError)
    expect(() => tempoSession({ ...config, escrow: undefined as never })).toThrow(/`escrow` is required/)
    expect(() => tempoSession({ ...config, account: { address: payee.address } as never })).toThrow(/`account` must be the payee as a local account/)
    expect(() => tempoSession({ ...config, suggestedDeposit: '1e3' })).toThrow(/suggestedDeposit/)
    expect(() => tempoSession({ ...config, settleThreshold: '0' })).toThrow(/`settleThreshold` must be above zero/)
    expect(() => mpp({ secret, methods: [tempoSession(config)] })).toThrow(
      /implements intent "session", which no configured intent settles; add it to `intents`/,
    )
    const pay = mpp({ secret, methods: [tempoSession(config)], intents: [sessionIntent] })
    expect(() => pay.charge({ amount: '0' })).toThrow(/a session price must be above zero/)
    // settle: 'after' is accepted (the unit is given back when the work fails: test/attacks/session.test.ts).
    expect(() => pay.charge({ amount: '0.01', settle: 'after' })).not.toThrow()
    expect(() => pay.charge({ amount: '0.01', settle: 'later' as never })).toThrow(/`settle` must be 'before' or 'after'/)
  })
})
