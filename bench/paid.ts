/**
 * 2. JSON-RPC calls per paid request, per mode, counted by the proxy between each server and
 *    the local chain (scripts/rpc-proxy.ts), for ours and for mppx/hono.
 * 3. Paid request wall time against a bare `eth_sendRawTransactionSync` of a comparable
 *    transaction: the mppx client signs two credentials; one goes to the server, the other's
 *    signed transaction goes straight to the chain. Pairs alternate which goes first.
 *
 * The payer is always the reference client (`mppx/client`), so both servers see the same bytes.
 */
import { Mppx as MppxClient, tempo as tempoClient } from 'mppx/client'
import { createClient, http, type Address, type Hex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { fundedAccount, localChain } from '../scripts/local-chain.js'
import { startRpcProxy } from '../scripts/rpc-proxy.js'
import { parseReceipt } from '../src/index.js'
import { decodeJson } from '../src/protocol/encoding.js'
import { startServer } from './processes.js'
import { route } from './config.js'

export type Mode = 'pull' | 'push' | 'sponsored pull'
export type Impl = 'ours' | 'mppx'

export type RpcCount = { impl: Impl; mode: Mode; calls: number; methods: Record<string, number>; unpaidCalls: number }
export type WallTime = {
  impl: Impl
  paidMs: number
  bareMs: number
  samples: number
  /** Mean time inside the server per paid request, and (ours) in the method's verify and settle. */
  serverMs: number
  verifyMs?: number
  settleMs?: number
}

type Payer = ReturnType<typeof MppxClient.create>

function payerFor(rpcUrl: string, account: Awaited<ReturnType<typeof fundedAccount>>, mode: 'pull' | 'push'): Payer {
  const client = createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) })
  return MppxClient.create({ polyfill: false, methods: [tempoClient.charge({ account, mode, getClient: () => client })] })
}

async function challenge(url: string): Promise<Response> {
  const response = await fetch(url + route)
  if (response.status !== 402) throw new Error(`bench: unpaid request answered ${response.status}`)
  return response
}

async function pay(url: string, authorization: string, impl: Impl, mode: Mode): Promise<void> {
  const response = await fetch(url + route, { headers: { authorization } })
  const body = await response.text()
  if (response.status !== 200)
    throw new Error(`bench: ${impl} ${mode}: paid request answered ${response.status}: ${body.slice(0, 300)}`)
  parseReceipt(response.headers.get('payment-receipt') ?? '')
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
  options: { samples: number; funder: number },
  log: (line: string) => void,
): Promise<WallTime> {
  const recipient: Address = privateKeyToAccount(generatePrivateKey()).address
  const account = await fundedAccount(chainUrl, { funder: options.funder })
  const server = await startServer({ kind: impl, rpcUrl: chainUrl, recipient, method: 'tempo' })
  const payer = payerFor(chainUrl, account, 'pull')
  const paid: number[] = []
  const bare: number[] = []
  try {
    for (let i = 0; i <= options.samples; i++) {
      const forServer = await payer.createCredential(await challenge(server.url))
      const forChain = transactionOf(await payer.createCredential(await challenge(server.url)))
      const timePaid = async () => {
        const start = performance.now()
        await pay(server.url, forServer, impl, 'pull')
        return performance.now() - start
      }
      const timeBare = async () => {
        const start = performance.now()
        await sendRawTransactionSync(chainUrl, forChain)
        return performance.now() - start
      }
      let p: number
      let b: number
      if (i % 2 === 0) {
        p = await timePaid()
        b = await timeBare()
      } else {
        b = await timeBare()
        p = await timePaid()
      }
      // The first pair warms connections and caches on both sides.
      if (i > 0) {
        paid.push(p)
        bare.push(b)
      } else await server.timings()
    }
    const t = await server.timings()
    const result: WallTime = {
      impl,
      paidMs: median(paid),
      bareMs: median(bare),
      samples: paid.length,
      serverMs: t.request / t.requests,
      ...(impl === 'ours' && { verifyMs: t.verify / t.requests, settleMs: t.settle / t.requests }),
    }
    log(
      `  ${impl.padEnd(4)} paid ${result.paidMs.toFixed(1)} ms, bare eth_sendRawTransactionSync ${result.bareMs.toFixed(1)} ms (median of ${result.samples}); ` +
        `in the server ${result.serverMs.toFixed(1)} ms${result.verifyMs !== undefined ? ` (verify ${result.verifyMs.toFixed(1)}, settle ${result.settleMs!.toFixed(1)})` : ''}`,
    )
    return result
  } finally {
    await server.stop()
  }
}
