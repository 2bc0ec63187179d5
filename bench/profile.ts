/**
 * `node --import tsx bench/profile.ts [402|paid] [seconds]`: runs our server under
 * `node --cpu-prof`, drives it (autocannon for the 402 path; sequential mppx-client payments on
 * the local chain for the paid path), and prints the functions with the most self time and the
 * hottest source files. The .cpuprofile stays in the printed folder for Chrome DevTools.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { Mppx as MppxClient, tempo as tempoClient } from 'mppx/client'
import { createClient, http } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { fundedAccount, localChain, startLocalChain } from '../scripts/local-chain.js'
import { route } from './config.js'
import { startServer } from './processes.js'

type Node = { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount: number; children?: number[] }
type Profile = { nodes: Node[]; samples: number[]; timeDeltas: number[] }

const which = process.argv[2] === 'paid' ? 'paid' : '402'
const seconds = Number(process.argv[3] ?? 8)
const kind = (process.argv[4] ?? 'ours') as 'ours' | 'mppx' | 'bare'
const dir = mkdtempSync(join(tmpdir(), 'hono-mpp-profile-'))
const chain = await startLocalChain()
try {
  const recipient = privateKeyToAccount(generatePrivateKey()).address
  const server = await startServer({ kind, rpcUrl: chain.rpcUrl, recipient, method: 'tempo' }, { execArgv: ['--cpu-prof', '--cpu-prof-dir', dir] })
  if (which === '402') {
    const result = await autocannon({ url: server.url + route, connections: 16, duration: seconds })
    console.log(`${result.requests.total} requests`)
  } else {
    const account = await fundedAccount(chain.rpcUrl, { funder: 6 })
    const client = createClient({ chain: localChain(chain.rpcUrl), transport: http(chain.rpcUrl) })
    const payer = MppxClient.create({ polyfill: false, methods: [tempoClient.charge({ account, mode: 'pull', getClient: () => client })] })
    const deadline = Date.now() + seconds * 1000
    let paid = 0
    while (Date.now() < deadline) {
      const unpaid = await fetch(server.url + route)
      const authorization = await payer.createCredential(unpaid)
      const response = await fetch(server.url + route, { headers: { authorization } })
      await response.text()
      if (response.status !== 200) throw new Error(`paid request answered ${response.status}`)
      paid++
    }
    console.log(`${paid} paid requests`)
  }
  await server.stop()
} finally {
  await chain.stop()
}

const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'))
if (!file) throw new Error(`no profile written to ${dir}`)
const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile
const self = new Map<number, number>()
for (const [i, id] of profile.samples.entries()) self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
const byFunction = new Map<string, number>()
const byFile = new Map<string, number>()
let total = 0
for (const node of profile.nodes) {
  const time = self.get(node.id) ?? 0
  total += time
  const url = node.callFrame.url.replace(/^file:\/\//, '').replace(`${process.cwd()}/`, '')
  const short = url.replace(/^node_modules\//, '').replace(/\/_?(esm|dist|_esm|_cjs)\//, '/')
  const key = `${node.callFrame.functionName || '(anonymous)'}  ${short}:${node.callFrame.lineNumber + 1}`
  byFunction.set(key, (byFunction.get(key) ?? 0) + time)
  const area = url.startsWith('node_modules/')
    ? url
        .split('/')
        .slice(1, url.includes('/@') || url.startsWith('node_modules/@') ? 3 : 2)
        .join('/')
    : url || node.callFrame.functionName
  byFile.set(area, (byFile.get(area) ?? 0) + time)
}
const top = (map: Map<string, number>, n: number) =>
  [...map.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, v]) => `${((v / total) * 100).toFixed(1).padStart(5)}%  ${k}`)
console.log(`profile: ${join(dir, file)}\n\nself time by function:\n${top(byFunction, 40).join('\n')}\n\nby file / package:\n${top(byFile, 25).join('\n')}`)
