import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

// Examples import `hono-mpp` as a user would; tsconfig's `paths` map it to the sources, and the
// same map serves the tests (exact entries first, `stores/*` as a pattern).
const { compilerOptions } = JSON.parse(readFileSync(new URL('./tsconfig.json', import.meta.url), 'utf8')) as {
  compilerOptions: { paths: Record<string, [string]> }
}
const alias = Object.entries(compilerOptions.paths).map(([name, [target]]) =>
  name.endsWith('/*')
    ? { find: new RegExp(`^${name.slice(0, -1)}(.+)$`), replacement: fileURLToPath(new URL(target.replace('*', '$1'), import.meta.url)) }
    : { find: new RegExp(`^${name}$`), replacement: fileURLToPath(new URL(target, import.meta.url)) },
)

export default defineConfig({
  resolve: { alias },
  test: {
    include: ['test/**/*.test.ts', 'examples/**/*.test.ts'],
    globalSetup: ['test/setup/global.ts', 'test/setup/postgres.ts'],
    reporters: ['default', './test/setup/summary-reporter.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: more workers only fight over them and over the one local chain.
    maxWorkers: 2,
  },
})
