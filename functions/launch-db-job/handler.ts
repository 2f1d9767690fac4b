// launch-db-job's I/O. Level-triggered: an event only names an object; the handler re-reads the
// run (BackupTrigger), its Backup, the Job, and converges: one Job per open database run, the
// Backup's DatabaseJobReady condition, and a failed host entry when the Job ended without a report.
import type { KubeConfig, KubernetesObject, V1Job } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import {
  agentName, agentTemplate as agentTemplateSchema, API_VERSION, appBinding as appBindingSchema, APPCATALOG_API_VERSION, describeParseIssues, repository as repositorySchema,
} from '../../shared/api/index.ts';
import type { AgentTemplate, AppBinding, Backup, BackupTrigger, Repository } from '../../shared/api/index.ts';
import {
  AlreadyExistsError, ConflictError, conditionUnchanged, createObject, emitEvent, getObject, getObjectOnce, listInNamespaces, listObjects, patchStatus, setCondition,
} from '../../shared/kube/index.ts';
import type { Condition, ConditionInput, ReadCache } from '../../shared/kube/index.ts';
import { servesNamespace, TransientError } from '../../shared/runtime/index.ts';
import {
  CONTROLLER, failedHosts, FIELD_MANAGER, HOST, hostFinished, isDatabaseBackup, JOB_CONDITION, jobName, jobOutcome, planDatabaseJob,
} from './plan.ts';
import type { JobOptions } from './plan.ts';

export interface HandlerOptions extends JobOptions {
  /** The clock (tests). */
  now?: () => Date;
  /**
   * How long a run may wait for a missing AppBinding / AgentTemplate / Repository before it is
   * failed (objects applied together may arrive in any order). Default 60 s.
   */
  missingGraceSeconds?: number;
  /** How long after a Job completed without a report the run is failed. Default 120 s. */
  reportGraceSeconds?: number;
  /**
   * Serve only these namespaces (STASH_NAMESPACES: a namespaced install, tests): the resync lists
   * them one by one, and events about objects elsewhere are ignored. Default: all namespaces.
   */
  namespaces?: readonly string[];
  /** One namespace: shorthand for `namespaces: [namespace]` (added to `namespaces` when both are given). */
  namespace?: string;
}

/** The namespaces `options` limit the function to, or undefined for all. */
export function servedNamespaces(options: Pick<HandlerOptions, 'namespace' | 'namespaces'>): string[] | undefined {
  if (options.namespaces === undefined && options.namespace === undefined) return undefined;
  return [...new Set([...(options.namespaces ?? []), ...(options.namespace === undefined ? [] : [options.namespace])])];
}

export type TriggerResult =
  | 'gone' | 'no-backup' | 'not-database' | 'finished' | 'job-exists' | 'created' | 'already-created' | 'host-failed' | 'waiting';

export interface Resolved {
  appBinding: AppBinding;
  agentTemplate: AgentTemplate;
  repository: Repository;
}

export type Resolution = { ok: true; value: Resolved } | { ok: false; reason: string; message: string };

const backupRef = (namespace: string, name: string) => ({ apiVersion: API_VERSION, kind: 'Backup', namespace, name });
const triggerRef = (namespace: string, name: string) => ({ apiVersion: API_VERSION, kind: 'BackupTrigger', namespace, name });

/**
 * Reads what a database Backup refers to; names every missing or invalid object and the fix.
 * `reads`: a resync's shared reads, so Backups that name the same AgentTemplate or Repository
 * read it once.
 */
export async function resolveReferences(kc: KubeConfig, backup: Backup, reads?: ReadCache): Promise<Resolution> {
  const namespace = backup.metadata.namespace ?? 'default';
  const spec = backup.spec;
  const templateName = agentName(spec.backupAgent);
  const repoNamespace = spec.repository.namespace ?? namespace;
  const [bindingRaw, templateRaw, repoRaw] = await Promise.all([
    getObject(kc, { apiVersion: APPCATALOG_API_VERSION, kind: 'AppBinding', namespace, name: spec.targetRef.name }),
    getObjectOnce(kc, { apiVersion: API_VERSION, kind: 'AgentTemplate', name: templateName }, reads),
    getObjectOnce(kc, { apiVersion: API_VERSION, kind: 'Repository', namespace: repoNamespace, name: spec.repository.name }, reads),
  ]);
  const problems: { reason: string; message: string }[] = [];
  if (bindingRaw === undefined) {
    problems.push({ reason: 'AppBindingNotFound', message: `AppBinding ${namespace}/${spec.targetRef.name} (spec.targetRef) does not exist: create it, or point spec.targetRef at an existing AppBinding` });
  }
  if (templateRaw === undefined) {
    problems.push({ reason: 'AgentTemplateNotFound', message: `AgentTemplate ${templateName} (spec.backupAgent) does not exist: install Stash's default AgentTemplates (e.g. pg-backup) or name an existing one` });
  }
  if (repoRaw === undefined) {
    problems.push({ reason: 'RepositoryNotFound', message: `Repository ${repoNamespace}/${spec.repository.name} (spec.repository) does not exist: create it` });
  }
  const binding = bindingRaw === undefined ? undefined : appBindingSchema.safeParse(bindingRaw);
  if (binding !== undefined && !binding.success) {
    problems.push({ reason: 'InvalidAppBinding', message: `AppBinding ${namespace}/${spec.targetRef.name} is invalid: ${describeParseIssues(binding.error)}` });
  }
  const template = templateRaw === undefined ? undefined : agentTemplateSchema.safeParse(templateRaw);
  if (template !== undefined && !template.success) {
    problems.push({ reason: 'InvalidAgentTemplate', message: `AgentTemplate ${templateName} is invalid: ${describeParseIssues(template.error)}` });
  }
  const repo = repoRaw === undefined ? undefined : repositorySchema.safeParse(repoRaw);
  if (repo !== undefined && !repo.success) {
    problems.push({ reason: 'InvalidRepository', message: `Repository ${repoNamespace}/${spec.repository.name} is invalid: ${describeParseIssues(repo.error)}` });
  }
  if (problems.length > 0 || !binding?.success || !template?.success || !repo?.success) {
    const first = problems[0] ?? { reason: 'ReferencesUnresolved', message: 'the Backup\'s references could not be read' };
    return { ok: false, reason: first.reason, message: `${problems.map((p) => p.message).join('; ')}; no backup Job starts until then` };
  }
  return { ok: true, value: { appBinding: binding.data, agentTemplate: template.data, repository: repo.data } };
}

/** A stand-in run used to check that a Job can be built before any run exists. */
function probeTrigger(backup: Backup): BackupTrigger {
  return {
    apiVersion: API_VERSION, kind: 'BackupTrigger',
    metadata: { name: `${backup.metadata.name ?? ''}-probe`, namespace: backup.metadata.namespace, uid: 'probe' },
    spec: { targetBackup: { name: backup.metadata.name ?? '' } },
  };
}

export function createLaunchDbJob(kc: KubeConfig, options: HandlerOptions = {}) {
  const clock = options.now ?? (() => new Date());
  const missingGrace = (options.missingGraceSeconds ?? 60) * 1000;
  const namespaces = servedNamespaces(options);

  async function event(object: Backup, type: 'Normal' | 'Warning', reason: string, message: string, log: Logger, related?: { apiVersion: string; kind: string; namespace: string; name: string }): Promise<void> {
    try {
      await emitEvent(kc, object, { type, reason, message, action: 'LaunchJob', ...(related ? { related } : {}) }, CONTROLLER, clock());
    } catch (error) {
      log.warn({ reason, err: (error as Error).message }, 'could not record Event');
    }
  }

  /** Sets the Backup's DatabaseJobReady condition (and a Warning Event when it turns False or changes reason). */
  async function setReady(backup: Backup, condition: ConditionInput, log: Logger): Promise<void> {
    const namespace = backup.metadata.namespace ?? 'default';
    const name = backup.metadata.name ?? '';
    let current: Backup | undefined = backup;
    for (let attempt = 0; current !== undefined; attempt++) {
      const conditions = (current.status?.conditions ?? []) as Condition[];
      const generation = typeof current.metadata.generation === 'number' ? current.metadata.generation : undefined;
      const wanted: ConditionInput = generation === undefined ? condition : { ...condition, observedGeneration: generation };
      if (conditionUnchanged(conditions, wanted)) return;
      const previous = conditions.find((c) => c.type === JOB_CONDITION);
      try {
        await patchStatus(kc, backupRef(namespace, name), { conditions: setCondition(conditions, wanted, clock()) },
          { fieldManager: FIELD_MANAGER, resourceVersion: current.metadata.resourceVersion as string });
      } catch (error) {
        if (!(error instanceof ConflictError) || attempt >= 4) throw error;
        current = await getObject<Backup>(kc, backupRef(namespace, name));
        continue;
      }
      if (condition.status === 'False' && (previous?.status !== 'False' || previous.reason !== condition.reason || previous.message !== condition.message)) {
        await event(current, 'Warning', condition.reason, condition.message, log);
      }
      return;
    }
  }

  /** Marks the run's host-0 Failed (handle-trigger derives the run's phase from its hosts). */
  async function failHost(trigger: BackupTrigger, error: string, job: string | undefined, log: Logger): Promise<void> {
    const namespace = trigger.metadata.namespace ?? 'default';
    const name = trigger.metadata.name ?? '';
    let current: BackupTrigger | undefined = trigger;
    for (let attempt = 0; current !== undefined && !hostFinished(current); attempt++) {
      try {
        await patchStatus(kc, triggerRef(namespace, name), { hosts: failedHosts(current, error, clock(), job) },
          { fieldManager: FIELD_MANAGER, resourceVersion: current.metadata.resourceVersion as string });
        log.info({ namespace, trigger: name, host: HOST, error }, 'marked the run\'s host Failed');
        return;
      } catch (err) {
        if (!(err instanceof ConflictError) || attempt >= 4) throw err;
        current = await getObject<BackupTrigger>(kc, triggerRef(namespace, name));
      }
    }
  }

  function readyCondition(backup: Backup, resolution: Resolution): { condition: ConditionInput; planOk: boolean } {
    if (!resolution.ok) return { condition: { type: JOB_CONDITION, status: 'False', reason: resolution.reason, message: resolution.message }, planOk: false };
    const { appBinding, agentTemplate, repository } = resolution.value;
    const plan = planDatabaseJob({ backup, trigger: probeTrigger(backup), appBinding, agentTemplate, repository, options });
    if (!plan.ok) return { condition: { type: JOB_CONDITION, status: 'False', reason: plan.reason, message: `${plan.message}; no backup Job starts until then` }, planOk: false };
    return {
      condition: {
        type: JOB_CONDITION, status: 'True', reason: 'Ready',
        message: `each run starts a Job from AgentTemplate ${agentTemplate.metadata.name ?? ''} against AppBinding ${appBinding.metadata.namespace ?? ''}/${appBinding.metadata.name ?? ''} (${appBinding.spec.type})`,
      },
      planOk: true,
    };
  }

  /** Converges one run: its Job exists while the run is open; a Job that ended unreported fails the host. */
  async function reconcileTrigger(namespace: string, name: string, log: Logger): Promise<TriggerResult> {
    const trigger = await getObject<BackupTrigger>(kc, triggerRef(namespace, name));
    if (trigger === undefined) return 'gone';
    const backup = await getObject<Backup>(kc, backupRef(namespace, trigger.spec.targetBackup.name));
    if (backup === undefined || backup.metadata.deletionTimestamp !== undefined) return 'no-backup';
    if (!isDatabaseBackup(backup)) return 'not-database';
    if (hostFinished(trigger)) return 'finished';
    const meta = { namespace, trigger: name, backup: backup.metadata.name };
    const now = clock();
    const jname = jobName(name);
    const job = await getObject<V1Job & KubernetesObject>(kc, { apiVersion: 'batch/v1', kind: 'Job', namespace, name: jname });
    if (job !== undefined) {
      const outcome = jobOutcome(job, now, options.reportGraceSeconds ?? 120);
      if (outcome?.failed) {
        await failHost(trigger, outcome.error, jname, log);
        await event(backup, 'Warning', 'BackupJobFailed', `run ${name}: ${outcome.error}`, log, { apiVersion: 'batch/v1', kind: 'Job', namespace, name: jname });
        return 'host-failed';
      }
      return 'job-exists';
    }
    const host = trigger.status?.hosts?.find((h) => h.host === HOST);
    if (host?.phase === 'Running') {
      await failHost(trigger, `Job ${jname} no longer exists while the run was Running (deleted?); the next run starts a new Job`, jname, log);
      return 'host-failed';
    }

    const resolution = await resolveReferences(kc, backup);
    const { condition, planOk } = readyCondition(backup, resolution);
    await setReady(backup, condition, log);
    if (!planOk || !resolution.ok) {
      const created = Date.parse((trigger.metadata.creationTimestamp as string | undefined) ?? now.toISOString());
      if (!resolution.ok && now.getTime() - created < missingGrace) {
        throw new TransientError(`run ${namespace}/${name} waits: ${condition.message}`, { retryAfterSeconds: 10 });
      }
      await failHost(trigger, condition.message, undefined, log);
      return 'host-failed';
    }
    const plan = planDatabaseJob({ backup, trigger, ...resolution.value, options });
    if (!plan.ok) return 'waiting'; // unreachable: the probe plan above succeeded with the same inputs
    try {
      await createObject(kc, { ...plan.job, apiVersion: 'batch/v1', kind: 'Job', metadata: { ...plan.job.metadata, namespace } });
    } catch (error) {
      if (error instanceof AlreadyExistsError) return 'already-created';
      throw error;
    }
    log.info({ ...meta, job: jname }, 'created the backup Job');
    await event(backup, 'Normal', 'BackupJobCreated', `run ${name}: started Job ${jname}`, log, { apiVersion: 'batch/v1', kind: 'Job', namespace, name: jname });
    return 'created';
  }

  async function listTriggers(namespace: string | undefined): Promise<BackupTrigger[]> {
    return listObjects<BackupTrigger & KubernetesObject>(kc, { apiVersion: API_VERSION, kind: 'BackupTrigger', namespace });
  }

  async function listBackups(namespace: string | undefined): Promise<Backup[]> {
    return listObjects<Backup & KubernetesObject>(kc, { apiVersion: API_VERSION, kind: 'Backup', namespace });
  }

  /** Every database run's Backup and run in the served namespaces. */
  const listServedBackups = (): Promise<Backup[]> => listInNamespaces<Backup & KubernetesObject>(kc, { apiVersion: API_VERSION, kind: 'Backup' }, namespaces);
  const listServedTriggers = (): Promise<BackupTrigger[]> => listInNamespaces<BackupTrigger & KubernetesObject>(kc, { apiVersion: API_VERSION, kind: 'BackupTrigger' }, namespaces);

  /** Converges a database Backup: its condition, then every open run of it. */
  async function reconcileBackup(
    namespace: string, name: string, log: Logger, triggers?: readonly BackupTrigger[], known?: Backup, reads?: ReadCache,
  ): Promise<Record<string, TriggerResult>> {
    // `known`: the Backup as just listed (a resync, a referrer's event), not read again.
    const backup = known ?? await getObject<Backup>(kc, backupRef(namespace, name));
    if (backup === undefined || !isDatabaseBackup(backup)) return {};
    const resolution = await resolveReferences(kc, backup, reads);
    const { condition } = readyCondition(backup, resolution);
    await setReady(backup, condition, log);
    const results: Record<string, TriggerResult> = {};
    for (const t of triggers ?? await listTriggers(namespace)) {
      if (t.metadata.namespace !== namespace || t.spec.targetBackup.name !== name || hostFinished(t)) continue;
      results[t.metadata.name ?? ''] = await reconcileTrigger(namespace, t.metadata.name ?? '', log).catch((error: unknown) => {
        if (error instanceof TransientError) return 'waiting' as const;
        throw error;
      });
    }
    return results;
  }

  /** Every database Backup and open run (ping / cron-connector): repairs what events missed. */
  async function resync(log: Logger): Promise<{ backups: number; runs: Record<string, TriggerResult>; failures: string[] }> {
    const [all, triggers] = await Promise.all([listServedBackups(), listServedTriggers()]);
    const backups = all.filter(isDatabaseBackup);
    const failures: string[] = [];
    const runs: Record<string, TriggerResult> = {};
    const reads: ReadCache = new Map();
    for (const b of backups) {
      const namespace = b.metadata.namespace ?? 'default';
      try {
        Object.assign(runs, Object.fromEntries(Object.entries(await reconcileBackup(namespace, b.metadata.name ?? '', log, triggers, b, reads)).map(([k, v]) => [`${namespace}/${k}`, v])));
      } catch (error) {
        failures.push(`Backup ${namespace}/${b.metadata.name ?? ''}: ${(error as Error).message}`);
      }
    }
    if (failures.length > 0) log.error({ failures }, 'resync failed for some Backups; the next one retries');
    log.info({ backups: backups.length, runs }, 'resync done');
    return { backups: backups.length, runs, failures };
  }

  /** A Job event: the run it belongs to (its controller ownerReference, else the name without -job). */
  async function reconcileJob(namespace: string, name: string, log: Logger): Promise<TriggerResult | undefined> {
    const job: V1Job | undefined = await getObject<V1Job & KubernetesObject>(kc, { apiVersion: 'batch/v1', kind: 'Job', namespace, name });
    const owner = job?.metadata?.ownerReferences?.find((o) => o.kind === 'BackupTrigger' && o.controller === true)?.name;
    const trigger = owner ?? (name.endsWith('-job') ? name.slice(0, -4) : undefined);
    if (trigger === undefined) return undefined;
    return reconcileTrigger(namespace, trigger, log);
  }

  /** Backups that refer to an AppBinding / Repository (namespace) or an AgentTemplate (cluster). */
  async function reconcileReferrers(kind: string, namespace: string | undefined, name: string, log: Logger): Promise<number> {
    const backups = (await (kind === 'AgentTemplate' || namespace === undefined ? listServedBackups() : listBackups(namespace))).filter(isDatabaseBackup).filter((b) => {
      if (kind === 'AppBinding') return b.spec.targetRef.name === name;
      if (kind === 'Repository') return b.spec.repository.name === name && (b.spec.repository.namespace ?? b.metadata.namespace) === namespace;
      return agentName(b.spec.backupAgent) === name;
    });
    for (const b of backups) await reconcileBackup(b.metadata.namespace ?? 'default', b.metadata.name ?? '', log, undefined, b);
    return backups.length;
  }

  /** Whether this launcher serves `namespace` (events about objects elsewhere are ignored). */
  const serves = (namespace: string): boolean => servesNamespace(namespaces, namespace);

  return { reconcileTrigger, reconcileBackup, reconcileJob, reconcileReferrers, resync, serves, resolveReferences: (b: Backup) => resolveReferences(kc, b) };
}

export type LaunchDbJob = ReturnType<typeof createLaunchDbJob>;
