/**
 * Pull payments (T2, T4, T7) on the local Tempo chain: credentials from the reference client,
 * transactions crafted by hand for everything it would never sign.
 */
import { Secp256k1 } from 'ox'
import { KeyAuthorization, SignatureEnvelope, TxEnvelopeTempo } from 'ox/tempo'
import { type Address, type Hex, keccak256 } from 'viem'
import { generatePrivateKey } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, balanceOf, fundedAccount, pathUsd } from '../../scripts/local-chain.js'
import { type RpcProxy, startRpcProxy } from '../../scripts/rpc-proxy.js'
import { type Credential, SettlementUnknownError, type Verified } from '../../src/method.js'
import { type TempoConfig, tempo } from '../../src/tempo/index.js'
import { challengeFor, craft, fresh, mppxCredential, rawRpc, refusal, scriptedTransport, transferCall } from './helpers.js'

const funder = 1
let rpcUrl: string
let proxy: RpcProxy
let payer: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  proxy = await startRpcProxy(rpcUrl)
  payer = await fundedAccount(rpcUrl, { funder, amount: '50' })
})
afterAll(() => proxy.close())

const method = (config: Partial<TempoConfig> & { recipient: Address }) => tempo({ rpcUrl: proxy.url, chainId: 31337, ...config } as TempoConfig)

function setup(config: Partial<TempoConfig> = {}, amount = '0.01') {
  const recipient = fresh()
  const m = method({ recipient, ...config })
  const request = m.request({ amount })
  const challenge = challengeFor(request)
  return { recipient, m, request, challenge, expires: new Date(challenge.expires) }
}

describe('pull', () => {
  test('T2: the envelope is read without recovery exactly as ox reads it: same hash and sign payload, for every shape of list', async () => {
    // The signature is cut off the received bytes by walking the top-level RLP list, and the
    // sign payload is hashed from what remains: short and long calldata, a key authorization
    // before the signature, and no validAfter all move the offsets.
    const { recipient, m, request, challenge, expires } = setup()
    const now = Math.floor(Date.now() / 1000)
    const keyAuthorization = () => {
      const unsignedKey = KeyAuthorization.from({ address: fresh(), chainId: 31337n, type: 'secp256k1' })
      return KeyAuthorization.from(unsignedKey, {
        signature: SignatureEnvelope.from(Secp256k1.sign({ payload: KeyAuthorization.getSignPayload(unsignedKey), privateKey: payer.privateKey })),
      })
    }
    const shapes: Record<string, Partial<TxEnvelopeTempo.TxEnvelopeTempo>> = {
      'a plain transfer': {},
      'no validAfter': { validAfter: undefined },
      'a small nonce key and nonce': { nonceKey: 5n, nonce: 3n },
      'a key authorization before the signature': { keyAuthorization: keyAuthorization() },
    }
    for (const [name, shape] of Object.entries(shapes)) {
      const envelope = TxEnvelopeTempo.from({
        chainId: 31337,
        calls: [transferCall(pathUsd, recipient, 10_000n)],
        gas: 900_000n,
        maxFeePerGas: 40_000_000_000n,
        maxPriorityFeePerGas: 1_000_000_000n,
        nonceKey: 2n ** 256n - 1n,
        nonce: 0n,
        validBefore: now + 25,
        validAfter: now - 60,
        ...shape,
      } as TxEnvelopeTempo.TxEnvelopeTempo)
      const signature = SignatureEnvelope.from(Secp256k1.sign({ payload: TxEnvelopeTempo.getSignPayload(envelope), privateKey: payer.privateKey }))
      const raw = TxEnvelopeTempo.serialize(envelope, { signature })
      const credential = { challenge, payload: { type: 'transaction', signature: raw } } as Credential
      const verified = await m.verify({ credential, request, expires, settle: 'before' })
      const decoded = TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized)
      expect({ name, reference: verified.reference, claims: verified.claims }).toEqual({
        name,
        reference: keccak256(raw),
        claims: [`tempo:tx:${keccak256(raw)}`, `tempo:sig:${TxEnvelopeTempo.getSignPayload(decoded).toLowerCase()}`],
      })
      expect(verified.validUntil).toBe((now + 25) * 1000)
    }
  })

  test('T2: under settle after, verify recovers the payer (the handler is told who pays before the broadcast)', async () => {
    const { m, request, challenge, expires } = setup()
    const credential = await mppxCredential(rpcUrl, payer, challenge, 'pull')
    proxy.reset()
    const verified = await m.verify({ credential, request, expires, settle: 'after' })
    expect(proxy.total()).toBe(0)
    expect(verified.payer?.toLowerCase()).toBe(payer.address.toLowerCase())
    const settled = await m.settle(JSON.parse(JSON.stringify(verified)) as Verified)
    expect(settled.payer?.toLowerCase()).toBe(payer.address.toLowerCase())
  })

  test('T2 T4: an mppx pull credential verifies with no RPC call and settles with exactly one', async () => {
    const { recipient, m, request, challenge, expires } = setup()
    const credential = await mppxCredential(rpcUrl, payer, challenge, 'pull')
    const before = await balanceOf(rpcUrl, recipient)
    proxy.reset()
    const verified = await m.verify({ credential, request, expires, settle: 'before' })
    expect(proxy.total()).toBe(0)
    expect(verified.status).toBe('ready')
    expect(verified.type).toBe('transaction')
    // Settling before the handler, the payer is not recovered: the node's receipt names it.
    expect(verified.payer).toBeUndefined()

    const raw = (credential.payload as { signature: Hex }).signature
    const tx = TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized)
    expect(verified.reference).toBe(keccak256(raw))
    expect(verified.claims).toEqual([`tempo:tx:${keccak256(raw)}`, `tempo:sig:${TxEnvelopeTempo.getSignPayload(tx).toLowerCase()}`])
    expect(verified.validUntil).toBe((tx.validBefore as number) * 1000)
    // What settle/recover need survives a trip through the store.
    const stored = JSON.parse(JSON.stringify(verified)) as Verified

    const settled = await m.settle(stored)
    expect(proxy.counts.get('eth_sendRawTransactionSync')).toBe(1)
    expect(proxy.total()).toBe(1)
    expect(settled.reference).toBe(verified.reference)
    expect(settled.payer?.toLowerCase()).toBe(payer.address.toLowerCase())
    expect(await balanceOf(rpcUrl, recipient)).toBe(before + 10_000n)
    const receipt = (await rawRpc(rpcUrl, 'eth_getTransactionReceipt', [settled.reference])) as { status: string }
    expect(receipt.status).toBe('0x1')
  })

  test('T1 T2: splits are paid exactly, in any order, and the primary recipient gets the remainder', async () => {
    // Recipients that already hold the token: the mppx client's gas estimate on the local node
    // ignores batched calls, and three first-time recipients would run it out of gas.
    const holders: Address[] = []
    for (let i = 0; i < 3; i++) holders.push((await fundedAccount(rpcUrl, { funder, amount: '1', tokens: [pathUsd] })).address)
    const [a, b, recipient] = holders
    const before = await Promise.all([recipient, a, b].map((x) => balanceOf(rpcUrl, x as Address)))
    const m = method({
      recipient: recipient as Address,
      splits: [
        { amount: '0.002', recipient: a as Address },
        { amount: '0.003', recipient: b as Address },
      ],
    })
    const request = m.request({ amount: '0.01' })
    const challenge = challengeFor(request)
    const expires = new Date(challenge.expires)
    expect(request.methodDetails?.splits).toEqual([
      { amount: '2000', recipient: a },
      { amount: '3000', recipient: b },
    ])
    const credential = await mppxCredential(rpcUrl, payer, challenge, 'pull')
    const verified = await m.verify({ credential, request, expires, settle: 'before' })
    await m.settle(verified)
    const after = await Promise.all([recipient, a, b].map((x) => balanceOf(rpcUrl, x as Address)))
    expect(after.map((x, i) => x - (before[i] as bigint))).toEqual([5_000n, 2_000n, 3_000n])

    // Hand-made, splits first and the primary last: order does not matter.
    const c2 = challengeFor(request)
    const raw = craft(payer.privateKey, {
      calls: [transferCall(pathUsd, b as Address, 3_000n), transferCall(pathUsd, a as Address, 2_000n), transferCall(pathUsd, recipient as Address, 5_000n)],
    })
    const v2 = await m.verify({ credential: { challenge: c2, payload: { type: 'transaction', signature: raw } }, request, expires, settle: 'before' })
    expect(v2.status).toBe('ready')
  })

  describe('T2 refusals name their reason', () => {
    const pay = (raw: Hex, s: ReturnType<typeof setup>): Promise<Verified> =>
      s.m.verify({
        credential: { challenge: s.challenge, payload: { type: 'transaction', signature: raw } },
        request: s.request,
        expires: s.expires,
        settle: 'before',
      })

    test('too little → payment-insufficient', async () => {
      const s = setup()
      const error = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 9_999n)] }), s))
      expect(error.kind).toBe('payment-insufficient')
      expect(error.detail).toMatch(/pays only 9999 base units/)
    })

    test('too much is not the charge either', async () => {
      const s = setup()
      const error = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_001n)] }), s))
      expect(error.kind).toBe('verification-failed')
      expect(error.detail).toMatch(/pays 10001 base units, not exactly 10000/)
    })

    test('wrong recipient', async () => {
      const s = setup()
      const error = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, fresh(), 10_000n)] }), s))
      expect(error.kind).toBe('verification-failed')
      expect(error.detail).toMatch(new RegExp(`primary transfer of 10000 base units to ${s.recipient} is missing`))
    })

    test('wrong token', async () => {
      const s = setup()
      const error = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(alphaUsd, s.recipient, 10_000n)] }), s))
      expect(error.detail).toMatch(/call 0 targets .* not the currency 0x20c0000000000000000000000000000000000000/i)
    })

    test('an extra call after the payment (approve) is refused', async () => {
      const s = setup()
      const approve = { to: pathUsd, data: `0x095ea7b3${fresh().slice(2).padStart(64, '0')}${'f'.repeat(64)}` as Hex }
      const error = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n), approve] }), s))
      expect(error.detail).toMatch(/call 1 calls approve; a payment transaction may only contain transfer/)
    })

    test('an extra transfer call is refused even when the payment is in it', async () => {
      const s = setup()
      const error = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n), transferCall(pathUsd, fresh(), 1n)] }), s))
      expect(error.detail).toMatch(/expects exactly 1/)
    })

    test('non-canonical calldata (trailing bytes) is refused', async () => {
      const s = setup()
      const call = transferCall(pathUsd, s.recipient, 10_000n)
      const error = await refusal(pay(craft(payer.privateKey, { calls: [{ ...call, data: `${call.data}00` as Hex }] }), s))
      expect(error.detail).toMatch(/not canonically encoded/)
    })

    test('a forged sender in a 0x78 envelope is never trusted', async () => {
      const s = setup()
      const victim = await fundedAccount(rpcUrl, { funder, amount: '1' })
      const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], claimedSender: victim.address })
      expect(TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized).from?.toLowerCase()).toBe(victim.address.toLowerCase())
      const error = await refusal(pay(raw, s))
      expect(error.detail).toMatch(/names sender .* but the signature is from/i)
    })

    test('T7: validBefore after the challenge expiry is refused', async () => {
      const s = setup()
      const late = Math.floor(s.expires.getTime() / 1000) + 1
      const error = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], validBefore: late }), s))
      expect(error.detail).toMatch(/validBefore \(\d+\) is after the challenge expiry/)
    })

    test('T7: a transaction without validBefore is refused', async () => {
      const s = setup()
      const error = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], validBefore: null }), s))
      expect(error.detail).toMatch(/must set validBefore/)
    })

    test('T7: an expired transaction is refused', async () => {
      const s = setup()
      const past = Math.floor(Date.now() / 1000) - 1
      const error = await refusal(
        pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], validBefore: past, validAfter: past - 100 }), s),
      )
      expect(error.kind).toBe('payment-expired')
    })

    test('T7: another chain id is refused', async () => {
      const s = setup()
      const error = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], chainId: 42431 }), s))
      expect(error.detail).toMatch(/for chain 42431; this route is on chain 31337/)
    })

    test('a high-s (malleated) signature is refused', async () => {
      const s = setup()
      const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
      const tx = TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized)
      const inner = (tx.signature as { signature: { r: bigint; s: bigint; yParity: number } }).signature
      const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n
      const flipped = SignatureEnvelope.from({ r: inner.r, s: n - inner.s, yParity: inner.yParity ^ 1 })
      const malleated = TxEnvelopeTempo.serialize({ ...tx, from: undefined } as TxEnvelopeTempo.TxEnvelopeTempo, { signature: flipped })
      expect(malleated).not.toBe(raw)
      const error = await refusal(pay(malleated, s))
      expect(error.detail).toMatch(/low-s/)
    })

    test('an unsigned transaction is refused', async () => {
      const s = setup()
      const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
      const tx = TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized)
      const unsigned = TxEnvelopeTempo.serialize({ ...tx, from: undefined, signature: undefined } as TxEnvelopeTempo.TxEnvelopeTempo)
      const error = await refusal(pay(unsigned, s))
      expect(error.detail).toMatch(/not signed by its sender/)
    })

    test('a fee-payer request on a route that does not sponsor fees is refused', async () => {
      const s = setup()
      const error = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' }), s))
      expect(error.detail).toMatch(/does not sponsor fees/)
    })

    test('a configured memo must be carried exactly', async () => {
      const memo = `0x${'ab'.repeat(32)}` as Hex
      const s = setup({ memo, modes: ['pull'] })
      expect(s.request.methodDetails?.memo).toBe(memo)
      const wrong = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n, `0x${'cd'.repeat(32)}`)] }), s))
      expect(wrong.detail).toMatch(/must carry the memo 0xabab/)
      const none = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] }), s))
      expect(none.detail).toMatch(/must carry the memo/)
      const right = await pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n, memo)] }), s)
      expect(right.status).toBe('ready')
    })

    test('malformed payloads are malformed-credential', async () => {
      const s = setup()
      for (const payload of [
        undefined,
        'x',
        { type: 'transaction' },
        { type: 'transaction', signature: 'nothex' },
        { type: 'cash', signature: '0x00' },
        { type: 'hash', hash: '0x1234' },
      ]) {
        const error = await refusal(s.m.verify({ credential: { challenge: s.challenge, payload }, request: s.request, expires: s.expires, settle: 'before' }))
        expect(error.kind).toBe('malformed-credential')
        expect(error.detail).toMatch(/payload/)
      }
      const legacy = await refusal(pay('0x02f86c0182' as Hex, s))
      expect(legacy.kind).toBe('malformed-credential')
      expect(legacy.detail).toMatch(/0x76 or 0x78/)
      const garbage = await refusal(pay('0x76c0ffee' as Hex, s))
      expect(garbage.kind).toBe('malformed-credential')
    })

    test('a pull credential on a push-only route is refused', async () => {
      const s = setup({ modes: ['push'] })
      expect(s.request.methodDetails?.supportedModes).toEqual(['push'])
      const error = await refusal(pay(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] }), s))
      expect(error.detail).toMatch(/does not accept pull payments/)
    })
  })

  describe('T4 settlement outcomes', () => {
    test('a transaction the node refuses (sender cannot pay its fee) → settlement-failed, nothing charged', async () => {
      const s = setup()
      const broke = generatePrivateKey()
      const raw = craft(broke, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
      const verified = await s.m.verify({
        credential: { challenge: s.challenge, payload: { type: 'transaction', signature: raw } },
        request: s.request,
        expires: s.expires,
        settle: 'before',
      })
      const error = await refusal(s.m.settle(verified))
      expect(error.kind).toBe('settlement-failed')
      expect(error.detail).toMatch(/node rejected the transaction, nothing was charged/)
      expect(error.detail).not.toContain(raw.slice(2, 80))
      expect(await balanceOf(rpcUrl, s.recipient)).toBe(0n)
    })

    test('a transaction that reverts on chain → settlement-failed; recover() says the same', async () => {
      const s = setup()
      // Pays its fee in AlphaUSD but holds no pathUSD: included, then reverts.
      const poor = await fundedAccount(rpcUrl, { funder, amount: '1', tokens: [alphaUsd] })
      const raw = craft(poor.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], feeToken: alphaUsd })
      const verified = await s.m.verify({
        credential: { challenge: s.challenge, payload: { type: 'transaction', signature: raw } },
        request: s.request,
        expires: s.expires,
        settle: 'before',
      })
      const error = await refusal(s.m.settle(verified))
      expect(error.kind).toBe('settlement-failed')
      expect(error.detail).toMatch(/reverted on chain/)
      const again = await refusal(s.m.recover(verified))
      expect(again.detail).toMatch(/reverted on chain/)
    })

    test('a dropped broadcast answer → SettlementUnknownError; recover() on another instance finds the payment, once', async () => {
      const s = setup()
      const credential = await mppxCredential(rpcUrl, payer, s.challenge, 'pull')
      const verified = await s.m.verify({ credential, request: s.request, expires: s.expires, settle: 'before' })
      proxy.inject({ method: 'eth_sendRawTransactionSync', action: 'drop' })
      const error = await s.m.settle(verified).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(SettlementUnknownError)
      const other = method({ recipient: s.recipient })
      proxy.reset()
      const settled = await other.recover(JSON.parse(JSON.stringify(verified)) as Verified)
      expect(settled.reference).toBe(verified.reference)
      expect(proxy.counts.get('eth_getTransactionReceipt')).toBe(1)
      expect(proxy.total()).toBe(1)
      expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
    })

    test('a broadcast that never answers times out into SettlementUnknownError', async () => {
      const s = setup({ timeout: 300 })
      const credential = await mppxCredential(rpcUrl, payer, s.challenge, 'pull')
      const verified = await s.m.verify({ credential, request: s.request, expires: s.expires, settle: 'before' })
      proxy.inject({ method: 'eth_sendRawTransactionSync', action: 'hang' })
      const error = await s.m.settle(verified).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(SettlementUnknownError)
      // Never sent: recover() broadcasts the same signed bytes.
      expect(await balanceOf(rpcUrl, s.recipient)).toBe(0n)
      const settled = await s.m.recover(verified)
      expect(settled.reference).toBe(verified.reference)
      expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
    })

    test('a 5xx on broadcast is an unknown outcome, not a failure', async () => {
      const s = setup()
      const credential = await mppxCredential(rpcUrl, payer, s.challenge, 'pull')
      const verified = await s.m.verify({ credential, request: s.request, expires: s.expires, settle: 'before' })
      proxy.inject({ method: 'eth_sendRawTransactionSync', action: '5xx' })
      expect(await s.m.settle(verified).catch((e: unknown) => e)).toBeInstanceOf(SettlementUnknownError)
      await s.m.recover(verified)
      expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
    })

    test('recover() of a transaction that never landed and expired → payment-expired, nothing charged', async () => {
      let clock = Date.now()
      const s = setup({ now: () => clock })
      const credential = await mppxCredential(rpcUrl, payer, s.challenge, 'pull')
      const verified = await s.m.verify({ credential, request: s.request, expires: s.expires, settle: 'before' })
      clock = verified.validUntil + 60_000
      const error = await refusal(s.m.recover(verified))
      expect(error.kind).toBe('payment-expired')
      expect(error.detail).toBe('the signed transaction expired before it landed; nothing was charged')
      // Just past validBefore the chain may still include it: unknown, not expired.
      clock = verified.validUntil + 1_000
      expect(await s.m.recover(verified).catch((e: unknown) => e)).toBeInstanceOf(SettlementUnknownError)
      expect(await balanceOf(rpcUrl, s.recipient)).toBe(0n)
    })

    test('settling a transaction the client already broadcast itself still reports the payment (no false failure)', async () => {
      const s = setup()
      const credential = await mppxCredential(rpcUrl, payer, s.challenge, 'pull')
      const verified = await s.m.verify({ credential, request: s.request, expires: s.expires, settle: 'before' })
      await rawRpc(rpcUrl, 'eth_sendRawTransactionSync', [(credential.payload as { signature: Hex }).signature])
      const settled = await s.m.settle(verified)
      expect(settled.reference).toBe(verified.reference)
      expect(await balanceOf(rpcUrl, s.recipient)).toBe(10_000n)
    })
  })

  test('T4: an "already known" answer to the broadcast is resolved by one receipt lookup (a fresh settlement takes a landed transaction only when its memo binds it to this challenge, a recovery of its claim always); a sync timeout (EIP-7966 code 4) is unknown', async () => {
    const recipient = fresh()
    let answer: 'already-known' | 'timeout' = 'already-known'
    const { transport, calls } = scriptedTransport(rpcUrl, async (method, params, forward) => {
      if (method !== 'eth_sendRawTransactionSync') return forward()
      await rawRpc(rpcUrl, method, params) // it does reach the chain...
      throw answer === 'already-known'
        ? Object.assign(new Error('already known'), { code: -32000 })
        : Object.assign(new Error("The transaction was added to the mempool but wasn't processed within 2s."), { code: 4 })
    })
    const m = tempo({ transport, chainId: 31337, recipient })
    const request = m.request({ amount: '0.01' })
    const challenge = challengeFor(request)
    // No memo: it could have paid another challenge whose claims were lost.
    const unbound: Credential = {
      challenge,
      payload: { type: 'transaction', signature: craft(payer.privateKey, { calls: [transferCall(pathUsd, recipient, 10_000n)] }) },
    }
    const verified = await m.verify({ credential: unbound, request, expires: new Date(challenge.expires), settle: 'before' })
    const error = await refusal(m.settle(verified))
    expect(error.detail).toMatch(/already been used for another request: its transaction is already on chain/)
    expect(calls).toEqual(['eth_sendRawTransactionSync', 'eth_getTransactionReceipt'])
    // A retry recovering the claim whose attempt may have sent it takes the landed transaction.
    expect((await m.recover(verified)).reference).toBe(verified.reference)
    expect(calls).toEqual(['eth_sendRawTransactionSync', 'eth_getTransactionReceipt', 'eth_getTransactionReceipt'])
    expect(await balanceOf(rpcUrl, recipient)).toBe(10_000n)

    // mppx's transaction carries this challenge's memo: it can have paid nothing else, so a fresh
    // settlement finding it on chain takes it as this payment.
    const c1 = challengeFor(request)
    const bound = await m.verify({ credential: await mppxCredential(rpcUrl, payer, c1, 'pull'), request, expires: new Date(c1.expires), settle: 'before' })
    calls.length = 0
    expect((await m.settle(bound)).reference).toBe(bound.reference)
    expect(calls).toEqual(['eth_sendRawTransactionSync', 'eth_getTransactionReceipt'])
    expect(await balanceOf(rpcUrl, recipient)).toBe(20_000n)

    answer = 'timeout'
    const c2 = challengeFor(request)
    const v2 = await m.verify({ credential: await mppxCredential(rpcUrl, payer, c2, 'pull'), request, expires: new Date(c2.expires), settle: 'before' })
    expect(await m.settle(v2).catch((e: unknown) => e)).toBeInstanceOf(SettlementUnknownError)
    expect((await m.recover(v2)).reference).toBe(v2.reference)
    expect(await balanceOf(rpcUrl, recipient)).toBe(30_000n)
  })

  test('a memo-less pull transaction replayed for another challenge yields the same claim keys (the layer above refuses it)', async () => {
    const s = setup()
    // mppx writes its challenge's memo, which another challenge refuses outright; a transaction
    // without a memo is bound to its first use only by the claims, which must therefore match.
    const signature = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
    const credential: Credential = { challenge: s.challenge, payload: { type: 'transaction', signature } }
    const first = await s.m.verify({ credential, request: s.request, expires: s.expires, settle: 'before' })
    const other = challengeFor(s.request)
    const second = await s.m.verify({ credential: { ...credential, challenge: other }, request: s.request, expires: new Date(other.expires), settle: 'before' })
    expect(second.claims).toEqual(first.claims)
  })
})
