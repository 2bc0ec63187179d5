/**
 * The paywall page (hono-mpp/paywall) in a real browser: the system Chromium, driven by
 * playwright-core, against the example app on the local chain. The wallet is a test-only EIP-1193
 * provider injected into the page that forwards to a local account in Node. With
 * PAYWALL_SCREENSHOTS=1 each state is saved under docs/paywall/ for the README.
 */
import { existsSync, mkdirSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { serve } from '@hono/node-server'
import { type Browser, chromium, type Page } from 'playwright-core'
import { createClient, type Hex, http } from 'viem'
import { generatePrivateKey, type LocalAccount, privateKeyToAccount } from 'viem/accounts'
import { sendTransaction } from 'viem/actions'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { createApp } from '../../examples/node/app.js'
import { balanceOf, fundedAccount, localChain, localChainId } from '../../scripts/local-chain.js'
import { rawRpc } from '../tempo/helpers.js'

const rpcUrl = inject('rpcUrl')
const chromiumPath = '/usr/bin/chromium'
const haveChromium = existsSync(chromiumPath)
const shots = process.env.PAYWALL_SCREENSHOTS === '1'
const shotsDir = fileURLToPath(new URL('../../docs/paywall/', import.meta.url))
if (!haveChromium && !process.env.CI) console.warn(`paywall browser tests skipped: ${chromiumPath} is absent (install the Debian package chromium)`)

type Wallet = { account: LocalAccount; chainId?: number; reject?: boolean; sent: Hex[] }

/** Serves an example app on 127.0.0.1 and returns its origin. */
async function server(expires?: number): Promise<{ origin: string; recipient: Hex; close: () => void }> {
  const recipient = privateKeyToAccount(generatePrivateKey()).address
  const app = createApp({ rpcUrl, chainId: localChainId, recipient, secret: 'paywall-browser-test-secret-0123456789abcdef', ...(expires && { expires }) })
  let running: ReturnType<typeof serve> | undefined
  const { port } = await new Promise<AddressInfo>((resolve) => {
    running = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info) => resolve(info))
  })
  return { origin: `http://127.0.0.1:${port}`, recipient, close: () => running?.close() }
}

/** A page with the test wallet (or none) injected. */
async function open(browser: Browser, wallet: Wallet | undefined): Promise<Page> {
  const page = await browser.newPage()
  if (wallet) {
    let chainId = wallet.chainId ?? localChainId
    const client = createClient({ chain: localChain(rpcUrl), transport: http(rpcUrl), account: wallet.account })
    await page.exposeFunction('__testWallet', async (method: string, params: unknown[]) => {
      try {
        if (method === 'eth_requestAccounts' || method === 'eth_accounts') return { result: [wallet.account.address] }
        if (method === 'eth_chainId') return { result: `0x${chainId.toString(16)}` }
        if (method === 'wallet_switchEthereumChain') {
          chainId = Number((params[0] as { chainId: string }).chainId)
          return { result: null }
        }
        if (method === 'eth_sendTransaction') {
          if (wallet.reject) return { error: { code: 4001, message: 'User rejected the request.' } }
          const { to, data } = params[0] as { to: Hex; data: Hex }
          const hash = await sendTransaction(client, { account: wallet.account, calls: [{ to, data }] } as never)
          wallet.sent.push(hash)
          return { result: hash }
        }
        return { result: await rawRpc(rpcUrl, method, params) }
      } catch (error) {
        return { error: { code: (error as { code?: number }).code ?? -32603, message: (error as Error).message.split('\n')[0] } }
      }
    })
    await page.addInitScript(() => {
      const call = (
        window as unknown as { __testWallet: (m: string, p: unknown[]) => Promise<{ result?: unknown; error?: { code: number; message: string } }> }
      ).__testWallet
      ;(window as unknown as { ethereum: unknown }).ethereum = {
        async request({ method, params }: { method: string; params?: unknown[] }) {
          const answer = await call(method, params ?? [])
          if (answer.error) throw Object.assign(new Error(answer.error.message), { code: answer.error.code })
          return answer.result
        },
      }
    })
  }
  return page
}

const state = (page: Page) => page.evaluate(() => document.body.dataset.state)
async function waitForState(page: Page, expected: string): Promise<void> {
  await page.waitForFunction((want) => document.body.dataset.state === want, expected, { timeout: 30_000 }).catch(() => undefined)
  expect(`${await state(page)}: ${await page.textContent('#status')}`).toMatch(new RegExp(`^${expected}: `))
}
async function shot(page: Page, name: string): Promise<void> {
  if (!shots) return
  mkdirSync(shotsDir, { recursive: true })
  await page.screenshot({ path: `${shotsDir}${name}.png` })
}

describe.skipIf(!haveChromium && !process.env.CI)('paywall page in Chromium on the local chain', () => {
  let browser: Browser
  let app: Awaited<ReturnType<typeof server>>

  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    })
    app = await server()
  })
  afterAll(async () => {
    await browser?.close()
    app?.close()
  })

  test('happy path: shows the price, pays 0.01 by one push transfer and shows the article without a reload', async () => {
    const wallet: Wallet = { account: await fundedAccount(rpcUrl, { amount: '5', funder: 5 }), sent: [] }
    const page = await open(browser, wallet)
    const response = await page.goto(`${app.origin}/article`)
    expect(response?.status()).toBe(402)
    await waitForState(page, 'ready')
    expect(await page.textContent('#price')).toBe('Price: 0.01 USD')
    expect(await page.textContent('h1')).toBe('The paid article')
    await shot(page, 'ready')
    await page.evaluate(() => {
      ;(window as unknown as { marker: number }).marker = 1
    })
    await page.click('#action')
    await page.waitForSelector('#article', { timeout: 30_000 })
    expect(await page.textContent('#article p')).toContain('This article cost 0.01')
    // The same document: no navigation happened.
    expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(1)
    await shot(page, 'paid')
    expect(wallet.sent).toHaveLength(1)
    expect(await balanceOf(rpcUrl, app.recipient)).toBe(10_000n)
  })

  test('a JSON route: the paid JSON is shown formatted', async () => {
    const wallet: Wallet = { account: await fundedAccount(rpcUrl, { amount: '5', funder: 5 }), sent: [] }
    const page = await open(browser, wallet)
    await page.goto(`${app.origin}/paid`)
    await waitForState(page, 'ready')
    await page.click('#action')
    await waitForState(page, 'paid')
    const shown = JSON.parse((await page.textContent('#content')) ?? '') as { message: string; payer: string }
    expect(shown.message).toBe('paid content')
    expect(shown.payer.toLowerCase()).toBe(wallet.account.address.toLowerCase())
    expect(await page.textContent('#content')).toContain('\n  "message"')
    await shot(page, 'paid-json')
  })

  test('no wallet: says so and offers no payment', async () => {
    const page = await open(browser, undefined)
    await page.goto(`${app.origin}/article`)
    await waitForState(page, 'no-wallet')
    expect(await page.isVisible('#action')).toBe(false)
    await shot(page, 'no-wallet')
  })

  test('rejected signature: nothing paid, the page offers to try again', async () => {
    const wallet: Wallet = { account: await fundedAccount(rpcUrl, { amount: '5', funder: 5 }), reject: true, sent: [] }
    const page = await open(browser, wallet)
    const before = await balanceOf(rpcUrl, app.recipient)
    await page.goto(`${app.origin}/article`)
    await waitForState(page, 'ready')
    await page.click('#action')
    await waitForState(page, 'rejected')
    expect(await page.textContent('#action')).toBe('Try again')
    expect(await balanceOf(rpcUrl, app.recipient)).toBe(before)
    await shot(page, 'rejected')
  })

  test('wrong chain: names both chains, switches on request, then pays', async () => {
    const wallet: Wallet = { account: await fundedAccount(rpcUrl, { amount: '5', funder: 5 }), chainId: 1, sent: [] }
    const page = await open(browser, wallet)
    await page.goto(`${app.origin}/article`)
    await waitForState(page, 'ready')
    await page.click('#action')
    await waitForState(page, 'wrong-chain')
    expect(await page.textContent('#status')).toContain(`chain 1; this payment is on chain ${localChainId}`)
    expect(wallet.sent).toHaveLength(0)
    await shot(page, 'wrong-chain')
    await page.click('#action')
    await page.waitForSelector('#article', { timeout: 30_000 })
    expect(wallet.sent).toHaveLength(1)
  })

  test('insufficient funds: an unfunded account is told so before anything is sent', async () => {
    const wallet: Wallet = { account: privateKeyToAccount(generatePrivateKey()), sent: [] }
    const page = await open(browser, wallet)
    await page.goto(`${app.origin}/article`)
    await waitForState(page, 'ready')
    await page.click('#action')
    await waitForState(page, 'insufficient')
    expect(await page.textContent('#status')).toContain('holds 0 USD; the price is 0.01 USD')
    expect(wallet.sent).toHaveLength(0)
    await shot(page, 'insufficient')
  })

  test('expired challenge: the page offers a fresh one and pays nothing', async () => {
    const short = await server(5)
    try {
      const wallet: Wallet = { account: await fundedAccount(rpcUrl, { amount: '5', funder: 5 }), sent: [] }
      const page = await open(browser, wallet)
      await page.goto(`${short.origin}/article`)
      await waitForState(page, 'expired')
      expect(await page.textContent('#action')).toBe('Get a fresh offer')
      expect(wallet.sent).toHaveLength(0)
      await shot(page, 'expired')
    } finally {
      short.close()
    }
  })
})
