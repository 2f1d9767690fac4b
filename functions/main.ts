/**
 * The entry point of the functions image: `STASH_FUNCTION=<name> node functions/main.ts` starts
 * that function's server (one image serves every function; see knative/20-services.yaml and
 * stack.yml). Each function's own index.ts can also be run directly.
 */
import module from 'node:module';

const FUNCTIONS = {
  'inject-sidecar': () => import('./inject-sidecar/index.ts'),
  'launch-db-job': () => import('./launch-db-job/index.ts'),
  'expand-template': () => import('./expand-template/index.ts'),
  'handle-trigger': () => import('./handle-trigger/index.ts'),
  sweep: () => import('./sweep/index.ts'),
  'run-recovery': () => import('./run-recovery/index.ts'),
} as const;

export type FunctionName = keyof typeof FUNCTIONS;

export function isFunctionName(name: string): name is FunctionName {
  return Object.hasOwn(FUNCTIONS, name);
}

export async function startFunction(name: string): Promise<void> {
  if (!isFunctionName(name)) {
    throw new Error(`STASH_FUNCTION="${name}" names no function; set it to one of: ${Object.keys(FUNCTIONS).join(', ')}`);
  }
  const module = await FUNCTIONS[name]();
  await module.main();
}

if (import.meta.main) {
  // Node's compile cache (STASH_COMPILE_CACHE_DIR, else NODE_COMPILE_CACHE, else under the temp
  // directory): a warm start skips type stripping and compilation of the function's modules.
  module.enableCompileCache?.(process.env.STASH_COMPILE_CACHE_DIR || undefined);
  try {
    await startFunction(process.env.STASH_FUNCTION ?? '');
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(2);
  }
}
