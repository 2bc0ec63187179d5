/**
 * `npm run bench`: the benchmarks of issue 7, measured side by side in one run on one machine.
 * Absolute numbers on a shared machine are noise; the ratios are the result.
 *
 *   1. 402 path: req/s and latency of bare Hono, our 402 and mppx/hono's 402 (autocannon)
 *   2. JSON-RPC calls per paid request, per mode (pull, push, sponsored pull), ours and mppx
 *   3. Paid request wall time against a bare eth_sendRawTransactionSync
 *   4. Worker bundle size (minified + gzip), ours against mppx/hono
 *   5. Memory store footprint holding one million claims
 *
 * Flags: `--quick` (short durations, for trying the harness), `--no-write` (leave docs/ alone),
 * `--only=1,4` (sections). Exits 0 when a target is missed (the table says so), non-zero only
 * when the bench itself fails.
 */
import { execFile } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { startLocalChain } from '../scripts/local-chain.js'
import { compiled } from './build.js'
import { bundleSize, type BundleSize } from './bundle.js'
import { rpcCounts, wallTime, type Impl, type RpcCount, type WallTime } from './paid.js'
import { chart, markdownTable, printTable, type Machine, type Row } from './report.js'
import { throughput, type Throughput } from './throughput.js'

const args = process.argv.slice(2)
const quick = args.includes('--quick')
const write = !args.includes('--no-write')
const only = args.find((a) => a.startsWith('--only='))?.slice(7).split(',').map(Number)
const runs = (section: number) => !only || only.includes(section)
const funder = 6

const log = (line: string) => process.stdout.write(line + '\n')
const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
const times = (n: number) => `${n >= 10 ? fmt(n, 1) : fmt(n, 2)}×`
const kB = (bytes: number) => `${fmt(bytes / 1024, 1)} kB`
const MB = (bytes: number) => `${fmt(bytes / 1024 / 1024, 1)} MB`

function machine(): Omit<Machine, 'loadAfter'> {
  const model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? 'unknown'
  return {
    cpus: cpus().length,
    cpu: model.trim(),
    node: process.version,
    date: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    loadBefore: loadavg().map((l) => l.toFixed(2)).join(' '),
  }
}

async function memory(): Promise<{ claims: number; heapBytes: number; rssBytes: number; fillMs: number }> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', await compiled('memory')], {
    env: process.env,
    maxBuffer: 1 << 20,
  })
  return JSON.parse(stdout.trim().split('\n').pop()!)
}

async function main() {
  const host = machine()
  log(`hono-mpp benchmarks — ${host.date}, ${host.cpus} × ${host.cpu}, Node ${host.node}, load ${host.loadBefore}`)
  if (Number(host.loadBefore.split(' ')[0]) > 0.5)
    log(`note: the 1-minute load is ${host.loadBefore.split(' ')[0]}; absolute numbers suffer first, ratios less`)
  const ours: Impl[] = ['ours', 'mppx']

  const chain = await startLocalChain()
  let tput: Record<'bare' | 'static402' | 'ours' | 'mppx', Throughput> | undefined
  let counts: RpcCount[] = []
  const walls: WallTime[] = []
  const bundles: Partial<Record<'ours' | 'mppx', BundleSize>> = {}
  let mem: Awaited<ReturnType<typeof memory>> | undefined
  try {
    if (runs(1)) {
      const options = quick
        ? { connections: 16, warmSeconds: 1, seconds: 3, rounds: 1 }
        : { connections: 16, warmSeconds: 4, seconds: 10, rounds: 2 }
      log(`\n1. 402 path: ${options.connections} connections, ${options.warmSeconds} s warm + ${options.seconds} s measured, best of ${options.rounds} alternating rounds`)
      tput = await throughput(
        { rpcUrl: chain.rpcUrl, recipient: privateKeyToAccount(generatePrivateKey()).address, method: 'tempo' },
        options,
        log,
      )
    }
    if (runs(2)) {
      log('\n2. JSON-RPC calls per paid request (counted by a proxy in front of the local chain)')
      counts = await rpcCounts(chain.rpcUrl, ours, { samples: quick ? 1 : 3, funder }, log)
    }
    if (runs(3)) {
      log('\n3. Paid request wall time (pull) against a bare eth_sendRawTransactionSync of the same kind of transaction')
      for (const impl of ours) walls.push(await wallTime(chain.rpcUrl, impl, { samples: quick ? 4 : 15, funder }, log))
    }
  } finally {
    await chain.stop()
  }
  if (runs(4)) {
    log('\n4. Worker bundle (esbuild, minified, gzip -9)')
    for (const impl of ours) {
      bundles[impl] = await bundleSize(impl)
      const b = bundles[impl]!
      log(`  ${impl.padEnd(4)} ${kB(b.minified)} minified, ${kB(b.gzip)} gzip${b.external.length ? `; left external: ${b.external.join(', ')}` : ''}`)
    }
    if (bundles.ours && bundles.ours.nodeImports.length)
      throw new Error(`bench: our Worker bundle imports ${bundles.ours.nodeImports.join(', ')}; src/ must not use node: modules`)
  }
  if (runs(5)) {
    log('\n5. Memory store holding one million claims')
    mem = await memory()
    log(`  ${fmt(mem.claims)} claims: heap +${MB(mem.heapBytes)}, RSS +${MB(mem.rssBytes)}, filled in ${fmt(mem.fillMs)} ms`)
  }

  // The table.
  const rows: Row[] = []
  if (tput) {
    const vsBare = tput.ours.rps / tput.bare.rps
    const vsMppx = tput.ours.rps / tput.mppx.rps
    rows.push(
      {
        name: `402 req/s vs bare Hono`,
        label: '402 throughput vs bare Hono',
        value: `${fmt(tput.ours.rps)} req/s`,
        baseline: `${fmt(tput.bare.rps)} req/s`,
        ratio: times(vsBare),
        target: '≥ 0.8×',
        pass: vsBare >= 0.8,
        score: vsBare / 0.8,
        referenceScore: tput.mppx.rps / tput.bare.rps / 0.8,
      },
      {
        name: `402 req/s vs mppx/hono`,
        label: '402 throughput vs mppx/hono',
        value: `${fmt(tput.ours.rps)} req/s`,
        baseline: `${fmt(tput.mppx.rps)} req/s`,
        ratio: times(vsMppx),
        target: '≥ 8×',
        pass: vsMppx >= 8,
        score: vsMppx / 8,
      },
    )
  }
  const limits = { pull: 1, push: 1, 'sponsored pull': 2 } as const
  for (const mode of ['pull', 'push', 'sponsored pull'] as const) {
    const mine = counts.find((c) => c.impl === 'ours' && c.mode === mode)
    const ref = counts.find((c) => c.impl === 'mppx' && c.mode === mode)
    if (!mine && !ref) continue
    const limit = limits[mode]
    rows.push({
      name: `RPC calls per paid request, ${mode}`,
      label: `RPC calls per paid request, ${mode}`,
      value: mine ? `${mine.calls}` : '—',
      baseline: ref ? `${ref.calls}` : '—',
      ratio: mine && ref ? times(mine.calls / ref.calls) : '—',
      target: `≤ ${limit}`,
      pass: mine ? mine.calls <= limit : undefined,
      ...(mine && { score: limit / Math.max(mine.calls, limit / 16) }),
      ...(ref && { referenceScore: limit / Math.max(ref.calls, limit / 16) }),
    })
  }
  const wallOurs = walls.find((w) => w.impl === 'ours')
  const wallRef = walls.find((w) => w.impl === 'mppx')
  if (wallOurs || wallRef) {
    const ratio = wallOurs ? wallOurs.paidMs / wallOurs.bareMs : undefined
    rows.push({
      name: 'Paid request wall time (pull)',
      label: 'Paid request vs bare broadcast',
      value: wallOurs ? `${fmt(wallOurs.paidMs, 1)} ms` : '—',
      baseline: wallOurs ? `${fmt(wallOurs.bareMs, 1)} ms` : '—',
      ratio: ratio !== undefined ? times(ratio) : '—',
      target: '≤ 1.15×',
      pass: ratio !== undefined ? ratio <= 1.15 : undefined,
      ...(ratio !== undefined && { score: 1.15 / ratio }),
      ...(wallRef && { referenceScore: 1.15 / (wallRef.paidMs / wallRef.bareMs) }),
    })
  }
  if (bundles.mppx) {
    const ratio = bundles.ours ? bundles.ours.gzip / bundles.mppx.gzip : undefined
    rows.push({
      name: 'Worker bundle, minified + gzip',
      label: 'Worker bundle vs mppx/hono',
      value: bundles.ours ? kB(bundles.ours.gzip) : '—',
      baseline: kB(bundles.mppx.gzip),
      ratio: ratio !== undefined ? times(ratio) : '—',
      target: '≤ 0.25×',
      pass: ratio !== undefined ? ratio <= 0.25 : undefined,
      ...(ratio !== undefined && { score: 0.25 / ratio }),
    })
  }
  if (mem)
    rows.push({
      name: 'Memory store, 1 000 000 claims (heap)',
      label: 'Memory store, 1M claims',
      value: MB(mem.heapBytes),
      baseline: '—',
      ratio: '—',
      target: '< 256 MB',
      pass: mem.heapBytes < 256 * 1024 * 1024,
      score: (256 * 1024 * 1024) / mem.heapBytes,
    })

  const done: Machine = { ...host, loadAfter: loadavg().map((l) => l.toFixed(2)).join(' ') }
  log('\n' + printTable(rows))
  const missed = rows.filter((r) => r.pass === false)
  log(missed.length ? `\n${missed.length} target(s) missed: ${missed.map((r) => r.name).join('; ')}` : '\nall measured targets met')

  if (write && !only && !quick) {
    const docs = fileURLToPath(new URL('../docs/', import.meta.url))
    writeFileSync(docs + 'benchmarks.svg', chart(rows, `hono-mpp benchmarks, ${done.date.slice(0, 10)}, ${done.cpus} × ${done.cpu}, Node ${done.node}`))
    writeFileSync(docs + 'benchmarks.md', markdown({ machine: done, rows, tput, counts, walls, bundles, mem }))
    log('wrote docs/benchmarks.md and docs/benchmarks.svg')
  }
}

function markdown(r: {
  machine: Machine
  rows: Row[]
  tput: Record<'bare' | 'static402' | 'ours' | 'mppx', Throughput> | undefined
  counts: RpcCount[]
  walls: WallTime[]
  bundles: Partial<Record<'ours' | 'mppx', BundleSize>>
  mem: Awaited<ReturnType<typeof memory>> | undefined
}): string {
  const m = r.machine
  const out: string[] = []
  out.push(
    '# Benchmarks',
    '',
    'Produced by `npm run bench` (bench/run.ts); this page is rewritten by every full run.',
    '',
    `Measured ${m.date} on ${m.cpus} × ${m.cpu} (\`nproc\` = ${m.cpus}), Node ${m.node}; load average ${m.loadBefore} before, ${m.loadAfter} after.`,
    '',
    '**The ratios are the result.** This is a shared 2-core machine: absolute requests per second and milliseconds',
    'move with whatever else runs, so every comparison is measured side by side in the same run, and only',
    'the ratios (ours against bare Hono, against mppx/hono 0.11.0, against a bare broadcast) are meant to travel.',
    '',
    '![Each benchmark against its target](benchmarks.svg)',
    '',
    markdownTable(r.rows),
    '',
  )
  if (r.tput) {
    out.push(
      '## 1. The 402 path',
      '',
      'Each server runs in its own process on a loopback port (`@hono/node-server`); autocannon drives it',
      'from the parent with 16 connections, 4 s of warm-up then 10 s measured, two rounds in alternating',
      'order, best round kept. Every answer is checked (200 for bare Hono, 402 with a `Payment` challenge',
      'for the two middlewares). CPU per request is the server process\'s CPU time over the measured',
      'window divided by the requests it answered. Same route, same charge (`0.01` pathUSD, Tempo, one recipient).',
      '',
      '| server | req/s | latency p50 | latency p99 | server CPU per request |',
      '|---|---:|---:|---:|---:|',
      ...(['bare', 'static402', 'ours', 'mppx'] as const).map((k) => {
        const t = r.tput![k]
        const name = {
          bare: 'bare Hono JSON route',
          static402: 'bare Hono route answering a recorded 402 of ours (same bytes, no work)',
          ours: 'hono-mpp 402',
          mppx: 'mppx/hono 402',
        }[k]
        return `| ${name} | ${Math.round(t.rps).toLocaleString('en-US')} | ${t.p50} ms | ${t.p99} ms | ${Math.round(t.cpuPerRequest)} µs |`
      }),
      '',
    )
  }
  if (r.counts.length) {
    out.push(
      '## 2. JSON-RPC calls per paid request',
      '',
      'A proxy between each server and the local chain (`scripts/rpc-proxy.ts`) counts every JSON-RPC',
      'call the server makes (each call of a batch counts). The payer is the reference client',
      '(`mppx/client`) for both servers. One payment warms up first (one-time lookups are not per',
      'request), then the median of the measured payments is shown. Unpaid requests (the 402) made',
      `${Math.max(...r.counts.map((c) => c.unpaidCalls))} calls on either server.`,
      '',
      '| server | mode | calls | by method |',
      '|---|---|---:|---|',
      ...r.counts.map(
        (c) =>
          `| ${c.impl === 'ours' ? 'hono-mpp' : 'mppx/hono'} | ${c.mode} | ${c.calls} | ${Object.entries(c.methods).map(([k, v]) => `${k} × ${v}`).join(', ')} |`,
      ),
      '',
    )
  }
  if (r.walls.length) {
    out.push(
      '## 3. Paid request wall time',
      '',
      'For each sample the reference client signs two pull credentials for two fresh challenges; one is',
      'sent to the server (timed from request to the end of the paid response), the other\'s signed',
      'transaction goes straight to the chain as `eth_sendRawTransactionSync` (timed the same way). The',
      'pairs alternate which goes first; medians shown. The local chain mines instantly, so the baseline is',
      'a few milliseconds and any fixed cost shows up large in the ratio; on Tempo itself the broadcast',
      'waits for a block (about 500 ms) and the same fixed cost is a rounding error.',
      '',
      '| server | paid request | bare broadcast | ratio | added |',
      '|---|---:|---:|---:|---:|',
      ...r.walls.map(
        (w) =>
          `| ${w.impl === 'ours' ? 'hono-mpp' : 'mppx/hono'} | ${w.paidMs.toFixed(1)} ms | ${w.bareMs.toFixed(1)} ms | ${(w.paidMs / w.bareMs).toFixed(2)}× | +${(w.paidMs - w.bareMs).toFixed(1)} ms |`,
      ),
      '',
    )
  }
  if (r.bundles.mppx) {
    out.push(
      '## 4. Worker bundle size',
      '',
      'The same minimal Worker (a Hono app, one route charging `0.01`, `export default app`) on each',
      'middleware (sources in `bench/bundle.ts`), bundled by esbuild with `--minify`, platform browser,',
      'conditions `workerd, worker, browser`, then gzip level 9.',
      '',
      '| Worker on | minified | gzip | left external |',
      '|---|---:|---:|---|',
      ...(['ours', 'mppx'] as const)
        .filter((k) => r.bundles[k])
        .map((k) => {
          const b = r.bundles[k]!
          return `| ${k === 'ours' ? 'hono-mpp' : 'mppx/hono'} | ${(b.minified / 1024).toFixed(1)} kB | ${(b.gzip / 1024).toFixed(1)} kB | ${b.external.join(', ') || 'nothing'} |`
        }),
      '',
      'mppx imports `node:util`, so its Worker needs the `nodejs_compat` flag; the optional peers it',
      'imports lazily (MCP SDK) are left out and not counted. hono-mpp imports nothing from `node:`.',
      '',
    )
  }
  if (r.mem) {
    out.push(
      '## 5. Memory store footprint',
      '',
      `\`memoryStore()\` filled with ${r.mem.claims.toLocaleString('en-US')} settled claims under keys of the form`,
      '`tempo:tx:0x<64 hex>` (the keys a paid Tempo request claims), in a child process with `--expose-gc`;',
      'growth measured after a full GC.',
      '',
      `- heap: +${(r.mem.heapBytes / 1024 / 1024).toFixed(1)} MB (${Math.round(r.mem.heapBytes / r.mem.claims)} bytes per claim, key included)`,
      `- RSS: +${(r.mem.rssBytes / 1024 / 1024).toFixed(1)} MB`,
      `- fill time: ${Math.round(r.mem.fillMs)} ms`,
      '',
    )
  }
  out.push(profiling, '')
  return out.join('\n')
}

const profiling = `## Profiling notes

See bench/PROFILE.md for how the 402 and paid paths were profiled and what was changed.`

main().catch((error) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
  process.exit(1)
})
