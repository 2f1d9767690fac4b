// run-recovery's I/O. Level-triggered: an event only names an object; the handler re-reads the
// Recovery, what it names and what it made, and converges:
//   - a volume or database Recovery: one Job `<recovery>-recovery` owned by the Recovery while it
//     has not finished; a Job that ends without the agent reporting fails the Recovery;
//   - a workload Recovery: the init container server-side applied into the workload's pod
//     template under FIELD_MANAGER (only when the template differs), a finalizer on the Recovery
//     that removes it exactly (an empty apply) when the Recovery is deleted;
// and the Recovery's Ready condition (with a Warning Event when it turns False), and
// status.phase Pending while nothing was reported. Phases handle-trigger writes from the agent's
// reports (Running, Succeeded, Failed, recoveredHosts) are never overwritten.
import type { KubeConfig, KubernetesObject, V1Job } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import {
  agentName, agentTemplate as agentTemplateSchema, API_VERSION, appBinding as appBindingSchema, APPCATALOG_API_VERSION, describeParseIssues, recovery as recoverySchema, repository as repositorySchema,
} from '../../shared/api/index.ts';
import type { AgentTemplate, AppBinding, Recovery, Repository } from '../../shared/api/index.ts';
import { isApplied, ownsFields } from '../../shared/apply-compare.ts';
import {
  AlreadyExistsError, applyObject, ConflictError, conditionUnchanged, createObject, emitEvent, getObject, InvalidError, listInNamespaces, listObjects, mergePatch,
  patchStatus, setCondition,
} from '../../shared/kube/index.ts';
import type { Condition, ConditionInput, ObjectRef } from '../../shared/kube/index.ts';
import { reconcileBatch, servesNamespace } from '../../shared/runtime/index.ts';
import type { BatchResult } from '../../shared/runtime/index.ts';
import {
  CONTROLLER, failedStatus, FIELD_MANAGER, FINALIZER, hostReported, jobName, jobOutcome, planInitContainer, planRecoveryJob, READY_CONDITION,
  refusal, removalConfig, TARGET_ANNOTATION, targetType, unsupportedTargetMessage, WORKLOAD_KINDS,
} from './plan.ts';
import type { PlanOptions, RefusalReason, Workload } from './plan.ts';

export interface HandlerOptions extends PlanOptions {
  /** The clock (tests). */
  now?: () => Date;
  /** How long after a Job completed without a report the Recovery is failed. Default 120 s. */
  reportGraceSeconds?: number;
  /**
   * Serve only these namespaces (STASH_NAMESPACES): the resync lists them one by one, and events
   * about objects elsewhere are ignored. Default: all namespaces.
   */
  namespaces?: readonly string[];
}

export type Outcome =
  | 'gone' // no such Recovery
  | 'removed' // being deleted: init container removed, finalizer released
  | 'refused' // a Ready=False condition says why nothing was made
  | 'finished' // the agent reported: nothing more to do
  | 'job-created' | 'job-exists' | 'job-failed'
  | 'applied' | 'unchanged';

/** The Recovery as read: its status is read loosely (handle-trigger writes it). */
type RecoveryObject = KubernetesObject & {
  metadata: NonNullable<KubernetesObject['metadata']>;
  spec?: Record<string, unknown>;
  status?: Record<string, unknown> & { phase?: string; conditions?: Condition[]; recoveredHosts?: { host: string; phase: string }[] };
};

const recoveryRef = (namespace: string, name: string): ObjectRef => ({ apiVersion: API_VERSION, kind: 'Recovery', namespace, name });

function workloadRef(kind: string, namespace: string, name: string): ObjectRef | undefined {
  const apiVersion = WORKLOAD_KINDS[kind];
  return apiVersion === undefined ? undefined : { apiVersion, kind, namespace, name };
}

const targetKey = (kind: string, name: string): string => `${kind}/${name}`;

function parseTargetKey(value: string | undefined): { kind: string; name: string } | undefined {
  const slash = value?.indexOf('/') ?? -1;
  if (value === undefined || slash <= 0) return undefined;
  return { kind: value.slice(0, slash), name: value.slice(slash + 1) };
}

/** The conflict detail of an apiserver message (after "failed: ", without shared/kube's hint). */
function detail(message: string): string {
  const start = message.indexOf('failed: ');
  const body = start >= 0 ? message.slice(start + 'failed: '.length) : message;
  return body.replace(/; re-read the object and retry$|; fix the fields named above$/, '');
}

function creationOrder(r: KubernetesObject): string {
  const t = r.metadata?.creationTimestamp as unknown;
  const ms = t instanceof Date ? t.getTime() : typeof t === 'string' ? Date.parse(t) || 0 : 0;
  return `${String(ms).padStart(16, '0')}\u0000${r.metadata?.name ?? ''}`;
}

/** The workload a Recovery's spec names, if it is one Stash injects into. */
function workloadTargetOf(r: KubernetesObject): { kind: string; name: string } | undefined {
  const w = ((r as RecoveryObject).spec?.recoverTo as { workload?: { kind?: string; name?: string } } | undefined)?.workload;
  return w?.kind !== undefined && w.name !== undefined && WORKLOAD_KINDS[w.kind] !== undefined ? { kind: w.kind, name: w.name } : undefined;
}

/** The Ready message of a Recovery whose Job exists (the same whichever invocation writes it). */
function jobMessage(recovery: Recovery): string {
  const namespace = recovery.metadata.namespace ?? 'default';
  const { volume, workload } = recovery.spec.recoverTo;
  const into = volume !== undefined ? `the volume mounted at ${volume.mountPath}` : `AppBinding ${namespace}/${workload?.name ?? ''}`;
  return `Job ${jobName(recovery.metadata.name ?? '')} recovers into ${into}`;
}

export function createRunRecovery(kc: KubeConfig, options: HandlerOptions = {}) {
  const clock = options.now ?? (() => new Date());
  const namespaces = options.namespaces;
  const serves = (namespace: string): boolean => servesNamespace(namespaces, namespace);

  async function event(object: KubernetesObject, type: 'Normal' | 'Warning', reason: string, message: string, log: Logger, related?: ObjectRef): Promise<void> {
    try {
      await emitEvent(kc, object, { type, reason, message, action: 'Recover', ...(related ? { related } : {}) }, CONTROLLER, clock());
    } catch (error) {
      log.warn({ reason, err: (error as Error).message }, 'could not record Event');
    }
  }

  /**
   * Writes the status patch `change` computes from the Recovery as it is (undefined: nothing to
   * write), guarded by its resourceVersion, re-reading on a conflict. Returns the Recovery as
   * written and whether anything was.
   */
  async function writeStatus(raw: RecoveryObject, change: (current: RecoveryObject) => Record<string, unknown> | undefined): Promise<{ recovery: RecoveryObject; written: boolean }> {
    let current: RecoveryObject | undefined = raw;
    for (let attempt = 0; ; attempt++) {
      const patch = change(current);
      if (patch === undefined) return { recovery: current, written: false };
      const ref = recoveryRef(current.metadata.namespace ?? '', current.metadata.name ?? '');
      try {
        const written = await patchStatus<RecoveryObject>(kc, ref, patch, { fieldManager: FIELD_MANAGER, resourceVersion: current.metadata.resourceVersion, plural: 'recoveries' });
        return { recovery: written, written: true };
      } catch (error) {
        if (!(error instanceof ConflictError) || attempt >= 4) throw error;
        current = await getObject<RecoveryObject>(kc, ref);
        if (current === undefined) return { recovery: raw, written: false };
      }
    }
  }

  /** The Ready condition (observedGeneration set), and phase Pending when no phase was written yet. */
  function readyPatch(current: RecoveryObject, condition: ConditionInput): Record<string, unknown> | undefined {
    const generation = current.metadata.generation;
    const wanted: ConditionInput = generation === undefined ? condition : { ...condition, observedGeneration: generation };
    const conditions = current.status?.conditions ?? [];
    const pending = current.status?.phase === undefined;
    if (conditionUnchanged(conditions, wanted) && !pending) return undefined;
    return { conditions: setCondition(conditions, wanted, clock()), ...(pending ? { phase: 'Pending' } : {}) };
  }

  /** Sets Ready; a Warning Event when it turns False or its reason or message changes. */
  async function setReady(raw: RecoveryObject, condition: ConditionInput, log: Logger): Promise<RecoveryObject> {
    const previous = (raw.status?.conditions ?? []).find((c) => c.type === READY_CONDITION);
    const { recovery, written } = await writeStatus(raw, (current) => readyPatch(current, condition));
    const changed = previous?.status !== condition.status || previous.reason !== condition.reason || previous.message !== condition.message;
    if (written && changed && condition.status === 'False') {
      log.warn({ reason: condition.reason }, condition.message);
      await event(recovery, 'Warning', condition.reason, condition.message, log);
    }
    return recovery;
  }

  async function refuse(raw: RecoveryObject, reason: RefusalReason, message: string, log: Logger): Promise<Outcome> {
    await setReady(raw, refusal(reason, message), log);
    return 'refused';
  }

  /** Merge-patches the Recovery's metadata (finalizers, annotation), guarded by resourceVersion. */
  async function patchMetadata(raw: RecoveryObject, change: (m: RecoveryObject['metadata']) => Record<string, unknown> | undefined): Promise<RecoveryObject> {
    let current = raw;
    for (let attempt = 0; ; attempt++) {
      const patch = change(current.metadata);
      if (patch === undefined) return current;
      const ref = recoveryRef(current.metadata.namespace ?? '', current.metadata.name ?? '');
      try {
        return await mergePatch<RecoveryObject>(kc, ref, { metadata: patch }, { fieldManager: FIELD_MANAGER, resourceVersion: current.metadata.resourceVersion });
      } catch (error) {
        if (!(error instanceof ConflictError) || attempt >= 4) throw error;
        const fresh = await getObject<RecoveryObject>(kc, ref);
        if (fresh === undefined) return current;
        current = fresh;
      }
    }
  }

  /** Applies the removal configuration to the workload if this manager owns anything in it. */
  async function removeInitContainer(namespace: string, target: { kind: string; name: string }, log: Logger): Promise<boolean> {
    const ref = workloadRef(target.kind, namespace, target.name);
    if (ref === undefined) return false;
    const workload = await getObject<Workload & KubernetesObject>(kc, ref);
    if (workload === undefined || !ownsFields(workload.metadata.managedFields, FIELD_MANAGER)) return false;
    await applyObject(kc, removalConfig({ apiVersion: ref.apiVersion, kind: ref.kind, metadata: { name: ref.name, namespace } }) as KubernetesObject,
      { fieldManager: FIELD_MANAGER, force: false });
    log.info({ namespace, kind: target.kind, name: target.name }, 'removed the recovery init container from the workload');
    return true;
  }

  async function listRecoveries(namespace: string | undefined): Promise<RecoveryObject[]> {
    return listObjects<RecoveryObject>(kc, { apiVersion: API_VERSION, kind: 'Recovery', namespace });
  }

  /** Every Recovery in the served namespaces. */
  function listServed(): Promise<RecoveryObject[]> {
    return listInNamespaces<RecoveryObject>(kc, { apiVersion: API_VERSION, kind: 'Recovery' }, namespaces);
  }

  /** The live Recoveries of `namespace` other than `name` whose workload target (or applied target) is `target`. */
  async function othersOn(namespace: string, name: string, target: { kind: string; name: string }): Promise<RecoveryObject[]> {
    const key = targetKey(target.kind, target.name);
    return (await listRecoveries(namespace)).filter((r) => {
      if (r.metadata.name === name || r.metadata.deletionTimestamp !== undefined) return false;
      const t = workloadTargetOf(r);
      return (t !== undefined && targetKey(t.kind, t.name) === key) || r.metadata.annotations?.[TARGET_ANNOTATION] === key;
    });
  }

  /** The Recovery is being deleted: take its init container out of the workload, then let it go. */
  async function finalize(raw: RecoveryObject, log: Logger): Promise<Outcome> {
    if (!(raw.metadata.finalizers ?? []).includes(FINALIZER)) return 'gone';
    const namespace = raw.metadata.namespace ?? '';
    const targets = new Map<string, { kind: string; name: string }>();
    const annotated = parseTargetKey(raw.metadata.annotations?.[TARGET_ANNOTATION]);
    if (annotated) targets.set(targetKey(annotated.kind, annotated.name), annotated);
    const current = workloadTargetOf(raw);
    if (current) targets.set(targetKey(current.kind, current.name), current);
    for (const target of targets.values()) await removeInitContainer(namespace, target, log);
    await patchMetadata(raw, (m) => ((m.finalizers ?? []).includes(FINALIZER) ? { finalizers: (m.finalizers ?? []).filter((f) => f !== FINALIZER) } : undefined));
    log.info({ namespace, recovery: raw.metadata.name }, 'Recovery deleted: init container removed and finalizer released');
    // Another Recovery of the same workload may now put its own init container there.
    for (const target of targets.values()) {
      for (const other of await othersOn(namespace, raw.metadata.name ?? '', target)) await reconcileRecovery(namespace, other.metadata.name ?? '', log);
    }
    return 'removed';
  }

  /** Reads the AgentTemplate and Repository a Recovery names; the refusal when one is missing or invalid. */
  async function readShared(recovery: Recovery): Promise<{ agentTemplate: AgentTemplate; repository: Repository } | { reason: RefusalReason; message: string }> {
    const namespace = recovery.metadata.namespace ?? 'default';
    const templateName = agentName(recovery.spec.recoveryAgent);
    const repoNamespace = recovery.spec.repository.namespace ?? namespace;
    const [templateRaw, repoRaw] = await Promise.all([
      getObject(kc, { apiVersion: API_VERSION, kind: 'AgentTemplate', name: templateName }),
      getObject(kc, { apiVersion: API_VERSION, kind: 'Repository', namespace: repoNamespace, name: recovery.spec.repository.name }),
    ]);
    if (templateRaw === undefined) {
      return {
        reason: 'AgentTemplateNotFound',
        message: `AgentTemplate ${templateName} (cluster-scoped) named by spec.recoveryAgent does not exist: create it (the defaults are in shared/api/defaults/agent-templates.yaml) ` +
          'or set spec.recoveryAgent to an existing one, e.g. stash-volume-recovery or pg-recovery',
      };
    }
    const template = agentTemplateSchema.safeParse(templateRaw);
    if (!template.success) return { reason: 'InvalidAgentTemplate', message: `AgentTemplate ${templateName} does not match the AgentTemplate schema (${describeParseIssues(template.error)}): fix it` };
    if (repoRaw === undefined) {
      return { reason: 'RepositoryNotFound', message: `Repository ${repoNamespace}/${recovery.spec.repository.name} named by spec.repository does not exist: create it or fix spec.repository` };
    }
    const repo = repositorySchema.safeParse(repoRaw);
    if (!repo.success) {
      return { reason: 'RepositoryNotFound', message: `Repository ${repoNamespace}/${recovery.spec.repository.name} does not match the Repository schema (${describeParseIssues(repo.error)}): fix it` };
    }
    return { agentTemplate: template.data, repository: repo.data };
  }

  /** A volume or database Recovery: its Job, and what the Job's end means. */
  async function reconcileJobTarget(raw: RecoveryObject, recovery: Recovery, log: Logger): Promise<Outcome> {
    const namespace = recovery.metadata.namespace ?? 'default';
    const name = recovery.metadata.name ?? '';
    if (hostReported(raw as Pick<Recovery, 'status'>)) return 'finished';
    const jname = jobName(name);
    const jobRef: ObjectRef = { apiVersion: 'batch/v1', kind: 'Job', namespace, name: jname };
    const job = await getObject<V1Job & KubernetesObject>(kc, jobRef);
    if (job !== undefined) {
      const owner = job.metadata?.ownerReferences?.find((o) => o.controller === true);
      if (owner?.kind !== 'Recovery' || owner.uid !== raw.metadata.uid) {
        return refuse(raw, 'NameConflict',
          `Job ${namespace}/${jname} exists but is not this Recovery's (its controller is ${owner ? `${owner.kind} ${owner.name}` : 'none'}): ` +
          'delete that Job (or wait for the garbage collector if it belonged to an earlier Recovery of this name)', log);
      }
      const outcome = jobOutcome(job, clock(), options.reportGraceSeconds ?? 120);
      if (outcome?.failed) {
        const condition = refusal('JobFailed', outcome.error);
        const { written } = await writeStatus(raw, (current) => {
          if (hostReported(current as Pick<Recovery, 'status'>)) return undefined;
          const ready = readyPatch(current, condition);
          return { ...failedStatus(current as Pick<Recovery, 'status'>, outcome.error, clock()), ...(ready === undefined ? {} : { conditions: ready.conditions }) };
        });
        if (written) {
          log.warn({ namespace, recovery: name, job: jname }, outcome.error);
          await event(raw, 'Warning', 'JobFailed', outcome.error, log, jobRef);
        }
        return 'job-failed';
      }
      await setReady(raw, { type: READY_CONDITION, status: 'True', reason: 'JobCreated', message: jobMessage(recovery) }, log);
      return 'job-exists';
    }
    if (raw.status?.phase === 'Running') {
      const error = `Job ${jname} no longer exists while the recovery was Running (deleted?): create the Recovery again to recover again`;
      const { written } = await writeStatus(raw, (current) => (hostReported(current as Pick<Recovery, 'status'>) ? undefined : failedStatus(current as Pick<Recovery, 'status'>, error, clock())));
      if (written) await event(raw, 'Warning', 'JobFailed', error, log, jobRef);
      return 'job-failed';
    }

    const shared = await readShared(recovery);
    if ('reason' in shared) return refuse(raw, shared.reason, shared.message, log);
    let appBinding: AppBinding | undefined;
    if (targetType(recovery) === 'database') {
      const bindingName = recovery.spec.recoverTo.workload?.name ?? '';
      const bindingRaw = await getObject(kc, { apiVersion: APPCATALOG_API_VERSION, kind: 'AppBinding', namespace, name: bindingName });
      if (bindingRaw === undefined) {
        return refuse(raw, 'AppBindingNotFound',
          `AppBinding ${namespace}/${bindingName} (spec.recoverTo.workload) does not exist: create it, or point spec.recoverTo.workload at an existing AppBinding`, log);
      }
      const binding = appBindingSchema.safeParse(bindingRaw);
      if (!binding.success) return refuse(raw, 'InvalidAppBinding', `AppBinding ${namespace}/${bindingName} is invalid: ${describeParseIssues(binding.error)}`, log);
      appBinding = binding.data;
    }
    const plan = planRecoveryJob({ recovery, ...shared, ...(appBinding ? { appBinding } : {}), options });
    if (!plan.ok) return refuse(raw, plan.condition.reason as RefusalReason, plan.condition.message, log);
    let outcome: Outcome = 'job-created';
    try {
      await createObject(kc, { ...plan.job, apiVersion: 'batch/v1', kind: 'Job', metadata: { ...plan.job.metadata, namespace } }, { fieldManager: FIELD_MANAGER });
    } catch (error) {
      if (!(error instanceof AlreadyExistsError)) throw error;
      outcome = 'job-exists'; // created concurrently by another invocation
    }
    await setReady(raw, { type: READY_CONDITION, status: 'True', reason: 'JobCreated', message: jobMessage(recovery) }, log);
    if (outcome === 'job-created') {
      log.info({ namespace, recovery: name, job: jname }, 'created the recovery Job');
      await event(raw, 'Normal', 'RecoveryJobCreated', `started Job ${jname}`, log, jobRef);
    }
    return outcome;
  }

  /** A workload Recovery: the init container in the workload's pod template. */
  async function reconcileWorkloadTarget(raw: RecoveryObject, recovery: Recovery, log: Logger): Promise<Outcome> {
    const namespace = recovery.metadata.namespace ?? 'default';
    const name = recovery.metadata.name ?? '';
    const target = recovery.spec.recoverTo.workload as { apiVersion: string; kind: string; name: string };
    const what = `${target.kind} ${namespace}/${target.name}`;
    const ref = workloadRef(target.kind, namespace, target.name) as ObjectRef;
    const [shared, workload, others] = await Promise.all([
      readShared(recovery),
      getObject<Workload & KubernetesObject>(kc, ref),
      othersOn(namespace, name, target),
    ]);
    if ('reason' in shared) return refuse(raw, shared.reason, shared.message, log);
    if (workload === undefined) {
      return refuse(raw, 'TargetNotFound', `${what} named by spec.recoverTo.workload does not exist: create it or fix spec.recoverTo.workload; the init container is added once it exists`, log);
    }
    // One field manager, one init container per workload: the oldest Recovery holds it.
    const older = others.find((o) => workloadTargetOf(o) !== undefined && creationOrder(o) < creationOrder(raw));
    if (older !== undefined) {
      return refuse(raw, 'TargetHasAnotherRecovery',
        `${what} already recovers through Recovery ${namespace}/${older.metadata.name ?? ''} (the older one); a workload carries one recovery init container: ` +
        'delete one of the two Recoveries, or change the other one\'s spec', log);
    }
    const plan = planInitContainer({ recovery, ...shared, workload, options });
    if (!plan.ok) return refuse(raw, plan.condition.reason as RefusalReason, plan.condition.message, log);

    // Finalizer (and where the init container goes) before the first apply, so a deletion always cleans up.
    const key = targetKey(target.kind, target.name);
    raw = await patchMetadata(raw, (m) => {
      const hasFinalizer = (m.finalizers ?? []).includes(FINALIZER);
      if (hasFinalizer && m.annotations?.[TARGET_ANNOTATION] === key) return undefined;
      return { annotations: { [TARGET_ANNOTATION]: key }, ...(hasFinalizer ? {} : { finalizers: [...(m.finalizers ?? []), FINALIZER] }) };
    });

    let outcome: Outcome = 'unchanged';
    if (!isApplied(workload as unknown as Record<string, unknown>, plan.applyConfig as unknown as Record<string, unknown>, FIELD_MANAGER)) {
      try {
        await applyObject(kc, plan.applyConfig as unknown as KubernetesObject, { fieldManager: FIELD_MANAGER, force: false });
      } catch (error) {
        if (error instanceof ConflictError) {
          return refuse(raw, 'ApplyConflict',
            `another field manager owns fields of ${what} that the recovery init container sets (${detail(error.message)}): ` +
            'remove those fields from the other manager\'s configuration (or rename the clashing container/volume) and Stash applies on the next resync', log);
        }
        if (error instanceof InvalidError) {
          return refuse(raw, 'ApplyRejected', `the apiserver rejected the recovery init container for ${what}: ${detail(error.message)}; fix the AgentTemplate or spec.containerAttributes`, log);
        }
        throw error;
      }
      outcome = 'applied';
      log.info({ namespace, recovery: name, kind: target.kind, workload: target.name, container: plan.container }, 'applied the recovery init container to the workload');
    }
    const message = `init container ${plan.container} from AgentTemplate ${shared.agentTemplate.metadata.name ?? ''} is in the pod template of ${what}`;
    raw = await setReady(raw, { type: READY_CONDITION, status: 'True', reason: 'InitContainerApplied', message }, log);
    if (outcome === 'applied') await event(raw, 'Normal', 'InitContainerApplied', `${message}; its pods restart and recover first`, log, ref);
    return outcome;
  }

  /**
   * Converges one Recovery; safe to call any number of times, concurrently, in any order. `known`:
   * the Recovery as just listed (a resync or a workload event), not read again; a stale copy only
   * costs a retried write.
   */
  async function reconcileRecovery(namespace: string, name: string, log: Logger, known?: RecoveryObject): Promise<Outcome> {
    const child = log.child({ namespace, recovery: name });
    let raw = known ?? await getObject<RecoveryObject>(kc, recoveryRef(namespace, name));
    if (raw === undefined) return 'gone';
    raw = { ...raw, apiVersion: API_VERSION, kind: 'Recovery' };
    if (raw.metadata.deletionTimestamp !== undefined) return finalize(raw, child);
    // The spec as the schema reads it; the status is handle-trigger's and read loosely.
    const parsed = recoverySchema.safeParse({ apiVersion: API_VERSION, kind: 'Recovery', metadata: raw.metadata, spec: raw.spec });
    if (!parsed.success) {
      return refuse(raw, 'InvalidRecovery', `Recovery ${namespace}/${name} does not match the Recovery schema (${describeParseIssues(parsed.error)}): fix these fields`, child);
    }
    const recovery = parsed.data;

    // The init container sits in another workload than the spec names now (recoverTo changed): take it out there first.
    const previous = parseTargetKey(raw.metadata.annotations?.[TARGET_ANNOTATION]);
    const current = workloadTargetOf(raw);
    if (previous !== undefined && (current === undefined || targetKey(current.kind, current.name) !== targetKey(previous.kind, previous.name))) {
      await removeInitContainer(namespace, previous, child);
      raw = await patchMetadata(raw, (m) => (m.annotations?.[TARGET_ANNOTATION] === undefined ? undefined : { annotations: { [TARGET_ANNOTATION]: null } }));
      if (current === undefined && (raw.metadata.finalizers ?? []).includes(FINALIZER)) {
        raw = await patchMetadata(raw, (m) => ({ finalizers: (m.finalizers ?? []).filter((f) => f !== FINALIZER) }));
      }
    }

    switch (targetType(recovery)) {
      case 'volume':
      case 'database':
        return reconcileJobTarget(raw, recovery, child);
      case 'workload':
        return reconcileWorkloadTarget(raw, recovery, child);
      default:
        return refuse(raw, 'UnsupportedTarget', unsupportedTargetMessage(recovery), child);
    }
  }

  function many(recoveries: readonly RecoveryObject[], log: Logger): Promise<BatchResult<Outcome>> {
    return reconcileBatch(recoveries, {
      id: (r) => `${r.metadata.namespace ?? ''}/${r.metadata.name ?? ''}`,
      work: (r) => reconcileRecovery(r.metadata.namespace ?? '', r.metadata.name ?? '', log, r),
      onError: (r, error) => log.error({ namespace: r.metadata.namespace, recovery: r.metadata.name, err: error }, 'reconciling the Recovery failed; the next event or resync retries'),
    });
  }

  /** A Job event: the Recovery that owns it (its controller ownerReference, else the name without -recovery). */
  async function reconcileJob(namespace: string, name: string, log: Logger): Promise<Outcome | undefined> {
    const job = await getObject<V1Job & KubernetesObject>(kc, { apiVersion: 'batch/v1', kind: 'Job', namespace, name });
    const owner = job?.metadata?.ownerReferences?.find((o) => o.kind === 'Recovery' && o.controller === true)?.name;
    const recovery = owner ?? (job === undefined && name.endsWith('-recovery') ? name.slice(0, -'-recovery'.length) : undefined);
    if (recovery === undefined) return undefined;
    return reconcileRecovery(namespace, recovery, log);
  }

  /** A workload event: the Recoveries of its namespace whose recoverTo.workload names it (or whose init container is there). */
  async function reconcileWorkload(kind: string, namespace: string, name: string, log: Logger): Promise<BatchResult<Outcome>> {
    const key = targetKey(kind, name);
    const recoveries = (await listRecoveries(namespace)).filter((r) => {
      const t = workloadTargetOf(r);
      return (t !== undefined && targetKey(t.kind, t.name) === key) || r.metadata.annotations?.[TARGET_ANNOTATION] === key;
    });
    return many(recoveries, log);
  }

  /** The Recoveries that name an AgentTemplate (cluster-scoped), a Repository or an AppBinding. */
  async function reconcileReferrers(kind: string, namespace: string | undefined, name: string, log: Logger): Promise<BatchResult<Outcome>> {
    const all = kind === 'AgentTemplate' || namespace === undefined ? await listServed() : await listRecoveries(namespace);
    const recoveries = all.filter((r) => {
      const spec = (r.spec ?? {}) as { recoveryAgent?: string | { name?: string }; repository?: { name?: string; namespace?: string }; recoverTo?: { workload?: { kind?: string; name?: string } } };
      if (kind === 'AgentTemplate') {
        const ref = spec.recoveryAgent;
        return (typeof ref === 'string' ? ref : ref?.name) === name;
      }
      if (kind === 'Repository') return spec.repository?.name === name && (spec.repository.namespace ?? r.metadata.namespace) === namespace;
      if (kind === 'AppBinding') return spec.recoverTo?.workload?.kind === 'AppBinding' && spec.recoverTo.workload.name === name;
      return false;
    });
    return many(recoveries, log);
  }

  /** Every Recovery of the served namespaces (ping / cron-connector): repairs what events missed. */
  async function resync(log: Logger): Promise<BatchResult<Outcome>> {
    const recoveries = await listServed();
    const result = await many(recoveries, log);
    log.info({ recoveries: recoveries.length, failures: Object.keys(result.failures).length }, 'resynced every Recovery');
    return result;
  }

  return { reconcileRecovery, reconcileJob, reconcileWorkload, reconcileReferrers, resync, serves };
}

export type RunRecovery = ReturnType<typeof createRunRecovery>;
