/**
 * The MCP adapter: JSON-RPC over Streamable HTTP (POST bodies), beside the HTTP adapter and over
 * the same layers (protocol, methods, settle, stores). Challenges travel as JSON-RPC errors
 * (-32042), credentials and receipts in `_meta` (draft-payment-transport-mcp).
 */
import type { Context, MiddlewareHandler } from 'hono'
import { checkBinding, credentialFingerprint, paymentInfoOf } from './binding.js'
import { maxBodyBytesOf, readBody } from './body.js'
import type { ChargeRequest, PaymentMethod, RouteCharge } from './method.js'
import { PricedResources } from './mcp-resources.js'
import { type MppOptions, type PaymentEvent, mpp } from './middleware.js'
import { challengeId, secretKeys } from './protocol/challenge.js'
import { type ParsedCredential, parseCredential } from './protocol/credential.js'
import { base64url, canonicalize, encodeJson } from './protocol/encoding.js'
import { hmacKey } from './protocol/hmac.js'
import { invalidHost, requestHost } from './protocol/host.js'
import { PaymentError, type Problem } from './protocol/problem.js'
import { rfc3339 } from './protocol/receipt.js'
import { type SettleTiming, settle } from './settle.js'

export const paymentRequiredCode = -32042
export const paymentVerificationFailedCode = -32043
export const invalidParamsCode = -32602
export const internalErrorCode = -32603
export const invalidRequestCode = -32600
export const credentialMetaKey = 'org.paymentauth/credential'
export const receiptMetaKey = 'org.paymentauth/receipt'

/** What one MCP operation (a tool, a resource, a prompt) charges. */
export type McpCharge = {
  /** Decimal amount in the token's units, e.g. "0.01". */
  amount: string
  description?: string
  externalId?: string
  /** `before` (default): settle, then call the handler. `after`: charge only when the result is not `isError`. */
  settle?: SettleTiming
  /** Methods for this operation instead of the ones given in the options. */
  methods?: readonly PaymentMethod[]
}

export type McpPaymentOptions = MppOptions & {
  /** Priced tools by exact name (`tools/call`). */
  tools?: Record<string, McpCharge>
  /**
   * Priced resources (`resources/read`) by uri, or by uri template when the key contains `{`
   * (`file:///reports/{id}`). Matched as the MCP SDK resolves them: by canonical URL
   * (`new URL(uri).href`), so every spelling of a priced uri is charged.
   */
  resources?: Record<string, McpCharge>
  /** Priced prompts by exact name (`prompts/get`). */
  prompts?: Record<string, McpCharge>
}

/** A challenge as JSON-RPC carries it: `request` is the JSON object, not base64url. */
export type McpChallenge = {
  id: string
  realm: string
  method: string
  intent: 'charge'
  request: ChargeRequest
  description?: string
  expires: string
  opaque: string
}

/** `result._meta["org.paymentauth/receipt"]`. */
export type McpReceipt = {
  status: 'success'
  method: string
  timestamp: string
  challengeId: string
  reference: string
  externalId?: string
}

type Offer = { method: PaymentMethod; request: ChargeRequest; encoded: string }
type Priced = { charge: McpCharge; timing: SettleTiming; offers: Offer[] }
/** A priced call: `target` (`tools/call summarize`, `resources/read <canonical uri>`) is what its challenges bind. */
type Operation = Priced & { target: string }
/** What a message asks of the payment layer: nothing (free), a payment, or a refusal (`invalid` names why). */
type Classified = { operation: Operation } | { invalid: string } | undefined
type JsonRpcId = string | number | null
type Message = { jsonrpc?: unknown; id?: JsonRpcId; method?: unknown; params?: unknown; _meta?: unknown; result?: unknown; error?: unknown }

/** Which table prices a JSON-RPC method, and which `params` field names the operation. */
const covered = { 'tools/call': ['tools', 'name'], 'resources/read': ['resources', 'uri'], 'prompts/get': ['prompts', 'name'] } as const

/**
 * Payment middleware for an MCP server reachable over Streamable HTTP: put it in front of the
 * handler that answers the JSON-RPC POSTs.
 *
 * @see https://paymentauth.org — draft-payment-transport-mcp: JSON-RPC & MCP transport.
 * @param options - Everything `mpp()` takes (`secret`, `methods`, `store`, `realm`, `expires`,
 *   `leaseMs`, `onEvent`, `maxBodyBytes`), plus the priced `tools`, `resources` (by uri) and
 *   `prompts`. Every POST body is read (to find the operation) up to `maxBodyBytes`; a larger one
 *   is answered with an HTTP 413 problem JSON, as it has no JSON-RPC id to answer.
 * @returns A Hono middleware: priced calls without a valid credential never reach the handler;
 *   paid results carry `result._meta["org.paymentauth/receipt"]`; `initialize` results advertise
 *   `capabilities.experimental.payment`.
 * @throws Error on misconfiguration (as `mpp()`, and for each priced operation as `charge()`).
 * @example
 * ```ts
 * import { mcpPayments } from 'hono-mpp/mcp'
 * import { tempo } from 'hono-mpp/tempo'
 *
 * app.post('/mcp', mcpPayments({ secret, methods: [tempo({ recipient, rpcUrl })], tools: { summarize: { amount: '0.01' } } }),
 *   (c) => transport.handleRequest(c.req.raw))
 * ```
 */
export function mcpPayments(options: McpPaymentOptions): MiddlewareHandler {
  // mpp() and charge() validate everything the HTTP adapter would: secret, methods, expiry,
  // realm, amounts, descriptions. Their middlewares are not used.
  const maxBodyBytes = maxBodyBytesOf(options.maxBodyBytes, 'mcpPayments')
  const http = mpp(options)
  const store = http.store
  const keys = secretKeys(options.secret).map(hmacKey)
  const ttl = options.expires ?? 300
  const leaseMs = options.leaseMs ?? 60_000
  const emit = (event: PaymentEvent) => {
    try {
      options.onEvent?.(event)
    } catch {
      // A failing listener never changes a payment's outcome.
    }
  }

  // Tools and prompts are found by exact name (a Map: no prototype keys), as the SDK finds them;
  // resources by canonical URL or uri template (see mcp-resources.ts).
  const names = { tools: new Map<string, Priced>(), prompts: new Map<string, Priced>() }
  const resources = new PricedResources<Priced>()
  const advertised: Record<string, { intents: ['charge'] }> = {}
  for (const [table] of Object.values(covered)) {
    const priced = options[table]
    if (priced === undefined) continue
    if (typeof priced !== 'object' || priced === null)
      throw new Error(`mcpPayments: \`${table}\` maps ${table === 'resources' ? 'uris' : 'names'} to charges, e.g. { summarize: { amount: '0.01' } }.`)
    for (const [name, charge] of Object.entries(priced)) {
      const where = `mcpPayments: ${table}["${name}"]`
      if (!charge || typeof charge.amount !== 'string')
        throw new Error(`${where} needs an \`amount\`: a decimal string in token units such as "0.01".`)
      try {
        http.charge(charge)
      } catch (error) {
        throw new Error(`${where}: ${(error as Error).message}`)
      }
      const timing = charge.settle ?? 'before'
      const routeCharge: RouteCharge = {
        amount: charge.amount,
        settle: timing,
        ...(charge.description !== undefined && { description: charge.description }),
        ...(charge.externalId !== undefined && { externalId: charge.externalId }),
      }
      const offers = (charge.methods ?? options.methods).map((method): Offer => {
        const request = method.request(routeCharge)
        advertised[method.name] = { intents: ['charge'] }
        return { method, request, encoded: encodeJson(request) }
      })
      const entry: Priced = { charge, timing, offers }
      if (table === 'resources')
        try {
          resources.add(name, entry)
        } catch (error) {
          throw new Error(`${where} ${(error as Error).message}.`)
        }
      else names[table].set(name, entry)
    }
  }
  for (const method of options.methods) advertised[method.name] = { intents: ['charge'] }

  const issue = (operation: Operation, realm: string): McpChallenge[] => {
    const expires = rfc3339(new Date((Math.floor(Date.now() / 1000) + ttl) * 1000))
    const opaque = encodeJson({ n: base64url(crypto.getRandomValues(new Uint8Array(12))), r: operation.target })
    const description = operation.charge.description
    return operation.offers.map((offer) => ({
      id: challengeId(keys[0]!, { realm, method: offer.method.name, intent: 'charge', request: offer.encoded, expires, opaque }),
      realm,
      method: offer.method.name,
      intent: 'charge',
      request: offer.request,
      ...(description !== undefined && { description }),
      expires,
      opaque,
    }))
  }

  return async function mcpPayment(c, next) {
    if (c.req.method !== 'POST') return next()
    const path = c.req.path
    let text: string
    try {
      // Read once, bounded; the handler gets the same request with these bytes as its body.
      text = new TextDecoder().decode(await readBody(c, maxBodyBytes, true))
    } catch (error) {
      if (!(error instanceof PaymentError)) throw error
      // Unread, so no JSON-RPC id to answer with: a plain HTTP 413.
      emit({ type: 'rejected', path, reason: error.kind, detail: error.detail, status: error.status })
      return new Response(JSON.stringify(error.toProblem()), {
        status: error.status,
        headers: { 'content-type': 'application/problem+json', 'cache-control': 'no-store' },
      })
    }
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      // Not JSON: the MCP handler answers the parse error.
      return next()
    }

    if (Array.isArray(body)) {
      const found = body.map((message) => classify(message as Message)).filter((item) => item !== undefined)
      if (found.length === 0) return next()
      // A batch cannot carry one credential per call nor one receipt per result: refuse it whole.
      const priced = found.flatMap((item) => ('operation' in item ? [item.operation.target] : []))
      const invalid = found.flatMap((item) => ('invalid' in item ? [item.invalid] : []))
      const detail = [
        priced.length > 0 && `this batch contains ${priced.length} priced operation(s) (${priced.join(', ')}); priced MCP operations cannot be batched, send each as its own request`,
        invalid.length > 0 && `this batch contains ${invalid.length} call(s) with invalid params (${invalid.join('; ')})`,
      ]
        .filter(Boolean)
        .join('; ')
      const answers = body
        .filter((message) => isObject(message) && 'id' in message && message.id !== undefined)
        .map((message) => rpcError((message as Message).id ?? null, invalidRequestCode, 'Invalid Request', { detail }))
      if (answers.length === 0) return c.body(null, 202)
      return jsonResponse(answers)
    }
    if (!isObject(body) || typeof body.method !== 'string') return next()
    const message = body as Message

    if (message.method === 'initialize') {
      await next()
      await rewrite(c, message.id, (result) => {
        const capabilities = isObject(result.capabilities) ? result.capabilities : (result.capabilities = {})
        const experimental = isObject(capabilities.experimental) ? capabilities.experimental : (capabilities.experimental = {})
        experimental.payment = { methods: advertised }
      })
      return
    }

    const found = classify(message)
    if (!found) return next()
    // Notifications expect no answer, so they cannot be challenged: a priced one is dropped.
    if (!('id' in message) || message.id === undefined) return c.body(null, 202)
    const id = message.id
    if ('invalid' in found) {
      // Never passed on: the handler might resolve what the price table could not.
      const error = new PaymentError('bad-request', found.invalid)
      emit({ type: 'rejected', path, reason: error.kind, detail: error.detail, status: error.status })
      return jsonResponse(rpcError(id, invalidParamsCode, 'Invalid params', { httpStatus: error.status, challenges: [], problem: error.toProblem(), detail: error.detail }))
    }
    const operation = found.operation
    const realm = options.realm ?? hostOf(c)
    const { target, timing, offers } = operation

    const refuse = (error: PaymentError): Response => {
      const challenges = error.wantsChallenge && realm !== undefined ? issue(operation, realm) : []
      emit({ type: 'rejected', path, reason: error.kind, detail: error.detail, status: error.status, ...(challenges[0] && { challengeId: challenges[0].id }) })
      return jsonResponse(
        rpcError(id, codeOf(error), error.kind === 'malformed-credential' || error.kind === 'bad-request' ? 'Invalid params' : error.toProblem().title, {
          httpStatus: error.status,
          challenges,
          problem: error.toProblem(challenges[0]?.id),
          detail: error.detail,
          ...(error.retryAfter !== undefined && { retryAfter: error.retryAfter }),
        }),
      )
    }

    let handled: Response | undefined
    try {
      if (realm === undefined) throw new PaymentError('bad-request', invalidHost(c.req.header('host')))
      const metaCredential = credentialIn(message)
      if (metaCredential === undefined) {
        const challenges = issue(operation, realm)
        emit({ type: 'challenge', path, challengeIds: challenges.map((challenge) => challenge.id) })
        const problem = new PaymentError(
          'payment-required',
          `${target} costs ${offers[0]!.request.amount} base units; pay one of the offered challenges and retry with _meta["${credentialMetaKey}"]`,
        ).toProblem(challenges[0]!.id)
        return jsonResponse(rpcError(id, paymentRequiredCode, 'Payment Required', { httpStatus: 402, challenges, problem }))
      }
      const credential = parseMetaCredential(metaCredential)
      const offer = offers.find((o) => o.method.name === credential.challenge.method)
      if (!offer)
        throw new PaymentError(
          'method-unsupported',
          `method "${credential.challenge.method}" is not accepted for ${target}; accepted: ${offers.map((o) => o.method.name).join(', ')}`,
        )
      const expires = checkBinding(keys, credential, { offer, realm, target, digest: undefined, subject: target })
      const fingerprint = credentialFingerprint(credential)
      let receipt: McpReceipt | undefined
      await settle({
        store,
        method: offer.method,
        credential,
        request: offer.request,
        expires,
        timing,
        fingerprint,
        leaseMs,
        emit: (event) => emit({ path, ...event }),
        handler: async ({ verified, settled }) => {
          c.set('payment', paymentInfoOf(offer, credential, { ...verified, ...(settled ?? {}) }, settled !== undefined))
          await next()
          const text = await c.res.text()
          handled = new Response(text, c.res)
          handled.headers.delete('content-length')
          // settle() charges an `after` operation only on a 2xx: a JSON-RPC error or an
          // `isError` result is not a success.
          const succeeded = timing === 'before' || messagesIn(text, c.res.headers.get('content-type')).some((m) => m.id === id && isObject(m.result) && m.result.isError !== true)
          return new Response(null, { status: succeeded ? 200 : 500 })
        },
        withReceipt: (response, { verified, settled }) => {
          receipt = {
            status: 'success',
            method: offer.method.name,
            timestamp: rfc3339(new Date()),
            challengeId: credential.challenge.id,
            reference: settled.reference,
            ...(operation.charge.externalId !== undefined && { externalId: operation.charge.externalId }),
          }
          Object.assign(c.get('payment') ?? {}, { settled: true, reference: settled.reference, payer: settled.payer ?? verified.payer })
          return response
        },
      })
      if (!handled) throw new PaymentError('payment-unavailable', 'the payment settled but the MCP handler gave no answer')
      c.res = undefined
      c.res = handled
      if (receipt) {
        const paid = receipt
        await rewrite(c, id, (result) => {
          result._meta = { ...(isObject(result._meta) ? result._meta : {}), [receiptMetaKey]: paid }
        })
      }
      return
    } catch (error) {
      const refusal =
        error instanceof PaymentError
          ? error
          : new PaymentError('payment-unavailable', 'the payment could not be processed right now; nothing was charged', { cause: error, retryAfter: 5 })
      const response = refuse(refusal)
      if (handled) {
        // The handler ran (settle: 'after') but the payment failed: its answer is withheld.
        c.res = undefined
        c.res = response
        return
      }
      return response
    }
  }

  /**
   * Prices a message as the MCP SDK would resolve it. Once a kind of operation has prices, a call
   * of that kind whose name or uri is not a string, or whose uri does not parse as a URL, is
   * refused rather than passed on: the handler must never resolve what the table could not.
   */
  function classify(message: Message): Classified {
    if (!isObject(message) || typeof message.method !== 'string' || !Object.hasOwn(covered, message.method)) return undefined
    const rpcMethod = message.method as keyof typeof covered
    const [table, field] = covered[rpcMethod]
    if ((table === 'resources' ? resources.size : names[table].size) === 0) return undefined
    const params = message.params
    const value = isObject(params) && Object.hasOwn(params, field) ? params[field] : undefined
    if (typeof value !== 'string') return { invalid: `${rpcMethod} needs params.${field} as a string` }
    if (table === 'resources') {
      const match = resources.find(value)
      if (match === null) return { invalid: `${rpcMethod}: params.uri is not an absolute URL (it does not parse as one), so it names no resource` }
      return match && { operation: { ...match.value, target: `${rpcMethod} ${match.uri}` } }
    }
    const priced = names[table].get(value)
    return priced && { operation: { ...priced, target: `${rpcMethod} ${value}` } }
  }
}

function credentialIn(message: Message): unknown {
  const inParams = isObject(message.params) && isObject(message.params._meta) ? message.params._meta[credentialMetaKey] : undefined
  const atRoot = isObject(message._meta) ? message._meta[credentialMetaKey] : undefined
  if (inParams !== undefined && atRoot !== undefined && canonicalize(inParams) !== canonicalize(atRoot))
    throw new PaymentError('bad-request', `the message carries two different credentials (in params._meta and in _meta); send exactly one`)
  return inParams ?? atRoot
}

function malformed(detail: string): PaymentError {
  return new PaymentError('malformed-credential', detail)
}

/** Validates a `_meta` credential object through the same strict parser as the HTTP one. */
function parseMetaCredential(value: unknown): ParsedCredential {
  if (!isObject(value)) throw malformed(`_meta["${credentialMetaKey}"] must be an object {challenge, payload, source?}`)
  const challenge = value.challenge
  if (!isObject(challenge)) throw malformed('credential.challenge must be the challenge object, echoed unchanged')
  const request = challenge.request
  if (!isObject(request) && typeof request !== 'string')
    throw malformed('credential.challenge.request must be the JSON object of the challenge')
  const wire = { ...value, challenge: { ...challenge, request: typeof request === 'string' ? request : encodeJson(request) } }
  return parseCredential(base64url(JSON.stringify(wire)))
}

function codeOf(error: PaymentError): number {
  if (error.kind === 'malformed-credential' || error.kind === 'bad-request') return invalidParamsCode
  if (error.kind === 'payment-unavailable') return internalErrorCode
  return paymentVerificationFailedCode
}

function rpcError(id: JsonRpcId, code: number, message: string, data: Record<string, unknown> & { problem?: Problem }) {
  return { jsonrpc: '2.0', id, error: { code, message, data } }
}

function jsonResponse(value: unknown): Response {
  // JSON-RPC errors travel in a 200: Streamable HTTP clients read them from the body.
  return new Response(JSON.stringify(value), { status: 200, headers: { 'content-type': 'application/json', 'cache-control': 'no-store' } })
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** The JSON-RPC messages of a handler's answer: a JSON body (one message or a batch) or an SSE stream. */
function messagesIn(text: string, contentType: string | null): Message[] {
  const parse = (json: string): Message[] => {
    try {
      const value = JSON.parse(json) as unknown
      return (Array.isArray(value) ? value : [value]).filter(isObject) as Message[]
    } catch {
      return []
    }
  }
  if (contentType?.includes('text/event-stream')) return sseEvents(text).flatMap((event) => (event.data === undefined ? [] : parse(event.data)))
  return parse(text)
}

function sseEvents(text: string): { lines: string[]; data: string | undefined }[] {
  return text
    .split(/\r?\n\r?\n/)
    .filter((block) => block.length > 0)
    .map((block) => {
      const lines = block.split(/\r?\n/)
      const data = lines.filter((line) => line.startsWith('data:')).map((line) => line.slice(line.startsWith('data: ') ? 6 : 5))
      return { lines: lines.filter((line) => !line.startsWith('data:')), data: data.length ? data.join('\n') : undefined }
    })
}

/**
 * Edits the `result` of the answer to request `id` in `c.res` (JSON or a finished SSE stream).
 * Answers without that result (errors, other messages) pass unchanged.
 */
async function rewrite(c: Context, id: JsonRpcId | undefined, edit: (result: Record<string, unknown>) => void): Promise<void> {
  const response = c.res
  const contentType = response.headers.get('content-type')
  const sse = contentType?.includes('text/event-stream') ?? false
  if (!sse && !contentType?.includes('json')) return
  const text = await response.text()
  const editOne = (json: string): string => {
    try {
      const value = JSON.parse(json) as unknown
      const list = Array.isArray(value) ? value : [value]
      let changed = false
      for (const message of list)
        if (isObject(message) && message.id === id && isObject(message.result)) {
          edit(message.result)
          changed = true
        }
      return changed ? JSON.stringify(value) : json
    } catch {
      return json
    }
  }
  const body = sse
    ? `${sseEvents(text)
        .map((event) => [...event.lines, ...(event.data === undefined ? [] : editOne(event.data).split('\n').map((line) => `data: ${line}`))].join('\n'))
        .join('\n\n')}\n\n`
    : editOne(text)
  const headers = new Headers(response.headers)
  headers.delete('content-length')
  c.res = undefined
  c.res = new Response(body, { status: response.status, statusText: response.statusText, headers })
}

/** The request's host as a realm, or undefined when it is not a valid `host[:port]`. */
function hostOf(c: Context): string | undefined {
  return requestHost(c.req.header('host'), c.req.url)
}
