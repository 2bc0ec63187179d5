/**
 * The session benchmark (issue 17), in one run on a fresh local chain with our escrow deployed:
 *
 * - paid requests per second of a voucher-paid route against a `charge`-paid route of the same
 *   server, at the same concurrency (autocannon);
 * - JSON-RPC calls per voucher (every fetch the server process sends, counted in it);
 * - the server's CPU per voucher-paid request against its floor: a bare Hono route that only
 *   reads the credential and verifies its voucher signature; against bare Hono as information.
 *
 * The client's own signing is not measured: channels are opened by the reference client
 * (`mppx`'s session client) through the server first, then every voucher is signed before the
 * timed windows. Each channel's vouchers rise by one price; a channel is lent to one connection
 * at a time (taken when a request is built, given back when its answer arrives), so its vouchers
 * reach the server in order. `charge` credentials (pull, signed by the reference client for fresh
 * challenges) are signed just before each round (their transactions are valid for 25 s), for the
 * same server code on a fresh chain each round (anvil slows down with every block it holds).
 */
import { type ChildProcess, fork } from 'node:child_process'
import autocannon from 'autocannon'
import { Mppx as MppxClient, tempo as mppxTempo } from 'mppx/client'
import { Secp256k1, Signature } from 'ox'
import { type Address, createClient, type Hex, http } from 'viem'
import { generatePrivateKey } from 'viem/accounts'
import { fundedAccount, localChain, localChainId, sessionPayerClient, startLocalChain } from '../scripts/local-chain.js'
import { parseChallenges } from '../src/index.js'
import { domainSeparator, voucherDigest } from '../src/tempo/session/voucher.js'
import { credentialFor } from '../test/helpers/http.js'
import { deployEscrow, getChannel } from '../test/session/support.js'
import { compiled } from './build.js'
import type { Row } from './report.js'
import type { SessionServerConfig } from './session-server.js'
import { median } from './throughput.js'

export type SessionOptions = {
  connections: number
  /** Rounds; each measures every kind once, in alternating order. */
  rounds: number
  /** Requests per measured window, after `warm` unmeasured ones: voucher-paid, floor and bare. */
  requests: number
  warm: number
  /** The same for the charge-paid route (each one is an on-chain payment). */
  chargeRequests: number
  chargeWarm: number
  funder: number
}

const kinds = ['session', 'charge', 'floor', 'bare'] as const
type Kind = (typeof kinds)[number]

export type SessionMeasure = { rps: number; p50: number; p99: number; cpuPerRequest: number; requests: number }
export type SessionResults = {
  options: SessionOptions
  channels: number
  price: string
  rounds: Record<Kind, SessionMeasure[]>
  summary: Record<Kind, SessionMeasure>
  /** Fetches the server sent while it answered `vouchers` voucher-paid requests (and the session method's own count). */
  rpc: { vouchers: number; fetches: number; sessionCalls: number }
  /** Per-round paired ratios, and their medians. */
  ratios: { vsCharge: number[]; vsFloor: number[]; vsBare: number[] }
}

type Running = { url: string; cpu(): Promise<number>; rpc(): Promise<{ fetches: number; sessionCalls: number }>; stop(): Promise<void> }

async function start(config: SessionServerConfig): Promise<Running> {
  const child: ChildProcess = fork(await compiled('session-server'), [], {
    env: { ...process.env, BENCH_SESSION: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bench: session ${config.kind} server did not start within 30 s`)), 30_000)
    child.once('exit', (code) => reject(new Error(`bench: session ${config.kind} server exited (${code}) before listening`)))
    child.on('message', (message: { type?: string; port?: number }) => {
      if (message.type === 'ready') {
        clearTimeout(timer)
        resolve(message.port!)
      }
    })
  })
  const ask = <T>(type: string, field: string) =>
    new Promise<T>((resolve) => {
      const listener = (message: Record<string, unknown>) => {
        if (message.type !== type) return
        child.off('message', listener)
        resolve(message[field] as T)
      }
      child.on('message', listener)
      child.send({ type })
    })
  return {
    url: `http://127.0.0.1:${port}`,
    cpu: async () => {
      const usage = await ask<NodeJS.CpuUsage>('cpu', 'usage')
      return usage.user + usage.system
    },
    rpc: () => ask('rpc', 'rpc'),
    async stop() {
      if (child.exitCode !== null) return
      child.send({ type: 'stop' })
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))])
      if (child.exitCode === null) child.kill('SIGKILL')
    },
  }
}

const withAuthorization = (request: autocannon.Request, authorization: string): autocannon.Request => ({
  ...request,
  headers: { ...request.headers, authorization },
})

/** The vouchers of one channel, signed ahead, and how far its connection got. */
type Channel = { id: Hex; signer: Address; authorizations: string[]; next: number }

/**
 * Lends channels to connections: a request takes the channel at the head of the queue and its next
 * voucher; its answer gives the channel back. So each channel has at most one voucher in flight.
 */
function voucherFeed(channels: Channel[]) {
  let free = [...channels.keys()]
  return {
    /** A new run: requests built but never sent by the last one leave their channel taken. */
    reset() {
      free = [...channels.keys()]
    },
    request: {
      method: 'GET' as const,
      path: '/session',
      setupRequest(request: autocannon.Request, context: { channel?: number }) {
        const index = free.shift()
        if (index === undefined) throw new Error('bench: every channel is in flight; use more channels than connections')
        const channel = channels[index]!
        const authorization = channel.authorizations[channel.next++]
        if (authorization === undefined) throw new Error('bench: a channel ran out of signed vouchers; sign more')
        context.channel = index
        return withAuthorization(request, authorization)
      },
      onResponse(_status: number, _body: string, context: { channel?: number }) {
        if (context.channel !== undefined) free.push(context.channel)
        context.channel = undefined
      },
    },
  }
}

/**
 * Sends `amount` requests; the run lasts until the last answer. (autocannon notices that the
 * amount was reached only at its next one-second tick, so its own duration is rounded up.)
 */
async function drive(url: string, connections: number, amount: number, request: autocannon.Request): Promise<{ result: autocannon.Result; seconds: number }> {
  let last = 0
  const inner = request.onResponse as ((status: number, body: string, context: object, headers: object) => void) | undefined
  const start = performance.now()
  const result = await autocannon({
    url,
    connections,
    amount,
    requests: [
      {
        ...request,
        onResponse: (status: number, body: string, context: object, headers: object) => {
          last = performance.now()
          inner?.(status, body, context, headers)
        },
      } as autocannon.Request,
    ],
  })
  return { result, seconds: (last - start) / 1000 }
}

async function measure(name: string, server: Running, options: { connections: number; amount: number; warm: number }, request: () => autocannon.Request) {
  if (options.warm > 0) await drive(server.url, options.connections, options.warm, request())
  const before = await server.cpu()
  const { result, seconds } = await drive(server.url, options.connections, options.amount, request())
  const cpu = (await server.cpu()) - before
  const ok = result.statusCodeStats?.['200']?.count ?? 0
  if (result.errors > 0 || ok !== result.requests.total)
    throw new Error(`bench: ${name}: ${result.errors} errors, ${ok}/${result.requests.total} answered 200 (${JSON.stringify(result.statusCodeStats)})`)
  return {
    rps: result.requests.total / seconds,
    p50: result.latency.p50,
    p99: result.latency.p99,
    cpuPerRequest: cpu / result.requests.total,
    requests: result.requests.total,
  }
}

async function sessionChallenge(url: string): Promise<ReturnType<typeof parseChallenges>[number]> {
  const response = await fetch(`${url}/session`)
  await response.arrayBuffer()
  const challenge = parseChallenges(response.headers.get('www-authenticate') ?? '').find((c) => c.intent === 'session')
  if (response.status !== 402 || !challenge) throw new Error(`bench: /session answered ${response.status} without a session challenge`)
  return challenge
}

export async function sessionBench(options: SessionOptions, log: (line: string) => void): Promise<SessionResults> {
  const price = '0.0001'
  const priceUnits = 100n
  const channelCount = options.connections * 2
  // Every voucher-paid window (warm-up included) spends vouchers; floor and bare reuse them (they keep no state).
  const perChannel = Math.ceil(((options.requests + options.warm) * options.rounds * 1.25) / channelCount) + options.connections
  const depositTokens = (Number(BigInt(perChannel + 2) * priceUnits) / 1e6).toFixed(6)
  const chain = await startLocalChain()
  const servers: Partial<Record<'paid' | 'floor' | 'bare', Running>> = {}
  try {
    const rpcUrl = chain.rpcUrl
    const escrow = await deployEscrow(rpcUrl, { funder: options.funder })
    const payeeKey = generatePrivateKey()
    const base = { rpcUrl, escrow, payeeKey, price, deposit: depositTokens }
    servers.paid = await start({ ...base, kind: 'paid' })
    const paid = servers.paid
    const payer = await fundedAccount(rpcUrl, { funder: options.funder, amount: String(Math.ceil(channelCount * Number(depositTokens) + 10)) })

    // Channels, opened by the reference client through the server (its first paid request).
    log(`  opening ${channelCount} channels of ${depositTokens} pathUSD with mppx's session client, signing ${perChannel} vouchers each`)
    const domain = domainSeparator(escrow, localChainId)
    const channels: Channel[] = []
    for (let i = 0; i < channelCount; i++) {
      const manager = mppxTempo.sessionLegacy({
        account: payer,
        client: sessionPayerClient(rpcUrl) as never,
        escrowContract: escrow,
        maxDeposit: depositTokens,
      })
      const first = await manager.fetch(`${paid.url}/session`)
      if (first.status !== 200) throw new Error(`bench: opening a channel answered ${first.status}: ${(await first.text()).slice(0, 300)}`)
      await first.arrayBuffer()
      const id = manager.channelId as Hex
      const onChain = await getChannel(rpcUrl, escrow, id)
      if (onChain.deposit < BigInt(perChannel + 1) * priceUnits) throw new Error(`bench: channel ${id} holds ${onChain.deposit}, too little`)
      channels.push({ id, signer: payer.address, authorizations: [], next: 0 })
    }
    // Every voucher signed now: the client's signing is not what is measured.
    const signStart = performance.now()
    for (const channel of channels) {
      const challenge = await sessionChallenge(paid.url)
      for (let k = 0; k < perChannel; k++) {
        const cumulativeAmount = BigInt(k + 2) * priceUnits // the open paid the first unit
        const signature = Signature.toHex(Secp256k1.sign({ payload: voucherDigest(domain, channel.id, cumulativeAmount), privateKey: payer.privateKey }))
        channel.authorizations.push(
          credentialFor(challenge, { action: 'voucher', channelId: channel.id, cumulativeAmount: cumulativeAmount.toString(), signature }),
        )
      }
    }
    log(`  signed ${perChannel * channelCount} vouchers in ${((performance.now() - signStart) / 1000).toFixed(1)} s (not measured)`)
    const signers = Object.fromEntries(channels.map((c) => [c.id, c.signer]))
    servers.floor = await start({ ...base, kind: 'floor', signers })
    servers.bare = await start({ ...base, kind: 'bare' })
    const vouchers = voucherFeed(channels)
    // The floor and bare routes get the same credentials, in any order (they keep no state).
    const pool = channels.flatMap((c) => c.authorizations)
    let drawn = 0
    const stateless = (): autocannon.Request => ({
      method: 'GET',
      path: '/session',
      setupRequest: (request: autocannon.Request) => withAuthorization(request, pool[drawn++ % pool.length]!),
    })

    // Charge credentials: the reference client, pull mode, paying its own fee, for fresh challenges.
    const chargeCredentials = async (url: string, chainUrl: string, count: number): Promise<string[]> => {
      const account = await fundedAccount(chainUrl, { funder: options.funder, amount: '10' })
      const chargePayer = MppxClient.create({
        polyfill: false,
        methods: [mppxTempo.charge({ account, mode: 'pull', getClient: () => createClient({ chain: localChain(chainUrl), transport: http(chainUrl) }) })],
      })
      const signed: string[] = []
      for (let i = 0; i < count; i++) {
        const unpaid = await fetch(`${url}/charge`)
        if (unpaid.status !== 402) throw new Error(`bench: /charge answered ${unpaid.status} unpaid`)
        signed.push(await chargePayer.createCredential(unpaid))
      }
      return signed
    }

    const rounds = Object.fromEntries(kinds.map((k) => [k, [] as SessionMeasure[]])) as Record<Kind, SessionMeasure[]>
    const rpcTotals = { vouchers: 0, fetches: 0, sessionCalls: 0 }
    const { connections } = options
    for (let round = 0; round < options.rounds; round++) {
      const order = round % 2 === 0 ? kinds : [...kinds].reverse()
      for (const kind of order) {
        let result: SessionMeasure
        if (kind === 'session') {
          await paid.rpc()
          const request = () => {
            vouchers.reset()
            return vouchers.request as unknown as autocannon.Request
          }
          result = await measure(kind, paid, { connections, amount: options.requests, warm: options.warm }, request)
          const rpc = await paid.rpc()
          rpcTotals.vouchers += options.requests + options.warm
          rpcTotals.fetches += rpc.fetches
          rpcTotals.sessionCalls += rpc.sessionCalls
        } else if (kind === 'charge') {
          // The same server on a fresh chain for each charge window: anvil answers a broadcast
          // more slowly with every block it holds (each charge is one), which would make the
          // charge route look slower round after round. Vouchers need no chain at all.
          const fresh = await startLocalChain()
          let server: Running | undefined
          try {
            server = await start({ ...base, rpcUrl: fresh.rpcUrl, kind: 'paid' })
            // Requests a connection builds but never sends (the run ended) skip a credential each.
            const credentials = await chargeCredentials(server.url, fresh.rpcUrl, options.chargeRequests + options.chargeWarm + 2 * connections)
            let used = 0
            const request = (): autocannon.Request => ({
              method: 'GET',
              path: '/charge',
              setupRequest: (r: autocannon.Request) => withAuthorization(r, credentials[used++]!),
            })
            result = await measure(kind, server, { connections, amount: options.chargeRequests, warm: options.chargeWarm }, request)
          } finally {
            await server?.stop()
            await fresh.stop()
          }
        } else {
          result = await measure(kind, servers[kind]!, { connections, amount: options.requests, warm: options.warm }, stateless)
        }
        rounds[kind].push(result)
        log(
          `  round ${round + 1} ${kind.padEnd(8)} ${result.rps.toFixed(0).padStart(6)} req/s  p50 ${result.p50} ms  p99 ${result.p99} ms  ${result.cpuPerRequest.toFixed(0)} µs server CPU/req`,
        )
      }
    }
    const summary = Object.fromEntries(
      kinds.map((k) => {
        const all = rounds[k]
        const mid = (key: keyof SessionMeasure) => median(all.map((r) => r[key]))
        return [k, { rps: mid('rps'), p50: mid('p50'), p99: mid('p99'), cpuPerRequest: mid('cpuPerRequest'), requests: mid('requests') }]
      }),
    ) as Record<Kind, SessionMeasure>
    const ratios = {
      vsCharge: rounds.session.map((s, i) => s.rps / rounds.charge[i]!.rps),
      vsFloor: rounds.session.map((s, i) => s.cpuPerRequest / rounds.floor[i]!.cpuPerRequest),
      vsBare: rounds.session.map((s, i) => s.cpuPerRequest / rounds.bare[i]!.cpuPerRequest),
    }
    log(
      `  RPC calls while serving ${rpcTotals.vouchers} voucher-paid requests: ${rpcTotals.fetches} fetches by the server (the session method counted ${rpcTotals.sessionCalls})`,
    )
    return { options, channels: channelCount, price, rounds, summary, rpc: rpcTotals, ratios }
  } finally {
    await Promise.all(Object.values(servers).map((s) => s?.stop()))
    await chain.stop()
  }
}

const times = (n: number) => `${n >= 10 ? n.toFixed(1) : n.toFixed(2)}×`
const spread = (values: number[]) => (values.length > 1 ? ` (${times(Math.min(...values))}–${times(Math.max(...values))})` : '')

/** The table's rows: voucher-paid vs charge-paid req/s, RPC calls per voucher, CPU per voucher-paid request vs its floor. */
export function sessionRows(r: SessionResults): Row[] {
  const s = r.summary
  const vsCharge = median(r.ratios.vsCharge)
  const vsFloor = median(r.ratios.vsFloor)
  const vsBare = median(r.ratios.vsBare)
  const perVoucher = r.rpc.fetches / r.rpc.vouchers
  const reqs = (n: number) => `${Math.round(n).toLocaleString('en-US')} req/s`
  const cpu = (n: number) => `${n.toFixed(0)} µs CPU`
  return [
    {
      name: `Voucher-paid req/s vs charge-paid req/s (${r.options.connections} connections)`,
      label: 'Voucher-paid vs charge-paid req/s',
      chartText: `${times(vsCharge)} (${reqs(s.session.rps)} vs ${reqs(s.charge.rps)})`,
      value: reqs(s.session.rps),
      baseline: reqs(s.charge.rps),
      ratio: `${times(vsCharge)}${spread(r.ratios.vsCharge)}`,
      target: '≥ 5×',
      pass: vsCharge >= 5,
      score: vsCharge / 5,
    },
    {
      name: 'RPC calls per voucher-paid request',
      label: 'RPC calls per voucher',
      chartText: `${perVoucher} (${r.rpc.fetches} in ${r.rpc.vouchers.toLocaleString('en-US')} requests)`,
      value: `${perVoucher}`,
      baseline: '—',
      ratio: '—',
      target: '0',
      pass: r.rpc.fetches === 0,
      // A log-scale chart has no zero: 0 calls draws as far past the target as it goes.
      score: r.rpc.fetches === 0 ? 16 : 1 / 16,
    },
    {
      name: `Voucher-paid request, server CPU vs its floor (verifying the voucher signature alone); vs bare Hono ${times(vsBare)}${spread(r.ratios.vsBare)}`,
      label: 'Voucher-paid request vs its floor',
      chartText: `${times(vsFloor)} (${cpu(s.session.cpuPerRequest)} vs ${cpu(s.floor.cpuPerRequest)}; bare Hono ${cpu(s.bare.cpuPerRequest)})`,
      value: cpu(s.session.cpuPerRequest),
      baseline: cpu(s.floor.cpuPerRequest),
      ratio: `${times(vsFloor)}${spread(r.ratios.vsFloor)}`,
      target: '≤ 1.5×',
      pass: vsFloor <= 1.5,
      score: 1.5 / vsFloor,
    },
  ]
}

/** The section of docs/benchmarks.md. */
export function sessionMarkdown(r: SessionResults, section: number): string[] {
  const o = r.options
  const name = {
    session: 'hono-mpp, `/session` paid by a session voucher',
    charge: 'hono-mpp, `/charge` paid by a Tempo charge (pull)',
    floor: 'floor: bare Hono route verifying the voucher signature only',
    bare: 'bare Hono JSON route',
  }
  return [
    `## ${section}. Session: voucher-paid requests`,
    '',
    `A fresh local chain with our escrow deployed. One hono-mpp server process serves \`/session\` (session intent) and`,
    `\`/charge\` (charge intent) at the same price (${r.price} pathUSD); ${r.channels} channels are opened through it by the reference`,
    "client (mppx's session client), then every voucher is signed before the timed windows (the client's signing is not",
    'measured). autocannon drives each route with',
    `${o.connections} connections: ${o.warm} unmeasured then ${o.requests} measured requests (charge: ${o.chargeWarm} then ${o.chargeRequests}, each an`,
    'on-chain payment whose credential is signed just before the round, served by the same server code on a fresh chain each',
    'round: anvil answers a broadcast more slowly with every block it holds), in',
    `${o.rounds} rounds in alternating order. A channel is lent to one connection at a time, so its vouchers arrive in order, each one`,
    'price above the last. The floor is a bare Hono route in its own process that decodes the credential and verifies its voucher',
    "signature (EIP-712 digest, checked against the channel signer's kept public key) and nothing else; bare Hono answers the",
    'same requests without looking at them. req/s is requests over the time to the last answer. Ratios are medians of per-round ratios (range in brackets); server CPU per request is',
    "the server process's CPU time over the measured window divided by the requests it answered.",
    '',
    `RPC calls: the server process counts every fetch it sends; while it answered ${r.rpc.vouchers.toLocaleString('en-US')} voucher-paid requests it sent ${r.rpc.fetches} (its session method counted ${r.rpc.sessionCalls} JSON-RPC calls).`,
    '',
    '| server | req/s | latency p50 | latency p99 | server CPU per request |',
    '|---|---:|---:|---:|---:|',
    ...kinds.map((k) => {
      const t = r.summary[k]
      return `| ${name[k]} | ${Math.round(t.rps).toLocaleString('en-US')} | ${t.p50} ms | ${t.p99} ms | ${t.cpuPerRequest.toFixed(1)} µs |`
    }),
    '',
  ]
}
