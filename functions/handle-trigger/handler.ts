// handle-trigger, the I/O: reconcile a BackupTrigger (level-triggered: read, decide with plan.ts,
// write), serve the agents' claim/renew/report calls, and create manual runs.
import type { KubeConfig, V1OwnerReference } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import {
  API_VERSION, APPCATALOG_API_VERSION, backup as backupSchema, backupTrigger as triggerSchema, GROUP, repository as repositorySchema,
} from '../../shared/api/index.ts';
import type { Backup, BackupStatus, BackupTrigger, BackupTriggerStatus, Repository } from '../../shared/api/index.ts';
import {
  AlreadyExistsError, ConflictError, createObject, deleteObject, emitEvent, getObject, kubeRequest, kubeTime, listObjects, mergePatch, microTime, patchStatus, replaceObject, resourcePath, retryOnConflict,
} from '../../shared/kube/index.ts';
import { identityTags } from '../../shared/snapshot-identity.ts';
import type { AgentIdentity, PodObject } from './auth.ts';
import { chainReaches, HttpError, jobRun, ownerChain, podHost, podNode } from './auth.ts';
import {
  backupPhaseWhileRunning, backupStatusAfterRun, claimableRun, claimHost, CONDITION_RECORDED, expectedHosts, initialStatus, invalidStatus, isFinished,
  leaseDecision, leaseName, nextRunStatus, renewDecision, reportHost, runEvent, scheduleStatusAfterRun, setCondition, triggersToPrune,
} from './plan.ts';
import type { LeaseView, RunTiming, TargetFacts } from './plan.ts';
import type { ClaimedRun, ClaimRequest, RenewAnswer, RenewRequest, ReportAnswer, ReportRequest } from '../../shared/agent-protocol.ts';
import { checkDue } from '../../shared/agent-protocol.ts';

export const FIELD_MANAGER = 'stash.appscode.com/handle-trigger';
export const CONTROLLER = 'stash.appscode.com/handle-trigger';
const TRIGGER_ANNOTATION = `${GROUP}/trigger`;
const BACKUP_LABEL = `${GROUP}/backup`;
const HOST_LABEL = `${GROUP}/host`;
const PLURAL = 'backuptriggers';

export interface HandlerConfig {
  kc: KubeConfig;
  timing: RunTiming;
  log: Logger;
  /** The clock (tests may move it). */
  now?: () => Date;
  /**
   * Serve only these namespaces (STASH_NAMESPACES: a namespaced install, tests): the sweep lists
   * their runs one namespace at a time, and events about objects elsewhere are ignored. Default: all.
   */
  namespaces?: readonly string[];
}

const now = (cfg: HandlerConfig): Date => (cfg.now ?? (() => new Date()))();

type StoredTrigger = BackupTrigger & { metadata: { name: string; namespace: string; uid?: string; resourceVersion?: string; creationTimestamp?: unknown; ownerReferences?: V1OwnerReference[]; generation?: number } };
type StoredBackup = Backup & { metadata: { name: string; namespace: string; uid?: string; resourceVersion?: string } };

/**
 * A host's Lease as the API sends it (JSON, read and written through shared/kube): the fields
 * handle-trigger reads or writes. renewTime and acquireTime are MicroTime strings
 * (2026-11-25T10:00:00.000000Z): parse them to compare, write them with microTime().
 */
interface LeaseObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string; namespace?: string; resourceVersion?: string;
    labels?: Record<string, string>; annotations?: Record<string, string>; ownerReferences?: V1OwnerReference[];
  };
  spec?: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

function triggerRef(namespace: string, name: string) {
  return { apiVersion: API_VERSION, kind: 'BackupTrigger', namespace, name };
}

function backupRef(namespace: string, name: string) {
  return { apiVersion: API_VERSION, kind: 'Backup', namespace, name };
}


function parseTrigger(cfg: HandlerConfig, raw: unknown): StoredTrigger | undefined {
  const result = triggerSchema.safeParse(raw);
  if (result.success) return result.data as StoredTrigger;
  const meta = (raw as { metadata?: { namespace?: string; name?: string } }).metadata;
  cfg.log.warn({ namespace: meta?.namespace, name: meta?.name, issues: result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`) }, 'skipping a BackupTrigger that does not match the schema');
  return undefined;
}

async function readTrigger(cfg: HandlerConfig, namespace: string, name: string): Promise<StoredTrigger | undefined> {
  const raw = await getObject(cfg.kc, triggerRef(namespace, name));
  return raw === undefined ? undefined : parseTrigger(cfg, raw);
}

async function readBackup(cfg: HandlerConfig, namespace: string, name: string): Promise<StoredBackup | undefined> {
  const raw = await getObject(cfg.kc, backupRef(namespace, name));
  if (raw === undefined) return undefined;
  const result = backupSchema.safeParse(raw);
  if (!result.success) {
    throw new HttpError(422, `Backup ${namespace}/${name} is invalid (${result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}); fix the Backup`);
  }
  return result.data as StoredBackup;
}

async function listTriggers(cfg: HandlerConfig, namespace?: string): Promise<StoredTrigger[]> {
  const items = await listObjects(cfg.kc, { apiVersion: API_VERSION, kind: 'BackupTrigger', namespace });
  return items.map((item) => parseTrigger(cfg, item)).filter((t): t is StoredTrigger => t !== undefined);
}

async function triggersOf(cfg: HandlerConfig, namespace: string, backup: string): Promise<StoredTrigger[]> {
  return (await listTriggers(cfg, namespace)).filter((t) => t.spec.targetBackup.name === backup);
}

async function writeTriggerStatus(cfg: HandlerConfig, trigger: StoredTrigger, status: BackupTriggerStatus): Promise<StoredTrigger> {
  const written = await patchStatus(cfg.kc, triggerRef(trigger.metadata.namespace, trigger.metadata.name), status as Record<string, unknown>, {
    fieldManager: FIELD_MANAGER, plural: PLURAL, ...(trigger.metadata.resourceVersion ? { resourceVersion: trigger.metadata.resourceVersion } : {}),
  });
  return (parseTrigger(cfg, written) ?? { ...trigger, status });
}

async function event(cfg: HandlerConfig, object: { apiVersion: string; kind: string; namespace: string; name: string; uid?: string },
  e: { type: 'Normal' | 'Warning'; reason: string; message: string }, action: string, related?: { apiVersion: string; kind: string; namespace: string; name: string; uid?: string }): Promise<void> {
  try {
    await emitEvent(cfg.kc, object, { ...e, action, ...(related ? { related } : {}) }, CONTROLLER, now(cfg));
  } catch (error) {
    cfg.log.warn({ err: (error as Error).message, reason: e.reason, name: object.name }, 'could not record an Event');
  }
}

// ---------------------------------------------------------------------------------------------
// Reconcile

async function targetFacts(cfg: HandlerConfig, backup: StoredBackup): Promise<TargetFacts> {
  const { kind, name, apiVersion } = backup.spec.targetRef;
  const namespace = backup.metadata.namespace;
  const facts: TargetFacts = { kind, name, exists: false };
  if (kind === 'AppBinding') {
    facts.exists = (await getObject(cfg.kc, { apiVersion: APPCATALOG_API_VERSION, kind, namespace, name })) !== undefined;
    return facts;
  }
  const object = await getObject<{ spec?: { replicas?: number }; metadata?: { uid?: string } }>(cfg.kc, { apiVersion, kind, namespace, name });
  facts.exists = object !== undefined;
  if (object === undefined) return facts;
  if (kind === 'StatefulSet') facts.replicas = object.spec?.replicas ?? 1;
  if (kind === 'DaemonSet') {
    const pods: PodObject[] = await listObjects(cfg.kc, { apiVersion: 'v1', kind: 'Pod', namespace });
    facts.nodeNames = pods
      .filter((p) => p.metadata?.deletionTimestamp === undefined && p.metadata?.ownerReferences?.some((r) => r.uid === object.metadata?.uid))
      .map(podNode).filter((n): n is string => n !== undefined);
  }
  return facts;
}

async function readLease(cfg: HandlerConfig, namespace: string, name: string): Promise<LeaseObject | undefined> {
  return getObject<LeaseObject>(cfg.kc, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespace, name });
}

/** A timestamp from an object read as JSON (an RFC 3339 Time or MicroTime string); undefined when absent or unparsable. */
function toDate(value: unknown): Date | undefined {
  if (typeof value !== 'string' || value === '') return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : new Date(ms);
}

export function leaseView(lease: LeaseObject | undefined): LeaseView | undefined {
  if (lease === undefined) return undefined;
  const view: LeaseView = {};
  if (lease.spec?.holderIdentity) view.holder = lease.spec.holderIdentity;
  const renew = toDate(lease.spec?.renewTime);
  if (renew) view.renewTime = renew;
  if (lease.spec?.leaseDurationSeconds !== undefined) view.durationSeconds = lease.spec.leaseDurationSeconds;
  const trigger = lease.metadata?.annotations?.[TRIGGER_ANNOTATION];
  if (trigger) view.trigger = trigger;
  return view;
}

function createdAt(trigger: StoredTrigger): Date {
  return toDate(trigger.metadata.creationTimestamp) ?? new Date(0);
}

async function ensureOwner(cfg: HandlerConfig, trigger: StoredTrigger, backup: StoredBackup): Promise<StoredTrigger> {
  const uid = backup.metadata.uid;
  const refs = trigger.metadata.ownerReferences ?? [];
  if (uid === undefined || refs.some((r) => r.uid === uid)) return trigger;
  const ownerReferences = [...refs.filter((r) => !(r.kind === 'Backup' && r.apiVersion.startsWith(`${GROUP}/`))), { apiVersion: API_VERSION, kind: 'Backup', name: backup.metadata.name, uid }];
  const patched = await mergePatch(cfg.kc, triggerRef(trigger.metadata.namespace, trigger.metadata.name), { metadata: { ownerReferences } }, { fieldManager: FIELD_MANAGER });
  return parseTrigger(cfg, patched) ?? trigger;
}

/**
 * Merge-patches the Backup's status with what `compute` derives from it (nothing when it returns
 * undefined), guarded by the resourceVersion it was derived from; on a conflict it re-reads the
 * Backup and derives again. The first attempt uses `known` when given (no read).
 */
async function patchBackupStatus(cfg: HandlerConfig, namespace: string, name: string, known: StoredBackup | undefined,
  compute: (backup: StoredBackup) => Partial<BackupStatus> | undefined): Promise<void> {
  let cached = known;
  await retryOnConflict(async () => {
    const current = cached ?? await readBackup(cfg, namespace, name);
    cached = undefined; // a retry reads the Backup again
    if (current === undefined) return;
    const patch = compute(current);
    if (patch === undefined) return;
    await patchStatus(cfg.kc, backupRef(namespace, current.metadata.name), patch as Record<string, unknown>, {
      fieldManager: FIELD_MANAGER, ...(current.metadata.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}),
    });
  });
}

/** Both patches in one (undefined when both are). */
function mergeStatus(a: Partial<BackupStatus> | undefined, b: Partial<BackupStatus> | undefined): Partial<BackupStatus> | undefined {
  return a === undefined ? b : b === undefined ? a : { ...a, ...b };
}

/**
 * Records a finished run on its Backup (status, condition, Event) once, then marks it Recorded.
 * A scheduled run's tick (scheduleStatusAfterRun) goes into the same status write.
 */
async function recordOnBackup(cfg: HandlerConfig, trigger: StoredTrigger, backup: StoredBackup): Promise<StoredTrigger> {
  const ns = backup.metadata.namespace;
  if (trigger.status?.conditions?.some((c) => c.type === CONDITION_RECORDED && c.status === 'True')) {
    await patchBackupStatus(cfg, ns, backup.metadata.name, backup, (current) => scheduleStatusAfterRun(current, trigger, now(cfg)));
    return trigger;
  }
  await patchBackupStatus(cfg, ns, backup.metadata.name, undefined,
    (current) => mergeStatus(backupStatusAfterRun(current, trigger, now(cfg)), scheduleStatusAfterRun(current, trigger, now(cfg))));
  const e = runEvent(trigger);
  await event(cfg, { ...backupRef(ns, backup.metadata.name), ...(backup.metadata.uid ? { uid: backup.metadata.uid } : {}) }, e, 'Backup',
    { ...triggerRef(ns, trigger.metadata.name), ...(trigger.metadata.uid ? { uid: trigger.metadata.uid } : {}) });
  const conditions = setCondition(trigger.status?.conditions, {
    type: CONDITION_RECORDED, status: 'True', reason: 'BackupStatusUpdated', message: `Backup ${backup.metadata.name} status and Event record this run`,
  }, now(cfg));
  return writeTriggerStatus(cfg, trigger, { ...trigger.status, conditions });
}

async function pruneHistory(cfg: HandlerConfig, backup: StoredBackup): Promise<string[]> {
  const ns = backup.metadata.namespace;
  const names = triggersToPrune(await triggersOf(cfg, ns, backup.metadata.name), backup.spec.backupHistoryLimit);
  for (const name of names) {
    if (await deleteObject(cfg.kc, triggerRef(ns, name))) {
      cfg.log.info({ namespace: ns, backup: backup.metadata.name, trigger: name }, 'pruned a finished run beyond backupHistoryLimit');
    }
  }
  return names;
}

async function leasesFor(cfg: HandlerConfig, trigger: StoredTrigger): Promise<Map<string, LeaseView | undefined>> {
  const leases = new Map<string, LeaseView | undefined>();
  for (const h of trigger.status?.hosts ?? []) {
    if (h.phase !== 'Running') continue;
    leases.set(h.host, leaseView(await readLease(cfg, trigger.metadata.namespace, leaseName(trigger.spec.targetBackup.name, h.host))));
  }
  return leases;
}

/**
 * Converges one BackupTrigger: owner, initial hosts, dead agents, aggregate phase, the Backup's
 * status and Event, history. Safe to call any number of times. Returns the trigger as stored.
 */
export async function reconcileTrigger(cfg: HandlerConfig, namespace: string, name: string): Promise<StoredTrigger | undefined> {
  return retryOnConflict(() => reconcileOnce(cfg, namespace, name));
}

async function reconcileOnce(cfg: HandlerConfig, namespace: string, name: string): Promise<StoredTrigger | undefined> {
  let trigger = await readTrigger(cfg, namespace, name);
  if (trigger === undefined) return undefined;
  const log = cfg.log.child({ namespace, trigger: name });
  const backupName = trigger.spec.targetBackup.name;
  const backup = await readBackup(cfg, namespace, backupName);
  if (backup === undefined) {
    if (isFinished(trigger.status?.phase)) return trigger;
    const message = `Backup ${namespace}/${backupName} named in spec.targetBackup.name does not exist; create it, or delete this BackupTrigger and create one for an existing Backup`;
    trigger = await writeTriggerStatus(cfg, trigger, invalidStatus(trigger.status, 'BackupNotFound', message, now(cfg)));
    await event(cfg, { ...triggerRef(namespace, name), ...(trigger.metadata.uid ? { uid: trigger.metadata.uid } : {}) },
      { type: 'Warning', reason: 'BackupNotFound', message }, 'Backup');
    log.warn({ backup: backupName }, 'run failed: its Backup does not exist');
    return trigger;
  }
  trigger = await ensureOwner(cfg, trigger, backup);

  if (trigger.status?.phase === undefined) {
    const repoNamespace = backup.spec.repository.namespace ?? namespace;
    const repoExists = (await getObject(cfg.kc, { apiVersion: API_VERSION, kind: 'Repository', namespace: repoNamespace, name: backup.spec.repository.name })) !== undefined;
    const hosts = repoExists ? expectedHosts(await targetFacts(cfg, backup)) : {
      ok: false as const, reason: 'RepositoryNotFound',
      message: `Repository ${repoNamespace}/${backup.spec.repository.name} named in Backup ${backupName}'s spec.repository does not exist; create it and trigger again`,
    };
    trigger = await writeTriggerStatus(cfg, trigger, initialStatus(hosts, trigger.metadata.generation, now(cfg), trigger.status?.conditions));
    log.info({ phase: trigger.status?.phase, hosts: trigger.status?.hosts?.map((h) => h.host) }, 'run initialised');
  }

  if (!isFinished(trigger.status?.phase)) {
    const status = trigger.status ?? {};
    const next = nextRunStatus(status, await leasesFor(cfg, trigger), name, createdAt(trigger), cfg.timing, now(cfg));
    if (JSON.stringify(next) !== JSON.stringify(status)) {
      trigger = await writeTriggerStatus(cfg, trigger, next);
      if (isFinished(next.phase)) log.info({ phase: next.phase, error: next.error }, 'run finished');
    }
    if (!isFinished(trigger.status?.phase)) {
      // The Backup while the run goes: phase Running, and a scheduled run's tick (lastScheduledTime,
      // nextScheduledTime: the sweep did not write them), in one write, before the run can finish
      // and be pruned. A finished run records both in recordOnBackup below.
      const running = trigger.status?.phase === 'Running';
      const current = trigger;
      await patchBackupStatus(cfg, namespace, backupName, backup,
        (b) => mergeStatus(running ? backupPhaseWhileRunning(b) : undefined, scheduleStatusAfterRun(b, current, now(cfg))));
    }
  }

  if (isFinished(trigger.status?.phase)) {
    trigger = await recordOnBackup(cfg, trigger, backup);
    await pruneHistory(cfg, backup);
  }
  return trigger;
}

/** A Backup changed (e.g. its backupHistoryLimit): prune its history. */
export async function reconcileBackupHistory(cfg: HandlerConfig, namespace: string, name: string): Promise<void> {
  const backup = await readBackup(cfg, namespace, name);
  if (backup !== undefined) await pruneHistory(cfg, backup);
}

/**
 * The periodic sweep: every run not yet recorded (in the served namespaces) is reconciled (this
 * fails the runs of dead agents), and every Backup with finished runs is pruned. Failures of one
 * run do not stop others.
 */
export async function resync(cfg: HandlerConfig): Promise<{ reconciled: number; failed: number }> {
  const triggers = cfg.namespaces === undefined
    ? await listTriggers(cfg)
    : (await Promise.all(cfg.namespaces.map((ns) => listTriggers(cfg, ns)))).flat();
  let reconciled = 0;
  let failed = 0;
  const backups = new Set<string>();
  for (const t of triggers) {
    backups.add(`${t.metadata.namespace}/${t.spec.targetBackup.name}`);
    if (t.status?.conditions?.some((c) => c.type === CONDITION_RECORDED && c.status === 'True')) continue;
    try {
      await reconcileTrigger(cfg, t.metadata.namespace, t.metadata.name);
      reconciled++;
    } catch (error) {
      failed++;
      cfg.log.error({ err: error, namespace: t.metadata.namespace, trigger: t.metadata.name }, 'could not reconcile a run during the sweep');
    }
  }
  for (const key of backups) {
    const [namespace = '', name = ''] = key.split('/');
    try {
      await reconcileBackupHistory(cfg, namespace, name);
    } catch (error) {
      failed++;
      cfg.log.error({ err: error, namespace, backup: name }, 'could not prune the history of a Backup during the sweep');
    }
  }
  return { reconciled, failed };
}

// ---------------------------------------------------------------------------------------------
// The agent protocol

interface AgentContext {
  backup: StoredBackup;
  /** Set for a database Job's pod: the only run it may work on, and its Job. */
  jobRun?: { job: string; trigger: string };
}

/** 403 unless the agent's pod belongs to the Backup's workload (or to a run of it, through its Job). */
async function agentContext(cfg: HandlerConfig, agent: AgentIdentity, namespace: string, backupName: string, host: string): Promise<AgentContext> {
  if (namespace !== agent.namespace) {
    throw new HttpError(403, `pod ${agent.namespace}/${agent.podName} may only work on Backups in its own namespace ${agent.namespace}, not ${namespace}`, 'namespace');
  }
  const backup = await readBackup(cfg, namespace, backupName);
  if (backup === undefined) throw new HttpError(404, `Backup ${namespace}/${backupName} does not exist; check the agent's --backup-name`, 'backup');
  const chain = await ownerChain(cfg.kc, agent.pod);
  const target = backup.spec.targetRef;
  const run = jobRun(chain);
  let context: AgentContext;
  if (run !== undefined) {
    const trigger = await readTrigger(cfg, namespace, run.trigger);
    if (trigger?.spec.targetBackup.name !== backupName) {
      throw new HttpError(403, `pod ${agent.podName} belongs to Job ${run.job} of run ${run.trigger}, which is not a run of Backup ${backupName}`);
    }
    context = { backup, jobRun: run };
  } else if (chainReaches(chain, target)) {
    context = { backup };
  } else {
    const owners = chain.map((o) => `${o.kind} ${o.name}`).join(' -> ') || 'no controller';
    throw new HttpError(403, `pod ${agent.podName} (Pod -> ${owners}) does not belong to ${target.kind} ${target.name}, the target of Backup ${backupName}; only that workload's pods (or its run's Job) may back it up`);
  }
  const expected = context.jobRun ? 'host-0' : podHost(target.kind, agent.pod);
  if (expected !== host) {
    throw new HttpError(403, `pod ${agent.podName} backs up as ${expected ?? '(unknown host: the pod has no ordinal or node)'}, not ${host}; set STASH_HOST to ${expected ?? 'the right host'} or leave it unset`, 'host');
  }
  return context;
}

function leaseObject(backup: StoredBackup, name: string, host: string, trigger: string, pod: string, durationSeconds: number, at: Date, previous?: LeaseObject): LeaseObject {
  const transitions = (previous?.spec?.leaseTransitions ?? 0) + (previous?.spec?.holderIdentity && previous.spec.holderIdentity !== pod ? 1 : 0);
  return {
    apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
    metadata: {
      name, namespace: backup.metadata.namespace,
      labels: { [BACKUP_LABEL]: backup.metadata.name, [HOST_LABEL]: host.slice(0, 63) },
      annotations: { [TRIGGER_ANNOTATION]: trigger },
      ...(backup.metadata.uid ? { ownerReferences: [{ apiVersion: API_VERSION, kind: 'Backup', name: backup.metadata.name, uid: backup.metadata.uid }] } : {}),
      ...(previous?.metadata?.resourceVersion ? { resourceVersion: previous.metadata.resourceVersion } : {}),
    },
    spec: {
      holderIdentity: pod, leaseDurationSeconds: durationSeconds, acquireTime: microTime(at), renewTime: microTime(at), leaseTransitions: transitions,
    },
  };
}

/** Takes the host's lease for `pod`; false when another live holder has it or another claim won the race. */
async function acquireLease(cfg: HandlerConfig, backup: StoredBackup, host: string, trigger: string, pod: string): Promise<boolean> {
  const ns = backup.metadata.namespace;
  const name = leaseName(backup.metadata.name, host);
  const current = await readLease(cfg, ns, name);
  const at = now(cfg);
  const decision = leaseDecision(leaseView(current), current !== undefined, pod, at);
  const body = leaseObject(backup, name, host, trigger, pod, cfg.timing.leaseDurationSeconds, at, current);
  try {
    if (decision.action === 'held') return false;
    if (decision.action === 'create') await createObject(cfg.kc, body, { fieldManager: FIELD_MANAGER });
    else await replaceObject(cfg.kc, body, { fieldManager: FIELD_MANAGER });
    return true;
  } catch (error) {
    // Another replica created or updated it first: it holds the lease now.
    if (error instanceof AlreadyExistsError || error instanceof ConflictError) return false;
    throw error;
  }
}

/** Gives the lease up if `pod` still holds it. */
async function releaseLease(cfg: HandlerConfig, namespace: string, name: string, pod: string): Promise<void> {
  await retryOnConflict(async () => {
    const lease = await readLease(cfg, namespace, name);
    if (lease?.spec?.holderIdentity !== pod) return;
    const annotations = { ...lease.metadata?.annotations };
    delete annotations[TRIGGER_ANNOTATION];
    const spec: NonNullable<LeaseObject['spec']> = {};
    if (lease.spec.leaseDurationSeconds !== undefined) spec.leaseDurationSeconds = lease.spec.leaseDurationSeconds;
    if (lease.spec.leaseTransitions !== undefined) spec.leaseTransitions = lease.spec.leaseTransitions;
    const body: LeaseObject = { ...lease, metadata: { ...lease.metadata, annotations }, spec };
    await replaceObject(cfg.kc, body, { fieldManager: FIELD_MANAGER });
  });
}

async function repositoryOf(cfg: HandlerConfig, backup: StoredBackup): Promise<Repository & { metadata: { name: string; namespace: string; resourceVersion?: string } }> {
  const ns = backup.spec.repository.namespace ?? backup.metadata.namespace;
  const name = backup.spec.repository.name;
  const raw = await getObject(cfg.kc, { apiVersion: API_VERSION, kind: 'Repository', namespace: ns, name });
  if (raw === undefined) throw new HttpError(404, `Repository ${ns}/${name} named in Backup ${backup.metadata.name}'s spec.repository does not exist; create it`);
  const parsed = repositorySchema.safeParse(raw);
  if (!parsed.success) throw new HttpError(422, `Repository ${ns}/${name} is invalid (${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}); fix it`);
  return parsed.data as Repository & { metadata: { name: string; namespace: string; resourceVersion?: string } };
}

function backendWithoutSecrets(repo: Repository): Repository['spec']['backend'] {
  // The backend spec names the Secret but holds no secret values: pass it whole.
  return repo.spec.backend;
}

/**
 * POST /agent/v1/claim: the oldest run of the Backup waiting for this host, now Running on this
 * pod with the host's Lease; undefined (204) when there is none or another live replica holds the lease.
 */
export async function claim(cfg: HandlerConfig, agent: AgentIdentity, req: ClaimRequest): Promise<ClaimedRun | undefined> {
  const ctx = await agentContext(cfg, agent, req.namespace, req.backup, req.host);
  const { backup } = ctx;
  const log = cfg.log.child({ namespace: req.namespace, backup: req.backup, host: req.host, pod: agent.podName });
  // Runs nobody has reconciled yet (no event arrived so far) get their hosts now.
  let triggers = await triggersOf(cfg, req.namespace, req.backup);
  if (triggers.some((t) => t.status?.phase === undefined)) {
    for (const t of triggers.filter((x) => x.status?.phase === undefined)) await reconcileTrigger(cfg, req.namespace, t.metadata.name);
    triggers = await triggersOf(cfg, req.namespace, req.backup);
  }
  const candidate = claimableRun(triggers, req.host, ctx.jobRun?.trigger);
  if (candidate === undefined) return undefined;
  const repository = await repositoryOf(cfg, backup);
  const trigger = candidate.metadata.name ?? '';
  if (!await acquireLease(cfg, backup, req.host, trigger, agent.podName)) {
    log.info({ trigger }, 'another replica holds the lease: nothing to do for this pod');
    return undefined;
  }
  let claimed = false;
  try {
    await retryOnConflict(async () => {
      const current = await readTrigger(cfg, req.namespace, trigger);
      const entry = current?.status?.hosts?.find((h) => h.host === req.host);
      if (current === undefined || entry?.phase !== 'Pending' || isFinished(current.status?.phase)) return;
      await writeTriggerStatus(cfg, current, claimHost(current.status ?? {}, req.host, agent.podName, ctx.jobRun?.job, now(cfg)));
      claimed = true;
    });
  } finally {
    if (!claimed) await releaseLease(cfg, req.namespace, leaseName(req.backup, req.host), agent.podName);
  }
  if (!claimed) return undefined;
  log.info({ trigger }, 'host claimed');
  try {
    await reconcileTrigger(cfg, req.namespace, trigger);
  } catch (error) {
    log.warn({ err: (error as Error).message, trigger }, 'could not update the Backup after a claim; the next event or sweep will');
  }
  const spec = backup.spec;
  return {
    namespace: req.namespace,
    backup: req.backup,
    trigger,
    host: req.host,
    leaseDurationSeconds: cfg.timing.leaseDurationSeconds,
    repository: {
      namespace: repository.metadata.namespace, name: repository.metadata.name,
      backend: backendWithoutSecrets(repository), storageSecretName: repository.spec.backend.storageSecretName,
    },
    targetDirectories: spec.targetDirectories ?? [],
    excludes: spec.excludes ?? [],
    tags: identityTags({ namespace: req.namespace, backup: req.backup, kind: spec.targetRef.kind, workload: spec.targetRef.name }),
    ...(spec.retentionPolicy ? { retentionPolicy: spec.retentionPolicy } : {}),
    hostname: req.host,
    targetKind: spec.targetRef.kind,
    args: spec.containerAttributes?.args ?? [],
    ...(checkDue(repository.status?.lastCheckTime, now(cfg)) ? { checkRepository: true } : {}),
  };
}

async function agentRun(cfg: HandlerConfig, agent: AgentIdentity, req: { namespace: string; trigger: string; host: string }): Promise<{ trigger: StoredTrigger; backup: StoredBackup }> {
  if (req.namespace !== agent.namespace) {
    throw new HttpError(403, `pod ${agent.namespace}/${agent.podName} may only work on runs in its own namespace ${agent.namespace}, not ${req.namespace}`, 'namespace');
  }
  const trigger = await readTrigger(cfg, req.namespace, req.trigger);
  if (trigger === undefined) throw new HttpError(409, `run ${req.namespace}/${req.trigger} no longer exists (deleted or pruned); stop this backup`, 'trigger');
  const { backup } = await agentContext(cfg, agent, req.namespace, trigger.spec.targetBackup.name, req.host);
  return { trigger, backup };
}

/** POST /agent/v1/renew: extends the lease; 409 when this pod lost it. */
export async function renew(cfg: HandlerConfig, agent: AgentIdentity, req: RenewRequest): Promise<RenewAnswer> {
  const { trigger, backup } = await agentRun(cfg, agent, req);
  const name = leaseName(backup.metadata.name, req.host);
  return retryOnConflict(async () => {
    const lease = await readLease(cfg, req.namespace, name);
    const entry = trigger.status?.hosts?.find((h) => h.host === req.host);
    const decision = renewDecision(leaseView(lease), entry, req.host, agent.podName, req.trigger, name);
    if (!decision.ok || lease === undefined) throw new HttpError(409, decision.ok ? `lease ${name} is gone; stop this backup and claim again` : decision.message);
    const at = now(cfg);
    const body: LeaseObject = { ...lease, spec: { ...lease.spec, renewTime: microTime(at), leaseDurationSeconds: cfg.timing.leaseDurationSeconds } };
    await replaceObject(cfg.kc, body, { fieldManager: FIELD_MANAGER });
    return { renewTime: at.toISOString(), leaseDurationSeconds: cfg.timing.leaseDurationSeconds };
  });
}

/** POST /agent/v1/report: records the host's outcome and the Repository's state, releases the lease. */
export async function report(cfg: HandlerConfig, agent: AgentIdentity, req: ReportRequest): Promise<ReportAnswer> {
  const { backup } = await agentRun(cfg, agent, req);
  const name = leaseName(backup.metadata.name, req.host);
  const log = cfg.log.child({ namespace: req.namespace, trigger: req.trigger, host: req.host, pod: agent.podName });
  const at = now(cfg);
  await retryOnConflict(async () => {
    const trigger = await readTrigger(cfg, req.namespace, req.trigger);
    if (trigger === undefined) throw new HttpError(409, `run ${req.namespace}/${req.trigger} no longer exists; the result is dropped`);
    const entry = trigger.status?.hosts?.find((h) => h.host === req.host);
    // A repeated report (the first answer was lost on the way back) is answered again, not refused.
    if (entry?.pod === agent.podName && entry.phase === req.outcome.phase && entry.snapshotId === req.outcome.snapshotId) return;
    const decision = renewDecision(leaseView(await readLease(cfg, req.namespace, name)), entry, req.host, agent.podName, req.trigger, name);
    if (!decision.ok) throw new HttpError(409, `${decision.message}; the result is dropped`);
    await writeTriggerStatus(cfg, trigger, reportHost(trigger.status ?? {}, req.host, req.outcome, at));
  });
  const repo = req.outcome.repository;
  if (repo !== undefined) {
    const repository = await repositoryOf(cfg, backup);
    const status: Record<string, unknown> = { snapshotCount: repo.snapshotCount, totalSize: repo.totalSize };
    if (req.outcome.phase === 'Succeeded') status.lastBackupTime = kubeTime(at);
    if (repo.integrity !== undefined) {
      status.integrity = repo.integrity;
      status.lastCheckTime = kubeTime(at);
    }
    await patchStatus(cfg.kc, { apiVersion: API_VERSION, kind: 'Repository', namespace: repository.metadata.namespace, name: repository.metadata.name }, status,
      { fieldManager: FIELD_MANAGER, plural: 'repositories' });
  }
  await releaseLease(cfg, req.namespace, name, agent.podName);
  log.info({ phase: req.outcome.phase, snapshotId: req.outcome.snapshotId }, 'host reported');
  const after = await reconcileTrigger(cfg, req.namespace, req.trigger);
  return { trigger: req.trigger, host: req.host, phase: after?.status?.phase ?? 'Unknown' };
}

// ---------------------------------------------------------------------------------------------
// Manual runs

/** Creates a Manual run of the Backup (owned by it) and initialises it; returns its name. */
export async function createManualTrigger(cfg: HandlerConfig, namespace: string, backupName: string, requestedBy: string | undefined): Promise<string> {
  const backup = await readBackup(cfg, namespace, backupName);
  if (backup === undefined) throw new HttpError(404, `Backup ${namespace}/${backupName} does not exist; check the namespace and name in the URL`);
  const body: Record<string, unknown> = {
    apiVersion: API_VERSION, kind: 'BackupTrigger',
    metadata: {
      generateName: `${backupName.slice(0, 230)}-manual-`, namespace,
      labels: { [BACKUP_LABEL]: backupName.slice(0, 63) },
      ...(requestedBy ? { annotations: { [`${GROUP}/requested-by`]: requestedBy } } : {}),
      ...(backup.metadata.uid ? { ownerReferences: [{ apiVersion: API_VERSION, kind: 'Backup', name: backupName, uid: backup.metadata.uid }] } : {}),
    },
    spec: { targetBackup: { name: backupName }, origin: 'Manual' },
  };
  // generateName, no name (createObject needs one): POST it to the namespace's collection.
  const created = await kubeRequest<{ metadata?: { name?: string } }>(cfg.kc, `create BackupTrigger for Backup ${namespace}/${backupName}`, 'POST',
    resourcePath(API_VERSION, PLURAL, { namespace }), { query: { fieldManager: FIELD_MANAGER }, body });
  const name = created.metadata?.name ?? '';
  try {
    await reconcileTrigger(cfg, namespace, name);
  } catch (error) {
    cfg.log.warn({ err: (error as Error).message, namespace, trigger: name }, 'created a run but could not initialise it yet; its event or the sweep will');
  }
  return name;
}

