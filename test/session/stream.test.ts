/**
 * A metered SSE stream served by one instance, its mid-stream voucher accepted by another
 * instance on the same store: the paused stream sees the voucher through the shared record and
 * resumes. Read incrementally, as a client does, answering the need-voucher event itself.
 */
import { Hono } from 'hono'
import { tempo as mppxTempo } from 'mppx/client'
import type { Address, Hex } from 'viem'
import { beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, fundedAccount, localChainId } from '../../scripts/local-chain.js'
import { type ClaimStore, mpp } from '../../src/index.js'
import { memoryStore } from '../../src/stores/memory.js'
import { meteredStream, sessionIntent, type TempoSession, tempoSession } from '../../src/tempo/index.js'
import { challengesOf, credentialFor } from '../helpers/http.js'
import { chunks, clientFor, deployEscrow, signVoucher, token } from './support.js'

const base = 'http://api.session-stream.test'
let rpcUrl: string
let escrow: Address
let payee: Awaited<ReturnType<typeof fundedAccount>>

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  escrow = await deployEscrow(rpcUrl, { funder: 3 })
  payee = await fundedAccount(rpcUrl, { funder: 3, amount: '1', tokens: [alphaUsd] })
})

function instance(store: ClaimStore): { app: Hono; session: TempoSession } {
  const session = tempoSession({
    rpcUrl,
    chainId: localChainId,
    escrow,
    account: payee,
    currency: token,
    feeToken: alphaUsd,
    suggestedDeposit: '0.01',
    store,
    pollMs: 20,
  })
  const pay = mpp({ secret: 'session-stream-secret-session-stream-secret', methods: [session], intents: [sessionIntent] })
  const app = new Hono().on(['GET', 'POST'], '/stream', pay.charge({ amount: '0.0001' }), (c) => meteredStream(c, chunks(3)))
  return { app, session }
}

describe('metered stream across instances (S15 S12)', () => {
  test('S15 S12: the stream on one instance pauses, the voucher lands on another, the stream resumes; each chunk paid once', async () => {
    const store = memoryStore()
    const one = instance(store)
    const two = instance(store)
    const payer = await fundedAccount(rpcUrl, { funder: 3, amount: '1' })
    const manager = mppxTempo.sessionLegacy({
      account: payer,
      client: clientFor(rpcUrl) as never,
      escrowContract: escrow,
      maxDeposit: '0.01',
      fetch: ((input: RequestInfo | URL, init?: RequestInit) => one.app.fetch(new Request(input, init))) as typeof fetch,
    })
    // The opening request is itself a stream of 3 chunks, paid by the manager on instance one.
    const opening: string[] = []
    for await (const message of await manager.sse(`${base}/stream`)) opening.push(message)
    expect(opening).toEqual([...chunks(3)])
    const channelId = manager.channelId as Hex
    expect(await two.session.channel(channelId)).toMatchObject({ spent: 300n, highest: 300n })

    // Now by hand: a stream on instance one covering one chunk; the next voucher goes to instance two.
    const challenge = challengesOf(await one.app.request(`${base}/stream`))[0]!
    const voucher = async (amount: bigint) =>
      credentialFor(challenge, {
        action: 'voucher',
        channelId,
        cumulativeAmount: amount.toString(),
        signature: await signVoucher(payer, escrow, channelId, amount),
      })
    const response = await one.app.request(`${base}/stream`, { headers: { authorization: await voucher(400n) } })
    expect(response.status).toBe(200)
    const reader = response.body!.getReader()
    const decoder = new TextDecoder()
    let buffer = ''
    const events: { event: string; data: string }[] = []
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      buffer += decoder.decode(value, { stream: true })
      const blocks = buffer.split('\n\n')
      buffer = blocks.pop()!
      for (const block of blocks) {
        const event = { event: /^event: (.*)$/m.exec(block)![1]!, data: /^data: (.*)$/m.exec(block)![1]! }
        events.push(event)
        if (event.event === 'payment-need-voucher') {
          const required = BigInt((JSON.parse(event.data) as { requiredCumulative: string }).requiredCumulative)
          const posted = await two.app.request(`${base}/stream`, { method: 'POST', headers: { authorization: await voucher(required) } })
          expect(posted.status).toBe(204)
        }
      }
    }
    expect(events.map((e) => e.event)).toEqual(['message', 'payment-need-voucher', 'message', 'payment-need-voucher', 'message', 'payment-receipt'])
    expect(events.filter((e) => e.event === 'message').map((e) => e.data)).toEqual([...chunks(3)])
    expect(JSON.parse(events.at(-1)!.data)).toMatchObject({ spent: '600', acceptedCumulative: '600' })
    expect(await one.session.channel(channelId)).toMatchObject({ spent: 600n, highest: 600n, units: 6 })
  })
})
