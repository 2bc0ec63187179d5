/**
 * Payment effects: what a transaction actually moves must be exactly what the route charges, in
 * the route's currency, to the route's recipients, once. Attacked through the server on the local
 * chain, in pull (the server broadcasts) and push (the client did) modes.
 */
import { type Address, concat, encodeAbiParameters, type Hex, keccak256, pad, parseEventLogs, stringToHex } from 'viem'
import { Abis } from 'viem/tempo'
import { beforeAll, describe, expect, test } from 'vitest'
import { alphaUsd, balanceOf, fundedAccount, pathUsd } from '../../scripts/local-chain.js'
import { challengeMemo } from '../../src/tempo/index.js'
import { credentialFor } from '../helpers/http.js'
import { craft, rawRpc, transferCall } from '../tempo/helpers.js'
import { broadcast, deployLogEmitter, expectDelivered, expectRefusal, fresh, rpcUrl, type Shop, shop, withCredential } from './support.js'

let payer: Awaited<ReturnType<typeof fundedAccount>>
let holder: Address

beforeAll(async () => {
  payer = await fundedAccount(rpcUrl(), { funder: 0, amount: '20' })
  holder = (await fundedAccount(rpcUrl(), { funder: 0, amount: '1', tokens: [pathUsd] })).address
})

type Call = ReturnType<typeof transferCall>

const splitShop = (split: Address = holder) => shop({ tempo: { splits: [{ amount: '0.002', recipient: split }] } })

describe('pull: the signed transaction must move exactly the charge', () => {
  async function pullWith(s: Shop, calls: Call[]) {
    const { challenge } = await s.challenge()
    const credential = credentialFor(challenge, { type: 'transaction', signature: craft(payer.privateKey, { calls }) })
    return { credential, send: () => s.fetch('/paid', withCredential(credential)) }
  }

  const cases: [string, (s: Shop) => Call[], 'payment-insufficient' | 'verification-failed', RegExp][] = [
    [
      'T2: underpay',
      (s) => [transferCall(pathUsd, s.recipient, 9_999n)],
      'payment-insufficient',
      /primary transfer of 10000 base units to 0x[0-9a-fA-F]{40} is missing: call 0 pays only 9999 base units/,
    ],
    ['T2: overpay', (s) => [transferCall(pathUsd, s.recipient, 10_001n)], 'verification-failed', /call 0 pays 10001 base units, not exactly 10000/],
    [
      'T2: the right amount to someone else',
      () => [transferCall(pathUsd, fresh(), 10_000n)],
      'verification-failed',
      /nothing pays that recipient in 0x20c0000000000000000000000000000000000000/i,
    ],
    [
      'T2: the wrong token',
      (s) => [transferCall(alphaUsd, s.recipient, 10_000n)],
      'verification-failed',
      /call 0 targets 0x20[cC]0000000000000000000000000000000000001, not the currency/,
    ],
    [
      'T2: the amount split over two transfers',
      (s) => [transferCall(pathUsd, s.recipient, 5_000n), transferCall(pathUsd, s.recipient, 5_000n)],
      'verification-failed',
      /has 2 transfer call\(s\); this route expects exactly 1/,
    ],
  ]

  test.each(cases)('%s', async (_name, calls, kind, detail) => {
    const s = shop()
    const { credential, send } = await pullWith(s, calls(s))
    await expectRefusal(s, send, { status: 402, kind, detail }, { watch: [{ address: payer.address }], credentials: [credential] })
  })

  test('T1 T2: a split left unpaid', async () => {
    const s = splitShop()
    const { credential, send } = await pullWith(s, [transferCall(pathUsd, s.recipient, 8_000n)])
    await expectRefusal(
      s,
      send,
      { status: 402, kind: 'verification-failed', detail: /has 1 transfer call\(s\); this route expects exactly 2 \(the payment and its splits/ },
      {
        watch: [{ address: payer.address }, { address: holder }],
        credentials: [credential],
      },
    )
  })

  test('T1 T2: a split paid to the wrong address', async () => {
    const s = splitShop()
    const { credential, send } = await pullWith(s, [transferCall(pathUsd, s.recipient, 8_000n), transferCall(pathUsd, fresh(), 2_000n)])
    await expectRefusal(
      s,
      send,
      { status: 402, kind: 'verification-failed', detail: /split 0 transfer of 2000 base units to 0x[0-9a-fA-F]{40} is missing/ },
      {
        watch: [{ address: payer.address }, { address: holder }],
        credentials: [credential],
      },
    )
  })

  test('T1 T2: the split amount moved to the primary recipient', async () => {
    const s = splitShop()
    const { credential, send } = await pullWith(s, [transferCall(pathUsd, s.recipient, 10_000n), transferCall(pathUsd, holder, 0n)])
    await expectRefusal(
      s,
      send,
      { status: 402, kind: 'verification-failed', detail: /is missing/ },
      {
        watch: [{ address: payer.address }, { address: holder }],
        credentials: [credential],
      },
    )
  })

  test('T4: a transaction that reverts on chain → 402 settlement-failed, handler not run, nothing delivered', async () => {
    const s = shop()
    // Pays its fee in AlphaUSD but holds no pathUSD: the node includes it, the transfer reverts.
    const poor = await fundedAccount(rpcUrl(), { funder: 0, amount: '1', tokens: [alphaUsd] })
    const { challenge } = await s.challenge()
    const credential = credentialFor(challenge, {
      type: 'transaction',
      signature: craft(poor.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)], feeToken: alphaUsd }),
    })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'settlement-failed',
        detail: /the transaction reverted on chain; the payment did not happen/,
      },
      { watch: [{ address: poor.address }], credentials: [credential] },
    )
  })
})

describe('push: the receipt must show exactly the charge, emitted by the currency', () => {
  /** Pays (or not) as a pushing client, then presents the hash for `challenge`. */
  async function pushWith(s: Shop, calls: (memo: Hex) => Call[], from = payer) {
    const { challenge } = await s.challenge()
    const tx = await broadcast(craft(from.privateKey, { calls: calls(challengeMemo(challenge)) }))
    const credential = credentialFor(challenge, { type: 'hash', hash: tx.hash })
    return { tx, credential, send: () => s.fetch('/paid', withCredential(credential)) }
  }

  const cases: [string, (s: Shop, memo: Hex) => Call[], 'payment-insufficient' | 'verification-failed', RegExp][] = [
    ['T5: underpay', (s, memo) => [transferCall(pathUsd, s.recipient, 9_999n, memo)], 'payment-insufficient', /pays only 9999 base units/],
    ['T5: overpay', (s, memo) => [transferCall(pathUsd, s.recipient, 10_001n, memo)], 'verification-failed', /pays 10001 base units, not exactly 10000/],
    [
      'T5: the right amount to someone else',
      (_s, memo) => [transferCall(pathUsd, fresh(), 10_000n, memo)],
      'verification-failed',
      /nothing pays that recipient in 0x20c0000000000000000000000000000000000000/i,
    ],
    [
      'T5: the wrong token',
      (s, memo) => [transferCall(alphaUsd, s.recipient, 10_000n, memo)],
      'verification-failed',
      /nothing pays that recipient in 0x20c0000000000000000000000000000000000000/i,
    ],
  ]

  test.each(cases)('%s', async (_name, calls, kind, detail) => {
    const s = shop()
    const { credential, send } = await pushWith(s, (memo) => calls(s, memo))
    await expectRefusal(s, send, { status: 402, kind, detail }, { watch: [{ address: payer.address }], credentials: [credential] })
  })

  test('T5: a reverted transaction', async () => {
    const s = shop()
    const poor = await fundedAccount(rpcUrl(), { funder: 0, amount: '1', tokens: [alphaUsd] })
    const { challenge } = await s.challenge()
    const tx = await broadcast(craft(poor.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n, challengeMemo(challenge))], feeToken: alphaUsd }))
    expect(tx.status).toBe('reverted')
    const credential = credentialFor(challenge, { type: 'hash', hash: tx.hash })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'verification-failed',
        detail: /the transaction reverted; it paid nothing/,
      },
      { credentials: [credential] },
    )
  })

  test('T5: Transfer and TransferWithMemo logs emitted by a look-alike contract, not the currency', async () => {
    const s = shop()
    const emitter = await deployLogEmitter(payer)
    const transferTopic = keccak256(stringToHex('Transfer(address,address,uint256)'))
    const memoTopic = keccak256(stringToHex('TransferWithMemo(address,address,uint256,bytes32)'))
    const amount = encodeAbiParameters([{ type: 'uint256' }], [10_000n])
    const { challenge } = await s.challenge()
    const memo = challengeMemo(challenge)
    const tx = await broadcast(
      craft(payer.privateKey, {
        calls: [
          { to: emitter, data: concat([transferTopic, pad(payer.address), pad(s.recipient), amount]) },
          { to: emitter, data: concat([memoTopic, pad(payer.address), pad(s.recipient), memo, amount]) },
        ],
      }),
    )
    expect(tx.status).toBe('success')
    // The logs are a real token's in every respect but their emitter.
    const receipt = (await rawRpc(rpcUrl(), 'eth_getTransactionReceipt', [tx.hash])) as { logs: never[] }
    const decoded = parseEventLogs({ abi: Abis.tip20, logs: receipt.logs }).filter((log) => log.address.toLowerCase() === emitter.toLowerCase())
    expect(decoded.map((log) => log.eventName)).toEqual(['Transfer', 'TransferWithMemo'])
    expect(decoded[1]!.args).toMatchObject({ from: payer.address, to: s.recipient, amount: 10_000n, memo })

    const credential = credentialFor(challenge, { type: 'hash', hash: tx.hash })
    await expectRefusal(
      s,
      () => s.fetch('/paid', withCredential(credential)),
      {
        status: 402,
        kind: 'verification-failed',
        detail:
          /primary transfer of 10000 base units to 0x[0-9a-fA-F]{40} is missing: nothing pays that recipient in 0x20c0000000000000000000000000000000000000/i,
      },
      { credentials: [credential] },
    )
  })

  test('T1 T5: a split left unpaid', async () => {
    const s = splitShop()
    const { credential, send } = await pushWith(s, (memo) => [transferCall(pathUsd, s.recipient, 8_000n, memo)])
    await expectRefusal(
      s,
      send,
      { status: 402, kind: 'verification-failed', detail: /split 0 transfer of 2000 base units to 0x[0-9a-fA-F]{40} is missing/ },
      {
        watch: [{ address: holder }],
        credentials: [credential],
      },
    )
  })

  test('T1 T5: a split paid to the wrong address', async () => {
    const s = splitShop()
    const { credential, send } = await pushWith(s, (memo) => [transferCall(pathUsd, s.recipient, 8_000n, memo), transferCall(pathUsd, fresh(), 2_000n)])
    await expectRefusal(
      s,
      send,
      { status: 402, kind: 'verification-failed', detail: /split 0 transfer of 2000 base units to 0x[0-9a-fA-F]{40} is missing/ },
      {
        watch: [{ address: holder }],
        credentials: [credential],
      },
    )
  })

  test('T5: one transferWithMemo emits two logs but pays once (a primary and a split to the same address)', async () => {
    // The route wants 8000 + 2000 to the same address; one transfer of 2000 must not count twice.
    const s = shop({ recipient: holder, amount: '0.004', tempo: { splits: [{ amount: '0.002', recipient: holder }] } })
    const { tx, credential, send } = await pushWith(s, (memo) => [transferCall(pathUsd, holder, 2_000n, memo)])
    const receipt = (await rawRpc(rpcUrl(), 'eth_getTransactionReceipt', [tx.hash])) as { logs: { address: string; topics: Hex[] }[] }
    const toHolder = receipt.logs.filter((log) => log.address.toLowerCase() === pathUsd && log.topics[2] === pad(holder).toLowerCase())
    expect(toHolder).toHaveLength(2)
    await expectRefusal(
      s,
      send,
      { status: 402, kind: 'verification-failed', detail: /transfer of 2000 base units to 0x[0-9a-fA-F]{40} is missing/ },
      {
        credentials: [credential],
      },
    )
    // Two transfers do pay it.
    const both = await pushWith(s, (memo) => [transferCall(pathUsd, holder, 2_000n, memo), transferCall(pathUsd, holder, 2_000n)])
    await expectDelivered(await both.send())
    expect(s.runs()).toBe(1)
  })

  test('T5: the payer balance check: a correct push delivers once (control)', async () => {
    const s = shop()
    const { send } = await pushWith(s, (memo) => [transferCall(pathUsd, s.recipient, 10_000n, memo)])
    await expectDelivered(await send())
    expect(await balanceOf(rpcUrl(), s.recipient)).toBe(10_000n)
  })
})
