/**
 * 2. JSON-RPC calls per paid request, per mode, counted by the proxy between each server and
 *    the local chain (scripts/rpc-proxy.ts), for ours and for mppx/hono.
 * 3. Paid request wall time against a bare `eth_sendRawTransactionSync` of a comparable
 *    transaction: the mppx client signs three credentials; one goes to the server, one to a bare
 *    Hono route that only broadcasts its transaction (the same HTTP hop and node call, no
 *    payment logic), and the third's transaction goes straight to the chain; an empty request to a
 *    bare route shows what one HTTP round trip alone costs on this machine. The order rotates.
 *
 * The payer is always the reference client (`mppx/client`), so both servers see the same bytes.
 */
import { Mppx as MppxClient, tempo as tempoClient } from 'mppx/client'
import { type Address, createClient, type Hex, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { fundedAccount, localChain } from '../scripts/local-chain.js'
import { startRpcProxy } from '../scripts/rpc-proxy.js'
import { parseReceipt } from '../src/index.js'
import { decodeJson } from '../src/protocol/encoding.js'
import { route } from './config.js'
import { startServer } from './processes.js'

export type Mode = 'pull' | 'push' | 'sponsored pull'
export type Impl = 'ours' | 'mppx'

export type RpcCount = { impl: Impl; mode: Mode; calls: number; methods: Record<string, number>; unpaidCalls: number }
export type WallTime = {
  impl: Impl
  paidMs: number
  /** The same kind of credential through a route that only forwards its transaction (no checks). */
  forwardMs: number
  /** The transaction sent straight to the chain, no server in between. */
  bareMs: number
  /** An empty GET to a bare Hono route (the forwarding server's `/ping`): what one HTTP round trip costs here. */
  emptyMs: number
  /** Median over samples of paid / forwarded (each pair measured moments apart, on the same chain state). */
  ratio: number
  /** Median over samples of paid / straight to the chain. */
  directRatio: number
  /** Median time of the server's JSON-RPC calls, and of the forwarding route's. */
  rpcMs: number
  forwardRpcMs: number
  samples: number
  /** Unmeasured rounds before the samples. */
  warmup: number
  /** Median time inside the server per paid request, and (ours) in the method's verify and settle. */
  serverMs: number
  verifyMs?: number
  settleMs?: number
}

export type Payer = ReturnType<typeof MppxClient.create>

export function payerFor(rpcUrl: string, account: Awaited<ReturnType<typeof fundedAccount>>, mode: 'pull' | 'push'): Payer {
  const client = createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) })
  return MppxClient.create({ polyfill: false, methods: [tempoClient.charge({ account, mode, getClient: () => client })] })
}

export async function challenge(url: string): Promise<Response> {
  const response = await fetch(url + route)
  if (response.status !== 402) throw new Error(`bench: unpaid request answered ${response.status}`)
  return response
}

export async function pay(url: string, authorization: string, impl: Impl, mode: Mode, options: { receipt?: boolean } = {}): Promise<void> {
  const response = await fetch(url + route, { headers: { authorization } })
  const body = await response.text()
  if (response.status !== 200) throw new Error(`bench: ${impl} ${mode}: paid request answered ${response.status}: ${body.slice(0, 300)}`)
  if (options.receipt !== false) parseReceipt(response.headers.get('payment-receipt') ?? '')
}

/** The signed transaction inside a pull credential. */
function transactionOf(authorization: string): Hex {
  const credential = decodeJson(authorization.replace(/^Payment\s+/i, '')) as { payload: { signature: Hex } }
  return credential.payload.signature
}

async function sendRawTransactionSync(rpcUrl: string, transaction: Hex): Promise<void> {
  const response = await fetch(rpcUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_sendRawTransactionSync', params: [transaction] }),
  })
  const body = (await response.json()) as { result?: { status?: string }; error?: { message: string } }
  if (body.error || body.result?.status !== '0x1') throw new Error(`bench: bare broadcast failed: ${JSON.stringify(body).slice(0, 300)}`)
}

/** An empty request to a bare Hono route: one HTTP round trip, no work. */
async function ping(url: string): Promise<void> {
  const response = await fetch(`${url}/ping`)
  await response.text()
  if (response.status !== 200) throw new Error(`bench: /ping answered ${response.status}`)
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export async function rpcCounts(
  chainUrl: string,
  impls: readonly Impl[],
  options: { samples: number; funder: number },
  log: (line: string) => void,
): Promise<RpcCount[]> {
  const recipient: Address = privateKeyToAccount(generatePrivateKey()).address
  const account = await fundedAccount(chainUrl, { funder: options.funder })
  const sponsor = await fundedAccount(chainUrl, { funder: options.funder })
  const results: RpcCount[] = []
  for (const impl of impls) {
    for (const sponsored of [false, true]) {
      const proxy = await startRpcProxy(chainUrl)
      const server = await startServer({
        kind: impl,
        rpcUrl: proxy.url,
        recipient,
        method: 'tempo',
        ...(sponsored && { feePayerKey: sponsor.privateKey }),
      })
      try {
        for (const mode of sponsored ? (['sponsored pull'] as const) : (['pull', 'push'] as const)) {
          const payer = payerFor(chainUrl, account, mode === 'push' ? 'push' : 'pull')
          const samples: RpcCount[] = []
          // One unmeasured payment first: one-time lookups (chain id, ...) are not per request.
          for (let i = 0; i <= options.samples; i++) {
            proxy.reset()
            const unpaid = await challenge(server.url)
            const unpaidCalls = proxy.total()
            const authorization = await payer.createCredential(unpaid)
            proxy.reset()
            await pay(server.url, authorization, impl, mode)
            if (i > 0) samples.push({ impl, mode, calls: proxy.total(), methods: Object.fromEntries(proxy.counts), unpaidCalls })
          }
          const typical = samples.sort((a, b) => a.calls - b.calls)[samples.length >> 1]!
          log(`  ${impl.padEnd(4)} ${mode.padEnd(14)} ${typical.calls} calls  ${JSON.stringify(typical.methods)}`)
          results.push(typical)
        }
      } finally {
        await server.stop()
        await proxy.close()
      }
    }
  }
  return results
}

export async function wallTime(
  chainUrl: string,
  impl: Impl,
  options: { samples: number; warmup: number; funder: number },
  log: (line: string) => void,
): Promise<WallTime> {
  const recipient: Address = privateKeyToAccount(generatePrivateKey()).address
  const account = await fundedAccount(chainUrl, { funder: options.funder })
  const server = await startServer({ kind: impl, rpcUrl: chainUrl, recipient, method: 'tempo' })
  const forwarder = await startServer({ kind: 'forward', rpcUrl: chainUrl, recipient, method: 'tempo' })
  const payer = payerFor(chainUrl, account, 'pull')
  const samples = { paid: [] as number[], forward: [] as number[], direct: [] as number[], empty: [] as number[] }
  const time = async (run: () => Promise<void>) => {
    const start = performance.now()
    await run()
    return performance.now() - start
  }
  try {
    for (let i = -options.warmup; i < options.samples; i++) {
      // Three credentials for three fresh challenges: one per way of sending a transaction.
      const credentials: string[] = []
      for (let k = 0; k < 3; k++) credentials.push(await payer.createCredential(await challenge(server.url)))
      const [forServer, forForwarder, forChain] = credentials as [string, string, string]
      const runs = {
        paid: () => pay(server.url, forServer, impl, 'pull'),
        forward: () => pay(forwarder.url, forForwarder, impl, 'pull', { receipt: false }),
        direct: () => sendRawTransactionSync(chainUrl, transactionOf(forChain)),
        empty: () => ping(forwarder.url),
      }
      // Rotate the order, so no kind always runs right after a block was mined.
      const order = (['paid', 'forward', 'direct', 'empty'] as const).map((_, k, all) => all[(k + i + options.warmup) % all.length]!)
      const measured: Partial<Record<keyof typeof runs, number>> = {}
      for (const kind of order) measured[kind] = await time(runs[kind])
      // Warm-up rounds first: a server answers paid requests all day, so its code is compiled
      // and its connections open; measured cold, the JIT's first passes would be the result.
      if (i < 0) {
        await Promise.all([server.timings(), forwarder.timings()])
        continue
      }
      for (const kind of order) samples[kind].push(measured[kind]!)
    }
    const t = await server.timings()
    const f = await forwarder.timings()
    const result: WallTime = {
      impl,
      paidMs: median(samples.paid),
      forwardMs: median(samples.forward),
      bareMs: median(samples.direct),
      emptyMs: median(samples.empty),
      ratio: median(samples.paid.map((paid, k) => paid / samples.forward[k]!)),
      directRatio: median(samples.paid.map((paid, k) => paid / samples.direct[k]!)),
      samples: samples.paid.length,
      warmup: options.warmup,
      serverMs: median(t.request),
      rpcMs: median(t.rpc),
      forwardRpcMs: median(f.rpc),
      ...(impl === 'ours' && { verifyMs: median(t.verify), settleMs: median(t.settle) }),
    }
    log(
      `  ${impl.padEnd(4)} paid ${result.paidMs.toFixed(2)} ms, the same through a forwarding route ${result.forwardMs.toFixed(2)} ms, ` +
        `straight to the chain ${result.bareMs.toFixed(2)} ms, an empty request ${result.emptyMs.toFixed(2)} ms (medians of ${result.samples}); ` +
        `paid/forwarded ${result.ratio.toFixed(2)}×; in the server ${result.serverMs.toFixed(2)} ms` +
        `${result.verifyMs !== undefined ? ` (verify ${result.verifyMs.toFixed(2)}, settle ${result.settleMs!.toFixed(2)})` : ''}, its JSON-RPC calls ${result.rpcMs.toFixed(2)} ms (the forwarding route's ${result.forwardRpcMs.toFixed(2)} ms)`,
    )
    return result
  } finally {
    await Promise.all([server.stop(), forwarder.stop()])
  }
}
