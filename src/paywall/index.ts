/**
 * A paywall page for people: `mpp({ ..., unpaidResponse: paywall() })` answers a browser's unpaid
 * request (`Accept` naming `text/html`) with a small HTML page instead of the problem JSON. The
 * page shows what is sold and the price, connects an injected wallet (EIP-1193
 * `window.ethereum`), pays by push (a TIP-20 `transferWithMemo` carrying the challenge's memo,
 * sent with `eth_sendTransaction`), retries with the credential and shows the paid answer without
 * a reload. Agents and API clients (no `text/html` in `Accept`) keep getting the problem JSON.
 *
 * Everything the page needs is computed here (the memo and the calldata) and embedded as JSON
 * escaped for a script element; the page itself holds no request-controlled markup.
 */
import type { Context } from 'hono'
import { type Challenge, parseChallenges } from '../protocol/challenge.js'
import { decodeJson } from '../protocol/encoding.js'
import { challengeMemo } from '../tempo/memo.js'
import { script, style } from './page.js'

export type PaywallOptions = {
  /** The page's heading (default: the route's description, else "Payment required"). */
  title?: string
  /** How the currency is named on the page (default "USD"). */
  symbol?: string
  /** The currency's decimals (default 6, every TIP-20 USD token). */
  decimals?: number
}

type UnpaidInfo = { detail: string; challengeId: string; challenges: readonly string[] }

/** What the page pays: one push-payable Tempo charge challenge. */
type Offer = {
  challenge: Challenge
  amount: string
  currency: string
  recipient: string
  chainId: number
  description?: string
  data: string
  unsupported?: string
}

const word = (hex: string) => hex.replace(/^0x/, '').toLowerCase().padStart(64, '0')
/** `transferWithMemo(address,uint256,bytes32)` */
const transferWithMemo = '0x95777d59'

function offerOf(challenge: Challenge): Offer | undefined {
  if (challenge.method !== 'tempo' || challenge.intent !== 'charge') return undefined
  let request: Record<string, unknown>
  try {
    request = decodeJson(challenge.request) as Record<string, unknown>
  } catch {
    return undefined
  }
  const details = (request.methodDetails ?? {}) as Record<string, unknown>
  const amount = String(request.amount)
  const recipient = String(request.recipient ?? '')
  const currency = String(request.currency)
  if (!/^\d+$/.test(amount) || !/^0x[0-9a-fA-F]{40}$/.test(recipient) || !/^0x[0-9a-fA-F]{40}$/.test(currency)) return undefined
  const modes = Array.isArray(details.supportedModes) ? details.supportedModes : ['pull', 'push']
  const unsupported = !modes.includes('push')
    ? 'this route takes only signed (pull) payments, which this page cannot make'
    : Array.isArray(details.splits) && details.splits.length > 0
      ? 'this route splits its payment between several recipients, which this page cannot pay'
      : details.memo !== undefined
        ? 'this route asks for its own memo, which this page cannot pay'
        : undefined
  const memo = challengeMemo(challenge)
  return {
    challenge,
    amount,
    currency,
    recipient,
    chainId: Number(details.chainId),
    ...(typeof request.description === 'string' && { description: request.description }),
    data: `${transferWithMemo}${word(recipient)}${word(BigInt(amount).toString(16))}${word(memo)}`,
    ...(unsupported && { unsupported }),
  }
}

/** JSON safe inside a `<script>` element: no `<`, `>`, `&`, U+2028 or U+2029 left as such. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (char) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[char]!)

/** Whether the request is a browser's: `Accept` names `text/html` (with a non-zero q). */
export function wantsHtml(accept: string | undefined): boolean {
  if (!accept) return false
  return accept.split(',').some((part) => {
    const [type, ...params] = part.trim().toLowerCase().split(';')
    if (type?.trim() !== 'text/html') return false
    const q = params.map((param) => param.trim()).find((param) => param.startsWith('q='))
    return q === undefined || Number(q.slice(2)) > 0
  })
}

/**
 * The `unpaidResponse` of `mpp()` that answers browsers with the paywall page.
 *
 * ```ts
 * import { paywall } from 'hono-mpp/paywall'
 * const pay = mpp({ secret, methods: [tempo(config)], unpaidResponse: paywall() })
 * ```
 */
export function paywall(options: PaywallOptions = {}) {
  const decimals = options.decimals ?? 6
  if (!Number.isInteger(decimals) || decimals < 0 || decimals > 36)
    throw new Error(`paywall: \`decimals\` must be an integer 0..36, got ${String(options.decimals)}.`)
  const symbol = options.symbol ?? 'USD'
  return (c: Context, info: UnpaidInfo): { body: string; contentType: string } | undefined => {
    if (!wantsHtml(c.req.header('accept'))) return undefined
    const offers = info.challenges.flatMap((header) => parseChallenges(header)).flatMap((challenge) => offerOf(challenge) ?? [])
    const offer = offers.find((candidate) => !candidate.unsupported) ?? offers[0]
    const title = options.title ?? offer?.description ?? 'Payment required'
    const data = { offer, decimals, symbol, detail: info.detail }
    const body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>${escapeHtml(title)}</title><style>${style}</style></head><body><main id="main"><h1>${escapeHtml(title)}</h1><p id="price"></p><p id="status" role="status">Loading…</p><button id="action" hidden></button><noscript>This page needs JavaScript and a wallet to pay.</noscript></main><script id="mpp-data" type="application/json">${scriptJson(data)}</script><script>${script}</script></body></html>`
    return { body, contentType: 'text/html; charset=utf-8' }
  }
}
