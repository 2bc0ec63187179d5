/**
 * The MCP price table: which `tools/call`, `resources/read` and `prompts/get` calls are priced,
 * found the way the MCP SDK resolves them (tools and prompts by exact name, resources by
 * canonical URL or uri template), so no spelling reaches a priced operation unpriced.
 */
import type { PaymentCore } from '../core/payments.js'
import type { Offer, PriceOptions, Pricing } from '../core/pricing.js'
import { ConfigurationError } from '../protocol/errors.js'
import { isObject, type Message } from './jsonrpc.js'
import type { McpPricedOperation } from './mcp-registry.js'
import { PricedResources } from './mcp-resources.js'

/** What one MCP operation (a tool, a resource, a prompt) charges. */
export type McpCharge = Omit<PriceOptions<never>, 'amount'> & {
  /** Decimal amount in the token's units, e.g. "0.01". */
  amount: string
}

/** The priced operations, by kind. */
export type McpPriceTables = {
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

type Priced = { pricing: Pricing<never>; offers: Offer[]; description: string | undefined }
/** A priced call: `target` (`tools/call summarize`, `resources/read <canonical uri>`) is what its challenges bind. */
export type Operation = Priced & { target: string }
/** What a message asks of the payment layer: nothing (free), a payment, or a refusal (`invalid` names why). */
export type Classified = { operation: Operation } | { invalid: string } | undefined

/** Which table prices a JSON-RPC method, and which `params` field names the operation. */
const pricedCalls = { 'tools/call': ['tools', 'name'], 'resources/read': ['resources', 'uri'], 'prompts/get': ['prompts', 'name'] } as const

/** Builds the price tables at construction; returns how to classify a message, and the priced operations (for discovery). */
export function priceTables(core: PaymentCore, tables: McpPriceTables): { classify: (message: Message) => Classified; operations: McpPricedOperation[] } {
  // Tools and prompts are found by exact name (a Map: no prototype keys), as the SDK finds them.
  const names = { tools: new Map<string, Priced>(), prompts: new Map<string, Priced>() }
  const resources = new PricedResources<Priced>()
  const operations: McpPricedOperation[] = []
  const kinds = { tools: 'tool', resources: 'resource', prompts: 'prompt' } as const
  for (const [table] of Object.values(pricedCalls)) {
    const priced = tables[table]
    if (priced === undefined) continue
    if (typeof priced !== 'object' || priced === null)
      throw new ConfigurationError(
        `mcpPayments: \`${table}\` maps ${table === 'resources' ? 'uris' : 'names'} to charges, e.g. { summarize: { amount: '0.01' } }.`,
      )
    for (const [name, charge] of Object.entries(priced)) {
      const where = `mcpPayments: ${table}["${name}"]`
      if (!charge || typeof charge.amount !== 'string')
        throw new ConfigurationError(`${where} needs an \`amount\`: a decimal string in token units such as "0.01".`)
      const pricing = core.price<never>(charge, where)
      const entry: Priced = { pricing, offers: pricing.staticOffers!, description: charge.description }
      operations.push({ kind: kinds[table], name, pricing })
      if (table === 'resources')
        try {
          resources.add(name, entry)
        } catch (error) {
          throw new ConfigurationError(`${where} ${(error as Error).message}.`)
        }
      else names[table].set(name, entry)
    }
  }

  /**
   * Prices a message as the MCP SDK would resolve it. Once a kind of operation has prices, a call
   * of that kind whose name or uri is not a string, or whose uri does not parse as a URL, is
   * refused rather than passed on: the handler must never resolve what the table could not.
   */
  return { classify, operations }
  function classify(message: Message): Classified {
    if (!isObject(message) || typeof message.method !== 'string' || !Object.hasOwn(pricedCalls, message.method)) return undefined
    const rpcMethod = message.method as keyof typeof pricedCalls
    const [table, field] = pricedCalls[rpcMethod]
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
