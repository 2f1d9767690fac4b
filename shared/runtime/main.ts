/**
 * What every function's `main()` shares: the port from the environment, and starting only when
 * the module is the program (`node functions/<name>/index.ts`), with a clear message on failure.
 */

export class InvalidPortError extends Error {
  override name = 'InvalidPortError';
}

/** PORT (default 8080, as Knative and OpenFaaS give it), checked. */
export function portFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const text = env.PORT ?? '8080';
  const port = Number(text);
  if (text.trim() === '' || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidPortError(`PORT=${text} is not a TCP port number: set PORT to 0-65535 (default 8080)`);
  }
  return port;
}

/** Runs `main` when `meta` is the program's entry module; a failure to start exits 1 with its message. */
export function runIfMain(meta: ImportMeta, name: string, main: () => Promise<void>): void {
  if (!meta.main) return;
  main().catch((error: unknown) => {
    console.error(`${name} failed to start: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
}
