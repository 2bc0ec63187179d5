/**
 * 5. Memory store footprint: one million settled claims under realistic keys
 * (`tempo:tx:0x<64 hex>`), measured as the heap and RSS growth after a full GC. Runs in its own
 * process with `--expose-gc` (forked by bench/run.ts) and prints one JSON line.
 */
import { randomBytes } from 'node:crypto'
import { memoryStore } from '../src/stores/memory.js'

const count = Number(process.env.BENCH_CLAIMS ?? 1_000_000)
const gc = (globalThis as { gc?: () => void }).gc
if (!gc) throw new Error('bench/memory.ts needs node --expose-gc')

const settle = () => {
  for (let i = 0; i < 3; i++) gc()
}

// Keys are made in batches from one random buffer, as hex strings the store alone holds.
const keyBatch = (n: number): string[] => {
  const bytes = randomBytes(32 * n).toString('hex')
  const keys: string[] = new Array(n)
  for (let i = 0; i < n; i++) keys[i] = `tempo:tx:0x${bytes.slice(i * 64, i * 64 + 64)}`
  return keys
}

settle()
const before = process.memoryUsage()
const store = memoryStore({ maxEntries: count })
const expires = Date.now() + 3_600_000
const started = performance.now()
for (let done = 0; done < count; ) {
  const n = Math.min(10_000, count - done)
  for (const key of keyBatch(n)) {
    const won = await store.claim(key, { state: 'settled', expires })
    if (!won) throw new Error('bench: a fresh key was refused')
  }
  done += n
}
const fillMs = performance.now() - started
settle()
const after = process.memoryUsage()
if (store.size !== count) throw new Error(`bench: the store holds ${store.size} claims, expected ${count}`)
// Lookups still answer after the fill (and keep `store` alive up to the measurement).
const probe = await store.get(`tempo:tx:0x${'0'.repeat(64)}`)
process.stdout.write(
  `${JSON.stringify({
    claims: count,
    heapBytes: after.heapUsed - before.heapUsed,
    rssBytes: after.rss - before.rss,
    fillMs,
    probe: probe === undefined,
  })}\n`,
)
