// The sweep's I/O: one list of Backups and one of BackupTriggers across all namespaces (or one of
// each per served namespace), the plan,
// then the writes with bounded concurrency. A due run costs one write, its BackupTrigger (which
// records the tick; handle-trigger copies it to the Backup's lastScheduledTime). Every write is
// idempotent: a second sweep for the same tick gets AlreadyExists on the trigger, or sees the run
// in its list and writes nothing.
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { API_VERSION } from '../../shared/api/index.ts';
import type { Backup, BackupTrigger } from '../../shared/api/index.ts';
import { AlreadyExistsError, ConflictError, createObject, emitEvent, getObject, listInNamespaces, NotFoundError, patchStatus } from '../../shared/kube/index.ts';
import { forEachLimited } from '../../shared/runtime/index.ts';
export { forEachLimited } from '../../shared/runtime/index.ts';
import type { Invocation } from '../../shared/runtime/index.ts';
import { servesNamespace, TransientError } from '../../shared/runtime/index.ts';
import { planSchedules } from './plan.ts';
import type { BackupPlan } from './plan.ts';

export const FIELD_MANAGER = 'stash.appscode.com/sweep';
export const CONTROLLER = 'stash.appscode.com/sweep';

export interface SweepOptions {
  kc: KubeConfig;
  /** The clock; tests pass a fixed time. */
  now?: () => Date;
  /** Writes in flight at once (default 16). */
  concurrency?: number;
  /** Page size of the list calls (default 500). */
  pageSize?: number;
  /** Sweep only these namespaces (STASH_NAMESPACES: a namespaced install, tests); default all namespaces. */
  namespaces?: readonly string[];
  /** One namespace: shorthand for `namespaces: [namespace]` (added to `namespaces` when both are given). */
  namespace?: string;
}

/** The namespaces `options` limit the sweep to, or undefined for all. */
export function servedNamespaces(options: Pick<SweepOptions, 'namespace' | 'namespaces'>): string[] | undefined {
  if (options.namespaces === undefined && options.namespace === undefined) return undefined;
  return [...new Set([...(options.namespaces ?? []), ...(options.namespace === undefined ? [] : [options.namespace])])];
}

export interface SweepSummary {
  backups: number;
  triggers: number;
  created: number;
  /** Create answered AlreadyExists: another sweep created the run. */
  alreadyCreated: number;
  /** A BackupTrigger of the Backup already had the tick's name without being its scheduled run: the tick was recorded only. */
  recorded: number;
  skipped: number;
  paused: number;
  invalid: number;
  waiting: number;
  statusWrites: number;
  failed: number;
  listMs: number;
  totalMs: number;
}

async function createTrigger(kc: KubeConfig, trigger: BackupTrigger): Promise<'created' | 'exists'> {
  try {
    await createObject(kc, { ...trigger, metadata: { ...trigger.metadata, namespace: trigger.metadata.namespace ?? 'default' } });
    return 'created';
  } catch (error) {
    if (error instanceof AlreadyExistsError) return 'exists';
    throw error;
  }
}

export function createSweep(options: SweepOptions): (log: Logger) => Promise<SweepSummary> {
  const { kc } = options;
  const clock = options.now ?? (() => new Date());
  const concurrency = options.concurrency ?? 16;
  const pageSize = options.pageSize ?? 500;
  const namespaces = servedNamespaces(options);

  async function writeStatus(plan: BackupPlan): Promise<boolean> {
    if (plan.status === undefined) return false;
    const ref = { apiVersion: API_VERSION, kind: 'Backup', namespace: plan.namespace, name: plan.name };
    // conditions is a whole list, and lastScheduledTime must never go back (handle-trigger writes
    // it too): guard them with the resourceVersion the plan was computed from; a conflict replans.
    const guarded = plan.status.conditions !== undefined || plan.status.lastScheduledTime !== undefined;
    const resourceVersion = guarded ? plan.backup.metadata.resourceVersion as string | undefined : undefined;
    await patchStatus(kc, ref, plan.status as Record<string, unknown>, { fieldManager: FIELD_MANAGER, ...(resourceVersion ? { resourceVersion } : {}) });
    return true;
  }

  async function event(plan: BackupPlan, type: 'Normal' | 'Warning', reason: string, message: string, log: Logger): Promise<void> {
    try {
      await emitEvent(kc, plan.backup, { type, reason, message, action: 'Schedule' }, CONTROLLER, clock());
    } catch (error) {
      log.warn({ namespace: plan.namespace, name: plan.name, reason, err: (error as Error).message }, 'could not record Event');
    }
  }

  return async function sweep(log: Logger): Promise<SweepSummary> {
    const started = Date.now();
    const [backups, triggers] = await Promise.all([
      listInNamespaces<Backup & KubernetesObject>(kc, { apiVersion: API_VERSION, kind: 'Backup', limit: pageSize }, namespaces),
      listInNamespaces<BackupTrigger & KubernetesObject>(kc, { apiVersion: API_VERSION, kind: 'BackupTrigger', limit: pageSize }, namespaces),
    ]);
    const listMs = Date.now() - started;
    const now = clock();
    const summary: SweepSummary = {
      backups: backups.length, triggers: triggers.length, created: 0, alreadyCreated: 0, recorded: 0, skipped: 0, paused: 0, invalid: 0,
      waiting: 0, statusWrites: 0, failed: 0, listMs, totalMs: 0,
    };
    const failures: string[] = [];

    async function apply(initial: BackupPlan): Promise<void> {
      let plan = initial;
      for (let attempt = 0; ; attempt++) {
        try {
          await applyOnce(plan);
          return;
        } catch (error) {
          if (!(error instanceof ConflictError) || attempt >= 3) throw error;
          // Another writer changed the Backup's status: re-read it and plan again.
          const fresh = await getObject<Backup>(kc, { apiVersion: API_VERSION, kind: 'Backup', namespace: plan.namespace, name: plan.name });
          if (fresh === undefined) return;
          const replanned = planSchedules([fresh], triggers, now)[0];
          if (replanned === undefined) return;
          plan = replanned;
        }
      }
    }

    async function applyOnce(plan: BackupPlan): Promise<void> {
      const meta = { namespace: plan.namespace, name: plan.name };
      switch (plan.action) {
        case 'create': {
          const result = await createTrigger(kc, plan.trigger);
          if (result === 'created') summary.created++;
          else summary.alreadyCreated++;
          log.debug({ ...meta, trigger: plan.trigger.metadata.name, tick: plan.tick.toISOString(), result }, 'scheduled run');
          break;
        }
        case 'recorded':
          summary.recorded++;
          break;
        case 'skip':
          summary.skipped++;
          await event(plan, 'Warning', 'BackupSkipped',
            `skipped: previous run still running (${plan.running.join(', ')}); the run due at ${plan.tick.toISOString()} was not started, ` +
              'the next tick starts one once that run has finished', log);
          break;
        case 'invalid':
          summary.invalid++;
          if (plan.condition !== undefined) await event(plan, 'Warning', 'InvalidSchedule', plan.message, log);
          break;
        case 'paused':
          summary.paused++;
          break;
        case 'wait':
        case 'deleting':
          summary.waiting++;
          break;
      }
      if (await writeStatus(plan)) summary.statusWrites++;
    }

    const plans = planSchedules(backups, triggers, now);
    await forEachLimited(plans, concurrency, async (plan) => {
      try {
        await apply(plan);
      } catch (error) {
        if (error instanceof NotFoundError) return; // the Backup went away meanwhile
        summary.failed++;
        const message = (error as Error).message;
        failures.push(`${plan.namespace}/${plan.name}: ${message}`);
        log.error({ namespace: plan.namespace, name: plan.name, action: plan.action, err: message }, 'sweep of a Backup failed');
      }
    });
    summary.totalMs = Date.now() - started;
    log.info({ ...summary, now: now.toISOString() }, 'sweep done');
    if (failures.length > 0) {
      throw new TransientError(`sweep failed for ${failures.length} of ${plans.length} Backups (first: ${failures[0] ?? ''}); the next sweep retries them`);
    }
    return summary;
  };
}

/**
 * The function's handler: any ping or cron-connector call (or apiserver event) runs one sweep; an
 * event about an object in a namespace this sweep does not serve is ignored.
 */
export function createSweepHandler(options: SweepOptions): (invocation: Invocation, ctx: { log: Logger }) => Promise<void> {
  const sweep = createSweep(options);
  const namespaces = servedNamespaces(options);
  return async (invocation, ctx) => {
    const namespace = invocation.source === 'apiserver' ? invocation.ref.namespace : undefined;
    if (namespace !== undefined && !servesNamespace(namespaces, namespace)) {
      ctx.log.debug({ kind: invocation.source === 'apiserver' ? invocation.ref.kind : undefined, namespace }, 'namespace not served by this function');
      return;
    }
    await sweep(ctx.log);
  };
}
