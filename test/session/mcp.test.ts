/**
 * The session intent over MCP: a priced tool paid by a voucher in `_meta`, on a channel the
 * reference client opened over HTTP with the same session method (one channel state, one store).
 * The receipt in the result's `_meta` carries the channel's running total; a voucher that does
 * not cover the call is refused with -32042 naming the voucher needed.
 */
import { Hono } from 'hono'
import { tempo as mppxTempo } from 'mppx/client'
import type { Address, Hex } from 'viem'
import { beforeAll, describe, expect, inject, test } from 'vitest'
import { alphaUsd, fundedAccount, localChainId } from '../../scripts/local-chain.js'
import { mpp } from '../../src/index.js'
import { sessionIntent, type TempoSession, tempoSession } from '../../src/tempo/index.js'
import { mcpPayments } from '../../src/transports/mcp.js'
import { clientFor, deployEscrow, signVoucher, token } from './support.js'

let rpcUrl: string
let escrow: Address
let session: TempoSession
let http: Hono
let mcp: Hono
/** `flaky` is priced with settle: 'after' and answers isError when its `fail` argument is true. */
let mcpAfter: Hono
const secret = 'session-mcp-secret-session-mcp-secret-012345'

beforeAll(async () => {
  rpcUrl = inject('rpcUrl')
  escrow = await deployEscrow(rpcUrl, { funder: 5 })
  const payee = await fundedAccount(rpcUrl, { funder: 5, amount: '1', tokens: [alphaUsd] })
  session = tempoSession({ rpcUrl, chainId: localChainId, escrow, account: payee, currency: token, feeToken: alphaUsd, suggestedDeposit: '0.05' })
  http = new Hono().on(['GET', 'POST'], '/open', mpp({ secret, methods: [session], intents: [sessionIntent] }).charge({ amount: '0.001' }), (c) =>
    c.text('opened'),
  )
  mcp = new Hono().post('/mcp', mcpPayments({ secret, methods: [session], intents: [sessionIntent], tools: { summarize: { amount: '0.002' } } }), (c) =>
    c.json({ jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: `paid from ${(c.get('payment') as { channelId?: string }).channelId}` }] } }),
  )
  mcpAfter = new Hono().post(
    '/mcp',
    mcpPayments({ secret, methods: [session], intents: [sessionIntent], tools: { flaky: { amount: '0.002', settle: 'after' } } }),
    async (c) => {
      const fail = ((await c.req.json()) as { params: { arguments: { fail?: boolean } } }).params.arguments.fail === true
      return c.json({ jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: fail ? 'failed' : 'done' }], ...(fail && { isError: true }) } })
    },
  )
})

type Answer = {
  result?: { content: { text: string }[]; _meta: Record<string, Record<string, unknown>> }
  error?: { code: number; data: { challenges: Record<string, unknown>[]; problem?: { detail: string }; detail?: string } }
}

const call = async (meta?: unknown, options: { app?: Hono; tool?: string; args?: Record<string, unknown> } = {}): Promise<Answer> =>
  (await (
    await (options.app ?? mcp).request('http://mcp.test/mcp', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name: options.tool ?? 'summarize', arguments: options.args ?? {}, ...(meta !== undefined && { _meta: meta }) },
      }),
    })
  ).json()) as Answer

async function openChannel() {
  const payer = await fundedAccount(rpcUrl, { funder: 5, amount: '1' })
  const manager = mppxTempo.sessionLegacy({
    account: payer,
    client: clientFor(rpcUrl) as never,
    escrowContract: escrow,
    maxDeposit: '0.05',
    fetch: ((input: RequestInfo | URL, init?: RequestInit) => http.fetch(new Request(input, init))) as typeof fetch,
  })
  expect((await manager.fetch('http://api.test/open')).status).toBe(200)
  return { payer, channelId: manager.channelId as Hex }
}

describe('session over MCP', () => {
  test("S12: under settle 'after', a tool call answering isError gets no receipt and its unit is given back; the same voucher then pays a call that succeeds", async () => {
    const { payer, channelId } = await openChannel()
    const flaky = { app: mcpAfter, tool: 'flaky' }
    const challenge = (await call(undefined, flaky)).error!.data.challenges.find((c) => c.intent === 'session')!
    const signature = await signVoucher(payer, escrow, channelId, 3000n)
    const meta = { 'org.paymentauth/credential': { challenge, payload: { action: 'voucher', channelId, cumulativeAmount: '3000', signature } } }
    const failed = await call(meta, { ...flaky, args: { fail: true } })
    expect(failed.result?.content[0]?.text).toBe('failed')
    expect(failed.result?._meta?.['org.paymentauth/receipt']).toBeUndefined()
    expect(await session.channel(channelId)).toMatchObject({ highest: 3000n, spent: 1000n, units: 1 })
    const done = await call(meta, flaky)
    expect(done.result?.content[0]?.text).toBe('done')
    expect(done.result?._meta['org.paymentauth/receipt']).toMatchObject({ acceptedCumulative: '3000', spent: '3000', charged: '2000' })
    expect(await session.channel(channelId)).toMatchObject({ highest: 3000n, spent: 3000n, units: 2 })
  })

  test('S11 S13: a tool call paid by a voucher in _meta on a channel opened over HTTP; an uncovered one is refused', async () => {
    const payer = await fundedAccount(rpcUrl, { funder: 5, amount: '1' })
    const manager = mppxTempo.sessionLegacy({
      account: payer,
      client: clientFor(rpcUrl) as never,
      escrowContract: escrow,
      maxDeposit: '0.05',
      fetch: ((input: RequestInfo | URL, init?: RequestInit) => http.fetch(new Request(input, init))) as typeof fetch,
    })
    expect((await manager.fetch('http://api.test/open')).status).toBe(200)
    const channelId = manager.channelId as Hex

    const unpaid = await call()
    expect(unpaid.error?.code).toBe(-32042)
    const challenge = unpaid.error!.data.challenges.find((c) => c.intent === 'session')!
    const voucher = (amount: bigint) => async () => ({
      'org.paymentauth/credential': {
        challenge,
        payload: { action: 'voucher', channelId, cumulativeAmount: amount.toString(), signature: await signVoucher(payer, escrow, channelId, amount) },
      },
    })
    const paid = await call(await voucher(3000n)())
    expect(paid.result?.content[0]?.text).toBe(`paid from ${channelId}`)
    expect(paid.result?._meta['org.paymentauth/receipt']).toMatchObject({
      intent: 'session',
      channelId,
      acceptedCumulative: '3000',
      spent: '3000',
      charged: '2000',
    })

    const short = await call(await voucher(4000n)())
    expect(short.error?.code).toBe(-32043) // a refused credential (-32042 is for a missing one)
    expect(JSON.stringify(short.error?.data)).toMatch(/sign a voucher for a cumulativeAmount of at least 5000/)
    // The valid voucher is kept (more authorised), the call is not served.
    expect(await session.channel(channelId)).toMatchObject({ highest: 4000n, spent: 3000n })
  })

  test('S11 C10: a voucher retried with the same Idempotency-Key is replayed for the same call, refused for other arguments; the channel is charged once', async () => {
    const { payer, channelId } = await openChannel()
    const challenge = (await call()).error!.data.challenges.find((c) => c.intent === 'session')!
    const signature = await signVoucher(payer, escrow, channelId, 3000n)
    const meta = { 'org.paymentauth/credential': { challenge, payload: { action: 'voucher', channelId, cumulativeAmount: '3000', signature } } }
    const send = async (text: string) =>
      (await (
        await mcp.request('http://mcp.test/mcp', {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'idempotency-key': `order-${channelId}` },
          body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'summarize', arguments: { text }, _meta: meta } }),
        })
      ).json()) as Answer
    const first = await send('A')
    expect(first.result?._meta['org.paymentauth/receipt']).toMatchObject({ intent: 'session', spent: '3000' })
    const other = await send('B')
    expect(other.result).toBeUndefined()
    expect(other.error?.code).toBe(-32602)
    expect(other.error?.data.detail).toMatch(/Idempotency-Key was already used for another call/)
    expect((await send('A')).result).toEqual(first.result)
    // The open over HTTP and this one call.
    expect(await session.channel(channelId)).toMatchObject({ highest: 3000n, spent: 3000n, units: 2 })
  })
})
