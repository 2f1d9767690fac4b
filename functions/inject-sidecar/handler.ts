// inject-sidecar's I/O: level-triggered reconciliation of the backup sidecar of one Backup, and
// the mapping of AgentTemplate / Repository / workload events and sweeps onto Backups.
//
// Every call re-reads what it needs; nothing is remembered between calls. The sidecar is written
// with server-side apply under FIELD_MANAGER and removed by applying an empty configuration with
// the same manager (a finalizer on the Backup guards that). The workload is applied to only when
// its pod template differs from the plan, so a resync of unchanged Backups only reads.
import { CustomObjectsApi } from '@kubernetes/client-node';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { agentName, agentTemplate as agentTemplateSchema, API_VERSION, backup as backupSchema, formatPath, GROUP, repository as repositorySchema, VERSION } from '../../shared/api/index.ts';
import type { AgentTemplate, Backup, Repository } from '../../shared/api/index.ts';
import {
  applyObject, ConflictError, conditionUnchanged, emitEvent, getObject, InvalidError, kubeCall, mergePatch, patchStatus, setCondition,
} from '../../shared/kube/index.ts';
import type { Condition, ConditionInput, ObjectRef } from '../../shared/kube/index.ts';
import { reconcileBatch } from '../../shared/runtime/index.ts';
import type { BatchResult as SharedBatchResult } from '../../shared/runtime/index.ts';
import { servesNamespace } from '../../shared/runtime/index.ts';
import { isApplied, ownsFields } from './compare.ts';
import {
  describeWorkload, FIELD_MANAGER, FINALIZER, otherClaimant, planSidecar, refusal, removalConfig, TARGET_ANNOTATION, unsupportedTargetMessage,
  WORKLOAD_KINDS,
} from './plan.ts';
import type { PlanOptions, RefusalReason, Workload } from './plan.ts';

export const REPORTING_CONTROLLER = FIELD_MANAGER;
export const SIDECAR_CONDITION = 'SidecarInjected';

export interface HandlerOptions extends PlanOptions {
  now?: () => Date;
  /**
   * Only these namespaces (default: all). Sweeps and AgentTemplate/Repository events then list
   * Backups namespace by namespace. Read at each use, so a caller may extend the list.
   */
  namespaces?: readonly string[];
}

export type Outcome =
  | 'injected' // the workload was applied to
  | 'unchanged' // the workload already had the planned sidecar
  | 'refused' // a condition says why nothing was applied
  | 'skipped' // not a sidecar Backup (AppBinding)
  | 'removed' // the Backup is being deleted: sidecar removed, finalizer gone
  | 'gone'; // the Backup does not exist

export interface BackupKey {
  namespace: string;
  name: string;
}

/** Lists Backups once per namespace (or once for all) within one invocation. */
export class BackupLister {
  private readonly kc: KubeConfig;
  private readonly namespaces: readonly string[] | undefined;
  private readonly byNamespace = new Map<string, Promise<KubernetesObject[]>>();
  private all: Promise<KubernetesObject[]> | undefined;

  constructor(kc: KubeConfig, namespaces?: readonly string[]) {
    this.kc = kc;
    this.namespaces = namespaces === undefined ? undefined : [...namespaces];
  }

  /** The Backups in `namespace`, or in every namespace this function serves. */
  list(namespace?: string): Promise<KubernetesObject[]> {
    if (namespace === undefined) {
      const only = this.namespaces;
      this.all ??= only === undefined
        ? listBackups(this.kc)
        : Promise.all(only.map((ns) => this.list(ns))).then((lists) => lists.flat());
      return this.all;
    }
    if (this.all !== undefined) return this.all.then((items) => items.filter((b) => b.metadata?.namespace === namespace));
    let cached = this.byNamespace.get(namespace);
    if (cached === undefined) {
      cached = listBackups(this.kc, namespace);
      this.byNamespace.set(namespace, cached);
    }
    return cached;
  }
}

/** Every Backup (in `namespace`, or in all namespaces), following list continuations. */
export async function listBackups(kc: KubeConfig, namespace?: string): Promise<KubernetesObject[]> {
  const api = kc.makeApiClient(CustomObjectsApi);
  const items: KubernetesObject[] = [];
  let token: string | undefined;
  do {
    const common = { group: GROUP, version: VERSION, plural: 'backups', limit: 500, _continue: token };
    const page = await kubeCall(`list Backups${namespace ? ` in namespace ${namespace}` : ' in all namespaces'}`, () => (namespace === undefined
      ? api.listClusterCustomObject(common)
      : api.listNamespacedCustomObject({ ...common, namespace }))) as { items?: KubernetesObject[]; metadata?: { continue?: string } };
    for (const item of page.items ?? []) items.push({ ...item, apiVersion: API_VERSION, kind: 'Backup' });
    token = page.metadata?.continue || undefined;
  } while (token !== undefined);
  return items;
}

function backupRef(key: BackupKey): ObjectRef {
  return { apiVersion: API_VERSION, kind: 'Backup', namespace: key.namespace, name: key.name };
}

function workloadRef(kind: string, namespace: string, name: string): ObjectRef | undefined {
  const apiVersion = WORKLOAD_KINDS[kind];
  return apiVersion === undefined ? undefined : { apiVersion, kind, namespace, name };
}

function targetKey(kind: string, name: string): string {
  return `${kind}/${name}`;
}

function parseTargetKey(value: string | undefined): { kind: string; name: string } | undefined {
  const slash = value?.indexOf('/') ?? -1;
  if (value === undefined || slash <= 0) return undefined;
  return { kind: value.slice(0, slash), name: value.slice(slash + 1) };
}

interface Metadata {
  name?: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  deletionTimestamp?: unknown;
  finalizers?: string[];
  annotations?: Record<string, string>;
}

function meta(object: KubernetesObject): Metadata {
  return (object.metadata ?? {});
}

function conditionsOf(object: KubernetesObject): Condition[] {
  const status = (object as { status?: { conditions?: Condition[] } }).status;
  return status?.conditions ?? [];
}

function describeIssues(error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] }): string {
  return error.issues.slice(0, 5).map((i) => `${formatPath(i.path) || '(root)'}: ${i.message}`).join('; ');
}

/** Per-invocation context: the clock, plan options, a logger and the Backup lister. */
interface Context {
  kc: KubeConfig;
  log: Logger;
  options: HandlerOptions;
  lister: BackupLister;
  now: () => Date;
}

function context(kc: KubeConfig, log: Logger, options: HandlerOptions, lister?: BackupLister): Context {
  return { kc, log, options, lister: lister ?? new BackupLister(kc, options.namespaces), now: options.now ?? (() => new Date()) };
}

/**
 * Writes `conditions` into the Backup's status unless they are already there; emits `event`
 * (on the Backup) only when something changed. Retries on a stale resourceVersion.
 */
async function setBackupConditions(
  ctx: Context, backup: KubernetesObject, conditions: ConditionInput[], event: { type: 'Normal' | 'Warning'; reason: string; message: string } | undefined,
  forceEvent = false,
): Promise<boolean> {
  let current = backup;
  let changed = false;
  for (let attempt = 0; ; attempt++) {
    const existing = conditionsOf(current);
    if (conditions.every((c) => conditionUnchanged(existing, c))) break;
    let next = existing;
    for (const c of conditions) next = setCondition(next, c, ctx.now());
    const m = meta(current);
    try {
      await patchStatus(ctx.kc, backupRef({ namespace: m.namespace ?? '', name: m.name ?? '' }), { conditions: next },
        { fieldManager: FIELD_MANAGER, resourceVersion: m.resourceVersion, plural: 'backups' });
      changed = true;
      break;
    } catch (error) {
      if (!(error instanceof ConflictError) || attempt >= 4) throw error;
      const fresh = await getObject(ctx.kc, backupRef({ namespace: m.namespace ?? '', name: m.name ?? '' }));
      if (fresh === undefined) return false;
      current = fresh;
    }
  }
  if (event !== undefined && (changed || forceEvent)) {
    await emitEvent(ctx.kc, backup, { ...event, action: 'Inject' }, REPORTING_CONTROLLER, ctx.now());
  }
  return changed;
}

async function refuse(ctx: Context, backup: KubernetesObject, reason: RefusalReason, message: string): Promise<Outcome> {
  const generation = meta(backup).generation;
  const condition = refusal(reason, message, generation);
  const changed = await setBackupConditions(ctx, backup, [condition], { type: 'Warning', reason, message });
  // Said once as a warning when it becomes true; every resync after that only at debug level.
  ctx.log[changed ? 'warn' : 'debug']({ reason }, message);
  return 'refused';
}

/** Merge-patches the Backup's metadata (finalizers, annotation), guarded by resourceVersion. */
async function patchBackupMetadata(ctx: Context, backup: KubernetesObject, change: (m: Metadata) => Record<string, unknown> | undefined): Promise<KubernetesObject> {
  let current = backup;
  for (let attempt = 0; ; attempt++) {
    const m = meta(current);
    const patch = change(m);
    if (patch === undefined) return current;
    try {
      return await mergePatch(ctx.kc, backupRef({ namespace: m.namespace ?? '', name: m.name ?? '' }), { metadata: patch },
        { fieldManager: FIELD_MANAGER, resourceVersion: m.resourceVersion });
    } catch (error) {
      if (!(error instanceof ConflictError) || attempt >= 4) throw error;
      const fresh = await getObject(ctx.kc, backupRef({ namespace: m.namespace ?? '', name: m.name ?? '' }));
      if (fresh === undefined) return current;
      current = fresh;
    }
  }
}

/** Applies the removal configuration to the workload if this manager owns anything in it. */
async function removeSidecar(ctx: Context, namespace: string, target: { kind: string; name: string }): Promise<boolean> {
  const ref = workloadRef(target.kind, namespace, target.name);
  if (ref === undefined) return false;
  const workload = await getObject<Workload & KubernetesObject>(ctx.kc, ref);
  if (workload === undefined || !ownsFields(workload.metadata.managedFields, FIELD_MANAGER)) return false;
  await applyObject(ctx.kc, removalConfig({ apiVersion: ref.apiVersion, kind: ref.kind, metadata: { name: ref.name, namespace } }) as KubernetesObject,
    { fieldManager: FIELD_MANAGER, force: false });
  ctx.log.info({ namespace, kind: target.kind, name: target.name }, 'removed the backup sidecar from the workload');
  return true;
}

/** The Backup is being deleted: take the sidecar out of its workload, then let it go. */
async function finalize(ctx: Context, backup: KubernetesObject): Promise<Outcome> {
  const m = meta(backup);
  if (!(m.finalizers ?? []).includes(FINALIZER)) return 'gone';
  const namespace = m.namespace ?? '';
  const spec = (backup as { spec?: { targetRef?: { kind?: string; name?: string } } }).spec;
  const targets = new Map<string, { kind: string; name: string }>();
  const annotated = parseTargetKey(m.annotations?.[TARGET_ANNOTATION]);
  if (annotated) targets.set(targetKey(annotated.kind, annotated.name), annotated);
  if (spec?.targetRef?.kind && spec.targetRef.name) targets.set(targetKey(spec.targetRef.kind, spec.targetRef.name), { kind: spec.targetRef.kind, name: spec.targetRef.name });
  for (const target of targets.values()) {
    if (await claimedByAnother(ctx, backup, target)) continue; // another Backup's sidecar: leave it
    await removeSidecar(ctx, namespace, target);
  }
  await patchBackupMetadata(ctx, backup, (current) => {
    const finalizers = current.finalizers ?? [];
    if (!finalizers.includes(FINALIZER)) return undefined;
    return { finalizers: finalizers.filter((f) => f !== FINALIZER) };
  });
  ctx.log.info({ namespace, name: m.name }, 'Backup deleted: sidecar removed and finalizer released');
  // Another Backup of the same workload may now own the sidecar.
  const siblings = (await ctx.lister.list(namespace)).filter((b) => {
    const bm = meta(b);
    const ref = (b as { spec?: { targetRef?: { kind?: string; name?: string } } }).spec?.targetRef;
    return bm.name !== m.name && bm.deletionTimestamp === undefined && ref !== undefined &&
      [...targets.keys()].includes(targetKey(ref.kind ?? '', ref.name ?? ''));
  });
  for (const sibling of siblings) await reconcileWith(ctx, { namespace, name: meta(sibling).name ?? '' });
  return 'removed';
}

/** True when a live Backup other than `backup` with an injected sidecar there owns `target`'s sidecar. */
async function claimedByAnother(ctx: Context, backup: KubernetesObject, target: { kind: string; name: string }): Promise<boolean> {
  const m = meta(backup);
  const others = (await ctx.lister.list(m.namespace)).filter((b) => {
    const bm = meta(b);
    return bm.name !== m.name && bm.deletionTimestamp === undefined && bm.annotations?.[TARGET_ANNOTATION] === targetKey(target.kind, target.name);
  });
  return others.length > 0;
}

/** Reconciles the backup sidecar of one Backup; safe to call any number of times, in any order. */
export async function reconcileBackup(kc: KubeConfig, key: BackupKey, log: Logger, options: HandlerOptions = {}): Promise<Outcome> {
  return reconcileWith(context(kc, log, options), key);
}

async function reconcileWith(ctx: Context, key: BackupKey): Promise<Outcome> {
  const log = ctx.log.child({ namespace: key.namespace, backup: key.name });
  const c: Context = { ...ctx, log };
  let raw = await getObject(c.kc, backupRef(key));
  if (raw === undefined) return 'gone';
  raw = { ...raw, apiVersion: API_VERSION, kind: 'Backup' };
  if (meta(raw).deletionTimestamp !== undefined) return finalize(c, raw);

  const parsed = backupSchema.safeParse(raw);
  if (!parsed.success) {
    return refuse(c, raw, 'InvalidBackup', `Backup ${key.namespace}/${key.name} does not match the Backup schema (${describeIssues(parsed.error)}): fix these fields`);
  }
  const backup: Backup = parsed.data;
  const spec = backup.spec;
  const target = spec.targetRef;
  const namespace = key.namespace;

  // The sidecar sits in another workload than targetRef names (targetRef was changed): take it out there first.
  const previous = parseTargetKey(meta(raw).annotations?.[TARGET_ANNOTATION]);
  if (previous !== undefined && targetKey(previous.kind, previous.name) !== targetKey(target.kind, target.name)) {
    await removeSidecar(c, namespace, previous);
    raw = await patchBackupMetadata(c, raw, (m) => (m.annotations?.[TARGET_ANNOTATION] === undefined ? undefined : { annotations: { [TARGET_ANNOTATION]: null } }));
  }

  if (target.kind === 'AppBinding') {
    if ((meta(raw).finalizers ?? []).includes(FINALIZER)) {
      await patchBackupMetadata(c, raw, (m) => ({ finalizers: (m.finalizers ?? []).filter((f) => f !== FINALIZER) }));
    }
    log.debug('database Backup: launch-db-job runs it, no sidecar');
    return 'skipped';
  }
  const unsupported = unsupportedTargetMessage(target);
  if (unsupported !== undefined) return refuse(c, raw, 'UnsupportedTarget', unsupported);
  const what = describeWorkload(target.kind, namespace, target.name);

  const templateName = agentName(spec.backupAgent);
  const templateRaw = await getObject(c.kc, { apiVersion: API_VERSION, kind: 'AgentTemplate', name: templateName });
  if (templateRaw === undefined) {
    return refuse(c, raw, 'AgentTemplateNotFound',
      `AgentTemplate ${templateName} (cluster-scoped) named by spec.backupAgent does not exist: create it (the defaults are in shared/api/defaults/agent-templates.yaml) ` +
      'or set spec.backupAgent to an existing one, e.g. stash-volume-backup');
  }
  const template = agentTemplateSchema.safeParse(templateRaw);
  if (!template.success) {
    return refuse(c, raw, 'InvalidAgentTemplate', `AgentTemplate ${templateName} does not match the AgentTemplate schema (${describeIssues(template.error)}): fix it`);
  }
  const agentTemplate: AgentTemplate = template.data;

  const repoNamespace = spec.repository.namespace ?? namespace;
  const repoRaw = await getObject(c.kc, { apiVersion: API_VERSION, kind: 'Repository', namespace: repoNamespace, name: spec.repository.name });
  if (repoRaw === undefined) {
    return refuse(c, raw, 'RepositoryNotFound',
      `Repository ${repoNamespace}/${spec.repository.name} named by spec.repository does not exist: create it or fix spec.repository`);
  }
  const repo = repositorySchema.safeParse(repoRaw);
  if (!repo.success) {
    return refuse(c, raw, 'RepositoryNotFound', `Repository ${repoNamespace}/${spec.repository.name} does not match the Repository schema (${describeIssues(repo.error)}): fix it`);
  }
  const repository: Repository = repo.data;

  const ref = workloadRef(target.kind, namespace, target.name);
  const workload = ref === undefined ? undefined : await getObject<Workload & KubernetesObject>(c.kc, ref);
  if (workload === undefined) {
    return refuse(c, raw, 'TargetNotFound', `${what} named by spec.targetRef does not exist: create it or fix spec.targetRef; the sidecar is added once it exists`);
  }

  const plan = planSidecar({ backup, agentTemplate, repository, workload, options: c.options });
  // A Backup whose sidecar is already on this workload holds it (a competitor is either newer, or
  // was refused before this one was applied): the steady state skips listing the namespace's Backups.
  const holdsSidecar = meta(raw).annotations?.[TARGET_ANNOTATION] === targetKey(target.kind, target.name) && plan.action === 'apply' &&
    isApplied(workload as unknown as Record<string, unknown>, plan.applyConfig as unknown as Record<string, unknown>, FIELD_MANAGER);
  if (!holdsSidecar) {
    // Only Backups of the same workload can compete; the others are not validated (with 1,000
    // Backups in a namespace, validating every one on every event dominated an event's cost).
    const sameTarget = (b: KubernetesObject): boolean => {
      const t = (b as { spec?: { targetRef?: { kind?: unknown; name?: unknown } } }).spec?.targetRef;
      return t?.kind === target.kind && t.name === target.name;
    };
    const siblings = (await c.lister.list(namespace)).filter(sameTarget)
      .map((b) => backupSchema.safeParse({ ...b, apiVersion: API_VERSION, kind: 'Backup' }))
      .filter((r) => r.success).map((r) => r.data);
    const winner = otherClaimant(backup, siblings);
    if (winner !== undefined) {
      return refuse(c, raw, 'TargetHasAnotherBackup',
        `${what} is already backed up by Backup ${namespace}/${winner.metadata.name ?? ''} (the older one); a workload carries one backup sidecar: ` +
        `delete one of the two Backups, or list this Backup's directories in the other one`);
    }
  }

  if (plan.action === 'none') {
    log.debug({ reason: plan.reason }, 'no sidecar');
    return 'skipped';
  }
  if (plan.action === 'refuse') {
    return refuse(c, raw, plan.condition.reason as RefusalReason, plan.condition.message);
  }

  // Finalizer (and where the sidecar goes) before the first apply, so a deletion always cleans up.
  raw = await patchBackupMetadata(c, raw, (m) => {
    const hasFinalizer = (m.finalizers ?? []).includes(FINALIZER);
    const annotated = m.annotations?.[TARGET_ANNOTATION] === targetKey(target.kind, target.name);
    if (hasFinalizer && annotated) return undefined;
    const patch: Record<string, unknown> = { annotations: { [TARGET_ANNOTATION]: targetKey(target.kind, target.name) } };
    if (!hasFinalizer) patch.finalizers = [...(m.finalizers ?? []), FINALIZER];
    return patch;
  });

  const containers = plan.applyConfig.spec?.template.spec.containers.map((x) => x.name).join(', ') ?? '';
  let outcome: Outcome = 'unchanged';
  if (!isApplied(workload as unknown as Record<string, unknown>, plan.applyConfig as unknown as Record<string, unknown>, FIELD_MANAGER)) {
    try {
      await applyObject(c.kc, plan.applyConfig as unknown as KubernetesObject, { fieldManager: FIELD_MANAGER, force: false });
    } catch (error) {
      if (error instanceof ConflictError) {
        return refuse(c, raw, 'ApplyConflict',
          `another field manager owns fields of ${what} that the sidecar sets (${conflictDetail(error.message)}): ` +
          'remove those fields from the other manager\'s configuration (or rename the clashing container/volume) and Stash applies on the next resync');
      }
      if (error instanceof InvalidError) {
        return refuse(c, raw, 'ApplyRejected', `the apiserver rejected the sidecar for ${what}: ${conflictDetail(error.message)}; fix the AgentTemplate or containerAttributes`);
      }
      throw error;
    }
    outcome = 'injected';
    log.info({ kind: target.kind, workload: target.name, containers }, 'applied the backup sidecar to the workload');
  }
  const generation = meta(raw).generation;
  const message = `sidecar ${containers} from AgentTemplate ${templateName} is in the pod template of ${what}`;
  const conditions: ConditionInput[] = [
    { type: SIDECAR_CONDITION, status: 'True', reason: 'SidecarInjected', message, ...(generation === undefined ? {} : { observedGeneration: generation }) },
    { type: 'Ready', status: 'True', reason: 'SidecarInjected', message, ...(generation === undefined ? {} : { observedGeneration: generation }) },
  ];
  await setBackupConditions(c, raw, conditions,
    outcome === 'injected' ? { type: 'Normal', reason: 'SidecarInjected', message: `${message}; its pods restart to pick it up` } : undefined,
    outcome === 'injected');
  return outcome;
}

/** The part of an apiserver message after "failed: " without the hint shared/kube appends. */
function conflictDetail(message: string): string {
  const start = message.indexOf('failed: ');
  const body = start >= 0 ? message.slice(start + 'failed: '.length) : message;
  return body.replace(/; re-read the object and retry$|; fix the fields named above$/, '');
}

export interface ObjectKey {
  kind: string;
  namespace?: string;
  name: string;
}

export type BatchResult = SharedBatchResult<Outcome>;

function reconcileMany(ctx: Context, keys: BackupKey[]): Promise<BatchResult> {
  return reconcileBatch(keys, {
    id: (key) => `${key.namespace}/${key.name}`,
    work: (key) => reconcileWith(ctx, key),
    onError: (key, error) => ctx.log.error({ namespace: key.namespace, backup: key.name, err: error }, 'reconciling the Backup failed; the next event or sweep retries'),
  });
}

function keyOf(b: KubernetesObject): BackupKey {
  return { namespace: meta(b).namespace ?? '', name: meta(b).name ?? '' };
}

function specOf(b: KubernetesObject): { backupAgent?: unknown; repository?: { name?: string; namespace?: string }; targetRef?: { kind?: string; name?: string } } {
  return (b as { spec?: Record<string, never> }).spec ?? {};
}

/** The Backups an event about `object` concerns. */
export async function backupsFor(kc: KubeConfig, object: ObjectKey, lister: BackupLister = new BackupLister(kc)): Promise<BackupKey[]> {
  if (object.kind === 'Backup') return object.namespace ? [{ namespace: object.namespace, name: object.name }] : [];
  if (object.kind === 'AgentTemplate') {
    return (await lister.list()).filter((b) => {
      const ref = specOf(b).backupAgent;
      return (typeof ref === 'string' || (typeof ref === 'object' && ref !== null)) && agentName(ref as string | { name: string }) === object.name;
    }).map(keyOf);
  }
  if (object.kind === 'Repository') {
    return (await lister.list()).filter((b) => {
      const repo = specOf(b).repository;
      return repo?.name === object.name && (repo.namespace ?? meta(b).namespace) === object.namespace;
    }).map(keyOf);
  }
  if (WORKLOAD_KINDS[object.kind] !== undefined && object.namespace) {
    const key = targetKey(object.kind, object.name);
    return (await lister.list(object.namespace)).filter((b) => {
      const t = specOf(b).targetRef;
      return (t?.kind !== undefined && t.name !== undefined && targetKey(t.kind, t.name) === key) || meta(b).annotations?.[TARGET_ANNOTATION] === key;
    }).map(keyOf);
  }
  return [];
}

/** Kinds whose events inject-sidecar handles. */
export const HANDLED_KINDS = ['Backup', 'AgentTemplate', 'Repository', ...Object.keys(WORKLOAD_KINDS)];

/** An event named `object`: reconcile every Backup it concerns. */
export async function reconcileForObject(kc: KubeConfig, object: ObjectKey, log: Logger, options: HandlerOptions = {}): Promise<BatchResult> {
  const ctx = context(kc, log, options);
  if (object.namespace !== undefined && !servesNamespace(options.namespaces, object.namespace)) {
    log.debug({ namespace: object.namespace }, 'namespace not served by this function');
    return { outcomes: {}, failures: {} };
  }
  if (object.kind === 'Backup' && object.namespace) {
    const outcome = await reconcileWith(ctx, { namespace: object.namespace, name: object.name });
    return { outcomes: { [`${object.namespace}/${object.name}`]: outcome }, failures: {} };
  }
  const keys = await backupsFor(kc, object, ctx.lister);
  log.debug({ kind: object.kind, namespace: object.namespace, name: object.name, backups: keys.length }, 'event mapped to Backups');
  return reconcileMany(ctx, keys);
}

/** The sweep: every Backup in every namespace, so what lost events missed converges. */
export async function resyncAll(kc: KubeConfig, log: Logger, options: HandlerOptions = {}): Promise<BatchResult> {
  const ctx = context(kc, log, options);
  const keys = (await ctx.lister.list()).map(keyOf);
  const result = await reconcileMany(ctx, keys);
  log.info({ backups: keys.length, failures: Object.keys(result.failures).length }, 'resynced every Backup');
  return result;
}
