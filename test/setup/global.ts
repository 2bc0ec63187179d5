import type { TestProject } from 'vitest/node'
import { startLocalChain } from '../../scripts/local-chain.js'

declare module 'vitest' {
  export interface ProvidedContext {
    rpcUrl: string
  }
}

/** One local Tempo chain for the whole run; test files fund their own fresh accounts. */
export default async function setup(project: TestProject) {
  const chain = await startLocalChain()
  project.provide('rpcUrl', chain.rpcUrl)
  return async () => {
    await chain.stop()
  }
}
