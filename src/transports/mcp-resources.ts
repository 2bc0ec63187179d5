/**
 * Which priced resource a `resources/read` uri names, resolved the way the MCP SDK's McpServer
 * resolves it: the uri goes through the WHATWG URL parser (`new URL(uri).href`) and is then
 * looked up among the registered uris, then matched against the registered uri templates. So
 * every spelling the parser folds together (`FILE:`, dot segments, `file://localhost/`,
 * whitespace, default ports, upper-case hosts, backslashes, ...) names the same priced entry.
 */

/** A priced entry found for a uri: its value and the uri the payment is bound to. */
export type ResourceMatch<T> = { value: T; uri: string }

/** `new URL(uri).href`, what the MCP SDK looks a resource up by; undefined when it does not parse. */
function canonicalUri(uri: string): string | undefined {
  try {
    return new URL(uri).href
  } catch {
    return undefined
  }
}

/**
 * A looser key than the canonical href: without its fragment and with its percent-escapes
 * decoded. A handler (or a template callback) that decodes what it is given serves `%31` as `1`;
 * comparing these keys too charges such spellings rather than serving them free.
 */
function looseKey(href: string): string {
  const hash = href.indexOf('#')
  const withoutFragment = hash === -1 ? href : href.slice(0, hash)
  return withoutFragment.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
    try {
      return decodeURIComponent(run)
    } catch {
      return run
    }
  })
}

/** One `{...}` expression of a uri template, in the SDK's reading of RFC 6570. */
type Expression = { operator: string; names: string[]; exploded: boolean }

const operators = ['+', '#', '.', '/', '?', '&']

function parseExpression(text: string): Expression {
  const operator = operators.includes(text[0] ?? '') ? text[0]! : ''
  const names = text
    .slice(operator.length)
    .split(',')
    .map((name) => name.replace('*', '').trim())
    .filter((name) => name.length > 0)
  return { operator, names, exploded: text.includes('*') }
}

/**
 * One step of a template's pattern: a literal code unit; one or more code units that `test`
 * accepts; or (`list`, an exploded variable) one or more code units other than `/` and `,`,
 * optionally followed by more such runs each after one `,`.
 */
type Token = { kind: 'char'; char: string } | { kind: 'plus'; test: (unit: string) => boolean } | { kind: 'list'; test: (unit: string) => boolean }

const segmentUnit = (unit: string) => unit !== '/' && unit !== ','
const queryUnit = (unit: string) => unit !== '&'
// What `.` matches in a JavaScript RegExp without the `s` flag.
const anyUnit = (unit: string) => unit !== '\n' && unit !== '\r' && unit !== '\u2028' && unit !== '\u2029'
const chars = (text: string): Token[] => Array.from(text.split(''), (char) => ({ kind: 'char', char }))

/**
 * What a single expression matches: the language of the SDK's UriTemplate pattern for it
 * (`[^/,]+` for `{id}`, `.+` for `{+path}` and `{#frag}`, `/[^/,]+` for `{/seg}`, `\.[^/,]+`
 * for `{.ext}`, `?name=[^&]+&...` for `{?a,b}`, with `,`-separated runs when exploded `*`).
 */
function expressionTokens({ operator, names, exploded }: Expression): Token[] {
  const segment: Token = exploded ? { kind: 'list', test: segmentUnit } : { kind: 'plus', test: segmentUnit }
  switch (operator) {
    case '?':
    case '&':
      return names.flatMap((name, i) => [...chars(`${i === 0 ? operator : '&'}${name}=`), { kind: 'plus', test: queryUnit } as Token])
    case '+':
    case '#':
      return [{ kind: 'plus', test: anyUnit }]
    case '.':
      return [...chars('.'), { kind: 'plus', test: segmentUnit }]
    case '/':
      return [...chars('/'), segment]
    default:
      return [segment]
  }
}

/**
 * Whether `input` matches the whole token sequence. A simulation of all the ways at once (state
 * `2i` = at the start of token i, `2i + 1` = inside repeating token i having taken at least one
 * unit), so a uri costs time linear in its length whatever the template: no backtracking.
 */
function matchesTokens(tokens: Token[], input: string): boolean {
  const end = 2 * tokens.length
  const mark = new Uint32Array(end + 1)
  let generation = 1
  let current: number[] = []
  let next: number[] = []
  const add = (list: number[], state: number) => {
    if (mark[state] === generation) return
    mark[state] = generation
    list.push(state)
    // Inside a repeating token, it may also end here.
    if (state % 2 === 1) add(list, state + 1)
  }
  add(current, 0)
  for (let at = 0; at < input.length; at++) {
    const unit = input[at]!
    generation++
    next.length = 0
    for (const state of current) {
      if (state === end) continue
      const token = tokens[state >> 1]!
      if (token.kind === 'char') {
        if (unit === token.char) add(next, state + 2)
      } else if (token.test(unit)) add(next, state | 1)
      else if (token.kind === 'list' && state % 2 === 1 && unit === ',') add(next, state - 1)
    }
    if (next.length === 0) return false
    ;[current, next] = [next, current]
  }
  return current.includes(end)
}

/** Splits a template into literal text and `{...}` expressions; throws on an unclosed `{`. */
function splitTemplate(template: string): (string | { expression: string })[] {
  const parts: (string | { expression: string })[] = []
  let at = 0
  while (at < template.length) {
    const open = template.indexOf('{', at)
    if (open === -1) {
      parts.push(template.slice(at))
      break
    }
    if (open > at) parts.push(template.slice(at, open))
    const close = template.indexOf('}', open)
    if (close === -1) throw new Error('has an unclosed `{` expression')
    parts.push({ expression: template.slice(open + 1, close) })
    at = close + 1
  }
  return parts
}

/**
 * Whether `uri` matches `template` as the MCP SDK's `UriTemplate.match` would (not null), in
 * linear time. The template is taken as written (`PricedResources` also tries its canonical form).
 */
export function matchesUriTemplate(template: string, uri: string): boolean {
  return matchesTokens(templateTokens(splitTemplate(template)), uri)
}

/**
 * The template with its literal text in canonical URL form (`FILE:` → `file:`, dot segments
 * resolved, `%20` for a space, ...), so that it lines up with the canonical uris it is matched
 * against; undefined when that cannot be done (an expression in the port, or removed by a dot
 * segment). Each expression is swapped for a marker, the result is parsed, and the expressions
 * are put back where their markers landed.
 */
function canonicalTemplate(parts: (string | { expression: string })[]): string | undefined {
  // Lower-case letters and digits, not numeric, absent from the template, ending in `y` so that
  // no marker's tail and the next text can spell another: no URL component changes them.
  const text = parts
    .map((part) => (typeof part === 'string' ? part : `{${part.expression}}`))
    .join('')
    .toLowerCase()
  let nonce = 'zqv'
  while (text.includes(nonce)) nonce += 'q'
  const marker = (i: number) => `${nonce}${i}y`
  let index = 0
  const marked = parts.map((part) => (typeof part === 'string' ? part : marker(index++))).join('')
  const href = canonicalUri(marked)
  if (href === undefined) return undefined
  let result = href
  index = 0
  for (const part of parts) {
    if (typeof part === 'string') continue
    const m = marker(index++)
    const at = result.indexOf(m)
    if (at === -1 || result.indexOf(m, at + 1) !== -1) return undefined
    result = `${result.slice(0, at)}{${part.expression}}${result.slice(at + m.length)}`
  }
  return result
}

function templateTokens(parts: (string | { expression: string })[]): Token[] {
  return parts.flatMap((part) => (typeof part === 'string' ? chars(part) : expressionTokens(parseExpression(part.expression))))
}

/**
 * The priced resources: literal uris and uri templates (a key containing `{` is a template, as
 * `file:///reports/{id}`). Uris are put in canonical form when added, templates are kept as
 * written and in canonical form; lookups take the raw `params.uri`.
 */
export class PricedResources<T> {
  private readonly exact = new Map<string, { key: string; value: T }>()
  private readonly loose = new Map<string, { key: string; href: string; value: T }>()
  /** Each template as written (what the SDK matches) and, when it differs, in canonical form. */
  private readonly templates: { key: string; forms: string[]; tokens: Token[][]; value: T }[] = []

  get size(): number {
    return this.exact.size + this.templates.length
  }

  /**
   * Adds a priced key. Throws an Error whose message says what is wrong with the key (the
   * caller prefixes where it was found).
   */
  add(key: string, value: T): void {
    if (key.includes('{')) {
      this.addTemplate(key, value)
      return
    }
    const href = canonicalUri(key)
    if (href === undefined)
      throw new Error(
        'is not an absolute URL: the MCP SDK resolves resources/read by its WHATWG URL (`new URL(uri).href`), so a priced uri must parse, e.g. "file:///report.pdf"',
      )
    const same = this.exact.get(href)
    if (same) throw new Error(`names the same resource as "${same.key}" (both are ${href}); price it once`)
    const loose = looseKey(href)
    const near = this.loose.get(loose)
    if (near) throw new Error(`and "${near.key}" differ only by percent-encoding or a fragment, which a handler may read as the same resource; price it once`)
    this.exact.set(href, { key, value })
    this.loose.set(loose, { key, href, value })
  }

  private addTemplate(key: string, value: T): void {
    let parts: (string | { expression: string })[]
    try {
      parts = splitTemplate(key)
    } catch (error) {
      throw new Error(`is a uri template (it contains \`{\`) that ${(error as Error).message}`)
    }
    const canonical = canonicalTemplate(parts)
    const forms = canonical === undefined || canonical === key ? [key] : [key, canonical]
    const same = this.templates.find((t) => t.forms.some((form) => forms.includes(form)))
    if (same) throw new Error(`is the same template as "${same.key}" (${forms.at(-1)}); price it once`)
    this.templates.push({ key, forms, tokens: forms.map((form) => templateTokens(splitTemplate(form))), value })
  }

  /**
   * The priced entry `uri` names, `undefined` when it names none, `null` when it does not parse
   * (the SDK could not resolve it either; the caller refuses it).
   *
   * Order, as the SDK's: the canonical href as an exact uri, then against the templates (in the
   * order they were added); then the same with its loose key.
   */
  find(uri: string): ResourceMatch<T> | undefined | null {
    const href = canonicalUri(uri)
    if (href === undefined) return null
    const exact = this.exact.get(href)
    if (exact) return { value: exact.value, uri: href }
    const template = this.templates.find((t) => t.tokens.some((tokens) => matchesTokens(tokens, href)))
    if (template) return { value: template.value, uri: href }
    const loose = looseKey(href)
    const near = this.loose.get(loose)
    if (near) return { value: near.value, uri: near.href }
    const looseTemplate = this.templates.find((t) => t.tokens.some((tokens) => matchesTokens(tokens, loose)))
    if (looseTemplate) return { value: looseTemplate.value, uri: href }
    return undefined
  }
}
