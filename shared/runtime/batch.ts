/**
 * Working through many objects at once, the way every function's resync does: bounded
 * concurrency, one failure never stopping the others, and an event answered 500 (so it is
 * delivered again) when any of its objects failed.
 */

/** Runs `work` over `items`, at most `limit` at a time. */
export async function forEachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  });
  await Promise.all(runners);
}

export interface BatchResult<O> {
  outcomes: Record<string, O>;
  failures: Record<string, string>;
}

/**
 * Reconciles each key once (keys with the same id are one), `limit` at a time; a failure is
 * recorded under the key's id and passed to `onError` (to log), never thrown.
 */
export async function reconcileBatch<K, O>(
  keys: readonly K[],
  options: { id: (key: K) => string; work: (key: K) => Promise<O>; onError: (key: K, error: unknown) => void; limit?: number },
): Promise<BatchResult<O>> {
  const result: BatchResult<O> = { outcomes: {}, failures: {} };
  const unique = [...new Map(keys.map((k) => [options.id(k), k])).values()];
  await forEachLimited(unique, options.limit ?? 4, async (key) => {
    const id = options.id(key);
    try {
      result.outcomes[id] = await options.work(key);
    } catch (error) {
      result.failures[id] = (error as Error).message;
      options.onError(key, error);
    }
  });
  return result;
}

/** Throws (a plain Error: the event is answered 500 and delivered again) when any object of the batch failed. */
export function throwIfAnyFailed(result: BatchResult<unknown>, what: string, noun: string): void {
  const failed = Object.entries(result.failures);
  if (failed.length === 0) return;
  throw new Error(`${failed.length} ${noun} could not be reconciled for ${what}: ${failed.map(([id, m]) => `${id}: ${m}`).join('; ')}`);
}
