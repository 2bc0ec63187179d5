/**
 * A strict RFC 3339 (§5.6) `date-time` parser: `expires` is compared against the clock, so only
 * the one format the scheme names is read, with its ranges checked. `Date.parse` is not used: it
 * also reads date-only and local-time forms, six-digit years and free text such as
 * `Jan 1 2099 (anything)`.
 */

const dateTime = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/

function daysIn(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31
}

/**
 * The instant of an RFC 3339 `date-time` (full date, `T`, full time with `Z` or a numeric
 * offset; `t`/`z` in lower case as §5.6 allows), in milliseconds since the epoch, or undefined
 * when `text` is anything else or out of range (month 13, February 30, hour 24, offset +24:00).
 * A leap second (`:60`) counts as the next second.
 */
export function parseRfc3339(text: string): number | undefined {
  const match = dateTime.exec(text)
  if (!match) return undefined
  const [, y, mo, d, h, mi, s, fraction, sign, offsetHours, offsetMinutes] = match
  const year = Number(y)
  const month = Number(mo)
  const day = Number(d)
  const hour = Number(h)
  const minute = Number(mi)
  const second = Number(s)
  if (month < 1 || month > 12 || day < 1 || day > daysIn(year, month)) return undefined
  if (hour > 23 || minute > 59 || second > 60) return undefined
  let offset = 0
  if (sign !== undefined) {
    const oh = Number(offsetHours)
    const om = Number(offsetMinutes)
    if (oh > 23 || om > 59) return undefined
    offset = (sign === '+' ? 1 : -1) * (oh * 60 + om)
  }
  const date = new Date(0)
  // setUTCFullYear, not Date.UTC: the latter reads years 0 to 99 as 1900 to 1999.
  date.setUTCFullYear(year, month - 1, day)
  date.setUTCHours(hour, minute - offset, second, fraction === undefined ? 0 : Math.floor(Number(`0${fraction}`) * 1000))
  return date.getTime()
}
