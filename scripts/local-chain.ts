/**
 * A local Tempo chain for tests, the demo and the benchmarks: the `anvil` binary that
 * `@foundry-rs/anvil` ships, in Tempo mode, on a free loopback port.
 *
 * Two quirks of the local chain are handled here:
 * - genesis has timestamp 1 and blocks are mined only on demand, while viem gives Tempo
 *   transactions a `validAfter` up to a minute in the past: a stale `latest` block makes
 *   simulations fail with "transaction not valid yet". We mine a block at start and every few
 *   seconds so `latest` stays close to the wall clock.
 * - `tempo_fundAddress` is absent: accounts are funded by transfer from the dev accounts.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { dirname, join } from 'node:path'
import { type Address, type Chain, createClient, custom, type Hex, http, parseUnits } from 'viem'
import { generatePrivateKey, type LocalAccount, mnemonicToAccount, privateKeyToAccount } from 'viem/accounts'
import { sendTransactionSync } from 'viem/actions'
import { Actions } from 'viem/tempo'
import { tempoModerato } from 'viem/tempo/chains'

export const mnemonic = 'test test test test test test test test test test test junk'
export const pathUsd: Address = '0x20c0000000000000000000000000000000000000'
export const alphaUsd: Address = '0x20c0000000000000000000000000000000000001'
export const localChainId = 31337

export function devAccount(index: number): LocalAccount {
  return mnemonicToAccount(mnemonic, { addressIndex: index })
}

/** viem chain for the local node: Tempo's formatters and serializers, the local id and URL. */
export function localChain(rpcUrl: string): Chain {
  return {
    ...tempoModerato,
    id: localChainId,
    name: 'Tempo (local anvil)',
    rpcUrls: { default: { http: [rpcUrl] } },
  } as Chain
}

export function anvilBinary(): string {
  const require = createRequire(import.meta.url)
  const pkg = require.resolve(`@foundry-rs/anvil-${process.platform}-${process.arch === 'x64' ? 'amd64' : process.arch}/package.json`)
  return join(dirname(pkg), 'bin', 'anvil')
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

async function rpc(url: string, method: string, params: unknown[] = []): Promise<unknown> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  })
  const body = (await response.json()) as { result?: unknown; error?: { message: string } }
  if (body.error) throw new Error(`${method}: ${body.error.message}`)
  return body.result
}

export type LocalChain = {
  rpcUrl: string
  port: number
  stop(): Promise<void>
}

/** Starts anvil in Tempo mode and waits until it answers. */
export async function startLocalChain(options: { port?: number; hardfork?: string } = {}): Promise<LocalChain> {
  const port = options.port ?? (await freePort())
  const rpcUrl = `http://127.0.0.1:${port}`
  const child: ChildProcess = spawn(
    anvilBinary(),
    ['--network', 'tempo', '--hardfork', options.hardfork ?? 't4', '--silent', '--host', '127.0.0.1', '--port', String(port)],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let stderr = ''
  child.stderr?.on('data', (chunk) => (stderr += String(chunk)))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`anvil exited (${child.exitCode}): ${stderr.slice(0, 500)}`)
    try {
      await rpc(rpcUrl, 'eth_chainId')
      break
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL')
        throw new Error(`anvil did not answer on ${rpcUrl} within 30 s: ${stderr.slice(0, 500)}`)
      }
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  await rpc(rpcUrl, 'evm_mine')
  const keepFresh = setInterval(() => {
    rpc(rpcUrl, 'evm_mine').catch(() => {})
  }, 5_000)
  keepFresh.unref()
  return {
    rpcUrl,
    port,
    async stop() {
      clearInterval(keepFresh)
      if (child.exitCode === null) {
        child.kill('SIGTERM')
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3_000))])
        if (child.exitCode === null) child.kill('SIGKILL')
      }
    },
  }
}

/**
 * A fresh account holding `amount` pathUSD (and AlphaUSD for fees), funded by transfers from a
 * dev account. Dev accounts 0–9 hold plenty at genesis. `funder` picks which one sends, so
 * parallel test files do not race on one sender's nonce.
 */
export async function fundedAccount(
  rpcUrl: string,
  options: { amount?: string; funder?: number; tokens?: Address[] } = {},
): Promise<LocalAccount & { privateKey: Hex }> {
  const privateKey = generatePrivateKey()
  const account = Object.assign(privateKeyToAccount(privateKey), { privateKey })
  await fund(rpcUrl, account.address, options)
  return account
}

export async function fund(rpcUrl: string, to: Address, options: { amount?: string; funder?: number; tokens?: Address[] } = {}): Promise<void> {
  const funder = devAccount(options.funder ?? 9)
  const client = createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl), account: funder })
  const calls = (options.tokens ?? [pathUsd, alphaUsd]).map((token) =>
    Actions.token.transfer.call({ amount: parseUnits(options.amount ?? '100', 6), to, token }),
  )
  const receipt = await sendTransactionSync(client, { account: funder, calls, nonceKey: 'expiring', nonce: 0 } as never)
  if (receipt.status !== 'success') throw new Error(`funding ${to} reverted`)
}

export async function balanceOf(rpcUrl: string, account: Address, token: Address = pathUsd): Promise<bigint> {
  const client = createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl) })
  const { amount } = await Actions.token.getBalance(client, { account, token })
  return amount
}

/**
 * A viem client for a session payer on the local chain (e.g. for mppx's legacy session client:
 * `tempo.sessionLegacy({ client: sessionPayerClient(rpcUrl), ... })`). The local node
 * under-estimates a channel `open` (new storage slots cost more on Tempo than its estimate says:
 * 0.77M estimated, 1.33M used) and mppx adds only 5 000 gas, so this client's transport triples
 * the gas the node fills in (`eth_fillTransaction`, `eth_estimateGas`). Client configuration only:
 * the server checks what landed.
 */
export function sessionPayerClient(rpcUrl: string) {
  const chain = localChain(rpcUrl)
  const node = http(rpcUrl)({ chain, retryCount: 0 })
  const triple = (hex: string) => `0x${(BigInt(hex) * 3n).toString(16)}`
  return createClient({
    chain,
    transport: custom({
      async request({ method, params }: { method: string; params?: unknown }) {
        const result = await node.request({ method, params } as never)
        if (method === 'eth_estimateGas') return triple(result as string)
        if (method === 'eth_fillTransaction') {
          const filled = result as { tx: { gas: string } }
          return { ...filled, tx: { ...filled.tx, gas: triple(filled.tx.gas) } }
        }
        return result
      },
    }),
  })
}

/**
 * Deploys our session escrow (contracts/TempoSessionEscrow.sol) from `account`, for a local chain
 * that has none: the example server does this when MPP_ESCROW is left out on chain 31337. The
 * account pays the deployment's fee (about 18M gas) in AlphaUSD.
 */
export async function deploySessionEscrow(rpcUrl: string, account: LocalAccount): Promise<Address> {
  const { escrowBytecode } = await import('../src/tempo/session/escrow-artifact.js')
  const client = createClient({ account, chain: localChain(rpcUrl), transport: http(rpcUrl) })
  const estimate = BigInt(await client.request({ method: 'eth_estimateGas', params: [{ from: account.address, data: escrowBytecode }] } as never))
  const receipt = await sendTransactionSync(client, { account, data: escrowBytecode, gas: estimate + 1_000_000n, feeToken: alphaUsd } as never)
  if (receipt.status !== 'success' || !receipt.contractAddress) throw new Error(`the escrow deployment failed (transaction ${receipt.transactionHash})`)
  return receipt.contractAddress
}
