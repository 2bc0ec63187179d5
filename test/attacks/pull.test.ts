/**
 * Pull: the client hands the server a signed transaction, and on a sponsored route the server's
 * account pays its fee. Nothing may ride along with the payment, the signer is the payer whatever
 * the envelope claims, a used transaction cannot come back in another encoding, and the sponsor
 * pays for no transaction it did not mean to (its exposure to a revert it could not foresee is
 * one bounded fee).
 */
import { Secp256k1 } from 'ox'
import { KeyAuthorization, SignatureEnvelope, TxEnvelopeTempo } from 'ox/tempo'
import { type Address, custom, encodeFunctionData, type Hex, maxUint256 } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { Abis } from 'viem/tempo'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { alphaUsd, balanceOf, fundedAccount, pathUsd } from '../../scripts/local-chain.js'
import { type RpcProxy, startRpcProxy } from '../../scripts/rpc-proxy.js'
import { feeInBaseUnits } from '../../src/tempo/fee-payer.js'
import type { FeePayerConfig, TempoConfig } from '../../src/tempo/index.js'
import { credentialFor } from '../helpers/http.js'
import { craft, rawRpc, transferCall } from '../tempo/helpers.js'
import { broadcast, expectDelivered, expectRefusal, fresh, mppxPays, rpcUrl, type Shop, shop, sponsorFeeBalance, withCredential } from './support.js'

let proxy: RpcProxy
let payer: Awaited<ReturnType<typeof fundedAccount>>
let sponsor: Awaited<ReturnType<typeof fundedAccount>>
let victim: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  proxy = await startRpcProxy(rpcUrl())
  payer = await fundedAccount(rpcUrl(), { funder: 2, amount: '20' })
  victim = await fundedAccount(rpcUrl(), { funder: 2, amount: '5' })
  sponsor = await fundedAccount(rpcUrl(), { funder: 0, amount: '20', tokens: [alphaUsd] })
})
afterAll(() => proxy.close())

const sponsorBalance = sponsorFeeBalance(() => sponsor, alphaUsd)

function plainShop(tempo: Partial<TempoConfig> = {}): Shop {
  return shop({ tempo: { rpcUrl: proxy.url, ...tempo } })
}

function sponsoredShop(feePayer: Partial<FeePayerConfig> = {}, tempo: Partial<TempoConfig> = {}): Shop {
  return shop({ tempo: { rpcUrl: proxy.url, feePayer: { account: sponsor, feeToken: alphaUsd, ...feePayer }, ...tempo } })
}

async function pullWith(s: Shop, raw: Hex, path = '/paid') {
  const { challenge } = await s.challenge(path)
  const credential = credentialFor(challenge, { type: 'transaction', signature: raw })
  return { challenge, credential, send: () => s.fetch(path, withCredential(credential)) }
}

function noChainCalls(methods: string[] = ['eth_call', 'eth_sendRawTransactionSync', 'eth_sendRawTransaction']) {
  for (const method of methods) expect({ method, calls: proxy.counts.get(method) ?? 0 }).toEqual({ method, calls: 0 })
}

/** A transport to the chain that runs `beforeBroadcast.run` once, just before the next broadcast. */
function racingTransport() {
  const beforeBroadcast: { run?: () => Promise<void> } = {}
  const transport = custom({
    async request({ method, params }: { method: string; params: unknown[] }) {
      const run = beforeBroadcast.run
      if (method === 'eth_sendRawTransactionSync' && run) {
        beforeBroadcast.run = undefined
        await run()
      }
      return rawRpc(rpcUrl(), method, params ?? [])
    },
  })
  return { transport, beforeBroadcast }
}

const approve = (spender: Address) => ({ to: pathUsd, data: encodeFunctionData({ abi: Abis.tip20, functionName: 'approve', args: [spender, maxUint256] }) })

describe('T2 T3: nothing rides along with the payment, least of all on the sponsor', () => {
  const riders: [string, (s: Shop) => { to: Address; data: Hex }[], RegExp][] = [
    [
      "an approve of the payer's whole balance after the payment",
      (s) => [transferCall(pathUsd, s.recipient, 10_000n), approve(fresh())],
      /call 1 calls approve; a payment transaction may only contain transfer/,
    ],
    ['an approve before the payment', (s) => [approve(fresh()), transferCall(pathUsd, s.recipient, 10_000n)], /call 0 calls approve/],
    [
      'one more transfer of the currency to a friend',
      (s) => [transferCall(pathUsd, s.recipient, 10_000n), transferCall(pathUsd, fresh(), 1n)],
      /has 2 transfer call\(s\); this route expects exactly 1/,
    ],
    [
      'a transfer of another token alongside',
      (s) => [transferCall(pathUsd, s.recipient, 10_000n), transferCall(alphaUsd, fresh(), 5_000_000n)],
      /call 1 targets 0x20[cC]0000000000000000000000000000000000001, not the currency/,
    ],
    [
      'the payment in another token',
      (s) => [transferCall(alphaUsd, s.recipient, 10_000n)],
      /call 0 targets 0x20[cC]0000000000000000000000000000000000001, not the currency/,
    ],
    [
      'a call to some other contract',
      (s) => [transferCall(pathUsd, s.recipient, 10_000n), { to: fresh(), data: '0xdeadbeef' }],
      /call 1 targets 0x[0-9a-fA-F]{40}, not the currency/,
    ],
  ]

  test.each(riders)('T2 T3: sponsored route, %s → refused before any simulation or broadcast; the sponsor pays nothing', async (_name, calls, detail) => {
    const s = sponsoredShop()
    const { credential, send } = await pullWith(s, craft(payer.privateKey, { calls: calls(s), sponsor: 'envelope78' }))
    proxy.reset()
    await expectRefusal(
      s,
      send,
      { status: 402, kind: 'verification-failed', detail },
      {
        watch: [{ address: payer.address }, { address: payer.address, token: alphaUsd }, sponsorBalance],
        credentials: [credential],
      },
    )
    noChainCalls()
  })

  test('T2: plain route, the same riders are refused too', async () => {
    const s = plainShop()
    for (const [, calls, detail] of riders) {
      const { credential, send } = await pullWith(s, craft(payer.privateKey, { calls: calls(s) }))
      await expectRefusal(s, send, { status: 402, kind: 'verification-failed', detail }, { watch: [{ address: payer.address }], credentials: [credential] })
    }
  })

  test('T2 T3: an access-key authorization riding along on a sponsored payment → refused; the sponsor does not pay to provision a key', async () => {
    const s = sponsoredShop()
    const accessKey = privateKeyToAccount(generatePrivateKey())
    const unsignedKey = KeyAuthorization.from({ address: accessKey.address, chainId: 31337n, type: 'secp256k1' })
    const keyAuthorization = KeyAuthorization.from(unsignedKey, {
      signature: SignatureEnvelope.from(Secp256k1.sign({ payload: KeyAuthorization.getSignPayload(unsignedKey), privateKey: payer.privateKey })),
    })
    const now = Math.floor(Date.now() / 1000)
    const envelope = TxEnvelopeTempo.from({
      chainId: 31337,
      calls: [transferCall(pathUsd, s.recipient, 10_000n)],
      gas: 1_000_000n,
      maxFeePerGas: 40_000_000_000n,
      maxPriorityFeePerGas: 1_000_000_000n,
      nonceKey: maxUint256,
      nonce: 0n,
      validBefore: now + 25,
      validAfter: now - 60,
      keyAuthorization,
      feePayerSignature: null,
    } as unknown as TxEnvelopeTempo.TxEnvelopeTempo)
    const signature = SignatureEnvelope.from(Secp256k1.sign({ payload: TxEnvelopeTempo.getSignPayload(envelope), privateKey: payer.privateKey }))
    const raw = TxEnvelopeTempo.serialize(envelope, { signature, format: 'feePayer', sender: payer.address })
    expect(TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized).keyAuthorization).toBeTruthy()
    const { credential, send } = await pullWith(s, raw)
    proxy.reset()
    await expectRefusal(
      s,
      send,
      {
        status: 402,
        kind: 'verification-failed',
        detail: /a sponsored payment may not carry a key authorization; the fee sponsor pays for the transfers only/,
      },
      {
        watch: [{ address: payer.address }, sponsorBalance],
        credentials: [credential],
      },
    )
    noChainCalls()
  })
})

describe('T2: the payer is the signer', () => {
  test.each([
    ['a sponsored route', () => sponsoredShop()],
    ['a plain route', () => plainShop()],
  ])("T2 T3: a 0x78 envelope naming a victim as sender, signed by the attacker, on %s → refused; the victim's balance is untouched", async (_name, make) => {
    const s = make()
    const attackerKey = generatePrivateKey()
    const raw = craft(attackerKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], claimedSender: victim.address })
    expect(TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized).from?.toLowerCase()).toBe(victim.address.toLowerCase())
    const { credential, send } = await pullWith(s, raw)
    proxy.reset()
    await expectRefusal(
      s,
      send,
      {
        status: 402,
        kind: 'verification-failed',
        detail: new RegExp(`the envelope names sender ${victim.address} but the signature is from 0x[0-9a-fA-F]{40}`, 'i'),
      },
      { watch: [{ address: victim.address }, { address: victim.address, token: alphaUsd }, sponsorBalance], credentials: [credential] },
    )
    noChainCalls()
  })
})

describe('T2: a signature that does not verify, where the node is the one to check it', () => {
  // An unsponsored route that settles before its handler does not recover the signer (the
  // node's receipt names it): a forged signature must still pay nothing and block nobody.
  test('T2: a transaction with a forged (random, well-formed) signature → refused by the node, nothing charged; the real signature then pays once', async () => {
    const s = plainShop()
    const genuine = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
    const tx = TxEnvelopeTempo.deserialize(genuine as TxEnvelopeTempo.Serialized)
    const forgedSignature = Secp256k1.sign({ payload: TxEnvelopeTempo.getSignPayload(tx), privateKey: generatePrivateKey() })
    const forged = TxEnvelopeTempo.serialize({ ...tx, from: undefined } as TxEnvelopeTempo.TxEnvelopeTempo, {
      signature: SignatureEnvelope.from(forgedSignature),
    })
    const attempt = await pullWith(s, forged)
    proxy.reset()
    await expectRefusal(
      s,
      attempt.send,
      { status: 402, kind: 'settlement-failed', detail: /the node rejected the transaction, nothing was charged/ },
      {
        watch: [{ address: payer.address }],
        credentials: [attempt.credential],
      },
    )
    expect(proxy.counts.get('eth_sendRawTransactionSync')).toBe(1)
    // The same payment, signed by its payer, is not blocked by the forgery's claim.
    const real = await pullWith(s, genuine)
    const delivered = await real.send()
    await expectDelivered(delivered)
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
  })

  test('T2: a signature with r or s out of range → refused before anything is sent', async () => {
    const s = plainShop()
    const genuine = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
    const tx = TxEnvelopeTempo.deserialize(genuine as TxEnvelopeTempo.Serialized)
    const zero = TxEnvelopeTempo.serialize({ ...tx, from: undefined } as TxEnvelopeTempo.TxEnvelopeTempo, {
      signature: SignatureEnvelope.from({ r: 0n, s: 0n, yParity: 0 }),
    })
    const attempt = await pullWith(s, zero)
    proxy.reset()
    const body = await expectRefusal(
      s,
      attempt.send,
      { status: 402, kind: 'verification-failed', detail: /signature/ },
      {
        watch: [{ address: payer.address }],
        credentials: [attempt.credential],
      },
    )
    expect(body.detail).not.toMatch(/0x[0-9a-f]{100}/i)
    noChainCalls()
  })
})

describe('C9 T2: a used transaction cannot come back in another encoding', () => {
  const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n

  function variants(raw: Hex): [string, Hex][] {
    const tx = TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized)
    const unsigned = { ...tx, from: undefined } as TxEnvelopeTempo.TxEnvelopeTempo
    const inner = (tx.signature as { signature: { r: bigint; s: bigint; yParity: number } }).signature
    const payload = TxEnvelopeTempo.getSignPayload(tx)
    const resigned = Secp256k1.sign({ payload, privateKey: payer.privateKey, extraEntropy: '0x01' })
    expect(resigned.r).not.toBe(inner.r)
    const v = raw.slice(-2)
    expect(raw.slice(-134, -130)).toBe('b841')
    return [
      ['the same bytes', raw],
      ['upper-case hex', `0x${raw.slice(2).toUpperCase()}` as Hex],
      [
        'the high-s twin of its signature',
        TxEnvelopeTempo.serialize(unsigned, { signature: SignatureEnvelope.from({ r: inner.r, s: n - inner.s, yParity: inner.yParity ^ 1 }) }),
      ],
      ['a second signature of the same payload (another nonce k)', TxEnvelopeTempo.serialize(unsigned, { signature: SignatureEnvelope.from(resigned) })],
      ['v written as 27/28 instead of 0/1', `${raw.slice(0, -2)}${v === '00' ? '1b' : '1c'}` as Hex],
    ]
  }

  test('C9 T2: after a pull payment settled, each re-encoding presented with a fresh challenge → refused, nothing broadcast', async () => {
    const s = plainShop()
    const original = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
    const first = await pullWith(s, original)
    await expectDelivered(await first.send())
    for (const [name, raw] of variants(original)) {
      const attempt = await pullWith(s, raw)
      proxy.reset()
      const body = await expectRefusal(
        s,
        attempt.send,
        {
          status: 402,
          kind: 'verification-failed',
          detail: /this payment has already been used for another request|not in canonical \(low-s\) form|cannot be recovered|signature/,
        },
        { watch: [{ address: payer.address }], credentials: [attempt.credential] },
      )
      expect({ name, detail: body.detail }).toMatchObject({ name })
      noChainCalls(['eth_sendRawTransactionSync', 'eth_sendRawTransaction'])
    }
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
  })

  test('C9 T2: each re-encoding sent with the original (used) challenge → refused as used', async () => {
    const s = plainShop()
    const original = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] })
    const first = await pullWith(s, original)
    await expectDelivered(await first.send())
    for (const [, raw] of variants(original).slice(1)) {
      const credential = credentialFor(first.challenge, { type: 'transaction', signature: raw })
      await expectRefusal(
        s,
        () => s.fetch('/paid', withCredential(credential)),
        {
          status: 402,
          kind: 'invalid-challenge',
          detail: /this challenge has already been used/,
        },
        { watch: [{ address: payer.address }], credentials: [credential] },
      )
    }
  })
})

describe('T7: when the transaction may land', () => {
  test.each([
    ['validBefore after the challenge expiry', (expiry: number) => ({ validBefore: expiry + 1 }), /validBefore \(\d+\) is after the challenge expiry \(\d+\)/],
    ['validBefore a day after the challenge expiry', (expiry: number) => ({ validBefore: expiry + 86_400 }), /is after the challenge expiry/],
    ['no validBefore', () => ({ validBefore: null }), /must set validBefore/],
    ['a validAfter in the future', (expiry: number) => ({ validAfter: Math.floor(Date.now() / 1000) + 60, validBefore: expiry }), /not valid before/],
    ['another chain id', () => ({ chainId: 42431 }), /for chain 42431; this route is on chain 31337/],
  ] as const)('T7: %s → refused', async (_name, window, detail) => {
    const s = sponsoredShop()
    const { challenge } = await s.challenge()
    const expiry = Math.floor(Date.parse(challenge.expires!) / 1000)
    const raw = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78', ...window(expiry) })
    const credential = credentialFor(challenge, { type: 'transaction', signature: raw })
    proxy.reset()
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      { status: 402, kind: 'verification-failed', detail },
      {
        watch: [{ address: payer.address }, sponsorBalance],
        credentials: [credential],
      },
    )
    noChainCalls()
  })
})

describe('T3: the sponsor pays only for payments', () => {
  test('T3: a sponsored transaction that would revert (the payer cannot pay) → refused by the simulation; not broadcast; the sponsor pays nothing', async () => {
    const s = sponsoredShop()
    const broke = await fundedAccount(rpcUrl(), { funder: 2, amount: '0.001', tokens: [pathUsd] })
    const { credential, send } = await pullWith(s, craft(broke.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' }))
    proxy.reset()
    await expectRefusal(
      s,
      send,
      {
        status: 402,
        kind: 'verification-failed',
        detail: /the transaction would fail, so the fee sponsor will not send it/,
      },
      { watch: [{ address: broke.address }, sponsorBalance], credentials: [credential] },
    )
    expect(proxy.counts.get('eth_call')).toBeGreaterThanOrEqual(1)
    noChainCalls(['eth_sendRawTransactionSync', 'eth_sendRawTransaction'])
  })

  test('T3 T4: a payer who empties its account between the simulation and the broadcast → 402, nothing delivered, and the sponsor loses one fee, within its per-payment limit', async () => {
    // The one exposure a simulation cannot close: the chain changes after it. A local transport
    // lets the payer's draining transfer land just before the sponsored broadcast.
    const { transport, beforeBroadcast } = racingTransport()
    const maxTotalFee = 40_000n
    const s = sponsoredShop({ maxTotalFee }, { rpcUrl: undefined, transport })
    const racer = await fundedAccount(rpcUrl(), { funder: 2, amount: '1' })
    const sink = fresh()
    const raw = craft(racer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' })
    const tx = TxEnvelopeTempo.deserialize(raw as TxEnvelopeTempo.Serialized)
    beforeBroadcast.run = async () => {
      const all = await balanceOf(rpcUrl(), racer.address)
      const emptied = await broadcast(craft(racer.privateKey, { calls: [transferCall(pathUsd, sink, all)], feeToken: alphaUsd }))
      expect(emptied.status).toBe('success')
    }
    const sponsorBefore = await balanceOf(rpcUrl(), sponsor.address, alphaUsd)
    const { credential, send } = await pullWith(s, raw)
    await expectRefusal(
      s,
      send,
      {
        status: 402,
        kind: 'settlement-failed',
        detail: /the transaction reverted on chain; the payment did not happen/,
      },
      { credentials: [credential] },
    )
    expect(beforeBroadcast.run).toBeUndefined()
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(0n)
    const lost = sponsorBefore - (await balanceOf(rpcUrl(), sponsor.address, alphaUsd))
    expect(lost).toBeGreaterThan(0n)
    expect(lost).toBeLessThanOrEqual(feeInBaseUnits(tx.gas!, tx.maxFeePerGas!))
    expect(lost).toBeLessThanOrEqual(maxTotalFee)
  })

  test('T3: a payer holding no fee token at all is sponsored (control)', async () => {
    const s = sponsoredShop()
    const pathOnly = await fundedAccount(rpcUrl(), { funder: 2, amount: '1', tokens: [pathUsd] })
    const { send } = await pullWith(s, craft(pathOnly.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' }))
    await expectDelivered(await send())
    expect(await balanceOf(rpcUrl(), pathOnly.address)).toBe(1_000_000n - 10_000n)
  })

  test('T3: the sponsored mppx payment still works (control)', async () => {
    const s = sponsoredShop()
    const authorization = await mppxPays(s, payer, 'pull')
    const sponsorBefore = await balanceOf(rpcUrl(), sponsor.address, alphaUsd)
    await expectDelivered(await s.fetch('/paid', withCredential(authorization)))
    expect(await balanceOf(rpcUrl(), sponsor.address, alphaUsd)).toBeLessThan(sponsorBefore)
  })
})

describe('C10 I3: a route that settles after its handler', () => {
  test("C10 I3: a payer who empties its account while the handler runs gets the handler's answer withheld (402), never the resource", async () => {
    // settle: 'after' runs the handler on a verified, not yet settled payment: its side effects
    // happen whatever follows, but its answer leaves only with a settled payment.
    const { transport, beforeBroadcast } = racingTransport()
    const s = shop({ tempo: { rpcUrl: undefined, transport } })
    const racer = await fundedAccount(rpcUrl(), { funder: 2, amount: '1' })
    beforeBroadcast.run = async () => {
      const all = await balanceOf(rpcUrl(), racer.address)
      expect((await broadcast(craft(racer.privateKey, { calls: [transferCall(pathUsd, fresh(), all)], feeToken: alphaUsd }))).status).toBe('success')
    }
    const { challenge } = await s.challenge('/after')
    const credential = credentialFor(challenge, {
      type: 'transaction',
      signature: craft(racer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], feeToken: alphaUsd }),
    })
    const response = await s.fetch('/after', withCredential(credential))
    const text = await response.text()
    expect(response.status, text).toBe(402)
    expect(JSON.parse(text)).toMatchObject({
      type: 'https://paymentauth.org/problems/settlement-failed',
      detail: expect.stringMatching(/reverted on chain/),
    })
    expect(text).not.toContain('delivered')
    expect(response.headers.get('payment-receipt')).toBeNull()
    expect(s.runs()).toBe(1)
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(0n)
  })
})

describe("T3: refused or abandoned payments do not eat the sponsor's in-flight budget", () => {
  // maxInFlight of two worst-case fees: two stuck reservations would refuse everyone else.
  const limits = { maxTotalFee: 40_000n, maxInFlight: 80_000n }

  test('T3 C9: re-signed copies of a settled sponsored payment, each refused as used, leave the sponsor able to serve the next payer', async () => {
    const s = sponsoredShop(limits)
    const original = craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' })
    await expectDelivered(await (await pullWith(s, original)).send())
    const tx = TxEnvelopeTempo.deserialize(original as TxEnvelopeTempo.Serialized)
    const payload = TxEnvelopeTempo.getSignPayload(tx)
    for (let i = 1; i <= 3; i++) {
      const signature = SignatureEnvelope.from(Secp256k1.sign({ payload, privateKey: payer.privateKey, extraEntropy: `0x0${i}` }))
      const copy = TxEnvelopeTempo.serialize({ ...tx, from: undefined } as TxEnvelopeTempo.TxEnvelopeTempo, {
        signature,
        format: 'feePayer',
        sender: payer.address,
      })
      const attempt = await pullWith(s, copy)
      await expectRefusal(
        s,
        attempt.send,
        {
          status: 402,
          kind: 'verification-failed',
          detail: /this payment has already been used for another request/,
        },
        { watch: [{ address: payer.address }, sponsorBalance], credentials: [attempt.credential] },
      )
    }
    const honest = await fundedAccount(rpcUrl(), { funder: 2, amount: '1', tokens: [pathUsd] })
    const next = await pullWith(s, craft(honest.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' }))
    await expectDelivered(await next.send())
  })

  test('T3 C10: sponsored payments whose settle-after handler fails (nothing charged) leave the sponsor able to serve the next payer', async () => {
    const s = sponsoredShop(limits)
    for (let i = 0; i < 3; i++) {
      const attempt = await pullWith(
        s,
        craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' }),
        '/after?fail=1',
      )
      const response = await attempt.send()
      expect(response.status).toBe(500)
      expect(response.headers.get('payment-receipt')).toBeNull()
    }
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(0n)
    const honest = await fundedAccount(rpcUrl(), { funder: 2, amount: '1', tokens: [pathUsd] })
    const next = await pullWith(s, craft(honest.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], sponsor: 'envelope78' }))
    await expectDelivered(await next.send())
  })
})
