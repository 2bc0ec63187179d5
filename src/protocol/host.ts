/**
 * The syntax of a `Host` value (RFC 9110 §7.2: `uri-host [ ":" port ]`, RFC 3986 §3.2.2): a
 * realm taken from the request's Host is HMAC-bound into challenges and echoed in headers, so
 * it must be a real host, not whatever bytes a runtime let through.
 */

// reg-name = *( unreserved / pct-encoded / sub-delims ), non-empty here; an IPv4 address is one.
const regName = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+$/
const ipvFuture = /^[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+$/
const hex16 = /^[0-9A-Fa-f]{1,4}$/
const ipv4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/
const port = /^[0-9]{1,5}$/

/** RFC 3986 IPv6address: eight 16-bit groups, one `::` for a run of zeros, an IPv4 tail allowed. */
function isIpv6(text: string): boolean {
  const halves = text.split('::')
  if (halves.length > 2) return false
  const groups = halves.map((half) => (half === '' ? [] : half.split(':')))
  const all = groups.flat()
  let count = 0
  for (let i = 0; i < all.length; i++) {
    const group = all[i]!
    if (i === all.length - 1 && group.includes('.')) {
      if (!ipv4.test(group)) return false
      count += 2
    } else if (hex16.test(group)) count++
    else return false
  }
  return halves.length === 2 ? count <= 7 : count === 8
}

/** Whether `value` is `host[:port]`: a reg-name (IPv4 included) or an IP-literal, then 1 to 5 port digits. */
function isHostHeader(value: string): boolean {
  let host = value
  if (value.startsWith('[')) {
    const close = value.indexOf(']')
    if (close === -1) return false
    const rest = value.slice(close + 1)
    if (rest !== '' && !(rest[0] === ':' && port.test(rest.slice(1)))) return false
    host = value.slice(1, close)
    return isIpv6(host) || ipvFuture.test(host)
  }
  const colon = value.lastIndexOf(':')
  if (colon !== -1) {
    if (!port.test(value.slice(colon + 1))) return false
    host = value.slice(0, colon)
  }
  return regName.test(host)
}

// The last host found valid: most requests repeat it, and a string compare is cheaper than the check.
let lastValid: string | undefined

/**
 * The host a request addressed, as a realm: its Host header, else (without one, or with an empty
 * one) its URL's host; undefined when that is not a valid `host[:port]`.
 */
export function requestHost(header: string | undefined, url: string): string | undefined {
  let host = header
  if (!host) {
    const start = url.indexOf('//') + 2
    const end = url.indexOf('/', start)
    host = url.slice(start, end === -1 ? undefined : end)
  }
  if (host === lastValid) return host
  if (!isHostHeader(host)) return undefined
  lastValid = host
  return host
}

/** The `detail` of the 400 answering a request whose host is not valid. */
export function invalidHost(header: string | undefined): string {
  return `the ${header ? 'Host header' : "request URL's host"} is not a valid host[:port] (an RFC 3986 reg-name, IPv4 address or IP-literal, then an optional port), so no payment challenge can be bound to it`
}
