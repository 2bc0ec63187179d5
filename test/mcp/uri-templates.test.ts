/**
 * The uri-template matcher that prices `resources/read` against templates accepts exactly what
 * the MCP SDK's `UriTemplate.match` accepts, without its backtracking.
 */
import { UriTemplate } from '@modelcontextprotocol/sdk/shared/uriTemplate.js'
import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { matchesUriTemplate } from '../../src/transports/mcp-resources.js'

const expression = fc.constantFrom(
  '{id}',
  '{id*}',
  '{a,b}',
  '{+path}',
  '{#frag}',
  '{.ext}',
  '{/seg}',
  '{/seg*}',
  '{?q}',
  '{?q,r}',
  '{&k}',
  '{}',
  '{ x }',
  '{+a,b}',
)
const literal = fc.constantFrom('file:///', 'https://h/', 'a', 'b', '/', ',', '.', '?', '&', '=', '#', 'q', 'r', 'k', '\n', '%2F')
const template = fc.array(fc.oneof(expression, literal, literal), { minLength: 1, maxLength: 7 }).map((parts) => parts.join(''))
const uriPiece = fc.constantFrom('file:///', 'https://h/', 'a', 'b', '/', ',', '.', '?', '&', '=', '#', 'q=', 'r=', 'k=', '\n', '\u2028', '%2F', 'x')

describe('uri templates', () => {
  test('M1: the matcher agrees with the MCP SDK UriTemplate on random templates and uris (including uris expanded from the template)', () => {
    fc.assert(
      fc.property(
        template,
        fc.array(uriPiece, { maxLength: 10 }),
        fc.dictionary(fc.constantFrom('id', 'a', 'b', 'path', 'frag', 'ext', 'seg', 'q', 'r', 'k'), fc.string({ maxLength: 4 })),
        (t, pieces, values) => {
          const sdk = new UriTemplate(t)
          for (const uri of [pieces.join(''), sdk.expand(values)]) {
            let served: boolean
            try {
              served = sdk.match(uri) !== null
            } catch {
              // The SDK throws on a match of an empty expression `{}`: it serves nothing then, and
              // charging for it (our matcher says yes) costs the server nothing.
              continue
            }
            expect(matchesUriTemplate(t, uri)).toBe(served)
          }
        },
      ),
      { numRuns: 3000 },
    )
  })

  test('M1: adjacent expressions cost linear time on a long uri that does not match (no backtracking)', () => {
    const uri = `file:///${'a'.repeat(200_000)}`
    expect(matchesUriTemplate('file:///{a}{b}{c}{d}.pdf', uri)).toBe(false)
    expect(matchesUriTemplate('file:///{+a}x{+b}y{+c}z', uri)).toBe(false)
    expect(matchesUriTemplate('file:///{a}{b}{c}{d}', uri)).toBe(true)
  })
})
