/**
 * Payouts on the real local chain: earnings leave the operator's wallet as a TIP-20
 * transferWithMemo (memo = payout id), exactly once across crashes, lost answers and concurrent
 * reconcilers; a payout that cannot be sent goes back to earnings only once its nonce slot is
 * closed.
 */
import { type Address, createClient, type Hex, http, type Transport } from 'viem'
import { generatePrivateKey, type LocalAccount, privateKeyToAccount } from 'viem/accounts'
import { afterAll, afterEach, beforeAll, describe, expect, inject, test } from 'vitest'
import { balanceOf, fund, fundedAccount, localChain, pathUsd } from '../../scripts/local-chain.js'
import { type RpcProxy, startRpcProxy } from '../../scripts/rpc-proxy.js'
import { hub } from '../../src/accounts/hub.js'
import { type PayoutLedger, payoutMemo, payouts } from '../../src/accounts/payout.js'
import { ConfigurationError } from '../../src/protocol/errors.js'
import { rawRpc, scriptedTransport } from '../tempo/helpers.js'
import { type Accounts, pgliteAccounts } from './payout-support.js'
import { expectBalanced } from './support.js'

const funder = 6
const operatorSecret = 'operator-secret-for-tests-0123456789abcdef'
let rpcUrl: string
let proxy: RpcProxy
let operator: Awaited<ReturnType<typeof fundedAccount>>
let accounts: Accounts

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  proxy = await startRpcProxy(rpcUrl)
  operator = await fundedAccount(rpcUrl, { funder, amount: '50' })
  accounts = await pgliteAccounts(pathUsd)
})
afterAll(async () => {
  await proxy.close()
})

// Whatever a payout went through, the books still balance (sum zero, nothing negative).
afterEach(async () => {
  await expectBalanced(accounts.ledger)
})

const fresh = (): Address => privateKeyToAccount(generatePrivateKey()).address
// No transport retries: a lost answer must stay lost for the tests that lose one.
const walletFor = (account: LocalAccount = operator, url = rpcUrl, transport: Transport = http(url, { retryCount: 0 })) =>
  createClient({ account, chain: localChain(url), transport })

let realmCounter = 0
async function setup(options: { earnings?: bigint; url?: string; ledger?: (base: PayoutLedger) => PayoutLedger } = {}) {
  const realm = `payout-${Date.now()}-${realmCounter++}.example`
  const developer = fresh()
  if (options.earnings !== 0n) await accounts.earn(realm, options.earnings ?? 12_345n)
  const base = accounts.ledger
  const ledger: PayoutLedger = options.ledger ? options.ledger(base) : base
  const make = (l: PayoutLedger = ledger, url = options.url) =>
    payouts({ ledger: l, wallet: walletFor(operator, url), currency: pathUsd, payoutAddress: { [realm]: developer }, receiptTimeoutMs: 20_000 })
  return { realm, developer, ledger: base, make, p: make() }
}

type Log = { address: string; topics: Hex[]; data: Hex }
async function transferLogs(hash: Hex): Promise<Log[]> {
  const receipt = (await rawRpc(rpcUrl, 'eth_getTransactionReceipt', [hash])) as { status: string; logs: Log[] }
  expect(receipt.status).toBe('0x1')
  return receipt.logs.filter((log) => log.topics[0] === '0x57bc7354aa85aed339e000bccffabbc529466af35f0772c8f8ee1145927de7f0')
}

describe('payouts', () => {
  test('a payout lands on chain: the accrued amount, to the payout address, memo = payout id; the ledger records its hash', async () => {
    const s = await setup({ earnings: 12_345n })
    const done = await s.p.payout({ realm: s.realm })
    expect(done).toMatchObject({ realm: s.realm, to: s.developer.toLowerCase(), amount: 12_345n, status: 'paid' })
    expect(await balanceOf(rpcUrl, s.developer)).toBe(12_345n)
    const [log, ...rest] = await transferLogs(done.txHash as Hex)
    expect(rest).toHaveLength(0)
    expect(log?.address.toLowerCase()).toBe(pathUsd)
    expect(log?.topics[1]?.slice(26)).toBe(operator.address.slice(2).toLowerCase())
    expect(log?.topics[2]?.slice(26)).toBe(s.developer.slice(2).toLowerCase())
    expect(log?.topics[3]).toBe(payoutMemo(done.id))
    // The id fits the memo as it is (readable in an explorer): po_<block it began at>_<random>.
    expect(done.id).toMatch(new RegExp(`^po_[0-9a-z]+_${operator.address.slice(2, 8).toLowerCase()}[0-9a-f]{14}$`))
    expect(Buffer.from(String(log?.topics[3]).slice(2), 'hex').toString('utf8').replace(/\0+$/, '')).toBe(done.id)
    expect(BigInt(log?.data as Hex)).toBe(12_345n)
    expect(await s.ledger.earnings(s.realm)).toMatchObject({ accrued: 0n, paidOut: 12_345n, pending: 0n })
    expect(await s.ledger.pendingPayouts(s.realm)).toHaveLength(0)
  })

  test('a part of the earnings can be paid; the rest stays accrued', async () => {
    const s = await setup({ earnings: 10_000n })
    const done = await s.p.payout({ realm: s.realm, amount: 4_000n })
    expect(done.status).toBe('paid')
    expect(await balanceOf(rpcUrl, s.developer)).toBe(4_000n)
    expect(await s.ledger.earnings(s.realm)).toMatchObject({ accrued: 6_000n, paidOut: 4_000n, pending: 0n })
  })

  test('nothing to pay, more than accrued, or no payout address: refused before anything is recorded', async () => {
    const s = await setup({ earnings: 0n })
    await expect(s.p.payout({ realm: s.realm })).rejects.toMatchObject({ reason: 'nothing-to-pay' })
    const t = await setup({ earnings: 100n })
    await expect(t.p.payout({ realm: t.realm, amount: 101n })).rejects.toMatchObject({ reason: 'nothing-to-pay' })
    await expect(t.p.payout({ realm: 'unknown.example' })).rejects.toMatchObject({ reason: 'no-payout-address' })
    expect(await t.ledger.earnings(t.realm)).toMatchObject({ accrued: 100n, pending: 0n })
  })

  test('crash after the broadcast, before completePayout: reconcile finds the transfer by its memo — same hash, no second transfer', async () => {
    // The ledger write after the broadcast fails (the database went away, the process died).
    const s = await setup({
      earnings: 7_777n,
      ledger: (base) => ({
        ...base,
        completePayout: async () => {
          throw new Error('connection terminated')
        },
      }),
    })
    const operatorBefore = await balanceOf(rpcUrl, operator.address)
    const first = await s.p.payout({ realm: s.realm })
    expect(first.status).toBe('pending')
    expect(first.txHash).toMatch(/^0x[0-9a-f]{64}$/)
    expect(await balanceOf(rpcUrl, s.developer)).toBe(7_777n)
    expect(await s.ledger.pendingPayouts(s.realm)).toHaveLength(1)

    // Restart: a fresh payouts instance on the working ledger.
    const [reconciled, ...others] = (await s.make(s.ledger).reconcilePayouts({ realm: s.realm })).filter((r) => r.id === first.id)
    expect(others).toHaveLength(0)
    expect(reconciled).toMatchObject({ id: first.id, status: 'paid', txHash: first.txHash })
    expect(await balanceOf(rpcUrl, s.developer)).toBe(7_777n)
    // The operator paid 7 777 once (plus fees in its fee token, which is not pathUSD here or is counted below).
    const spent = operatorBefore - (await balanceOf(rpcUrl, operator.address))
    expect(spent >= 7_777n && spent < 2n * 7_777n).toBe(true)
    expect(await s.ledger.earnings(s.realm)).toMatchObject({ accrued: 0n, paidOut: 7_777n, pending: 0n })
    // Reconciling again changes nothing.
    expect((await s.make(s.ledger).reconcilePayouts({ realm: s.realm })).filter((r) => r.id === first.id)).toHaveLength(0)
    expect(await balanceOf(rpcUrl, s.developer)).toBe(7_777n)
  })

  test('the broadcast answer is lost (the node took it): pending, then reconciled to the one transfer', async () => {
    const s = await setup({ earnings: 3_333n, url: proxy.url })
    proxy.inject({ method: 'eth_sendRawTransaction', action: 'drop' })
    const first = await s.p.payout({ realm: s.realm })
    expect(first.status).toBe('pending')
    expect(first.detail).toMatch(/outcome is unknown/)
    const [again] = (await s.make(s.ledger, rpcUrl).reconcilePayouts({ realm: s.realm })).filter((r) => r.id === first.id)
    expect(again).toMatchObject({ status: 'paid' })
    expect(await transferLogs(again?.txHash as Hex)).toHaveLength(1)
    expect(await balanceOf(rpcUrl, s.developer)).toBe(3_333n)
  })

  test('crash after recording the intent, before any broadcast: two instances reconcile at once, one transfer lands', async () => {
    const s = await setup({ earnings: 5_000n })
    // The intent is recorded and the process dies before signing.
    const record = await s.ledger.beginPayout({ realm: s.realm, to: s.developer, amount: 5_000n })
    const [a, b] = await Promise.all([s.make().reconcilePayouts({ realm: s.realm }), s.make().reconcilePayouts({ realm: s.realm })])
    const mine = [...a, ...b].filter((r) => r.id === record.id)
    expect(mine.some((r) => r.status === 'paid')).toBe(true)
    expect(mine.every((r) => r.status !== 'cancelled')).toBe(true)
    expect(await balanceOf(rpcUrl, s.developer)).toBe(5_000n)
    // Whatever either instance saw, the chain holds exactly one transfer with this memo.
    const hashes = new Set(mine.filter((r) => r.txHash).map((r) => r.txHash))
    expect(hashes.size).toBe(1)
    expect(await s.ledger.earnings(s.realm)).toMatchObject({ accrued: 0n, paidOut: 5_000n, pending: 0n })
  })

  async function slotNonce(account: Address, nonceKey: bigint): Promise<bigint> {
    const data = `0x89535803${account.slice(2).toLowerCase().padStart(64, '0')}${nonceKey.toString(16).padStart(64, '0')}` as Hex
    return BigInt((await rawRpc(rpcUrl, 'eth_call', [{ to: '0x4e4F4E4345000000000000000000000000000000', data }, 'latest'])) as Hex)
  }

  test('a payout whose transfer fails on chain (more than the wallet holds) is cancelled back to earnings; its slot is used up', async () => {
    const poor = await fundedAccount(rpcUrl, { funder, amount: '1' })
    const s = await setup({ earnings: 5_000_000n })
    const p = payouts({ ledger: s.ledger, wallet: walletFor(poor), currency: pathUsd, payoutAddress: { [s.realm]: s.developer } })
    const done = await p.payout({ realm: s.realm })
    expect(done.status).toBe('cancelled')
    expect(await balanceOf(rpcUrl, s.developer)).toBe(0n)
    expect(await s.ledger.earnings(s.realm)).toMatchObject({ accrued: 5_000_000n, pending: 0n, paidOut: 0n })
    // No copy of the payout transaction can land any more.
    expect(await slotNonce(poor.address, p.nonceKey(done.id))).toBe(1n)
  })

  test('a broadcast the node refuses: the slot is closed by a harmless transaction, then the payout is cancelled back to earnings', async () => {
    const s = await setup({ earnings: 4_444n })
    let refusals = 0
    // The node answers the payout's broadcast with an error once (a chain cannot be made to refuse on cue).
    const { transport } = scriptedTransport(rpcUrl, async (method, _params, forward) => {
      if (method === 'eth_sendRawTransaction' && refusals++ === 0)
        throw Object.assign(new Error('insufficient funds for gas * price + value'), { code: -32000 })
      return forward()
    })
    const p = payouts({ ledger: s.ledger, wallet: walletFor(operator, rpcUrl, transport), currency: pathUsd, payoutAddress: { [s.realm]: s.developer } })
    const done = await p.payout({ realm: s.realm })
    expect(done).toMatchObject({ status: 'cancelled' })
    expect(done.detail).toMatch(/refused the payout: insufficient funds/)
    expect(await balanceOf(rpcUrl, s.developer)).toBe(0n)
    expect(await s.ledger.earnings(s.realm)).toMatchObject({ accrued: 4_444n, pending: 0n, paidOut: 0n })
    expect(await slotNonce(operator.address, p.nonceKey(done.id))).toBe(1n)
    // Paying again later is a new payout with its own slot.
    const again = await s.make().payout({ realm: s.realm })
    expect(again).toMatchObject({ status: 'paid', amount: 4_444n })
    expect(await balanceOf(rpcUrl, s.developer)).toBe(4_444n)
  })

  test('a broadcast answered "already known" (a copy in flight) is neither cancelled nor its slot closed; it is paid once', async () => {
    const s = await setup({ earnings: 2_222n })
    const { transport, calls } = scriptedTransport(rpcUrl, async (method, _params, forward) => {
      if (method === 'eth_sendRawTransaction') throw Object.assign(new Error('already known'), { code: -32000 })
      return forward()
    })
    const p = payouts({ ledger: s.ledger, wallet: walletFor(operator, rpcUrl, transport), currency: pathUsd, payoutAddress: { [s.realm]: s.developer } })
    const first = await p.payout({ realm: s.realm })
    expect(first).toMatchObject({ status: 'pending' })
    expect(first.detail).toMatch(/in flight/)
    expect(calls.filter((m) => m === 'eth_sendRawTransaction')).toHaveLength(1)
    expect(await slotNonce(operator.address, p.nonceKey(first.id))).toBe(0n)
    const [paid] = (await s.make().reconcilePayouts({ realm: s.realm })).filter((r) => r.id === first.id)
    expect(paid).toMatchObject({ status: 'paid' })
    expect(await balanceOf(rpcUrl, s.developer)).toBe(2_222n)
  })

  test('a payout begun by one wallet is not reconciled by another (its slot would pay it again)', async () => {
    const s = await setup({
      earnings: 1_111n,
      ledger: (base) => ({
        ...base,
        completePayout: async () => {
          throw new Error('connection terminated')
        },
      }),
    })
    const first = await s.p.payout({ realm: s.realm })
    expect(first).toMatchObject({ status: 'pending' })
    const rotated = await fundedAccount(rpcUrl, { funder, amount: '1' })
    const other = payouts({ ledger: s.ledger, wallet: walletFor(rotated), currency: pathUsd, payoutAddress: { [s.realm]: s.developer } })
    const [skipped] = (await other.reconcilePayouts({ realm: s.realm })).filter((r) => r.id === first.id)
    expect(skipped).toMatchObject({ status: 'pending' })
    expect(skipped?.detail).toMatch(/begun by the wallet/)
    expect(await balanceOf(rpcUrl, s.developer)).toBe(1_111n)
    const [paid] = (await s.make(s.ledger).reconcilePayouts({ realm: s.realm })).filter((r) => r.id === first.id)
    expect(paid).toMatchObject({ status: 'paid', txHash: first.txHash })
    expect(await balanceOf(rpcUrl, s.developer)).toBe(1_111n)
  })

  test('a wallet that cannot pay even a fee: the payout stays pending (never cancelled while its slot is open) and is paid once funded', async () => {
    const empty = privateKeyToAccount(generatePrivateKey())
    const s = await setup({ earnings: 6_000n })
    const make = () => payouts({ ledger: s.ledger, wallet: walletFor(empty), currency: pathUsd, payoutAddress: { [s.realm]: s.developer } })
    const first = await make().payout({ realm: s.realm })
    expect(first.status).toBe('pending')
    expect(await s.ledger.earnings(s.realm)).toMatchObject({ accrued: 0n, pending: 6_000n })
    await fund(rpcUrl, empty.address, { funder, amount: '1' })
    const [paid] = (await make().reconcilePayouts({ realm: s.realm })).filter((r) => r.id === first.id)
    expect(paid).toMatchObject({ status: 'paid' })
    expect(await balanceOf(rpcUrl, s.developer)).toBe(6_000n)
    expect(await s.ledger.earnings(s.realm)).toMatchObject({ accrued: 0n, pending: 0n, paidOut: 6_000n })
  })

  test('the memo is the payout id (short ids readable, long ids hashed) and the nonce key is stable per id', async () => {
    expect(payoutMemo('po_1')).toBe(`0x${Buffer.from('po_1').toString('hex').padEnd(64, '0')}`)
    expect(payoutMemo('x'.repeat(40))).toMatch(/^0x[0-9a-f]{64}$/)
    const s = await setup({ earnings: 0n })
    expect(s.p.nonceKey('a')).toBe(s.p.nonceKey('a'))
    expect(s.p.nonceKey('a')).not.toBe(s.p.nonceKey('b'))
  })

  test('misconfiguration throws at construction', async () => {
    const s = await setup({ earnings: 0n })
    expect(() => payouts({ ledger: s.ledger, wallet: walletFor(), currency: '0x12' as Address, payoutAddress: {} })).toThrow(ConfigurationError)
    expect(() => payouts({ ledger: s.ledger, wallet: walletFor(), currency: pathUsd, payoutAddress: { a: '0xnope' as Address } })).toThrow(ConfigurationError)
    const noAccount = createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) })
    expect(() => payouts({ ledger: s.ledger, wallet: noAccount as never, currency: pathUsd, payoutAddress: {} })).toThrow(/account/)
    expect(() => s.p.routes({ operatorSecret: 'short' })).toThrow(ConfigurationError)
  })
})

describe('operator routes', () => {
  test('POST /payouts needs the operator secret; with it, the payout lands and the answer carries the hash', async () => {
    const s = await setup({ earnings: 2_500n })
    const app = s.p.routes({ operatorSecret })
    const post = (authorization?: string) =>
      app.request('/payouts', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(authorization && { authorization }) },
        body: JSON.stringify({ realm: s.realm }),
      })
    for (const auth of [undefined, 'Bearer wrong-secret', `Basic ${operatorSecret}`]) {
      const refused = await post(auth)
      expect(refused.status).toBe(401)
      expect(refused.headers.get('content-type')).toMatch(/application\/problem\+json/)
      const body = (await refused.json()) as { reason: string; detail: string }
      expect(body.reason).toBe('invalid-operator-secret')
      expect(JSON.stringify(body)).not.toContain(operatorSecret)
    }
    expect(await balanceOf(rpcUrl, s.developer)).toBe(0n)
    const paid = await post(`Bearer ${operatorSecret}`)
    expect(paid.status).toBe(200)
    const body = (await paid.json()) as { status: string; amount: string; txHash: Hex; to: string }
    expect(body).toMatchObject({ status: 'paid', amount: '2500', to: s.developer.toLowerCase() })
    expect(await transferLogs(body.txHash)).toHaveLength(1)
    const earnings = await app.request(`/earnings/${s.realm}`, { headers: { authorization: `Bearer ${operatorSecret}` } })
    expect(await earnings.json()).toMatchObject({ accrued: '0', paidOut: '2500', pending: '0' })
    const again = await post(`Bearer ${operatorSecret}`)
    expect(again.status).toBe(409)
    expect(await again.json()).toMatchObject({ reason: 'nothing-to-pay' })
  })
})

describe('payouts through the hub', () => {
  test('a server pays out its own realm to the address the operator configured; the operator pays any realm', async () => {
    const s = await setup({ earnings: 1_500n })
    const other = await setup({ earnings: 900n })
    const p = payouts({
      ledger: accounts.ledger,
      wallet: walletFor(),
      currency: pathUsd,
      payoutAddress: { [s.realm]: s.developer, [other.realm]: other.developer },
    })
    const app = hub({ ledger: accounts.ledger, operatorSecret, payouts: p })
    const { token } = await accounts.ledger.createServiceToken(s.realm)
    // The body cannot redirect the money or name another realm: the token's realm and the configured address decide.
    const paid = await app.request('/payouts', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ realm: other.realm, to: fresh() }),
    })
    expect(paid.status).toBe(200)
    const body = (await paid.json()) as { status: string; realm: string; txHash: Hex }
    expect(body).toMatchObject({ status: 'paid', realm: s.realm, amount: '1500' })
    expect(await transferLogs(body.txHash)).toHaveLength(1)
    expect(await balanceOf(rpcUrl, s.developer)).toBe(1_500n)
    expect(await balanceOf(rpcUrl, other.developer)).toBe(0n)
    const mine = await app.request('/earnings', { headers: { authorization: `Bearer ${token}` } })
    expect(await mine.json()).toMatchObject({ realm: s.realm, accrued: '0', paidOut: '1500' })

    // A service token is not the operator's secret.
    const refused = await app.request('/operator/payouts', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ realm: other.realm }),
    })
    expect(refused.status).toBe(401)
    const operatorPaid = await app.request('/operator/payouts', {
      method: 'POST',
      headers: { authorization: `Bearer ${operatorSecret}`, 'content-type': 'application/json' },
      body: JSON.stringify({ realm: other.realm }),
    })
    expect(operatorPaid.status).toBe(200)
    expect(await balanceOf(rpcUrl, other.developer)).toBe(900n)
  })
})
