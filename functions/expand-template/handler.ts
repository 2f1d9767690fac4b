// expand-template's I/O: level-triggered reconciliation of the default backup of one annotated
// workload or AppBinding, and the mapping of BackupTemplate events and sweeps onto targets.
//
// Every call re-reads what it needs; nothing is remembered between calls. The Repository and the
// Backup are written with server-side apply under FIELD_MANAGER (Repository first, then Backup;
// both are validated before either is written), so an unchanged template and unchanged
// annotations write nothing. Workloads have no status Stash writes: every problem is a Warning
// Event on the target. Only objects carrying this function's labels are ever deleted.
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ANNOTATION_BACKUP, ANNOTATION_BACKUP_TEMPLATE, API_VERSION } from '../../shared/api/index.ts';
import {
  applyObject, deleteObject, emitEvent, ForbiddenError, getObject, InvalidError, kubeRequest, listObjects as listKind, NotFoundError, resourcePath,
} from '../../shared/kube/index.ts';
import { reconcileBatch } from '../../shared/runtime/index.ts';
import type { BatchResult as SharedBatchResult } from '../../shared/runtime/index.ts';
import type { ObjectRef } from '../../shared/kube/index.ts';
import { servesNamespace } from '../../shared/runtime/index.ts';
import {
  checkTemplate, DEPLOYMENT_REVISION_ANNOTATION, describeTarget, FIELD_MANAGER, GENERATED_FOR_LABEL, generatedName, generatedTarget, isGeneratedFor, planDefaultBackup,
  readDefaultBackupRequest, TARGET_KINDS, TEMPLATE_LABEL, templateLabelValue,
} from './plan.ts';
import type { Refusal, StorageSecretState, Target } from './plan.ts';

export const REPORTING_CONTROLLER = FIELD_MANAGER;
const EVENT_ACTION = 'ExpandTemplate';

export interface HandlerOptions {
  now?: () => Date;
  /** Only these namespaces (default: all). Sweeps and BackupTemplate events then list namespace by namespace. */
  namespaces?: readonly string[];
}

export type Outcome =
  | 'created' // the Repository and/or the Backup were created
  | 'updated' // they existed and the apply changed them
  | 'unchanged' // they already were what the template and annotations say
  | 'refused' // a Warning Event on the target says why nothing was applied
  | 'removed' // the target no longer opts in (or is gone): the generated objects were deleted
  | 'off' // the target does not opt in and nothing generated exists
  | 'gone'; // the target does not exist (or is being deleted) and nothing generated is left

export interface TargetKey {
  kind: string;
  namespace: string;
  name: string;
}

export interface ObjectKey {
  kind: string;
  namespace?: string;
  name: string;
}

export type BatchResult = SharedBatchResult<Outcome>;

/**
 * The API access this handler's code uses, as RBAC rules (for the function's ClusterRole). Server-side
 * apply is a patch, plus create when it creates the object. Events: create, then get + patch to
 * count a repeat (shared/kube/events.ts). Secrets are not listed: with `get secrets` the handler
 * reads a storage Secret's metadata (never its data) to say when it is missing; without it, that
 * check is skipped.
 */
export const API_ACCESS: readonly { apiGroups: string[]; resources: string[]; verbs: string[] }[] = [
  { apiGroups: ['apps'], resources: ['deployments', 'statefulsets', 'daemonsets', 'replicasets'], verbs: ['get', 'list'] },
  { apiGroups: [''], resources: ['replicationcontrollers'], verbs: ['get', 'list'] },
  { apiGroups: ['appcatalog.appscode.com'], resources: ['appbindings'], verbs: ['get', 'list'] },
  { apiGroups: ['stash.appscode.com'], resources: ['backuptemplates'], verbs: ['get'] },
  { apiGroups: ['stash.appscode.com'], resources: ['backups', 'repositories'], verbs: ['get', 'list', 'create', 'patch', 'delete'] },
  { apiGroups: ['events.k8s.io'], resources: ['events'], verbs: ['create', 'get', 'patch'] },
];

/** Kinds whose events expand-template handles. */
export const HANDLED_KINDS = [...Object.keys(TARGET_KINDS), 'BackupTemplate'];

/** Per-invocation context. A sweep reads each BackupTemplate, and the Backups of each namespace, once. */
interface Context {
  kc: KubeConfig;
  log: Logger;
  options: HandlerOptions;
  now: () => Date;
  templates: Map<string, Promise<KubernetesObject | undefined>>;
  backupsByNamespace: Map<string, Promise<KubernetesObject[]>>;
}

function context(kc: KubeConfig, log: Logger, options: HandlerOptions): Context {
  return { kc, log, options, now: options.now ?? (() => new Date()), templates: new Map(), backupsByNamespace: new Map() };
}

function cached<T>(cache: Map<string, Promise<T>>, key: string, read: () => Promise<T>): Promise<T> {
  let value = cache.get(key);
  if (value === undefined) {
    value = read();
    cache.set(key, value);
    // A failed read is not kept: the next target tries again.
    value.catch(() => cache.delete(key));
  }
  return value;
}

function targetId(key: TargetKey): string {
  return `${key.kind}/${key.namespace}/${key.name}`;
}

function stashRef(kind: 'Repository' | 'Backup', namespace: string, name: string): ObjectRef {
  return { apiVersion: API_VERSION, kind, namespace, name };
}

/** Every object of `kind` (in `namespace`, or in all namespaces), following list continuations; none when the kind is not served. */
export async function listObjects(kc: KubeConfig, apiVersion: string, kind: string, namespace?: string): Promise<KubernetesObject[]> {
  try {
    return await listKind(kc, { apiVersion, kind, namespace });
  } catch (error) {
    // A kind whose CRD is not installed (AppBinding without the app catalog) has no objects.
    if (error instanceof NotFoundError) return [];
    throw error;
  }
}

/** Every Stash object of `kind` in `namespace` (or all namespaces). */
export function listStash(kc: KubeConfig, kind: 'Backup' | 'Repository', namespace?: string, labelSelector?: string): Promise<KubernetesObject[]> {
  return listKind(kc, { apiVersion: API_VERSION, kind, namespace, labelSelector });
}

async function listServed(ctx: Context, apiVersion: string, kind: string): Promise<KubernetesObject[]> {
  const only = ctx.options.namespaces;
  if (only === undefined) return listObjects(ctx.kc, apiVersion, kind);
  return (await Promise.all(only.map((ns) => listObjects(ctx.kc, apiVersion, kind, ns)))).flat();
}

/** Whether Secret `name` exists in `namespace`, read as metadata only (no Secret value reaches this function). */
async function storageSecretState(ctx: Context, namespace: string, name: string): Promise<StorageSecretState> {
  try {
    await kubeRequest(ctx.kc, `get metadata of Secret ${namespace}/${name}`, 'GET', resourcePath('v1', 'secrets', { namespace, name }),
      { accept: 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1' });
    return 'present';
  } catch (error) {
    if (error instanceof NotFoundError) return 'absent';
    if (error instanceof ForbiddenError) {
      ctx.log.debug({ namespace, secret: name }, 'may not read Secret metadata: the storage Secret is not checked');
      return 'unknown';
    }
    throw error;
  }
}

async function warn(ctx: Context, target: KubernetesObject, refusal: Refusal): Promise<Outcome> {
  ctx.log.warn({ reason: refusal.reason }, refusal.message);
  await emitEvent(ctx.kc, target, { type: 'Warning', reason: refusal.reason, message: refusal.message, action: EVENT_ACTION }, REPORTING_CONTROLLER, ctx.now());
  return 'refused';
}

/**
 * Deletes the generated Backup, then the generated Repository, of a target (`target` undefined:
 * it no longer exists); only objects that carry this function's labels for it, guarded by their
 * uid. True when something was deleted.
 */
async function removeGenerated(ctx: Context, key: TargetKey, target: KubernetesObject | undefined): Promise<boolean> {
  const name = generatedName(key.kind, key.name);
  const removed: string[] = [];
  for (const kind of ['Backup', 'Repository'] as const) {
    const ref = stashRef(kind, key.namespace, name);
    const existing = await getObject(ctx.kc, ref);
    if (existing === undefined || existing.metadata?.deletionTimestamp != null || !isGeneratedFor(existing, key.kind, key.name)) continue;
    // The target is gone but the object no longer names it as owner: it was orphaned on purpose
    // (kubectl delete --cascade=orphan), so it is kept.
    if (target === undefined && !existing.metadata?.ownerReferences?.some((o) => o.kind === key.kind && o.name === key.name)) continue;
    try {
      const uid = existing.metadata?.uid;
      if (!await deleteObject(ctx.kc, ref, { propagationPolicy: 'Background', ...(uid === undefined ? {} : { preconditions: { uid } }) })) continue;
      removed.push(`${kind} ${name}`);
    } catch (error) {
      if (error instanceof ForbiddenError && target !== undefined) {
        await warn(ctx, target, {
          reason: 'DeleteForbidden',
          message: `${kind} ${key.namespace}/${name} generated for ${describeTarget(key.kind, key.namespace, key.name)} is no longer wanted but this function may not delete it: ` +
            `delete it yourself, or grant delete on ${kind === 'Backup' ? 'backups' : 'repositories'}.stash.appscode.com to ClusterRole stash-expand-template`,
        });
        continue;
      }
      throw error;
    }
  }
  if (removed.length === 0) return false;
  ctx.log.info({ removed }, 'deleted the generated default backup');
  if (target !== undefined) {
    await emitEvent(ctx.kc, target, {
      type: 'Normal', reason: 'DefaultBackupRemoved', action: EVENT_ACTION,
      message: `${removed.join(' and ')} generated for ${describeTarget(key.kind, key.namespace, key.name)} deleted: it no longer opts into default backup ` +
        '(backup data stays in the backend; set the annotations again to resume)',
    }, REPORTING_CONTROLLER, ctx.now());
  }
  return true;
}

/** Reconciles the default backup of one workload or AppBinding; safe to call any number of times, in any order. */
export async function reconcileTarget(kc: KubeConfig, key: TargetKey, log: Logger, options: HandlerOptions = {}): Promise<Outcome> {
  return reconcileWith(context(kc, log, options), key);
}

async function reconcileWith(parent: Context, key: TargetKey): Promise<Outcome> {
  const ctx: Context = { ...parent, log: parent.log.child({ kind: key.kind, namespace: key.namespace, name: key.name }) };
  const apiVersion = TARGET_KINDS[key.kind];
  if (apiVersion === undefined) throw new TypeError(`${key.kind} is not a kind that opts into default backup: use one of ${Object.keys(TARGET_KINDS).join(', ')}`);
  const raw = await getObject(ctx.kc, { apiVersion, kind: key.kind, namespace: key.namespace, name: key.name });
  if (raw === undefined || raw.metadata?.deletionTimestamp != null) {
    // Garbage collection removes what was owned by it; this only catches what it missed.
    return (await removeGenerated(ctx, key, undefined)) ? 'removed' : 'gone';
  }
  const object: KubernetesObject = { ...raw, apiVersion, kind: key.kind };
  const target: Target = {
    apiVersion,
    kind: key.kind,
    metadata: {
      name: key.name,
      namespace: key.namespace,
      uid: object.metadata?.uid ?? '',
      ...(object.metadata?.annotations === undefined ? {} : { annotations: object.metadata.annotations }),
      ...(object.metadata?.ownerReferences === undefined ? {} : { ownerReferences: object.metadata.ownerReferences }),
    },
  };

  const request = readDefaultBackupRequest(target);
  if (request.state === 'off') {
    const removed = await removeGenerated(ctx, key, object);
    ctx.log.debug({ reason: request.reason }, 'not opted into default backup');
    return removed ? 'removed' : 'off';
  }
  if (request.state === 'invalid') return warn(ctx, object, { reason: 'InvalidDefaultBackupAnnotations', message: request.message });

  const templateRaw = await cached(ctx.templates, request.template,
    () => getObject(ctx.kc, { apiVersion: API_VERSION, kind: 'BackupTemplate', name: request.template }));
  const checked = checkTemplate(request.template, templateRaw);
  if (!checked.ok) return warn(ctx, object, checked.refusal);
  const template = checked.template;

  const name = generatedName(key.kind, key.name);
  const [storageSecret, repository, backup, backups] = await Promise.all([
    storageSecretState(ctx, key.namespace, template.spec.backend.storageSecretName),
    getObject(ctx.kc, stashRef('Repository', key.namespace, name)),
    getObject(ctx.kc, stashRef('Backup', key.namespace, name)),
    cached(ctx.backupsByNamespace, key.namespace, () => listStash(ctx.kc, 'Backup', key.namespace)),
  ]);
  const plan = planDefaultBackup({ target, targetDirectories: request.targetDirectories, template, storageSecret, existing: { repository, backup }, backups });
  if (plan.action === 'refuse') return warn(ctx, object, plan.refusal);

  const written: { kind: string; before: KubernetesObject | undefined; after: KubernetesObject }[] = [];
  for (const [desired, before] of [[plan.repository, repository], [plan.backup, backup]] as const) {
    let after: KubernetesObject;
    try {
      after = await applyObject(ctx.kc, desired as unknown as KubernetesObject, { fieldManager: FIELD_MANAGER, force: true });
    } catch (error) {
      if (error instanceof InvalidError) {
        return warn(ctx, object, {
          reason: 'ApplyRejected',
          message: `the apiserver rejected ${desired.kind} ${key.namespace}/${name} expanded from BackupTemplate ${request.template} for ` +
            `${describeTarget(key.kind, key.namespace, key.name)} (${error.message.replace(/^.*failed: /, '').replace(/; fix the fields named above$/, '')}): ` +
            'fix the template; Stash applies it again on the next event or sweep',
        });
      }
      throw error;
    }
    written.push({ kind: desired.kind, before, after });
  }

  const created = written.filter((w) => w.before === undefined).map((w) => w.kind);
  const updated = written.filter((w) => w.before !== undefined && changedByApply(w.before, w.after)).map((w) => w.kind);
  if (created.length === 0 && updated.length === 0) {
    ctx.log.debug({ template: request.template }, 'default backup unchanged');
    return 'unchanged';
  }
  const what = describeTarget(key.kind, key.namespace, key.name);
  const changed = created.length > 0 ? created : updated;
  const message = `${changed.join(' and ')} ${key.namespace}/${name} ${created.length > 0 ? 'created' : 'updated'} from BackupTemplate ${request.template} for ${what}`;
  ctx.log.info({ template: request.template, created, updated }, message);
  await emitEvent(ctx.kc, object, {
    type: 'Normal', reason: created.length > 0 ? 'DefaultBackupCreated' : 'DefaultBackupUpdated', message, action: EVENT_ACTION,
    related: stashRef('Backup', key.namespace, name),
  }, REPORTING_CONTROLLER, ctx.now());
  return created.length > 0 ? 'created' : 'updated';
}

/**
 * Whether an apply changed the object: a new resourceVersion alone may be another writer's (a
 * status update between the read and the apply), so the spec, labels, owners or this manager's
 * managedFields entry must differ too.
 */
function changedByApply(before: KubernetesObject, after: KubernetesObject): boolean {
  if (before.metadata?.resourceVersion === after.metadata?.resourceVersion) return false;
  const mine = (o: KubernetesObject): string => JSON.stringify([
    (o as { spec?: unknown }).spec, o.metadata?.labels, o.metadata?.ownerReferences,
    o.metadata?.managedFields?.find((m) => m.manager === FIELD_MANAGER && m.operation === 'Apply'),
  ]);
  return mine(before) !== mine(after);
}

function reconcileMany(ctx: Context, keys: TargetKey[]): Promise<BatchResult> {
  return reconcileBatch(keys, {
    id: targetId,
    work: (key) => reconcileWith(ctx, key),
    onError: (key, error) => ctx.log.error({ kind: key.kind, namespace: key.namespace, name: key.name, err: error }, 'reconciling the default backup failed; the next event or sweep retries'),
  });
}

function keyOf(object: KubernetesObject): TargetKey {
  return { kind: object.kind ?? '', namespace: object.metadata?.namespace ?? '', name: object.metadata?.name ?? '' };
}

/** Annotated targets (every one, or those naming `template`) in the served namespaces. */
async function annotatedTargets(ctx: Context, template?: string): Promise<TargetKey[]> {
  const lists = await Promise.all(Object.entries(TARGET_KINDS).map(([kind, apiVersion]) => listServed(ctx, apiVersion, kind)));
  return lists.flat().filter((o) => {
    const annotations = o.metadata?.annotations;
    if (annotations?.[ANNOTATION_BACKUP] === undefined) return false;
    // A Deployment's ReplicaSets copy its annotations: only the Deployment is backed up.
    if (o.metadata?.ownerReferences?.some((r) => r.controller === true && TARGET_KINDS[r.kind] !== undefined)) return false;
    if (o.kind === 'ReplicaSet' && annotations[DEPLOYMENT_REVISION_ANNOTATION] !== undefined) return false;
    return template === undefined || annotations[ANNOTATION_BACKUP_TEMPLATE] === template;
  }).map(keyOf);
}

/** Targets that have generated objects (every one, or those generated from `template`), so opt-outs missed by events are cleaned up. */
async function generatedTargets(ctx: Context, template?: string): Promise<TargetKey[]> {
  const selector = template === undefined ? GENERATED_FOR_LABEL : `${TEMPLATE_LABEL}=${templateLabelValue(template)}`;
  const only = ctx.options.namespaces;
  const lists = await Promise.all((['Backup', 'Repository'] as const).flatMap((kind) => (only === undefined
    ? [listStash(ctx.kc, kind, undefined, selector)]
    : only.map((ns) => listStash(ctx.kc, kind, ns, selector)))));
  return lists.flat().map(generatedTarget).filter((t) => t !== undefined);
}

/** The targets an event about `object` concerns. */
export async function targetsFor(kc: KubeConfig, object: ObjectKey, log: Logger, options: HandlerOptions = {}): Promise<TargetKey[]> {
  const ctx = context(kc, log, options);
  if (object.kind === 'BackupTemplate') return [...await annotatedTargets(ctx, object.name), ...await generatedTargets(ctx, object.name)];
  if (TARGET_KINDS[object.kind] !== undefined && object.namespace) return [{ kind: object.kind, namespace: object.namespace, name: object.name }];
  return [];
}

/** An event named `object`: reconcile every target it concerns (a BackupTemplate: every target using it). */
export async function reconcileForObject(kc: KubeConfig, object: ObjectKey, log: Logger, options: HandlerOptions = {}): Promise<BatchResult> {
  const ctx = context(kc, log, options);
  if (object.namespace !== undefined && !servesNamespace(options.namespaces, object.namespace)) {
    log.debug({ namespace: object.namespace }, 'namespace not served by this function');
    return { outcomes: {}, failures: {} };
  }
  const keys = await targetsFor(kc, object, log, options);
  log.debug({ kind: object.kind, namespace: object.namespace, name: object.name, targets: keys.length }, 'event mapped to targets');
  return reconcileMany(ctx, keys);
}

/** The sweep: every annotated target and every target with generated objects, so what lost events missed converges. */
export async function resyncAll(kc: KubeConfig, log: Logger, options: HandlerOptions = {}): Promise<BatchResult> {
  const ctx = context(kc, log, options);
  const keys = [...await annotatedTargets(ctx), ...await generatedTargets(ctx)];
  const result = await reconcileMany(ctx, keys);
  log.info({ targets: Object.keys(result.outcomes).length + Object.keys(result.failures).length, failures: Object.keys(result.failures).length },
    'resynced every default backup');
  return result;
}
