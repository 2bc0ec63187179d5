/**
 * What a registry knows of a route handler, also through Hono's wrapping: app.route() of a
 * sub-app with its own onError wraps each of its handlers and keeps the original under the
 * "__COMPOSED_HANDLER" key (what hono/dev's inspectRoutes reads too).
 */
export function registered<T>(registry: WeakMap<object, T>, handler: unknown): T | undefined {
  for (let depth = 0; typeof handler === 'function' && depth < 8; depth++) {
    const found = registry.get(handler)
    if (found !== undefined) return found
    handler = (handler as { __COMPOSED_HANDLER?: unknown }).__COMPOSED_HANDLER
  }
  return undefined
}
