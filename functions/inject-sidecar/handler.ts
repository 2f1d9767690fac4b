// inject-sidecar's I/O: level-triggered reconciliation of the backup sidecar of one Backup, and
// the mapping of AgentTemplate / Repository / workload events and sweeps onto Backups.
//
// Every call re-reads what it needs; nothing is remembered between calls. The sidecar is written
// with server-side apply under FIELD_MANAGER and removed by applying an empty configuration with
// the same manager (a finalizer on the Backup guards that). The workload is applied to only when
// its pod template differs from the plan, so a resync of unchanged Backups only reads.
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import {
  agentName, agentTemplate as agentTemplateSchema, API_VERSION, backup as backupSchema, describeParseIssues, repository as repositorySchema,
} from '../../shared/api/index.ts';
import type { AgentTemplate, Backup, Repository } from '../../shared/api/index.ts';
import {
  applyObject, ConflictError, conditionUnchanged, emitEvent, getObject, getObjectOnce, InvalidError, listObjects, mergePatch, patchStatus, setCondition,
} from '../../shared/kube/index.ts';
import type { Condition, ConditionInput, ObjectRef, ReadCache } from '../../shared/kube/index.ts';
import { reconcileBatch } from '../../shared/runtime/index.ts';
import type { BatchResult as SharedBatchResult } from '../../shared/runtime/index.ts';
import { servesNamespace } from '../../shared/runtime/index.ts';
import { isApplied, ownsFields } from '../../shared/apply-compare.ts';
import {
  describeWorkload, FIELD_MANAGER, FINALIZER, otherClaimant, planSidecar, refusal, removalConfig, sidecarVerified, TARGET_ANNOTATION, TARGET_LABEL,
  targetLabelValue, unsupportedTargetMessage, WORKLOAD_KINDS, workloadUnchangedSince,
} from './plan.ts';
import type { BackupState, PlanOptions, RefusalReason, SidecarStatus, Workload } from './plan.ts';

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

  /** The Backups of `namespace` if this invocation has listed them already, else undefined. */
  cached(namespace: string): Promise<KubernetesObject[]> | undefined {
    if (this.all !== undefined) return this.all.then((items) => items.filter((b) => b.metadata?.namespace === namespace));
    return this.byNamespace.get(namespace);
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
export function listBackups(kc: KubeConfig, namespace?: string, labelSelector?: string): Promise<KubernetesObject[]> {
  return listObjects(kc, { apiVersion: API_VERSION, kind: 'Backup', namespace, labelSelector });
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

/**
 * Per-invocation context: the clock, plan options, a logger, the Backup lister, and the
 * AgentTemplates and Repositories read so far (a sweep over 1,000 Backups reads each once).
 */
interface Context {
  kc: KubeConfig;
  log: Logger;
  options: HandlerOptions;
  lister: BackupLister;
  now: () => Date;
  /** the objects many Backups share (AgentTemplates, Repositories), read once per invocation */
  reads: ReadCache;
}

function context(kc: KubeConfig, log: Logger, options: HandlerOptions, lister?: BackupLister): Context {
  return { kc, log, options, lister: lister ?? new BackupLister(kc, options.namespaces), now: options.now ?? (() => new Date()), reads: new Map() };
}


/**
 * The Backups in `namespace` whose targetRef names `target`: from the invocation's full list
 * when a sweep already read it, else by TARGET_LABEL (Backups not labelled yet are missed here
 * and found by the resync, which labels them).
 */
async function backupsTargeting(ctx: Context, namespace: string, target: { kind: string; name: string }): Promise<KubernetesObject[]> {
  return (await labelledFor(ctx, namespace, target)).filter((b) => {
    const t = specOf(b).targetRef;
    return t?.kind === target.kind && t.name === target.name;
  });
}

/**
 * The Backups of `namespace` labelled for `target`, and those with no target label yet (created
 * while no event reached this function; normally none); all of the namespace's when a sweep
 * listed them already.
 */
async function labelledFor(ctx: Context, namespace: string, target: { kind: string; name: string }): Promise<KubernetesObject[]> {
  const listed = ctx.lister.cached(namespace);
  if (listed !== undefined) return listed;
  const [labelled, unlabelled] = await Promise.all([
    listBackups(ctx.kc, namespace, `${TARGET_LABEL}=${targetLabelValue(target.kind, target.name)}`),
    listBackups(ctx.kc, namespace, `!${TARGET_LABEL}`),
  ]);
  return [...labelled, ...unlabelled];
}

/**
 * Writes `conditions` (and where the sidecar is, `sidecar`; null removes it) into the Backup's
 * status unless they are already there; emits `event` (on the Backup) only when something
 * changed, or always with `forceEvent` (then beside the status write). Retries on a stale
 * resourceVersion.
 */
async function setBackupConditions(
  ctx: Context, backup: KubernetesObject, conditions: ConditionInput[], event: { type: 'Normal' | 'Warning'; reason: string; message: string } | undefined,
  forceEvent = false, sidecar?: SidecarStatus | null,
): Promise<boolean> {
  const emit = (): Promise<unknown> => emitEvent(ctx.kc, backup, { ...(event as NonNullable<typeof event>), action: 'Inject' }, REPORTING_CONTROLLER, ctx.now());
  const early = event !== undefined && forceEvent ? emit() : undefined;
  let current = backup;
  let changed = false;
  for (let attempt = 0; ; attempt++) {
    const existing = conditionsOf(current);
    const recorded = sidecarOf(current);
    const sidecarUnchanged = sidecar === undefined || (sidecar === null ? recorded === undefined
      : recorded?.target === sidecar.target && recorded.targetGeneration === sidecar.targetGeneration);
    if (sidecarUnchanged && conditions.every((c) => conditionUnchanged(existing, c))) break;
    let next = existing;
    for (const c of conditions) next = setCondition(next, c, ctx.now());
    const m = meta(current);
    const status: Record<string, unknown> = { conditions: next };
    if (!sidecarUnchanged) status.sidecar = sidecar;
    try {
      await patchStatus(ctx.kc, backupRef({ namespace: m.namespace ?? '', name: m.name ?? '' }), status,
        { fieldManager: FIELD_MANAGER, resourceVersion: m.resourceVersion, plural: 'backups' });
      changed = true;
      break;
    } catch (error) {
      if (!(error instanceof ConflictError) || attempt >= 4) {
        await early?.catch(() => undefined);
        throw error;
      }
      const fresh = await getObject(ctx.kc, backupRef({ namespace: m.namespace ?? '', name: m.name ?? '' }));
      if (fresh === undefined) return false;
      current = fresh;
    }
  }
  if (early !== undefined) await early;
  else if (event !== undefined && changed) await emit();
  return changed;
}

function sidecarOf(object: KubernetesObject): Partial<SidecarStatus> | undefined {
  return (object as BackupState).status?.sidecar;
}

async function refuse(ctx: Context, backup: KubernetesObject, reason: RefusalReason, message: string): Promise<Outcome> {
  const generation = meta(backup).generation;
  const condition = refusal(reason, message, generation);
  const changed = await setBackupConditions(ctx, backup, [condition], { type: 'Warning', reason, message }, false,
    sidecarOf(backup) === undefined ? undefined : null);
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
  for (const target of targets.values()) {
    const siblings = (await backupsTargeting(ctx, namespace, target)).filter((b) => meta(b).name !== m.name && meta(b).deletionTimestamp === undefined);
    for (const sibling of siblings) await reconcileWith(ctx, keyOf(sibling));
  }
  return 'removed';
}

/** True when a live Backup other than `backup` with an injected sidecar there owns `target`'s sidecar. */
async function claimedByAnother(ctx: Context, backup: KubernetesObject, target: { kind: string; name: string }): Promise<boolean> {
  const m = meta(backup);
  const others = (await labelledFor(ctx, m.namespace ?? '', target)).filter((b) => {
    const bm = meta(b);
    return bm.name !== m.name && bm.deletionTimestamp === undefined && bm.annotations?.[TARGET_ANNOTATION] === targetKey(target.kind, target.name);
  });
  return others.length > 0;
}

/** Reconciles the backup sidecar of one Backup; safe to call any number of times, in any order. */
export async function reconcileBackup(kc: KubeConfig, key: BackupKey, log: Logger, options: HandlerOptions = {}): Promise<Outcome> {
  return reconcileWith(context(kc, log, options), key);
}

interface ReconcileHow {
  /** The Backup as just listed (a sweep): saves reading it again; a stale copy only costs a retried write. */
  known?: KubernetesObject;
  /**
   * An event about the Backup itself: when its status says the sidecar was verified for its
   * current spec (sidecarVerified), nothing is read beyond the Backup. Events about what the
   * Backup uses (AgentTemplate, Repository, workload) and sweeps verify in full.
   */
  trustVerified?: boolean;
}

async function reconcileWith(ctx: Context, key: BackupKey, how: ReconcileHow = {}): Promise<Outcome> {
  const log = ctx.log.child({ namespace: key.namespace, backup: key.name });
  const c: Context = { ...ctx, log };
  let raw = how.known ?? await getObject(c.kc, backupRef(key));
  if (raw === undefined) return 'gone';
  raw = { ...raw, apiVersion: API_VERSION, kind: 'Backup' };
  if (meta(raw).deletionTimestamp !== undefined) return finalize(c, raw);
  if (how.trustVerified && sidecarVerified(raw as BackupState)) {
    log.debug('sidecar verified for this generation of the Backup: nothing to do');
    return 'unchanged';
  }

  const parsed = backupSchema.safeParse(raw);
  if (!parsed.success) {
    return refuse(c, raw, 'InvalidBackup', `Backup ${key.namespace}/${key.name} does not match the Backup schema (${describeParseIssues(parsed.error, 5)}): fix these fields`);
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

  // The target label first, so that an event about the workload (created or changed from now on)
  // finds this Backup by selector, and a competing Backup of the same workload finds it too.
  const label = targetLabelValue(target.kind, target.name);
  raw = await patchBackupMetadata(c, raw, (m) => ((m as { labels?: Record<string, string> }).labels?.[TARGET_LABEL] === label ? undefined : { labels: { [TARGET_LABEL]: label } }));

  const templateName = agentName(spec.backupAgent);
  const repoNamespace = spec.repository.namespace ?? namespace;
  const ref = workloadRef(target.kind, namespace, target.name);
  // Independent reads, side by side.
  const [templateRaw, repoRaw, workload, competitors] = await Promise.all([
    getObjectOnce(c.kc, { apiVersion: API_VERSION, kind: 'AgentTemplate', name: templateName }, c.reads),
    getObjectOnce(c.kc, { apiVersion: API_VERSION, kind: 'Repository', namespace: repoNamespace, name: spec.repository.name }, c.reads),
    ref === undefined ? undefined : getObject<Workload & KubernetesObject>(c.kc, ref),
    backupsTargeting(c, namespace, target),
  ]);
  if (templateRaw === undefined) {
    return refuse(c, raw, 'AgentTemplateNotFound',
      `AgentTemplate ${templateName} (cluster-scoped) named by spec.backupAgent does not exist: create it (the defaults are in shared/api/defaults/agent-templates.yaml) ` +
      'or set spec.backupAgent to an existing one, e.g. stash-volume-backup');
  }
  const template = agentTemplateSchema.safeParse(templateRaw);
  if (!template.success) {
    return refuse(c, raw, 'InvalidAgentTemplate', `AgentTemplate ${templateName} does not match the AgentTemplate schema (${describeParseIssues(template.error, 5)}): fix it`);
  }
  const agentTemplate: AgentTemplate = template.data;

  if (repoRaw === undefined) {
    return refuse(c, raw, 'RepositoryNotFound',
      `Repository ${repoNamespace}/${spec.repository.name} named by spec.repository does not exist: create it or fix spec.repository`);
  }
  const repo = repositorySchema.safeParse(repoRaw);
  if (!repo.success) {
    return refuse(c, raw, 'RepositoryNotFound', `Repository ${repoNamespace}/${spec.repository.name} does not match the Repository schema (${describeParseIssues(repo.error, 5)}): fix it`);
  }
  const repository: Repository = repo.data;

  if (workload === undefined) {
    return refuse(c, raw, 'TargetNotFound', `${what} named by spec.targetRef does not exist: create it or fix spec.targetRef; the sidecar is added once it exists`);
  }

  const plan = planSidecar({ backup, agentTemplate, repository, workload, options: c.options });
  // A Backup whose sidecar is already on this workload holds it (a competitor is either newer, or
  // was refused before this one was applied).
  const holdsSidecar = meta(raw).annotations?.[TARGET_ANNOTATION] === targetKey(target.kind, target.name) && plan.action === 'apply' &&
    isApplied(workload as unknown as Record<string, unknown>, plan.applyConfig as unknown as Record<string, unknown>, FIELD_MANAGER);
  if (!holdsSidecar) {
    // Only Backups of the same workload can compete; only they are validated.
    const siblings = competitors.map((b) => backupSchema.safeParse({ ...b, apiVersion: API_VERSION, kind: 'Backup' }))
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
  let targetGeneration = workload.metadata.generation;
  if (!holdsSidecar && !isApplied(workload as unknown as Record<string, unknown>, plan.applyConfig as unknown as Record<string, unknown>, FIELD_MANAGER)) {
    try {
      const applied = await applyObject(c.kc, plan.applyConfig as unknown as KubernetesObject, { fieldManager: FIELD_MANAGER, force: false });
      targetGeneration = applied.metadata?.generation;
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
  const sidecar = targetGeneration === undefined ? undefined : { target: targetKey(target.kind, target.name), targetGeneration };
  await setBackupConditions(c, raw, conditions,
    outcome === 'injected' ? { type: 'Normal', reason: 'SidecarInjected', message: `${message}; its pods restart to pick it up` } : undefined,
    outcome === 'injected', sidecar);
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

/** Reconciles each listed Backup (using the listed copy) at a bounded concurrency. */
function reconcileMany(ctx: Context, backups: KubernetesObject[], decide?: (b: KubernetesObject) => Outcome | undefined): Promise<BatchResult> {
  return reconcileBatch(backups, {
    id: (b) => `${meta(b).namespace ?? ''}/${meta(b).name ?? ''}`,
    work: async (b) => decide?.(b) ?? reconcileWith(ctx, keyOf(b), { known: b }),
    onError: (b, error) => ctx.log.error({ namespace: meta(b).namespace, backup: meta(b).name, err: error }, 'reconciling the Backup failed; the next event or sweep retries'),
  });
}

function keyOf(b: KubernetesObject): BackupKey {
  return { namespace: meta(b).namespace ?? '', name: meta(b).name ?? '' };
}

function specOf(b: KubernetesObject): { backupAgent?: unknown; repository?: { name?: string; namespace?: string }; targetRef?: { kind?: string; name?: string } } {
  return (b as { spec?: Record<string, never> }).spec ?? {};
}

/** The Backups an event about an AgentTemplate or Repository concerns (every Backup that names it). */
async function backupsUsing(lister: BackupLister, object: ObjectKey): Promise<KubernetesObject[]> {
  if (object.kind === 'AgentTemplate') {
    return (await lister.list()).filter((b) => {
      const ref = specOf(b).backupAgent;
      return (typeof ref === 'string' || (typeof ref === 'object' && ref !== null)) && agentName(ref as string | { name: string }) === object.name;
    });
  }
  if (object.kind === 'Repository') {
    return (await lister.list()).filter((b) => {
      const repo = specOf(b).repository;
      return repo?.name === object.name && (repo.namespace ?? meta(b).namespace) === object.namespace;
    });
  }
  return [];
}

/** Kinds whose events inject-sidecar handles. */
export const HANDLED_KINDS = ['Backup', 'AgentTemplate', 'Repository', ...Object.keys(WORKLOAD_KINDS)];

/**
 * An event about a workload: the Backups that target it (by TARGET_LABEL), each verified in
 * full unless its status shows the sidecar verified at the workload's current generation.
 */
async function reconcileForWorkload(ctx: Context, kind: string, namespace: string, name: string): Promise<BatchResult> {
  const ref = workloadRef(kind, namespace, name);
  const key = targetKey(kind, name);
  const [backups, workload] = await Promise.all([
    // Those whose targetRef names the workload, and those whose sidecar is still there (targetRef changed since).
    labelledFor(ctx, namespace, { kind, name }).then((all) => all.filter((b) => {
      const t = specOf(b).targetRef;
      return (t?.kind !== undefined && t.name !== undefined && targetKey(t.kind, t.name) === key) || meta(b).annotations?.[TARGET_ANNOTATION] === key;
    })),
    ref === undefined ? undefined : getObject(ctx.kc, ref),
  ]);
  ctx.log.debug({ kind, namespace, name, backups: backups.length }, 'workload event mapped to Backups');
  return reconcileMany(ctx, backups, (b) => (workloadUnchangedSince(b as BackupState, workload) ? 'unchanged' : undefined));
}

/** An event named `object`: reconcile every Backup it concerns. */
export async function reconcileForObject(kc: KubeConfig, object: ObjectKey, log: Logger, options: HandlerOptions = {}): Promise<BatchResult> {
  const ctx = context(kc, log, options);
  if (object.namespace !== undefined && !servesNamespace(options.namespaces, object.namespace)) {
    log.debug({ namespace: object.namespace }, 'namespace not served by this function');
    return { outcomes: {}, failures: {} };
  }
  if (object.kind === 'Backup') {
    if (!object.namespace) return { outcomes: {}, failures: {} };
    const outcome = await reconcileWith(ctx, { namespace: object.namespace, name: object.name }, { trustVerified: true });
    return { outcomes: { [`${object.namespace}/${object.name}`]: outcome }, failures: {} };
  }
  if (WORKLOAD_KINDS[object.kind] !== undefined) {
    return object.namespace ? reconcileForWorkload(ctx, object.kind, object.namespace, object.name) : { outcomes: {}, failures: {} };
  }
  const backups = await backupsUsing(ctx.lister, object);
  log.debug({ kind: object.kind, namespace: object.namespace, name: object.name, backups: backups.length }, 'event mapped to Backups');
  return reconcileMany(ctx, backups);
}

/** The sweep: every Backup in every namespace, verified in full, so what lost events missed converges. */
export async function resyncAll(kc: KubeConfig, log: Logger, options: HandlerOptions = {}): Promise<BatchResult> {
  const ctx = context(kc, log, options);
  const backups = await ctx.lister.list();
  const result = await reconcileMany(ctx, backups);
  log.info({ backups: backups.length, failures: Object.keys(result.failures).length }, 'resynced every Backup');
  return result;
}
