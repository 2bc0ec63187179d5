/**
 * The MCP transport: JSON-RPC over Streamable HTTP (POST bodies). Challenges travel as JSON-RPC
 * errors (-32042), credentials and receipts in `_meta` (draft-payment-transport-mcp). Everything
 * else happens in the core, exactly as for HTTP.
 */
import type { Context, MiddlewareHandler } from 'hono'
import type { PaymentInfo } from '../core/binding.js'
import { type CoreOptions, createCore, type PaidRequest, type PaymentCore, paymentRequiredDetail, refusalOf } from '../core/payments.js'
import { PriceError } from '../core/pricing.js'
import { type ParsedCredential, parseCredential } from '../protocol/credential.js'
import { base64url, canonicalize, encodeJson, utf8 } from '../protocol/encoding.js'
import { sha256 } from '../protocol/hmac.js'
import type { Issued } from '../protocol/issuer.js'
import { PaymentError } from '../protocol/problem.js'
import type { Receipt } from '../protocol/receipt.js'
import type { ChargeRequest } from '../protocol/types.js'
import { readBody, replaceBody } from './body.js'
import { isObject, type JsonRpcId, jsonResponse, type Message, messagesIn, rewriteResult, rpcError } from './jsonrpc.js'
import { type McpCharge, type McpPriceTables, type Operation, priceTables } from './mcp-operations.js'
import { registerMcpOperations } from './mcp-registry.js'
import { defaultMaxReplayBytes, idempotencyKeyOf } from './replay.js'
import { realmOf, routeOf, schemeTokenOf } from './request.js'

export type { McpCharge, PaymentInfo }

export const paymentRequiredCode = -32042
export const paymentVerificationFailedCode = -32043
export const invalidParamsCode = -32602
export const internalErrorCode = -32603
export const invalidRequestCode = -32600
export const credentialMetaKey = 'org.paymentauth/credential'
export const receiptMetaKey = 'org.paymentauth/receipt'

export type McpPaymentOptions = CoreOptions & McpPriceTables

/** A challenge as JSON-RPC carries it: `request` is the JSON object, not base64url. */
export type McpChallenge = {
  id: string
  realm: string
  method: string
  intent: string
  request: ChargeRequest
  description?: string
  expires: string
  opaque: string
}

/** `result._meta["org.paymentauth/receipt"]`. */
export type McpReceipt = Receipt & { challengeId: string }

/**
 * Payment middleware for an MCP server reachable over Streamable HTTP: put it in front of the
 * handler that answers the JSON-RPC POSTs.
 *
 * @see https://paymentauth.org — draft-payment-transport-mcp: JSON-RPC & MCP transport.
 * @param options - Everything `mpp()` takes (`secret`, `methods`, `store`, `realm`, `expires`,
 *   `leaseMs`, `onEvent`, `schemes`), plus the priced `tools`, `resources` (by uri or uri template) and `prompts`.
 *   With `schemes` (e.g. `[accounts.scheme]`), a priced call without a `_meta` credential may be paid
 *   by the HTTP request's `Authorization: Bearer <key>` (or the scheme's header), charged only when
 *   its result is not `isError`.
 * @returns A Hono middleware: priced calls without a valid credential never reach the handler;
 *   paid results carry `result._meta["org.paymentauth/receipt"]`; `initialize` results advertise
 *   `capabilities.experimental.payment`.
 * @throws ConfigurationError on misconfiguration (as `mpp()`, and for each priced operation as `charge()`).
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
  const core = createCore(options, 'mcpPayments')
  const { classify, operations } = priceTables(core, options)
  const advertised = advertisedMethods(core, options)

  const mcpPayment: MiddlewareHandler = async function mcpPayment(c, next) {
    if (c.req.method !== 'POST') return next()
    let text: string
    try {
      // Read once, bounded; the handler gets the same request with these bytes as its body.
      text = new TextDecoder().decode(await readBody(c, core.maxBodyBytes, true))
    } catch (error) {
      if (!(error instanceof PaymentError)) throw error
      // Unread, so no JSON-RPC id to answer with: a plain HTTP 413.
      core.emitEvent({ type: 'rejected', path: c.req.path, route: routeOf(c), reason: error.kind, detail: error.detail, status: error.status })
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
    if (Array.isArray(body)) return refuseBatch(c, body, classify, next)
    if (!isObject(body) || typeof body.method !== 'string') return next()
    const message = body as Message
    if (message.method === 'initialize') {
      await next()
      return rewriteResult(c, message.id, (result) => {
        if (!isObject(result.capabilities)) result.capabilities = {}
        const capabilities = result.capabilities as Record<string, unknown>
        if (!isObject(capabilities.experimental)) capabilities.experimental = {}
        ;(capabilities.experimental as Record<string, unknown>).payment = { methods: advertised }
      })
    }
    const found = classify(message)
    if (!found) {
      // A credential sent where no payment is due is ignored (M2): not passed on either.
      if (isObject(message._meta) && Object.hasOwn(message._meta, credentialMetaKey)) forwardWithoutRootMeta(c, message)
      return next()
    }
    // Notifications expect no answer, so they cannot be challenged: a priced one is dropped.
    if (!('id' in message) || message.id === undefined) return c.body(null, 202)
    // Never passed on, nor charged: an MCP server refuses such a message without running anything.
    const fault = envelopeFault(message)
    if (fault) return refuseEnvelope(c, core, message, fault)
    // The root `_meta` is the payment layer's (a credential); an MCP server takes no member there
    // and would refuse the paid call as malformed: the handler gets the message without it.
    if (message._meta !== undefined) forwardWithoutRootMeta(c, message)
    const call: Call = { core, c, id: message.id, path: c.req.path, route: routeOf(c) }
    // Never passed on: the handler might resolve what the price table could not.
    if ('invalid' in found) return answerRefusal(call, new PaymentError('bad-request', found.invalid), undefined)
    return payForCall(call, found.operation, message, next)
  }
  registerMcpOperations(mcpPayment, operations)
  return mcpPayment
}

/**
 * Hands the handler the message without its root `_meta`, which is the payment layer's (a
 * credential): an MCP server takes no member there and refuses a message that has one.
 */
function forwardWithoutRootMeta(c: Context, message: Message): void {
  const { _meta: _, ...forwarded } = message
  replaceBody(c, new TextEncoder().encode(JSON.stringify(forwarded)))
}

type Call = { core: PaymentCore; c: Context; id: JsonRpcId; path: string; route: string | undefined }

/** Challenges, refuses, or runs the priced call once it is paid. */
async function payForCall(call: Call, operation: Operation, message: Message, next: () => Promise<void>): Promise<Response | undefined> {
  const { core, c, id } = call
  const where = { realm: '', target: operation.target, digest: undefined }
  let handled: Response | undefined
  try {
    where.realm = realmOf(c, core.realm)
    const metaCredential = credentialIn(message)
    // No Payment credential: an API key of a configured scheme (Authorization: Bearer, X-API-Key) may pay.
    const keyed = metaCredential === undefined ? schemeTokenOf(c, core) : undefined
    if (metaCredential === undefined && !keyed) {
      const challenges = core.challenges(operation.offers, where)
      core.emitEvent({ type: 'challenge', path: call.path, route: call.route, challengeIds: challenges.map((challenge) => challenge.id) })
      const detail = paymentRequiredDetail(operation.target, operation.offers, `_meta["${credentialMetaKey}"]`)
      const problem = new PaymentError('payment-required', detail).toProblem(challenges[0]!.id)
      return jsonResponse(
        rpcError(id, paymentRequiredCode, 'Payment Required', { httpStatus: 402, challenges: challengeObjects(operation, where.realm, challenges), problem }),
      )
    }
    const request: PaidRequest<Response> = {
      offers: operation.offers,
      pricing: operation.pricing,
      where,
      subject: operation.target,
      path: call.path,
      route: call.route,
      run: async (payment) => {
        const outcome = await runOperation(c, id, payment, next)
        handled = outcome.result
        return outcome
      },
      ...idempotency(c, id, message),
    }
    // A Payment credential in _meta, or (none there) an API key of a configured scheme.
    const credential = keyed ? undefined : parseMetaCredential(metaCredential)
    const delivery = credential ? await core.pay(credential, request) : await core.payWithToken(keyed!.scheme, keyed!.token, request)
    c.res = undefined
    c.res = delivery.result
    // A scheme's receipt goes only with a result that succeeded; a Payment receipt names its challenge.
    const receipt = credential ? delivery.receipt : delivery.succeeded ? delivery.receipt : undefined
    if (receipt) {
      const paid: McpReceipt | Receipt = credential ? { ...receipt, challengeId: credential.challenge.id } : receipt
      let delivered: string | undefined
      await rewriteResult(c, id, (result) => {
        result._meta = { ...(isObject(result._meta) ? result._meta : {}), [receiptMetaKey]: paid }
        delivered = JSON.stringify(result)
      })
      // Kept as delivered, receipt included, before the answer leaves, for a retry with the same Idempotency-Key.
      if (delivery.keep && delivered !== undefined && delivered.length <= defaultMaxReplayBytes)
        await delivery.keep({ result: JSON.parse(delivered), call: callDigest(message) } satisfies KeptCall).catch(() => {})
    }
    return
  } catch (error) {
    const response = answerRefusal(call, error, operation, where.realm)
    if (handled) {
      // The operation ran (settle: 'after', or an API key) but could not be charged: its answer is withheld.
      c.res = undefined
      c.res = response
      return
    }
    return response
  }
}

/** Runs the operation's handler; a JSON-RPC error or an `isError` result is not a success. */
async function runOperation(c: Context, id: JsonRpcId, payment: PaymentInfo, next: () => Promise<void>) {
  c.set('payment', payment)
  await next()
  const text = await c.res.text()
  const handled = new Response(text, c.res)
  handled.headers.delete('content-length')
  const succeeded = messagesIn(text, c.res.headers.get('content-type')).some((m) => m.id === id && isObject(m.result) && m.result.isError !== true)
  return { succeeded, result: handled, failure: 'the operation answered with an error' }
}

/** A paid answer kept for an idempotent retry, with the call it answered. */
type KeptCall = { result: unknown; call?: string }

/**
 * What a call asks, for telling a retry from another call under the same Idempotency-Key: its
 * method and params (arguments included), without `_meta` (the credential, a progress token).
 */
function callDigest(message: Message): string {
  let params = message.params ?? null
  if (isObject(params)) {
    const { _meta: _, ...rest } = params
    params = rest
  }
  let text: string
  try {
    text = canonicalize({ method: message.method, params })
  } catch {
    // Not JCS-serialisable (a number out of range): its JSON text names the call as well.
    text = JSON.stringify({ method: message.method, params })
  }
  return base64url(sha256(utf8(text)))
}

/**
 * `Idempotency-Key` on the POST (C10): a retry of the same credential with the same key gets the
 * paid result again, under the retry's JSON-RPC id, instead of "already used". The key names one
 * call: the same operation with other arguments is refused, not given the first call's result.
 */
function idempotency(c: Context, id: JsonRpcId, message: Message): Pick<PaidRequest<Response>, 'idempotencyKey' | 'replay'> {
  const key = idempotencyKeyOf(c)
  if (key === undefined) return {}
  return {
    idempotencyKey: key,
    replay: {
      restore(answer) {
        const kept = answer as KeptCall
        // Kept without its call (before this check existed): served as it was.
        if (kept.call !== undefined && kept.call !== callDigest(message))
          throw new PaymentError(
            'bad-request',
            'this Idempotency-Key was already used for another call (other arguments); a retry must repeat the call exactly, a new call needs a new key',
          )
        const response = jsonResponse({ jsonrpc: '2.0', id, result: kept.result })
        response.headers.set('Idempotent-Replayed', 'true')
        return response
      },
    },
  }
}

/** A refusal as a JSON-RPC error, with fresh challenges where the protocol wants them. */
function answerRefusal(call: Call, error: unknown, operation: Operation | undefined, realm?: string): Response {
  const refusal = refusalOf(error)
  if (refusal instanceof PriceError) {
    call.core.emitEvent({ type: 'error', path: call.path, route: call.route, detail: refusal.shortMessage, error: refusal })
    return jsonResponse(
      rpcError(call.id, internalErrorCode, 'Internal error', { httpStatus: 500, detail: `this operation's price is misconfigured: ${refusal.shortMessage}` }),
    )
  }
  const challenges =
    refusal.wantsChallenge && operation && realm ? call.core.challenges(operation.offers, { realm, target: operation.target, digest: undefined }) : []
  call.core.emitEvent({
    type: 'rejected',
    path: call.path,
    route: call.route,
    reason: refusal.kind,
    detail: refusal.detail,
    status: refusal.status,
    ...(challenges[0] && { challengeId: challenges[0].id }),
  })
  const invalidParams = refusal.kind === 'malformed-credential' || refusal.kind === 'bad-request'
  return jsonResponse(
    rpcError(call.id, codeOf(refusal), invalidParams ? 'Invalid params' : refusal.toProblem().title, {
      httpStatus: refusal.status,
      challenges: operation && realm ? challengeObjects(operation, realm, challenges) : [],
      problem: refusal.toProblem(challenges[0]?.id),
      detail: refusal.detail,
      ...(refusal.retryAfter !== undefined && { retryAfter: refusal.retryAfter }),
    }),
  )
}

/** The members of a JSON-RPC request (and `_meta`, where a credential may travel). */
const requestMembers = new Set(['jsonrpc', 'id', 'method', 'params', '_meta'])

/**
 * Why a priced call is not a JSON-RPC 2.0 request an MCP server would run (as the MCP SDK reads
 * one: `jsonrpc: "2.0"`, an id that is a string or an integer, no other members), or undefined.
 * Such a call is refused before it is charged: paid, it would be answered with a parse error.
 */
function envelopeFault(message: Message): string | undefined {
  if (message.jsonrpc !== '2.0') return 'a priced call must be a JSON-RPC 2.0 request, with jsonrpc: "2.0"'
  const id = message.id
  if (!(typeof id === 'string' || (typeof id === 'number' && Number.isInteger(id))))
    return `a priced call needs an id that is a string or an integer (got ${id === null ? 'null' : typeof id === 'number' ? 'a fraction' : `a${Array.isArray(id) ? 'n array' : ` ${typeof id}`}`}), to be answered with its result and receipt`
  const extra = Object.keys(message).filter((member) => !requestMembers.has(member))
  if (extra.length > 0)
    return `a priced call is {jsonrpc, id, method, params}; this one also has ${extra
      .slice(0, 5)
      .map((member) => JSON.stringify(member.slice(0, 40)))
      .join(', ')}, which JSON-RPC does not define`
  return undefined
}

/** -32600 for a priced call that is not a valid request: nothing is charged, the handler does not run. */
function refuseEnvelope(c: Context, core: PaymentCore, message: Message, fault: string): Response {
  const error = new PaymentError('bad-request', fault)
  core.emitEvent({ type: 'rejected', path: c.req.path, route: routeOf(c), reason: error.kind, detail: error.detail, status: error.status })
  const id = typeof message.id === 'string' || (typeof message.id === 'number' && Number.isInteger(message.id)) ? message.id : null
  return jsonResponse(
    rpcError(id, invalidRequestCode, 'Invalid Request', { httpStatus: error.status, challenges: [], problem: error.toProblem(), detail: error.detail }),
  )
}

/** A batch cannot carry one credential per call nor one receipt per result: one with a priced (or invalid) call is refused whole. */
function refuseBatch(c: Context, batch: unknown[], classify: ReturnType<typeof priceTables>['classify'], next: () => Promise<void>): Promise<void> | Response {
  const found = batch.map((message) => classify(message as Message)).filter((item) => item !== undefined)
  if (found.length === 0) return next()
  const priced = found.flatMap((item) => ('operation' in item ? [item.operation.target] : []))
  const invalid = found.flatMap((item) => ('invalid' in item ? [item.invalid] : []))
  const detail = [
    priced.length > 0 &&
      `this batch contains ${priced.length} priced operation(s) (${priced.join(', ')}); priced MCP operations cannot be batched, send each as its own request`,
    invalid.length > 0 && `this batch contains ${invalid.length} call(s) with invalid params (${invalid.join('; ')})`,
  ]
    .filter(Boolean)
    .join('; ')
  const answers = batch
    .filter((message) => isObject(message) && 'id' in message && message.id !== undefined)
    .map((message) => rpcError((message as Message).id ?? null, invalidRequestCode, 'Invalid Request', { detail }))
  if (answers.length === 0) return c.body(null, 202)
  return jsonResponse(answers)
}

/** The challenges as JSON objects (`request` decoded), as the MCP transport carries them. */
function challengeObjects(operation: Operation, realm: string, issued: Issued[]): McpChallenge[] {
  return issued.map((challenge, index) => {
    const offer = operation.offers[index]!
    return {
      id: challenge.id,
      realm,
      method: offer.method,
      intent: offer.intent,
      request: offer.request,
      ...(operation.description !== undefined && { description: operation.description }),
      expires: challenge.expires,
      opaque: challenge.opaque,
    }
  })
}

/** Methods and intents for `capabilities.experimental.payment` in the initialize result. */
function advertisedMethods(core: PaymentCore, tables: McpPriceTables): Record<string, { intents: string[] }> {
  const advertised: Record<string, { intents: string[] }> = {}
  const add = (method: { name: string; intent: string }) => {
    const entry = advertised[method.name] ?? { intents: [] }
    advertised[method.name] = entry
    if (!entry.intents.includes(method.intent)) entry.intents.push(method.intent)
  }
  for (const table of [tables.tools, tables.resources, tables.prompts])
    for (const charge of Object.values(table ?? {})) for (const method of charge.methods ?? []) add(method)
  for (const method of core.methods) add(method)
  return advertised
}

function credentialIn(message: Message): unknown {
  const inParams = isObject(message.params) && isObject(message.params._meta) ? message.params._meta[credentialMetaKey] : undefined
  const atRoot = isObject(message._meta) ? message._meta[credentialMetaKey] : undefined
  if (inParams !== undefined && atRoot !== undefined && canonicalize(inParams) !== canonicalize(atRoot))
    throw new PaymentError('bad-request', 'the message carries two different credentials (in params._meta and in _meta); send exactly one')
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
  if (!isObject(request) && typeof request !== 'string') throw malformed('credential.challenge.request must be the JSON object of the challenge')
  const wire = { ...value, challenge: { ...challenge, request: typeof request === 'string' ? request : encodeJson(request) } }
  return parseCredential(base64url(JSON.stringify(wire)))
}

function codeOf(error: PaymentError): number {
  if (error.kind === 'malformed-credential' || error.kind === 'bad-request') return invalidParamsCode
  // A prepaid balance that does not cover the call: pay it by the challenges, or top up.
  if (error.kind === 'insufficient-balance') return paymentRequiredCode
  if (error.kind === 'payment-unavailable') return internalErrorCode
  return paymentVerificationFailedCode
}
