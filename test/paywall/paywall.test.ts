/**
 * The paywall's server side (hono-mpp/paywall) through a real mpp() app: browsers get the page,
 * every other client the problem JSON exactly as without the paywall, and nothing a route or a
 * request puts into the page can break out of its script element.
 */
import { Hono } from 'hono'
import { mpp } from 'hono-mpp'
import { paywall, scriptJson, wantsHtml } from 'hono-mpp/paywall'
import { tempo } from 'hono-mpp/tempo'
import { describe, expect, test } from 'vitest'

const secret = 'paywall-unit-test-secret-0123456789abcdef-0123'
const recipient = '0x00000000000000000000000000000000000000aa'
const method = tempo({ rpcUrl: 'http://127.0.0.1:1', chainId: 31337, recipient })

function apps(description = 'The paid article') {
  const make = (withPaywall: boolean) => {
    const pay = mpp({ secret, methods: [method], ...(withPaywall && { unpaidResponse: paywall() }) })
    const app = new Hono()
    app.get('/article', pay.charge({ amount: '0.01', description }), (c) => c.text('paid'))
    return app
  }
  return { plain: make(false), walled: make(true) }
}

const withoutId = (body: string) => body.replace(/"challengeId":"[^"]+"/, '')

describe('paywall: who gets the page', () => {
  test.each([
    ['no Accept', undefined],
    ['application/json', 'application/json'],
    ['*/*', '*/*'],
    ['text/html;q=0', 'text/html;q=0, application/json'],
  ])('%s: the problem JSON, exactly as without the paywall', async (_name, accept) => {
    const { plain, walled } = apps()
    const headers = accept ? { accept } : undefined
    const [a, b] = await Promise.all([plain.request('http://shop.test/article', { headers }), walled.request('http://shop.test/article', { headers })])
    expect(b.status).toBe(402)
    expect(b.headers.get('content-type')).toBe(a.headers.get('content-type'))
    expect(b.headers.get('content-type')).toBe('application/problem+json')
    expect(withoutId(await b.text())).toBe(withoutId(await a.text()))
  })

  test('a browser: the HTML page, with the 402, the challenges and no-store kept', async () => {
    const { walled } = apps()
    const response = await walled.request('http://shop.test/article', { headers: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } })
    expect(response.status).toBe(402)
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8')
    expect(response.headers.get('cache-control')).toBe('no-store')
    const header = response.headers.get('www-authenticate') ?? ''
    expect(header).toMatch(/^Payment /)
    const html = await response.text()
    expect(html).toContain('<title>The paid article</title>')
    const data = JSON.parse(html.match(/<script id="mpp-data" type="application\/json">(.*?)<\/script>/)![1]!) as {
      offer: { challenge: { id: string }; amount: string; data: string }
    }
    expect(header).toContain(`id="${data.offer.challenge.id}"`)
    expect(data.offer.amount).toBe('10000')
    // transferWithMemo(recipient, 10000, memo)
    expect(data.offer.data.slice(0, 10 + 128)).toBe(`0x95777d59${'0'.repeat(24)}${recipient.slice(2)}${(10000).toString(16).padStart(64, '0')}`)
  })

  test('a description with markup cannot break out of the page', async () => {
    const { walled } = apps('</script><script>alert(1)</script>\u2028&amp;')
    const html = await (await walled.request('http://shop.test/article', { headers: { accept: 'text/html' } })).text()
    expect(html.match(/<script/g)).toHaveLength(2)
    const json = html.match(/<script id="mpp-data" type="application\/json">(.*?)<\/script>/s)![1]!
    expect(json).not.toMatch(/[<>\u2028\u2029]/)
    expect((JSON.parse(json) as { offer: { description: string } }).offer.description).toBe('</script><script>alert(1)</script>\u2028&amp;')
    expect(html).toContain('<title>&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;')
  })

  test('scriptJson and wantsHtml', () => {
    expect(scriptJson({ a: '</script>&\u2029' })).toBe('{"a":"\\u003c/script\\u003e\\u0026\\u2029"}')
    expect(JSON.parse(scriptJson({ a: '</script>&\u2029' }))).toEqual({ a: '</script>&\u2029' })
    expect(wantsHtml('text/html')).toBe(true)
    expect(wantsHtml('application/json, text/html;q=0.5')).toBe(true)
    expect(wantsHtml('text/html;q=0')).toBe(false)
    expect(wantsHtml('text/htmlx')).toBe(false)
    expect(wantsHtml(undefined)).toBe(false)
  })
})
