/**
 * The results: a table on the terminal, `docs/benchmarks.md` and a hand-drawn SVG bar chart
 * (`docs/benchmarks.svg`) of every result against its target.
 */

export type Row = {
  name: string
  value: string
  baseline: string
  /** value ÷ baseline, when a ratio is the result. */
  ratio: string
  target: string
  /** undefined: not measured in this run (or, with target '—', a measurement without a target). */
  pass: boolean | undefined
  /** Distance to the target in the good direction: ≥ 1 meets it (ours). */
  score?: number
  /** The same score for mppx/hono, where the target applies to it too. */
  referenceScore?: number
  /** Short label for the chart. */
  label: string
  /** What the chart writes at the end of our bar (default: value and ratio). */
  chartText?: string
}

export type Machine = { cpus: number; cpu: string; node: string; date: string; loadBefore: string; loadAfter: string }

const verdict = (r: Row) => (r.pass === undefined ? (r.target === '—' ? 'measured' : 'not run') : r.pass ? 'pass' : 'MISS')

export function printTable(rows: readonly Row[]): string {
  const header = ['benchmark', 'value', 'baseline', 'ratio', 'target', 'result']
  const cells = rows.map((r) => [r.name, r.value, r.baseline, r.ratio, r.target, verdict(r)])
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)))
  const line = (c: readonly string[]) => c.map((v, i) => v.padEnd(widths[i]!)).join('  ')
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n')
}

export function markdownTable(rows: readonly Row[]): string {
  const esc = (v: string) => v.replace(/\|/g, '\\|')
  return [
    '| benchmark | value | baseline | ratio | target | result |',
    '|---|---:|---:|---:|---|---|',
    ...rows.map(
      (r) =>
        `| ${esc(r.name)} | ${esc(r.value)} | ${esc(r.baseline)} | ${esc(r.ratio)} | ${esc(r.target)} | ${r.pass === undefined ? (r.target === '—' ? 'measured' : 'not run') : r.pass ? '✅ pass' : '❌ miss'} |`,
    ),
  ].join('\n')
}

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

/**
 * One row per benchmark: a bar for ours and a thin grey one for mppx/hono, on a log scale of
 * "how far past the target" (right of the line meets it).
 */
export function chart(rows: readonly Row[], title: string): string {
  const shown = rows.filter((r) => r.score !== undefined)
  const labelWidth = 300
  const plotWidth = 460
  const rowHeight = 46
  const top = 64
  const left = labelWidth + 10
  const height = top + shown.length * rowHeight + 56
  const width = left + plotWidth + 150
  const min = Math.log2(1 / 16)
  const max = Math.log2(16)
  const x = (score: number) => left + ((Math.min(Math.max(Math.log2(score), min), max) - min) / (max - min)) * plotWidth
  const x0 = x(1 / 16)
  const out: string[] = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="13">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="12" y="24" font-size="16" font-weight="600">${xml(title)}</text>`,
    `<text x="12" y="44" fill="#555">Each result against its target (log scale). Right of the dashed line = target met. Solid: hono-mpp. Grey: mppx/hono.</text>`,
  )
  for (const tick of [1 / 16, 1 / 4, 1, 4, 16]) {
    const tx = x(tick)
    out.push(
      `<line x1="${tx}" y1="${top - 6}" x2="${tx}" y2="${top + shown.length * rowHeight}" stroke="${tick === 1 ? '#222' : '#ddd'}" ${tick === 1 ? 'stroke-dasharray="5 4" stroke-width="1.5"' : ''}/>`,
      `<text x="${tx}" y="${top + shown.length * rowHeight + 18}" text-anchor="middle" fill="#555">${tick === 1 ? 'target' : tick < 1 ? `1/${1 / tick}×` : `${tick}×`}</text>`,
    )
  }
  out.push(`<text x="${left + plotWidth / 2}" y="${top + shown.length * rowHeight + 38}" text-anchor="middle" fill="#555">how far past the target (×)</text>`)
  shown.forEach((row, i) => {
    const y = top + i * rowHeight
    const score = row.score!
    const color = score >= 1 ? '#2e9d57' : '#d1453b'
    out.push(
      `<text x="${labelWidth}" y="${y + 17}" text-anchor="end">${xml(row.label)}</text>`,
      `<text x="${labelWidth}" y="${y + 33}" text-anchor="end" fill="#777" font-size="11">target ${xml(row.target)}</text>`,
      `<rect x="${x0}" y="${y + 6}" width="${Math.max(1, x(score) - x0)}" height="16" fill="${color}"/>`,
      `<text x="${x(score) + 6}" y="${y + 19}" fill="#222">${xml(row.chartText ?? `${row.value}${row.ratio !== '—' ? ` (${row.ratio})` : ''}`)}</text>`,
    )
    if (row.referenceScore !== undefined)
      out.push(
        `<rect x="${x0}" y="${y + 26}" width="${Math.max(1, x(row.referenceScore) - x0)}" height="7" fill="#b9b9b9"/>`,
        `<text x="${x(row.referenceScore) + 6}" y="${y + 34}" fill="#888" font-size="11">mppx/hono</text>`,
      )
  })
  out.push('</svg>')
  return `${out.join('\n')}\n`
}
