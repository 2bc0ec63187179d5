/**
 * A server under test for the session benchmark (bench/session.ts), in its own process (forked,
 * compiled by bench/build.ts). Configured by the BENCH_SESSION env (JSON); tells the parent its
 * port over IPC, answers `cpu` with its own CPU time and `rpc` with the JSON-RPC calls it made
 * since the last `rpc` (every fetch it sent, and the session method's own count).
 *
 * Kinds, all answering the same JSON on `GET /session`:
 * - `paid`: hono-mpp. `/session` is paid by a session voucher (`tempoSession`), `/charge` by a
 *   Tempo `charge`, at the same price, from one `mpp()`.
 * - `floor`: a bare Hono route that reads the credential and verifies its voucher signature
 *   (the EIP-712 digest and one check against the channel signer's kept key), and nothing
 *   else: the least any server paid by vouchers must do per request.
 * - `bare`: a bare Hono JSON route (information: what the HTTP hop alone costs).
 */
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import type { Address, Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { alphaUsd, localChainId, pathUsd } from '../scripts/local-chain.js'
import { mpp } from '../src/index.js'
import { decodeJson } from '../src/protocol/encoding.js'
import { sessionIntent, tempo, tempoSession } from '../src/tempo/index.js'
import { domainSeparator, signerKeys, voucherDigest } from '../src/tempo/session/voucher.js'
import { realm, secret } from './config.js'

export type SessionServerConfig = {
  kind: 'paid' | 'floor' | 'bare'
  rpcUrl: string
  escrow: Address
  /** The payee (session) and the charge recipient. */
  payeeKey: Hex
  /** Price of one request on both routes, token units. */
  price: string
  /** Deposit the session offer suggests, token units. */
  deposit: string
  /** `floor`: each channel's voucher signer. */
  signers?: Record<string, Address>
}

let fetches = 0
let sessionCalls = 0
const globalFetch = globalThis.fetch
globalThis.fetch = ((input: RequestInfo | URL, init?: RequestInit) => {
  fetches++
  return globalFetch(input, init)
}) as typeof globalThis.fetch

const content = (c: { json: (body: unknown) => Response }) => c.json({ content: 'paid content', at: 1 })

function app(config: SessionServerConfig): Hono {
  const app = new Hono()
  if (config.kind === 'bare') {
    app.get('/session', (c) => content(c))
    return app
  }
  if (config.kind === 'floor') {
    const domain = domainSeparator(config.escrow, localChainId)
    const signers = new Map(Object.entries(config.signers ?? {}).map(([id, signer]) => [id.toLowerCase(), signer]))
    const keys = signerKeys()
    app.get('/session', (c) => {
      const token = (c.req.header('authorization') ?? '').slice('Payment '.length)
      const { payload } = decodeJson(token) as { payload: { channelId: Hex; cumulativeAmount: string; signature: Hex } }
      const signer = signers.get(payload.channelId.toLowerCase())
      const digest = voucherDigest(domain, payload.channelId, BigInt(payload.cumulativeAmount))
      if (!signer || keys.check(digest, payload.signature, signer) !== 'ok') return c.json({ error: 'bad voucher' }, 402)
      return content(c)
    })
    return app
  }
  const payee = privateKeyToAccount(config.payeeKey)
  const session = tempoSession({
    rpcUrl: config.rpcUrl,
    chainId: localChainId,
    escrow: config.escrow,
    account: payee,
    currency: pathUsd,
    feeToken: alphaUsd,
    suggestedDeposit: config.deposit,
    onRpcCall: () => {
      sessionCalls++
    },
  })
  const charge = tempo({ rpcUrl: config.rpcUrl, chainId: localChainId, currency: pathUsd, recipient: payee.address })
  const pay = mpp({ secret, realm, expires: 3_600, methods: [charge, session], intents: [sessionIntent] })
  app.on(['GET', 'POST', 'HEAD'], '/session', pay.charge({ amount: config.price, methods: [session] }, content))
  app.get('/charge', pay.charge({ amount: config.price, methods: [charge] }, content))
  return app
}

const config = JSON.parse(process.env.BENCH_SESSION ?? '{}') as SessionServerConfig
const built = app(config)
const server = serve({ fetch: built.fetch, hostname: '127.0.0.1', port: 0 }, (info) => {
  process.send?.({ type: 'ready', port: info.port })
})
process.on('message', (message: { type?: string }) => {
  if (message.type === 'cpu') process.send?.({ type: 'cpu', usage: process.cpuUsage() })
  if (message.type === 'rpc') {
    process.send?.({ type: 'rpc', rpc: { fetches, sessionCalls } })
    fetches = 0
    sessionCalls = 0
  }
  if (message.type === 'stop') server.close(() => process.exit(0))
})
process.on('disconnect', () => process.exit(0))
