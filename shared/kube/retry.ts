// Optimistic concurrency: a write guarded by resourceVersion that lost a race is done again.
import { ConflictError } from './errors.ts';

/**
 * Runs `attempt` (which re-reads what it writes) until it does not fail with ConflictError, at
 * most `attempts` times, waiting a little longer each time; any other error ends it at once.
 */
export async function retryOnConflict<T>(attempt: () => Promise<T>, attempts = 8): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof ConflictError) || n >= attempts) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20 * n));
    }
  }
}
