/**
 * Construction-time checks and the wire request (T1). No chain needed.
 */

import { Methods } from 'mppx/tempo'
import { custom, type Hex, HttpRequestError, InvalidInputRpcError, RpcRequestError, TimeoutError, UnknownRpcError } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { describe, expect, test } from 'vitest'
import { feeInBaseUnits } from '../../src/tempo/fee-payer.js'
import { type TempoConfig, tempo } from '../../src/tempo/index.js'
import { toBaseUnits } from '../../src/tempo/request.js'
import { classify, RpcAnswerError, RpcTransportError, sanitize } from '../../src/tempo/rpc.js'

const recipient = privateKeyToAccount(generatePrivateKey()).address
const base = { rpcUrl: 'http://127.0.0.1:1', recipient } as const
const make = (config: Partial<TempoConfig>) => () => tempo({ ...base, ...config } as TempoConfig)

describe('configuration fails at construction, saying what to fix', () => {
  test.each<[string, Partial<TempoConfig>, RegExp]>([
    ['no rpc', { rpcUrl: undefined }, /exactly one of `rpcUrl`/],
    ['both rpc and transport', { transport: custom({ request: async () => null }) }, /exactly one of `rpcUrl`/],
    ['bad url', { rpcUrl: 'localhost:8545' }, /`rpcUrl` must be an http\(s\)/],
    // A WebSocket URL never worked through rpcUrl (every payment answered 503): refused, with the fix.
    [
      'websocket url',
      { rpcUrl: 'wss://rpc.example/ws' },
      /`rpcUrl` takes an http\(s\) URL; for a WebSocket node pass `transport: webSocket\("wss:\/\/rpc.example\/ws"\)`/,
    ],
    ['ws url', { rpcUrl: 'ws://127.0.0.1:8546' }, /for a WebSocket node pass `transport: webSocket/],
    ['onRpcCall not a function', { onRpcCall: 'metrics' as never }, /`onRpcCall` must be a function/],
    ['url that does not parse', { rpcUrl: 'http://[::1' }, /`rpcUrl` must be an http\(s\) URL/],
    ['no recipient', { recipient: undefined as never }, /`recipient` is required/],
    ['non-address recipient', { recipient: '0x1234' as never }, /`recipient` must be a 0x-prefixed 20-byte address/],
    ['bad checksum', { recipient: '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD' as never }, /invalid EIP-55 checksum/],
    ['non-address currency', { currency: 'pathUSD' as never }, /`currency` must be a 0x-prefixed 20-byte address/],
    ['bad chain id', { chainId: 0 }, /`chainId` must be a positive integer/],
    ['bad decimals', { decimals: 6.5 }, /`decimals` must be an integer/],
    ['empty modes', { modes: [] }, /`modes` must be a non-empty array/],
    ['unknown mode', { modes: ['pull', 'stream' as never] }, /unknown mode "stream"/],
    ['too many splits', { splits: Array.from({ length: 11 }, () => ({ amount: '0.001', recipient })) }, /1 to 10 entries, got 11/],
    ['empty splits', { splits: [] }, /1 to 10 entries, got 0/],
    ['zero split', { splits: [{ amount: '0', recipient }] }, /splits\[0\]\.amount must be greater than zero/],
    ['split too precise', { splits: [{ amount: '0.0000001', recipient }] }, /more than 6 decimal places/],
    ['split bad recipient', { splits: [{ amount: '0.1', recipient: 'bob' as never }] }, /splits\[0\]\.recipient/],
    ['bad memo', { memo: '0x1234' as Hex, modes: ['pull'] }, /`memo` must be a bytes32 hex string/],
    ['memo with push', { memo: `0x${'00'.repeat(32)}` }, /fixed `memo` cannot bind a push payment .* set modes: \['pull'\]/],
    ['fee payer, push only', { modes: ['push'], feePayer: { account: privateKeyToAccount(generatePrivateKey()) } }, /sponsors pull payments only/],
    [
      'fee payer with push',
      { modes: ['pull', 'push'], feePayer: { account: privateKeyToAccount(generatePrivateKey()) } },
      /takes only pull payments.*set modes: \['pull'\]/,
    ],
    ['fee payer without signer', { feePayer: { account: { address: recipient, type: 'local' } as never } }, /must be able to sign hashes/],
    ['fee payer bad limit', { feePayer: { account: privateKeyToAccount(generatePrivateKey()), maxGas: 0n } }, /`feePayer.maxGas` must be a positive bigint/],
    [
      'in-flight below one payment',
      { feePayer: { account: privateKeyToAccount(generatePrivateKey()), maxTotalFee: 10n, maxInFlight: 5n } },
      /not even one payment/,
    ],
    [
      'reverted-fee bound below one payment',
      { feePayer: { account: privateKeyToAccount(generatePrivateKey()), maxTotalFee: 10n, maxRevertedFeesPerSender: 5n } },
      /`feePayer.maxRevertedFeesPerSender` is below `feePayer.maxTotalFee`/,
    ],
    [
      'reverted-fee bound not a bigint',
      { feePayer: { account: privateKeyToAccount(generatePrivateKey()), maxRevertedFeesPerSender: 5 as never } },
      /`feePayer.maxRevertedFeesPerSender` must be a positive bigint/,
    ],
    [
      'revert window not positive',
      { feePayer: { account: privateKeyToAccount(generatePrivateKey()), revertWindowMs: 0 } },
      /`feePayer.revertWindowMs` must be a positive integer number of milliseconds/,
    ],
    ['bad timeout', { timeout: -1 }, /`timeout` must be a positive number/],
  ])('%s', (_name, config, message) => {
    expect(make(config)).toThrow(message)
  })

  test('a valid configuration constructs; the sponsored default is pull only', () => {
    expect(make({})()).toMatchObject({ name: 'tempo', intent: 'charge', deferrable: ['transaction'] })
    const sponsored = make({ feePayer: { account: privateKeyToAccount(generatePrivateKey()) } })()
    expect(sponsored.request({ amount: '1' }).methodDetails?.supportedModes).toEqual(['pull'])
  })
})

describe('T1 the wire request', () => {
  test('base units, defaults, and omitted supportedModes when both are offered', () => {
    const request = make({})().request({ amount: '0.01', description: 'a report', externalId: 'order-7' })
    expect(request).toEqual({
      amount: '10000',
      currency: '0x20c0000000000000000000000000000000000000',
      recipient,
      description: 'a report',
      externalId: 'order-7',
      methodDetails: { chainId: 42431 },
    })
  })

  test('splits, memo, feePayer and modes appear in methodDetails; the mppx schema reads them', () => {
    const a = privateKeyToAccount(generatePrivateKey()).address
    const memo = `0x${'12'.repeat(32)}` as Hex
    const request = make({ modes: ['pull'], memo, chainId: 4217, splits: [{ amount: '0.25', recipient: a, memo }] })().request({ amount: '1.5' })
    expect(request).toEqual({
      amount: '1500000',
      currency: '0x20c0000000000000000000000000000000000000',
      recipient,
      methodDetails: { chainId: 4217, memo, splits: [{ amount: '250000', recipient: a, memo }], supportedModes: ['pull'] },
    })
    // The reference implementation's own request schema accepts what we send (wire compatibility).
    const parsed = Methods.charge.schema.request.safeParse({
      amount: '1.5',
      currency: request.currency,
      decimals: 6,
      recipient,
      chainId: 4217,
      splits: [{ amount: '0.25', recipient: a, memo }],
      supportedModes: ['pull'],
    })
    expect(parsed.success).toBe(true)
    if (parsed.success) expect(parsed.data.amount).toBe(request.amount)
  })

  test('a route that settles after its handler advertises pull only (push is already settled)', () => {
    const m = make({})()
    expect(m.request({ amount: '1', settle: 'after' }).methodDetails?.supportedModes).toEqual(['pull'])
    expect(m.request({ amount: '1', settle: 'before' }).methodDetails?.supportedModes).toBeUndefined()
    expect(() => make({ modes: ['push'] })().request({ amount: '1', settle: 'after' })).toThrow(/settle: 'after' needs pull payments/)
    expect(make({ modes: ['push'] })().request({ amount: '0', settle: 'after' }).amount).toBe('0')
  })

  test('splits summing to the amount or more are refused when the route is built', () => {
    const m = make({
      splits: [
        { amount: '0.5', recipient },
        { amount: '0.5', recipient },
      ],
    })()
    expect(() => m.request({ amount: '1' })).toThrow(/splits total 1000000 base units, which is not below the charged amount 1000000/)
    expect(() => m.request({ amount: '0' })).toThrow(/zero amount cannot be split/)
    expect(m.request({ amount: '1.01' }).amount).toBe('1010000')
  })

  test('amounts are exact decimals: no rounding, no exponent, no negative', () => {
    expect(toBaseUnits('0.000001', 6, 'a')).toBe(1n)
    expect(toBaseUnits('12', 6, 'a')).toBe(12_000_000n)
    expect(toBaseUnits('0', 6, 'a')).toBe(0n)
    for (const bad of ['0.0000001', '1e3', '-1', '.5', '01', '1.', ' 1', '0x10']) expect(() => toBaseUnits(bad, 6, 'amount'), bad).toThrow(/amount/)
  })
})

describe('RPC error classification (the broadcast depends on it)', () => {
  test('a JSON-RPC error answer is a refusal; transport failures, timeouts and 5xx are unknown', () => {
    const answer = classify('eth_sendRawTransactionSync', new RpcRequestError({ body: {}, error: { code: -32000, message: 'insufficient funds' }, url: 'x' }))
    expect(answer).toBeInstanceOf(RpcAnswerError)
    expect((answer as RpcAnswerError).reason).toBe('insufficient funds')
    const mapped = classify('m', new InvalidInputRpcError(new RpcRequestError({ body: {}, error: { code: -32000, message: 'nonce too low' }, url: 'x' })))
    expect(mapped).toBeInstanceOf(RpcAnswerError)
    const plainObject = classify('m', new UnknownRpcError(Object.assign(new Error('replay'), { code: -32003 })))
    expect(plainObject).toBeInstanceOf(RpcAnswerError)
    expect(classify('m', new HttpRequestError({ url: 'x', status: 502 }))).toBeInstanceOf(RpcTransportError)
    expect(classify('m', new HttpRequestError({ url: 'x', cause: new TypeError('fetch failed') }))).toBeInstanceOf(RpcTransportError)
    expect(classify('m', new TimeoutError({ body: {}, url: 'x' }))).toBeInstanceOf(RpcTransportError)
    expect(classify('m', new RpcRequestError({ body: {}, error: { code: -32000, message: 'upstream' }, url: 'x', status: 503 } as never))).toBeInstanceOf(
      RpcTransportError,
    )
    expect(classify('m', new UnknownRpcError(new TypeError('fetch failed')))).toBeInstanceOf(RpcTransportError)
    expect(classify('m', new RpcRequestError({ body: {}, error: { code: -32603, message: 'internal' }, url: 'x' }))).toBeInstanceOf(RpcTransportError)
  })

  test('node messages lose long hex (a raw transaction must never reach a problem detail)', () => {
    const raw = `0x76${'ab'.repeat(200)}`
    expect(sanitize(`could not decode ${raw} at offset 3`)).toBe('could not decode 0x… at offset 3')
  })

  test('fees convert from attodollars to 6-decimal base units, rounding up like the chain', () => {
    expect(feeInBaseUnits(68_087n, 10_103_577_293n)).toBe(688n)
    expect(feeInBaseUnits(1n, 10n ** 12n)).toBe(1n)
    expect(feeInBaseUnits(1n, 10n ** 12n + 1n)).toBe(2n)
  })
})
