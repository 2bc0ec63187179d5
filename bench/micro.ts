/**
 * `node --import tsx bench/micro.ts [ours|ours-middleware|bare|mppx] [n]`: the 402 path in process, no network:
 * `app.fetch(request)` in a loop, reported as microseconds per request. Isolates the
 * middleware's own CPU cost from sockets and load generator; run it under `--cpu-prof` to see
 * where that cost goes. As in the node server, `Response` is @hono/node-server's lightweight one,
 * and one GET Request is reused (building a fetch Request costs more than the middleware).
 */
import { getRequestListener } from '@hono/node-server'
import { Hono } from 'hono'
import { Mppx, tempo as mppxTempo } from 'mppx/hono'
import { createClient, http } from 'viem'
import { localChain, localChainId, pathUsd } from '../scripts/local-chain.js'
import { mpp } from '../src/index.js'
import { tempo } from '../src/tempo/index.js'
import { amount, realm, route, secret } from './config.js'

const which = process.argv[2] ?? 'ours'
const n = Number(process.argv[3] ?? 50_000)
const rpcUrl = 'http://127.0.0.1:1'
const recipient = '0x1111111111111111111111111111111111111111'

const app = new Hono()
const content = (c: { json: (body: unknown) => Response }) => c.json({ content: 'paid content', at: 1 })
if (which === 'bare') app.get(route, (c) => content(c))
else if (which === 'ours') {
  const pay = mpp({ secret, realm, methods: [tempo({ rpcUrl, chainId: localChainId, currency: pathUsd, recipient })] })
  app.get(
    route,
    pay.charge({ amount }, (c) => content(c)),
  )
} else if (which === 'ours-middleware') {
  const pay = mpp({ secret, realm, methods: [tempo({ rpcUrl, chainId: localChainId, currency: pathUsd, recipient })] })
  app.get(route, pay.charge({ amount }), (c) => content(c))
} else {
  const client = createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) })
  const mppx = Mppx.create({ secretKey: secret, realm, methods: [mppxTempo.charge({ getClient: () => client, currency: pathUsd, recipient })] })
  app.get(route, mppx.charge({ amount }), (c) => content(c))
}

// Installs @hono/node-server's lightweight Response as the global one, as serve() does.
getRequestListener(app.fetch)
const request = new Request(`http://${realm}${route}`)
const once = async () => {
  const response = await app.fetch(request)
  return response.status
}
console.log(`status ${await once()}`)
for (let i = 0; i < 5_000; i++) await once()
const start = performance.now()
for (let i = 0; i < n; i++) await once()
console.log(`${which}: ${(((performance.now() - start) * 1000) / n).toFixed(2)} µs per request`)
