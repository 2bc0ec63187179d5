/**
 * One server under test, in its own process (forked by bench/run.ts with `--import tsx`), so it
 * never shares an event loop with autocannon. Configured by the BENCH_SERVER env (JSON); tells
 * the parent its port over IPC and answers `cpu` with its own CPU time, so the parent can divide
 * CPU by requests served.
 *
 * Kinds: `bare` (a Hono JSON route, the ceiling), `ours` (hono-mpp), `mppx` (mppx/hono).
 */
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { Mppx as MppxServer, tempo as mppxTempo } from 'mppx/hono'
import { createClient, http } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { localChain, pathUsd } from '../scripts/local-chain.js'
import { mpp } from '../src/index.js'
import { amount, realm, route, secret, type ServerConfig } from './config.js'
import { ourMethod } from './method.js'

async function app(config: ServerConfig): Promise<Hono> {
  const app = new Hono()
  const content = (c: { json: (body: unknown) => Response }) => c.json({ content: 'paid content', at: 1 })
  if (config.kind === 'bare') {
    app.get(route, (c) => content(c))
    return app
  }
  const feePayer = config.feePayerKey ? privateKeyToAccount(config.feePayerKey) : undefined
  if (config.kind === 'ours' || config.kind === 'static402') {
    const method = ourMethod({ ...config, ...(feePayer && { feePayer }) })
    const pay = mpp({ secret, realm, methods: [method] })
    app.get(route, pay.charge({ amount }), (c) => content(c))
    if (config.kind === 'ours') return app
    // Record one 402 and serve its bytes from a plain route: what answering costs with no work.
    const recorded = await app.request(`http://${realm}${route}`)
    const body = await recorded.text()
    const headers = Object.fromEntries(recorded.headers)
    const floor = new Hono()
    floor.get(route, () => new Response(body, { status: 402, headers }))
    return floor
  }
  // The reference: one viem client, built once (a fresh client per request would be unfair to it).
  const client = createClient({ chain: localChain(config.rpcUrl), transport: http(config.rpcUrl) })
  const mppx = MppxServer.create({
    secretKey: secret,
    realm,
    methods: [
      mppxTempo.charge({
        getClient: () => client,
        currency: pathUsd,
        recipient: config.recipient,
        ...(feePayer && { feePayer }),
      }),
    ],
  })
  app.get(route, mppx.charge({ amount }), (c) => content(c))
  return app
}

const config = JSON.parse(process.env.BENCH_SERVER ?? '{}') as ServerConfig
const server = serve({ fetch: (await app(config)).fetch, hostname: '127.0.0.1', port: 0 }, (info) => {
  process.send?.({ type: 'ready', port: info.port })
})
process.on('message', (message: { type?: string }) => {
  if (message.type === 'cpu') process.send?.({ type: 'cpu', usage: process.cpuUsage() })
  if (message.type === 'stop') server.close(() => process.exit(0))
})
process.on('disconnect', () => process.exit(0))
