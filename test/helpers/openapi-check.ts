/**
 * Checks of a discovery document: the draft's JSON Schema for x-payment-info and x-service-info
 * (encoded with zod) and OpenAPI 3.1's required structure.
 */
import type { OpenApiDocument } from 'hono-mpp/discovery'
import * as z from 'zod'

/** The draft's appendix "JSON Schema for x-payment-info", as zod (additionalProperties: false → strict). */
const offerSchema = z.strictObject({
  intent: z.enum(['charge', 'session']),
  method: z.string(),
  amount: z.union([z.null(), z.string().regex(/^(0|[1-9][0-9]*)$/)]),
  currency: z.string().optional(),
  description: z.string().optional(),
})
const paymentInfoSchema = z.union([offerSchema, z.strictObject({ offers: z.array(offerSchema).min(1) })])
/** The draft's "JSON Schema for x-service-info". */
const serviceInfoSchema = z.object({
  categories: z.array(z.string()).optional(),
  docs: z.object({ apiReference: z.url().optional(), homepage: z.url().optional(), llms: z.url().optional() }).optional(),
})

const operationMethods = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']

/** OpenAPI 3.1's required structure (no validator package is installed): what the spec makes REQUIRED, checked by hand. */
export function openApi31Problems(document: OpenApiDocument): string[] {
  const problems: string[] = []
  if (!/^3\.1\.\d+$/.test(document.openapi)) problems.push('openapi must be 3.1.x')
  if (typeof document.info?.title !== 'string' || typeof document.info?.version !== 'string') problems.push('info.title and info.version are required strings')
  for (const [path, item] of Object.entries(document.paths ?? {})) {
    if (!path.startsWith('/')) problems.push(`path ${path} must start with /`)
    for (const [method, operation] of Object.entries(item)) {
      if (!operationMethods.includes(method)) continue
      const op = operation as { responses?: Record<string, { description?: unknown }>; parameters?: { name: string; in: string; required?: boolean }[] }
      if (!op.responses || Object.keys(op.responses).length === 0) problems.push(`${method} ${path}: responses is required`)
      for (const [code, response] of Object.entries(op.responses ?? {}))
        if (typeof response.description !== 'string') problems.push(`${method} ${path}: response ${code} needs a description`)
      // Every templated path segment must be declared as a required path parameter.
      for (const [, name] of path.matchAll(/\{([^}]+)\}/g))
        if (!op.parameters?.some((p) => p.name === name && p.in === 'path' && p.required === true))
          problems.push(`${method} ${path}: path parameter ${name} is not declared (in: path, required: true)`)
      const paymentInfo = (op as Record<string, unknown>)['x-payment-info']
      if (paymentInfo !== undefined) {
        const checked = paymentInfoSchema.safeParse(paymentInfo)
        if (!checked.success) problems.push(`${method} ${path}: x-payment-info: ${checked.error.message}`)
        if (!op.responses?.['402']) problems.push(`${method} ${path}: a payable operation must declare a 402 response`)
      }
    }
  }
  if (document['x-service-info'] !== undefined && !serviceInfoSchema.safeParse(document['x-service-info']).success) problems.push('x-service-info')
  return problems
}
