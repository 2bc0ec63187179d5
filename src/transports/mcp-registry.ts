/**
 * What each `mcpPayments()` middleware prices, kept beside it so that hono-mpp/discovery can
 * describe the MCP operations an app sells from the same tables that issue their challenges,
 * without importing the MCP transport.
 */
import type { Pricing } from '../core/pricing.js'
import { registered } from './handlers.js'

/** One priced MCP operation: a tool or prompt by name, a resource by uri or uri template. */
export type McpPricedOperation = { kind: 'tool' | 'resource' | 'prompt'; name: string; pricing: Pricing<never> }

const priced = new WeakMap<object, readonly McpPricedOperation[]>()

export function registerMcpOperations(handler: object, operations: readonly McpPricedOperation[]): void {
  priced.set(handler, operations)
}

/** The priced operations of a handler `mcpPayments()` returned (undefined for any other handler). */
export function mcpOperationsOfHandler(handler: unknown): readonly McpPricedOperation[] | undefined {
  return registered(priced, handler)
}
