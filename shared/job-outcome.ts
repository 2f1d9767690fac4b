// What a finished agent Job means when its agent never reported (a database backup run, a
// recovery): read from the Job's conditions. Pure.
import type { V1Job } from '@kubernetes/client-node';

export interface JobOutcome {
  /** The Job ended without the agent reporting: the host's error. */
  failed: boolean;
  error: string;
  at: string | undefined;
}

interface JobCondition { type: string; status: string; reason?: string; message?: string; lastTransitionTime?: Date | string }

function timeText(t: Date | string | undefined): string | undefined {
  if (t === undefined) return undefined;
  const d = typeof t === 'string' ? new Date(t) : t;
  return Number.isNaN(d.getTime()) ? undefined : `${d.toISOString().slice(0, 19)}Z`;
}

/**
 * Whether the Job has ended in a way that ends the run: Failed (the pod failed, the deadline
 * passed), or Complete while the run is still open longer than `graceSeconds` after completion
 * (the agent exited without reporting). undefined while the Job runs.
 */
export function jobOutcome(job: V1Job, now: Date, graceSeconds = 120): JobOutcome | undefined {
  const conditions = (job.status?.conditions ?? []) as JobCondition[];
  const failed = conditions.find((c) => c.type === 'Failed' && c.status === 'True');
  if (failed) {
    const detail = [failed.reason, failed.message].filter((x) => x !== undefined && x !== '').join(': ');
    return {
      failed: true,
      error: `Job ${job.metadata?.name ?? ''} failed${detail ? ` (${detail})` : ''}; see the Job's pod logs (kubectl logs job/${job.metadata?.name ?? ''} --all-containers)`,
      at: timeText(failed.lastTransitionTime),
    };
  }
  const complete = conditions.find((c) => c.type === 'Complete' && c.status === 'True');
  if (complete) {
    const at = timeText(complete.lastTransitionTime ?? job.status?.completionTime);
    if (at !== undefined && now.getTime() - Date.parse(at) < graceSeconds * 1000) return undefined;
    return {
      failed: true,
      error: `Job ${job.metadata?.name ?? ''} completed but its agent never reported the result to handle-trigger; check that the pod can reach STASH_FUNCTIONS_URL`,
      at,
    };
  }
  return undefined;
}
