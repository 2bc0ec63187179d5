/**
 * Push payments (T5): the client sent the transaction; the server reads one receipt. On the
 * local chain where it can be produced, through a scripted transport where it cannot (a
 * look-alike token's logs, a node that is down).
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type Address, encodeAbiParameters, type Hex, keccak256, pad, stringToHex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, fundedAccount, pathUsd } from '../../scripts/local-chain.js'
import { type RpcProxy, startRpcProxy } from '../../scripts/rpc-proxy.js'
import type { Verified } from '../../src/method.js'
import { challengeMemo, isChallengeMemo, type TempoConfig, tempo } from '../../src/tempo/index.js'
import { challengeFor, craft, fresh, mppxCredential, rawRpc, refusal, scriptedTransport, transferCall } from './helpers.js'

const funder = 2
let rpcUrl: string
let proxy: RpcProxy
let payer: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  proxy = await startRpcProxy(rpcUrl)
  payer = await fundedAccount(rpcUrl, { funder, amount: '50' })
})
afterAll(() => proxy.close())

function setup(config: Partial<TempoConfig> = {}, amount = '0.01') {
  const recipient = (config.recipient ?? fresh()) as Address
  const m = tempo({ rpcUrl: proxy.url, chainId: 31337, ...config, recipient } as TempoConfig)
  const request = m.request({ amount })
  const challenge = challengeFor(request)
  return { recipient, m, request, challenge, expires: new Date(challenge.expires) }
}

/** Sends a transaction as a push client would, returns its hash. */
async function send(raw: Hex): Promise<Hex> {
  const receipt = (await rawRpc(rpcUrl, 'eth_sendRawTransactionSync', [raw])) as { transactionHash: Hex; status: string }
  return receipt.transactionHash
}

const verifyHash = (s: ReturnType<typeof setup>, hash: Hex, m = s.m): Promise<Verified> =>
  m.verify({ credential: { challenge: s.challenge, payload: { type: 'hash', hash } }, request: s.request, expires: s.expires, settle: 'before' })

describe('push', () => {
  test('T5: an mppx push credential is verified with exactly one RPC call (the receipt)', async () => {
    const s = setup()
    const credential = await mppxCredential(rpcUrl, payer, s.challenge, 'push')
    const hash = (credential.payload as { hash: Hex }).hash
    proxy.reset()
    const verified = await s.m.verify({ credential, request: s.request, expires: s.expires, settle: 'before' })
    expect(proxy.counts.get('eth_getTransactionReceipt')).toBe(1)
    expect(proxy.total()).toBe(1)
    expect(verified).toMatchObject({ status: 'settled', type: 'hash', reference: hash.toLowerCase(), claims: [`tempo:tx:${hash.toLowerCase()}`] })
    expect(verified.payer?.toLowerCase()).toBe(payer.address.toLowerCase())
    // Nothing left to broadcast.
    proxy.reset()
    expect((await s.m.settle(verified)).reference).toBe(verified.reference)
    expect(proxy.total()).toBe(0)
  })

  test('T5: the memo written by mppx is recognised as this challenge binding, and only this one', async () => {
    const s = setup()
    const memo = challengeMemo(s.challenge)
    expect(isChallengeMemo(memo, s.challenge)).toBe(true)
    expect(isChallengeMemo(memo, { ...s.challenge, id: `${s.challenge.id}x` })).toBe(false)
    expect(isChallengeMemo(memo, { ...s.challenge, realm: 'other.example' })).toBe(false)
  })

  test("T5: a plain transfer of the exact amount without the challenge memo is refused (someone else's payment)", async () => {
    const s = setup()
    const hash = await send(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n)] }))
    const error = await refusal(verifyHash(s, hash))
    expect(error.kind).toBe('verification-failed')
    expect(error.detail).toMatch(/carries this challenge's MPP attribution memo/)
  })

  test('T5: a transfer bound to another challenge is refused', async () => {
    const s = setup()
    const other = challengeFor(s.request)
    const hash = await send(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n, challengeMemo(other))] }))
    const error = await refusal(verifyHash(s, hash))
    expect(error.detail).toMatch(/attribution memo/)
    // ...while the challenge it was made for accepts it.
    const verified = await s.m.verify({
      credential: { challenge: other, payload: { type: 'hash', hash } },
      request: s.request,
      expires: s.expires,
      settle: 'before',
    })
    expect(verified.status).toBe('settled')
  })

  test('T5: too little → payment-insufficient; wrong token → named', async () => {
    const s = setup()
    const memo = challengeMemo(s.challenge)
    const little = await send(craft(payer.privateKey, { calls: [transferCall(pathUsd, s.recipient, 9_000n, memo)] }))
    const e1 = await refusal(verifyHash(s, little))
    expect(e1.kind).toBe('payment-insufficient')
    expect(e1.detail).toMatch(/pays only 9000 base units/)
    const wrongToken = await send(craft(payer.privateKey, { calls: [transferCall(alphaUsd, s.recipient, 10_000n, memo)] }))
    const e2 = await refusal(verifyHash(s, wrongToken))
    expect(e2.detail).toMatch(/nothing pays that recipient in 0x20c0000000000000000000000000000000000000/i)
  })

  test('T5: one transferWithMemo emits two logs but counts once', async () => {
    // The route wants 10000 to R as primary AND 5000 to R as a split: one 5000 transfer must not pass.
    const r = fresh()
    const s = setup({ recipient: r, splits: [{ amount: '0.005', recipient: r }] })
    const hash = await send(craft(payer.privateKey, { calls: [transferCall(pathUsd, r, 5_000n, challengeMemo(s.challenge))] }))
    const receipt = (await rawRpc(rpcUrl, 'eth_getTransactionReceipt', [hash])) as { logs: { address: string }[] }
    expect(receipt.logs.filter((l) => l.address.toLowerCase() === pathUsd).length).toBeGreaterThanOrEqual(2)
    const error = await refusal(verifyHash(s, hash))
    expect(error.detail).toMatch(/transfer of 5000 base units to .* is missing/)
    // Two transfers do pay it.
    const both = await send(
      craft(payer.privateKey, { calls: [transferCall(pathUsd, r, 5_000n, challengeMemo(s.challenge)), transferCall(pathUsd, r, 5_000n)] }),
    )
    expect((await verifyHash(s, both)).status).toBe('settled')
  })

  test('T5: a reverted transaction is refused', async () => {
    const s = setup()
    const poor = await fundedAccount(rpcUrl, { funder, amount: '1', tokens: [alphaUsd] })
    const hash = await send(craft(poor.privateKey, { calls: [transferCall(pathUsd, s.recipient, 10_000n, challengeMemo(s.challenge))], feeToken: alphaUsd }))
    const error = await refusal(verifyHash(s, hash))
    expect(error.detail).toMatch(/reverted/)
  })

  test('T5: an unknown hash → 402 "transaction not found" with Retry-After', async () => {
    const s = setup()
    const error = await refusal(verifyHash(s, keccak256(stringToHex(s.challenge.id))))
    expect(error.kind).toBe('verification-failed')
    expect(error.detail).toMatch(/transaction not found/)
    expect(error.retryAfter).toBe(1)
  })

  test('T5: push is refused on a route that sponsors fees or only takes pull', async () => {
    const sponsored = setup({ feePayer: { account: privateKeyToAccount(generatePrivateKey()) } })
    expect(sponsored.request.methodDetails?.supportedModes).toEqual(['pull'])
    const e1 = await refusal(verifyHash(sponsored, keccak256('0x01')))
    expect(e1.detail).toMatch(/sponsors fees, so it takes only pull/)
    const pullOnly = setup({ modes: ['pull'] })
    const e2 = await refusal(verifyHash(pullOnly, keccak256('0x01')))
    expect(e2.detail).toMatch(/does not accept push payments/)
  })

  describe('logs a chain cannot be made to produce', () => {
    const transferTopic = keccak256(stringToHex('Transfer(address,address,uint256)'))
    const memoTopic = keccak256(stringToHex('TransferWithMemo(address,address,uint256,bytes32)'))
    const fakeReceipt = (hash: Hex, from: Address, logs: { address: Address; to: Address; amount: bigint; memo?: Hex }[]) => ({
      transactionHash: hash,
      status: '0x1',
      from,
      gasUsed: '0x5208',
      effectiveGasPrice: '0x1',
      logs: logs.flatMap((log, i) => [
        {
          address: log.address,
          topics: [transferTopic, pad(from), pad(log.to)],
          data: encodeAbiParameters([{ type: 'uint256' }], [log.amount]),
          logIndex: `0x${(2 * i).toString(16)}`,
        },
        ...(log.memo
          ? [
              {
                address: log.address,
                topics: [memoTopic, pad(from), pad(log.to), log.memo],
                data: encodeAbiParameters([{ type: 'uint256' }], [log.amount]),
                logIndex: `0x${(2 * i + 1).toString(16)}`,
              },
            ]
          : []),
      ]),
    })

    test('T5: Transfer logs from a look-alike token contract are ignored', async () => {
      const recipient = fresh()
      const hash = keccak256('0x1234')
      const lookAlike = '0x20c0000000000000000000000000000000000bad' as Address
      let emitter: Address = lookAlike
      const { transport, calls } = scriptedTransport(rpcUrl, async (method, _params, forward) =>
        method === 'eth_getTransactionReceipt'
          ? fakeReceipt(hash, payer.address, [{ address: emitter, to: recipient, amount: 10_000n, memo: challengeMemo(s.challenge) }])
          : forward(),
      )
      const s = setup({ recipient, transport, rpcUrl: undefined })
      const error = await refusal(verifyHash(s, hash))
      expect(error.detail).toMatch(/nothing pays that recipient in 0x20c0000000000000000000000000000000000000/i)
      expect(calls).toEqual(['eth_getTransactionReceipt'])
      // The same logs emitted by the currency itself do pay: the check is the emitter.
      emitter = pathUsd
      expect((await verifyHash(s, hash)).status).toBe('settled')
    })

    test('T5: a receipt whose logs are missing pays nothing', async () => {
      const recipient = fresh()
      const hash = keccak256('0x5678')
      const { transport } = scriptedTransport(rpcUrl, async () => fakeReceipt(hash, payer.address, []))
      const s = setup({ recipient, transport, rpcUrl: undefined })
      const error = await refusal(verifyHash(s, hash))
      expect(error.detail).toMatch(/primary transfer of 10000 base units .* is missing/)
    })

    test('T5: transfers from someone other than the transaction sender do not count', async () => {
      const recipient = fresh()
      const hash = keccak256('0x9abc')
      const receipt = fakeReceipt(hash, payer.address, [{ address: pathUsd, to: recipient, amount: 10_000n }])
      const { transport } = scriptedTransport(rpcUrl, async () => ({ ...receipt, from: fresh() }))
      const s = setup({ recipient, transport, rpcUrl: undefined })
      await refusal(verifyHash(s, hash))
    })
  })

  describe('the node is down', () => {
    let server: Server
    let mode: '500' | 'hang' = '500'
    let url: string
    beforeAll(async () => {
      server = createServer((_request, response) => {
        if (mode === '500') response.writeHead(500).end('internal error')
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    })
    afterAll(() => {
      server.closeAllConnections()
      server.close()
    })

    test('T5: a 5xx from the node → 503 payment-unavailable, never a refusal or a success', async () => {
      mode = '500'
      const s = setup({ rpcUrl: url })
      const error = await refusal(verifyHash(s, keccak256('0x01')))
      expect(error.kind).toBe('payment-unavailable')
      expect(error.status).toBe(503)
      expect(error.retryAfter).toBeGreaterThan(0)
    })

    test('T5: a node that never answers → 503 after the timeout', async () => {
      mode = 'hang'
      const s = setup({ rpcUrl: url, timeout: 200 })
      const started = Date.now()
      const error = await refusal(verifyHash(s, keccak256('0x01')))
      expect(error.kind).toBe('payment-unavailable')
      expect(Date.now() - started).toBeLessThan(2_000)
    })

    test('T5: a transport that throws (connection refused) → 503', async () => {
      const { transport } = scriptedTransport(rpcUrl, async () => {
        throw new TypeError('fetch failed')
      })
      const s = setup({ transport, rpcUrl: undefined })
      const error = await refusal(verifyHash(s, keccak256('0x01')))
      expect(error.kind).toBe('payment-unavailable')
    })
  })
})
