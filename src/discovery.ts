/**
 * hono-mpp/discovery: what an app sells, described from the same `charge()` definitions that
 * issue its 402s (draft-payment-discovery-00): `GET /openapi.json`, an OpenAPI 3.1 document with
 * `x-service-info` and each priced operation's `x-payment-info` offers and 402 response, and
 * `GET /llms.txt`, a short text an agent reads to learn what is sold and how to pay. A price
 * function is described as dynamic (`amount: null`), never with a made-up number. The 402
 * challenge stays authoritative.
 */
import { type Context, Hono } from 'hono'
import type { Pricing } from './core/pricing.js'
import { pricingOfHandler } from './transports/http.js'
import { mcpOperationsOfHandler } from './transports/mcp-registry.js'

/** One payment offer of `x-payment-info` (the draft's offer object: nothing else). */
export type DiscoveryOffer = {
  intent: string
  method: string
  /** Base units (an integer string), or null when the price depends on the request. */
  amount: string | null
  currency?: string
  description?: string
}

/** `x-service-info`: categories and documentation links. */
export type ServiceInfo = {
  categories?: string[]
  docs?: { apiReference?: string; homepage?: string; llms?: string }
}

/** A priced operation found in the app: its OpenAPI path, method, and offers. */
export type PricedOperation = {
  /** The OpenAPI path (`/articles/{id}`). */
  path: string
  /** The Hono route path (`/articles/:id`). */
  route: string
  /** Lowercase HTTP method (`get`, `post`, ...). */
  method: string
  offers: DiscoveryOffer[]
  /** The price as written, in token units (`"0.01"`), when it is static. */
  decimalAmount: string | undefined
  description: string | undefined
  settle: 'before' | 'after'
}

export type DiscoveryOptions = {
  /** OpenAPI `info`: at least `title` and `version`. */
  info: { title: string; version: string; description?: string; [field: string]: unknown }
  /** `x-service-info` (categories, docs). `docs.llms` defaults to this app's `/llms.txt` when served. */
  serviceInfo?: ServiceInfo
  /**
   * A document of your own (e.g. `() => app.getOpenAPI31Document({...})` from @hono/zod-openapi):
   * the payment info is merged into it instead of a document built from the routes.
   */
  document?: () => OpenApiDocument | Promise<OpenApiDocument>
  /** With `document`: add the priced operations it does not describe (default), or skip them. */
  missing?: MergeOptions['missing']
  /** What a dynamic price says in place of an amount (default: the route's description, or that the 402 states it). */
  dynamicDescription?: string
  /** Serve `GET /llms.txt` (default true). */
  llms?: boolean
  /** `Cache-Control` max-age of both answers, seconds (default 300, as the draft recommends). */
  maxAge?: number
}

/** An OpenAPI document, loosely: what `mergePaymentInfo` reads and extends. */
export type OpenApiDocument = {
  openapi: string
  info: { title: string; version: string; [field: string]: unknown }
  paths?: Record<string, Record<string, unknown>>
  [field: string]: unknown
}

type AppLike = Pick<Hono, 'routes'>

const httpMethods = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const
const draftIntents = new Set(['charge', 'session'])
const genericDynamic = 'The price depends on the request; the 402 challenge states it.'

/**
 * The priced operations of `app`, found by walking `app.routes` for the middleware and handlers
 * `charge()` returned. A route priced by `app.use('/api/*', pay.charge(...))` prices every
 * operation under `/api/`; the first charge a request meets is the one described.
 */
export function pricedOperations(app: AppLike, options: { dynamicDescription?: string } = {}): PricedOperation[] {
  const routes = app.routes
  const priced = routes.flatMap((route) => {
    const pricing = pricingOfHandler(route.handler) as Pricing<Context> | undefined
    return pricing ? [{ route, pricing }] : []
  })
  if (priced.length === 0) return []
  // Every operation the app declares: explicit methods, and `all` routes that are themselves
  // priced at a path no explicit method is declared on (`app.use('/summaries', charge)` before
  // `app.post('/summaries', ...)` prices that POST; it declares no GET).
  const operations = new Map<string, { method: string; route: string }>()
  const explicit = new Set(routes.filter((route) => route.method !== 'ALL').map((route) => route.path))
  for (const route of routes) {
    if (route.path.includes('*')) continue
    const methods =
      route.method === 'ALL' ? (pricingOfHandler(route.handler) && !explicit.has(route.path) ? ['get', 'post'] : []) : [route.method.toLowerCase()]
    for (const method of methods)
      if ((httpMethods as readonly string[]).includes(method)) operations.set(`${method} ${route.path}`, { method, route: route.path })
  }
  const found: PricedOperation[] = []
  for (const { method, route } of operations.values()) {
    const match = priced.find(
      ({ route: pricedRoute }) => (pricedRoute.method === 'ALL' || pricedRoute.method.toLowerCase() === method) && covers(pricedRoute.path, route),
    )
    if (!match) continue
    const { pricing } = match
    found.push({
      path: openApiPath(route),
      route,
      method,
      offers: offersOf(pricing, options.dynamicDescription),
      decimalAmount: pricing.staticOffers?.[0]?.decimalAmount,
      description: pricing.description,
      settle: pricing.timing,
    })
  }
  return found.filter((operation) => operation.offers.length > 0)
}

/** A priced MCP operation of an `mcpPayments()` endpoint the app mounts. */
export type PricedMcpOperation = {
  /** The endpoint's route as declared (`/mcp`), and its HTTP method (`POST`, or `ALL` for `app.use`). */
  endpoint: string
  httpMethod: string
  kind: 'tool' | 'resource' | 'prompt'
  /** The tool or prompt name, or the resource uri (or uri template). */
  name: string
  offers: DiscoveryOffer[]
  decimalAmount: string | undefined
  description: string | undefined
  settle: 'before' | 'after'
}

/**
 * The priced MCP tools, resources and prompts of the app: found by walking `app.routes` for the
 * middleware `mcpPayments()` returned, from the same price tables that issue their challenges.
 * The discovery draft has no OpenAPI form for them, so they are described in /llms.txt only.
 */
export function pricedMcpOperations(app: AppLike): PricedMcpOperation[] {
  return app.routes.flatMap((route) =>
    (mcpOperationsOfHandler(route.handler) ?? []).map((operation) => ({
      endpoint: route.path,
      httpMethod: route.method,
      kind: operation.kind,
      name: operation.name,
      offers: offersOf(operation.pricing as Pricing<never> as Pricing<Context>, undefined),
      decimalAmount: operation.pricing.staticOffers?.[0]?.decimalAmount,
      description: operation.pricing.description,
      settle: operation.pricing.timing,
    })),
  )
}

/** The draft's offers for a price: exact base units when static, `amount: null` for a function. */
function offersOf(pricing: Pricing<Context>, dynamicDescription: string | undefined): DiscoveryOffer[] {
  if (pricing.staticOffers)
    return pricing.staticOffers
      .filter((offer) => draftIntents.has(offer.intent))
      .map((offer) => ({
        intent: offer.intent,
        method: offer.method,
        amount: offer.request.amount,
        currency: offer.request.currency,
        ...(pricing.description !== undefined && { description: pricing.description }),
      }))
  return pricing.methods
    .filter((method) => draftIntents.has(method.intent))
    .map((method) => {
      const currency = currencyOf(method)
      return {
        intent: method.intent,
        method: method.name,
        amount: null,
        ...(currency !== undefined && { currency }),
        description: dynamicDescription ?? pricing.description ?? genericDynamic,
      }
    })
}

/** The currency a method charges in, asked of its own request builder (a zero price). */
function currencyOf(method: Pricing<Context>['methods'][number]): string | undefined {
  try {
    return method.request({ amount: '0', settle: 'before' }).currency
  } catch {
    return undefined
  }
}

/** Whether the Hono route `pattern` (possibly ending in `*`) applies to the route `path`. */
function covers(pattern: string, path: string): boolean {
  if (pattern === path || pattern === '*' || pattern === '/*') return true
  if (pattern.endsWith('/*')) return path === pattern.slice(0, -2) || path.startsWith(pattern.slice(0, -1))
  if (pattern.endsWith('*')) return path.startsWith(pattern.slice(0, -1))
  return false
}

/**
 * `/articles/:id{[0-9]+}` → `/articles/{id}`: each `:name` segment, whatever its name's
 * characters, with its pattern (braces nest: `:code{[a-z]{2}}`) and optional mark dropped.
 */
export function openApiPath(route: string): string {
  let path = ''
  let at = 0
  while (at < route.length) {
    if (route[at] !== ':' || (at > 0 && route[at - 1] !== '/')) {
      path += route[at++]
      continue
    }
    let name = ''
    at++
    while (at < route.length && !'/{?'.includes(route[at]!)) name += route[at++]
    if (route[at] === '{') {
      let depth = 0
      do {
        if (route[at] === '{') depth++
        else if (route[at] === '}') depth--
        at++
      } while (at < route.length && depth > 0)
    }
    if (route[at] === '?') at++
    path += `{${name}}`
  }
  return path
}

/** A path's template shape: OpenAPI counts `/a/{id}` and `/a/{name}` as the same path. */
function templateShape(path: string): string {
  return path.replace(/\{[^}/]*\}/g, '{}')
}

function pathParameters(path: string) {
  return [...path.matchAll(/\{([^}]+)\}/g)].map((match) => ({ name: match[1]!, in: 'path', required: true, schema: { type: 'string' } }))
}

const paymentRequired = { description: 'Payment Required' }

/** The operation object of a priced operation, as built from the routes. */
function operationOf(operation: PricedOperation): Record<string, unknown> {
  const parameters = pathParameters(operation.path)
  return {
    ...(operation.description !== undefined && { summary: operation.description }),
    ...(parameters.length > 0 && { parameters }),
    'x-payment-info': { offers: operation.offers },
    responses: { '200': { description: 'Successful response' }, '402': paymentRequired },
  }
}

/**
 * An OpenAPI 3.1 document of the app's priced operations, with `x-service-info` when given.
 */
export function openApiDocument(app: AppLike, options: Omit<DiscoveryOptions, 'document' | 'llms' | 'maxAge'>): OpenApiDocument {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const operation of pricedOperations(app, options)) {
    paths[operation.path] ??= {}
    paths[operation.path]![operation.method] = operationOf(operation)
  }
  return {
    openapi: '3.1.0',
    info: { ...options.info },
    ...(options.serviceInfo && { 'x-service-info': options.serviceInfo }),
    paths,
  }
}

/** Options of `mergePaymentInfo`. */
export type MergeOptions = {
  dynamicDescription?: string
  serviceInfo?: ServiceInfo
  /**
   * A priced operation the document does not describe: `'add'` it (default), or `'skip'` it, for
   * a document that leaves routes out on purpose (`hide: true` in @hono/zod-openapi or
   * hono-openapi drops a route without a trace, so the two cannot be told apart).
   */
  missing?: 'add' | 'skip'
}

/**
 * Adds each priced operation's `x-payment-info` and 402 response to `document` (any OpenAPI
 * object, e.g. from @hono/zod-openapi or hono-openapi), matching `/articles/{id}` (or
 * `/articles/{articleId}`: templates match by shape) to the route `/articles/:id`, and reading
 * paths relative to the document's `servers` URL path when all its servers share one (`/v1`).
 * A priced operation the document lacks is added (see `missing`). Returns a copy; the
 * document's own descriptions, parameters, schemas and responses are kept (a 402 it declares
 * too).
 */
export function mergePaymentInfo<D extends OpenApiDocument>(document: D, app: AppLike, options: MergeOptions = {}): D {
  const merged = structuredClone(document) as D
  merged.paths ??= {}
  const paths = merged.paths
  const prefix = serversPrefix(merged.servers)
  const byShape = new Map(Object.keys(paths).map((path) => [templateShape(path), path]))
  for (const operation of pricedOperations(app, options)) {
    let path = operation.path
    if (prefix) {
      if (path !== prefix && !path.startsWith(`${prefix}/`)) continue
      path = path.slice(prefix.length) || '/'
    }
    const key = byShape.get(templateShape(path))
    const existing = key === undefined ? undefined : paths[key]?.[operation.method]
    if (!isRecord(existing)) {
      if (options.missing === 'skip') continue
      const at = key ?? path
      paths[at] ??= {}
      if (key === undefined) byShape.set(templateShape(path), path)
      paths[at]![operation.method] = operationOf({ ...operation, path: at })
      continue
    }
    existing['x-payment-info'] = { offers: operation.offers }
    if (!isRecord(existing.responses)) existing.responses = {}
    ;(existing.responses as Record<string, unknown>)['402'] ??= paymentRequired
  }
  if (options.serviceInfo && merged['x-service-info'] === undefined) (merged as OpenApiDocument)['x-service-info'] = options.serviceInfo
  return merged
}

/**
 * The URL path every server of the document shares (`servers: [{ url: 'https://api.example/v1' }]`
 * → `/v1`), which the document's paths are relative to; undefined when there is none or the
 * servers disagree (then paths are read as the app's own).
 */
function serversPrefix(servers: unknown): string | undefined {
  if (!Array.isArray(servers) || servers.length === 0) return undefined
  const prefixes = new Set<string>()
  for (const server of servers) {
    if (!isRecord(server) || typeof server.url !== 'string' || server.url.includes('{')) return undefined
    let pathname: string
    try {
      pathname = new URL(server.url, 'http://relative.invalid').pathname
    } catch {
      return undefined
    }
    prefixes.add(pathname.replace(/\/+$/, ''))
  }
  const [prefix] = prefixes
  return prefixes.size === 1 && prefix ? prefix : undefined
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * A short text for an agent (llms.txt): what the app sells, at what price, and how to pay.
 * `origin` makes the paths absolute.
 */
export function llmsText(app: AppLike, options: Pick<DiscoveryOptions, 'info' | 'dynamicDescription'>, origin = ''): string {
  const lines = [`# ${options.info.title}`, '']
  if (options.info.description) lines.push(`> ${options.info.description}`, '')
  lines.push('## Paid endpoints', '')
  const operations = pricedOperations(app, options)
  if (operations.length === 0) lines.push('None.')
  for (const operation of operations) {
    const price = operation.offers
      .map((offer) =>
        offer.amount === null
          ? `a price set per request (${offer.description ?? genericDynamic}) via ${offer.method}/${offer.intent}${offer.currency ? ` in ${offer.currency}` : ''}`
          : `${operation.decimalAmount ?? '?'} (${offer.amount} base units${offer.currency ? ` of ${offer.currency}` : ''}) via ${offer.method}/${offer.intent}`,
      )
      .join('; or ')
    const charged = operation.settle === 'after' ? ', charged only when the request succeeds' : ''
    lines.push(`- ${operation.method.toUpperCase()} ${origin}${operation.path}: ${price}${charged}${operation.description ? `. ${operation.description}` : ''}`)
  }
  const mcp = pricedMcpOperations(app)
  if (mcp.length > 0) {
    lines.push('', '## Paid MCP operations', '')
    const calls = { tool: 'tools/call', resource: 'resources/read', prompt: 'prompts/get' } as const
    for (const endpoint of [...new Set(mcp.map((operation) => operation.endpoint))]) {
      lines.push(`MCP server (Streamable HTTP, JSON-RPC over POST) at ${origin}${endpoint}:`, '')
      for (const operation of mcp.filter((each) => each.endpoint === endpoint)) {
        const price = operation.offers
          .map(
            (offer) =>
              `${operation.decimalAmount ?? '?'} (${offer.amount} base units${offer.currency ? ` of ${offer.currency}` : ''}) via ${offer.method}/${offer.intent}`,
          )
          .join('; or ')
        const charged = operation.settle === 'after' ? ', charged only when the call succeeds' : ''
        lines.push(
          `- ${operation.kind} \`${operation.name}\` (${calls[operation.kind]}): ${price}${charged}${operation.description ? `. ${operation.description}` : ''}`,
        )
      }
      lines.push('')
    }
    lines.push(
      'An unpaid priced call is answered with the JSON-RPC error -32042 whose `error.data.challenges` are the',
      'Payment challenges; pay one and repeat the same call with the credential in',
      '`params._meta["org.paymentauth/credential"]`; the result carries `_meta["org.paymentauth/receipt"]`.',
      'These operations are not in /openapi.json: the discovery draft has no OpenAPI form for MCP operations.',
    )
  }
  lines.push(
    '',
    '## How to pay',
    '',
    'Each paid endpoint answers an unpaid request with HTTP 402 and a `WWW-Authenticate: Payment` challenge',
    '(the Machine Payments Protocol, https://paymentauth.org). Pay one challenge and retry the same request',
    'with `Authorization: Payment <credential>`; the answer carries a `Payment-Receipt` header.',
    'The 402 challenge is authoritative: it states the exact amount, currency and recipient.',
    '',
    `- With the mppx CLI: \`npx mppx ${origin || 'https://this-server'}${operations[0]?.path ?? '/'}\``,
    '- With mppx in code: `Mppx.create({ methods: [tempo.charge({ account })] })`, then its `fetch` pays and retries.',
    `- By hand: \`curl -i ${origin}${operations[0]?.path ?? '/'}\` shows the challenge; sign it with an MPP client and retry with the credential.`,
    '',
    `Machine-readable: ${origin}/openapi.json (OpenAPI 3.1 with x-payment-info).`,
    '',
  )
  return lines.join('\n')
}

/**
 * The discovery routes: `GET /openapi.json` and `GET /llms.txt`, built at the first request from
 * the app's routes as they are then (so declare them in any order), JSON with
 * `Cache-Control: max-age=300` and `Access-Control-Allow-Origin: *` (the draft recommends both).
 *
 * @example
 * ```ts
 * app.route('/', discovery(app, { info: { title: 'Example API', version: '1.0.0' }, serviceInfo: { categories: ['data'] } }))
 * ```
 */
export function discovery(app: AppLike, options: DiscoveryOptions): Hono {
  if (!options?.info || typeof options.info.title !== 'string' || typeof options.info.version !== 'string')
    throw new TypeError('discovery: pass { info: { title, version } } (OpenAPI requires both).')
  const maxAge = options.maxAge ?? 300
  const headers = { 'cache-control': `public, max-age=${maxAge}`, 'access-control-allow-origin': '*' }
  const served = new Hono()
  const withLlms = options.llms !== false
  served.get('/openapi.json', async (c) => {
    const origin = new URL(c.req.url).origin
    const serviceInfo: ServiceInfo | undefined = withLlms
      ? { ...options.serviceInfo, docs: { llms: `${origin}/llms.txt`, ...options.serviceInfo?.docs } }
      : options.serviceInfo
    const document = options.document
      ? mergePaymentInfo(await options.document(), app, { ...options, ...(serviceInfo && { serviceInfo }) })
      : openApiDocument(app, { ...options, ...(serviceInfo && { serviceInfo }) })
    return c.json(document, 200, headers)
  })
  if (withLlms) served.get('/llms.txt', (c) => c.text(llmsText(app, options, new URL(c.req.url).origin), 200, headers))
  return served
}
