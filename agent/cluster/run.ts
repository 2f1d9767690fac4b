// Doing one claimed run under a lease, and the sidecar's loop of claims.
//
// A run's work holds the host's Lease through handle-trigger: renewed every leaseDuration/3.
// When a renewal is refused (409: another replica took the lease, or the run was failed for a
// dead agent) or renewals cannot get through for a whole lease duration, the work's AbortSignal
// fires and nothing is reported: this replica no longer owns the run (stash #1488, #1505).
import { setTimeout as sleep } from 'node:timers/promises';
import { FunctionsCallError, LeaseLostError } from './client.ts';
import type { ClaimedRun, FunctionsClient, RunOutcome } from './client.ts';

export interface RunTarget {
  namespace: string;
  backup: string;
  /** host-0, host-<ordinal> (StatefulSet) or the node name (DaemonSet). */
  host: string;
}

/** What the work does with a claimed run; it must stop (reject) soon after `signal` aborts. */
export type RunWork = (run: ClaimedRun, signal: AbortSignal) => Promise<RunOutcome>;

export interface AgentLog {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

const silent: AgentLog = { info: () => undefined, warn: () => undefined, error: () => undefined };

export interface RunOptions {
  /** Stop: the work is aborted and reported Failed (e.g. the pod is terminating). */
  signal?: AbortSignal;
  log?: AgentLog;
  /** How often to retry a report that could not get through; default 2 s, 5 attempts. */
  reportRetryMs?: number;
  reportAttempts?: number;
}

export type RunResult =
  | { status: 'idle' }
  | { status: 'reported'; run: ClaimedRun; outcome: RunOutcome; phase: string }
  | { status: 'lost'; run: ClaimedRun; reason: string };

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Claims a run for `target`; when there is one, does `work` while renewing the lease, then reports
 * the outcome. A work that throws is reported Failed with its message. Returns what happened.
 */
export async function runClaimedRun(client: FunctionsClient, target: RunTarget, work: RunWork, options: RunOptions = {}): Promise<RunResult> {
  const log = options.log ?? silent;
  const run = await client.claim(target);
  if (run === undefined) return { status: 'idle' };
  const fields = { namespace: run.namespace, backup: run.backup, trigger: run.trigger, host: run.host };
  log.info(fields, 'claimed a run');

  const controller = new AbortController();
  let lost: string | undefined;
  const onStop = (): void => { controller.abort(new Error('the agent was asked to stop (the pod is terminating)')); };
  if (options.signal?.aborted) onStop();
  options.signal?.addEventListener('abort', onStop, { once: true });

  // Renewal loop: sequential, so a slow renewal never overlaps the next one.
  const leaseMs = run.leaseDurationSeconds * 1000;
  const renewing = new AbortController();
  const renewals = (async () => {
    let lastRenewed = Date.now();
    while (!renewing.signal.aborted) {
      try {
        await sleep(leaseMs / 3, undefined, { signal: renewing.signal });
      } catch {
        return;
      }
      try {
        await client.renew({ namespace: run.namespace, trigger: run.trigger, host: run.host });
        lastRenewed = Date.now();
      } catch (error) {
        if (renewing.signal.aborted) return;
        if (error instanceof LeaseLostError) {
          lost = error.message;
        } else if (Date.now() - lastRenewed >= leaseMs) {
          lost = `could not renew the lease for ${Math.round((Date.now() - lastRenewed) / 1000)}s (${errorMessage(error)}): another replica may hold it now`;
        } else {
          log.warn({ ...fields, err: errorMessage(error) }, 'lease renewal failed; retrying');
          continue;
        }
        log.warn({ ...fields, reason: lost }, 'lease lost: aborting the run');
        controller.abort(new LeaseLostError(lost));
        return;
      }
    }
  })();

  let outcome: RunOutcome;
  try {
    outcome = await work(run, controller.signal);
  } catch (error) {
    outcome = { phase: 'Failed', error: errorMessage(controller.signal.aborted && controller.signal.reason instanceof Error ? controller.signal.reason : error) };
  } finally {
    renewing.abort();
    await renewals;
    options.signal?.removeEventListener('abort', onStop);
  }
  if (lost !== undefined) return { status: 'lost', run, reason: lost };

  const attempts = options.reportAttempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    try {
      const answer = await client.report({ namespace: run.namespace, trigger: run.trigger, host: run.host, outcome });
      log.info({ ...fields, phase: outcome.phase, runPhase: answer.phase }, 'reported the outcome');
      return { status: 'reported', run, outcome, phase: answer.phase };
    } catch (error) {
      if (error instanceof LeaseLostError) {
        log.warn({ ...fields, reason: error.message }, 'the outcome was refused: the lease was lost');
        return { status: 'lost', run, reason: error.message };
      }
      const retryable = !(error instanceof FunctionsCallError) || error.status === undefined || error.status >= 500;
      if (!retryable || attempt >= attempts) throw error;
      log.warn({ ...fields, err: errorMessage(error), attempt }, 'could not report the outcome; retrying');
      await sleep(options.reportRetryMs ?? 2000);
    }
  }
}

export interface SidecarLoopOptions extends RunOptions {
  /** Seconds between claims while there is nothing to do; default 10. */
  intervalSeconds?: number;
  /** Called after each run (for metrics, output). */
  onRun?: (result: Exclude<RunResult, { status: 'idle' }>) => void;
}

/**
 * The sidecar: claims runs of `target` every intervalSeconds until `signal` aborts; after a run
 * it claims again at once (another may be waiting). Errors are logged and retried at the interval.
 */
export async function sidecarLoop(client: FunctionsClient, target: RunTarget, work: RunWork, options: SidecarLoopOptions = {}): Promise<void> {
  const log = options.log ?? silent;
  const intervalMs = (options.intervalSeconds ?? 10) * 1000;
  while (!options.signal?.aborted) {
    let idle = true;
    try {
      const result = await runClaimedRun(client, target, work, options);
      if (result.status !== 'idle') {
        idle = false;
        options.onRun?.(result);
      }
    } catch (error) {
      log.error({ ...target, err: errorMessage(error) }, 'claiming or reporting a run failed; retrying');
    }
    if (!idle) continue;
    try {
      await sleep(intervalMs, undefined, options.signal ? { signal: options.signal } : undefined);
    } catch {
      return;
    }
  }
}
