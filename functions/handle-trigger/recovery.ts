// handle-trigger, the Recovery half of the agent protocol (docs/recovery.md): a recovery agent (the
// recovery Job of a volume or a database, or the init container run-recovery puts into a workload)
// claims its Recovery for its host, recovers with restic, and reports; handle-trigger writes the
// Recovery's status and Events. The agent has no API rights: everything it needs comes in the
// claim's answer, and its storage Secret is mounted into its pod.
//
// Who may claim: a pod whose owner chain reaches the Recovery (Pod -> Job -> Recovery), or, for a
// Recovery into a workload (spec.recoverTo.workload a Deployment, StatefulSet, DaemonSet,
// ReplicaSet or ReplicationController), a pod of that workload. It claims only its own host:
// host-0 for a Job's pod (and a Deployment's, ReplicaSet's or ReplicationController's),
// host-<ordinal> for a StatefulSet's pod, the node name for a DaemonSet's pod.
//
// Status (status.recoveredHosts, one entry per host, each carrying the generation it is for):
// - phase Failed when an entry of the current generation failed; Succeeded when every expected
//   host has a Succeeded entry of the current generation; else Running once one is claimed.
// - Expected hosts: host-0 for a Job (volume or database) and for a Deployment, ReplicaSet or
//   ReplicationController; host-0 .. host-<replicas-1> for a StatefulSet (spec.replicas, read at
//   report time); for a DaemonSet, the hosts that claimed or reported so far at this generation
//   (nodes come and go; a DaemonSet Recovery is Succeeded once every node that started recovering
//   has succeeded).
import path from 'node:path';
import type { V1OwnerReference } from '@kubernetes/client-node';
import {
  API_VERSION, describeParseIssues, recovery as recoverySchema, repository as repositorySchema,
} from '../../shared/api/index.ts';
import type { Recovery, RecoveryStatus, Repository } from '../../shared/api/index.ts';
import {
  emitEvent, getObject, kubeTime, patchStatus, retryOnConflict,
} from '../../shared/kube/index.ts';
import type {
  ClaimedRecovery, RecoveryClaimRequest, RecoveryOutcome, RecoveryReportAnswer, RecoveryReportRequest,
} from '../../shared/agent-protocol.ts';
import type { AgentIdentity } from './auth.ts';
import { chainReaches, HttpError, ownerChain, podHost } from './auth.ts';
import type { HandlerConfig } from './handler.ts';
import { setCondition } from './plan.ts';

export const RECOVERY_FIELD_MANAGER = 'stash.appscode.com/handle-trigger';
const CONTROLLER = 'stash.appscode.com/handle-trigger';
const PLURAL = 'recoveries';

/** Condition type on a Recovery: did the recovery of the current generation succeed? */
export const CONDITION_RECOVERED = 'Recovered';

/** Kinds a Recovery may recover into with an init container (docs/recovery.md). */
export const RECOVERY_WORKLOAD_KINDS: ReadonlySet<string> = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'ReplicationController']);

type RecoveredHost = NonNullable<RecoveryStatus['recoveredHosts']>[number];
export type StoredRecovery = Recovery & {
  metadata: { name: string; namespace: string; uid?: string; resourceVersion?: string; generation?: number; deletionTimestamp?: unknown; ownerReferences?: V1OwnerReference[] };
};
type StoredRepository = Repository & { metadata: { name: string; namespace: string } };

const now = (cfg: HandlerConfig): Date => (cfg.now ?? (() => new Date()))();

function recoveryRef(namespace: string, name: string, uid?: string) {
  return { apiVersion: API_VERSION, kind: 'Recovery', namespace, name, ...(uid ? { uid } : {}) };
}


/** The Recovery as stored; 404 when it does not exist, 409 while it is being deleted, 422 when invalid. */
async function readRecovery(cfg: HandlerConfig, namespace: string, name: string): Promise<StoredRecovery> {
  const raw = await getObject(cfg.kc, recoveryRef(namespace, name));
  if (raw === undefined) throw new HttpError(404, `Recovery ${namespace}/${name} does not exist; check the agent's --recovery-name ($RECOVERY_NAME)`, 'recovery');
  if ((raw.metadata as { deletionTimestamp?: unknown } | undefined)?.deletionTimestamp) {
    throw new HttpError(409, `Recovery ${namespace}/${name} is being deleted; nothing is recovered for it any more`, 'recovery');
  }
  const parsed = recoverySchema.safeParse(raw);
  if (!parsed.success) throw new HttpError(422, `Recovery ${namespace}/${name} is invalid (${describeParseIssues(parsed.error, 5)}); fix the Recovery`, 'recovery');
  return parsed.data as StoredRecovery;
}

async function readRepository(cfg: HandlerConfig, r: StoredRecovery): Promise<StoredRepository> {
  const ns = r.spec.repository.namespace ?? r.metadata.namespace;
  const name = r.spec.repository.name;
  const raw = await getObject(cfg.kc, { apiVersion: API_VERSION, kind: 'Repository', namespace: ns, name });
  if (raw === undefined) throw new HttpError(404, `Repository ${ns}/${name} named in Recovery ${r.metadata.name}'s spec.repository does not exist; create it`, 'recovery');
  const parsed = repositorySchema.safeParse(raw);
  if (!parsed.success) throw new HttpError(422, `Repository ${ns}/${name} is invalid (${describeParseIssues(parsed.error, 5)}); fix it`, 'recovery');
  return parsed.data as StoredRepository;
}

interface RecoveryContext {
  recovery: StoredRecovery;
  /** How the pod is tied to the Recovery: its Job, or the workload it recovers into. */
  via: 'job' | 'workload';
  /** The host this pod recovers. */
  host: string;
}

/**
 * 403 unless the agent's pod belongs to the Recovery (through its Job) or to the workload it
 * recovers into, and `host` (when given) is the pod's own host.
 */
async function recoveryContext(cfg: HandlerConfig, agent: AgentIdentity, namespace: string, name: string, host: string | undefined): Promise<RecoveryContext> {
  if (namespace !== agent.namespace) {
    throw new HttpError(403, `pod ${agent.namespace}/${agent.podName} may only work on Recoveries in its own namespace ${agent.namespace}, not ${namespace}`, 'namespace');
  }
  const recovery = await readRecovery(cfg, namespace, name);
  const chain = await ownerChain(cfg.kc, agent.pod);
  const workload = recovery.spec.recoverTo.workload;
  let via: RecoveryContext['via'];
  let expected: string | undefined;
  const owned = chain.find((o) => o.kind === 'Recovery' && o.name === name && chainReaches([o], recoveryRef(namespace, name)));
  if (owned !== undefined && (recovery.metadata.uid === undefined || owned.uid === recovery.metadata.uid)) {
    via = 'job';
    expected = 'host-0';
  } else if (workload !== undefined && RECOVERY_WORKLOAD_KINDS.has(workload.kind) && chainReaches(chain, workload)) {
    via = 'workload';
    expected = podHost(workload.kind, agent.pod);
  } else {
    const owners = chain.map((o) => `${o.kind} ${o.name}`).join(' -> ') || 'no controller';
    const allowed = workload !== undefined && RECOVERY_WORKLOAD_KINDS.has(workload.kind)
      ? `the Recovery's Job or ${workload.kind} ${workload.name}` : 'the Recovery\'s Job';
    throw new HttpError(403, `pod ${agent.podName} (Pod -> ${owners}) belongs neither to Recovery ${name} nor to the workload it recovers into; only pods of ${allowed} may recover it`);
  }
  if (expected === undefined) {
    throw new HttpError(403, `pod ${agent.podName} has no host of its own (a StatefulSet pod needs an ordinal, a DaemonSet pod a node); it cannot recover`, 'host');
  }
  if (host !== undefined && host !== expected) {
    throw new HttpError(403, `pod ${agent.podName} recovers as ${expected}, not ${host}; set STASH_SNAPSHOT_HOST to ${expected} or leave it unset`, 'host');
  }
  return { recovery, via, host: expected };
}

/** Where the agent restores: a Job's volume (mountPath + subPath), "/" in a workload, or the database. */
export function recoveryTarget(spec: Recovery['spec']): ClaimedRecovery['target'] {
  const workload = spec.recoverTo.workload;
  if (workload?.kind === 'AppBinding') return { type: 'database', appBinding: workload.name };
  const volume = spec.recoverTo.volume;
  if (volume !== undefined) return { type: 'volume', directory: volume.subPath ? path.posix.join(volume.mountPath, volume.subPath) : volume.mountPath };
  return { type: 'volume', directory: '/' };
}

function generationOf(r: StoredRecovery): number {
  return r.metadata.generation ?? 0;
}

/** Entries that count for this generation (an entry without one was written before generations were recorded). */
function current(hosts: readonly RecoveredHost[], generation: number): RecoveredHost[] {
  return hosts.filter((h) => h.generation === undefined || h.generation === generation);
}

/**
 * The Recovery's phase from its hosts (see the head of this file): Failed if a current host failed,
 * Succeeded when every expected host succeeded, Running once one is claimed, else Pending.
 * `expected` undefined = the hosts seen so far (DaemonSet).
 */
export function aggregatePhase(hosts: readonly RecoveredHost[], generation: number, expected: readonly string[] | undefined): RecoveredHost['phase'] {
  const live = current(hosts, generation);
  if (live.some((h) => h.phase === 'Failed')) return 'Failed';
  const wanted = expected ?? live.map((h) => h.host);
  if (wanted.length > 0 && wanted.every((w) => live.some((h) => h.host === w && h.phase === 'Succeeded'))) return 'Succeeded';
  return live.some((h) => h.phase === 'Running' || h.phase === 'Succeeded') ? 'Running' : 'Pending';
}

/** The hosts a Recovery must recover (undefined: a DaemonSet's, the ones seen so far). */
async function expectedHosts(cfg: HandlerConfig, r: StoredRecovery): Promise<string[] | undefined> {
  const workload = r.spec.recoverTo.workload;
  if (workload === undefined || !RECOVERY_WORKLOAD_KINDS.has(workload.kind)) return ['host-0'];
  if (workload.kind === 'DaemonSet') return undefined;
  if (workload.kind !== 'StatefulSet') return ['host-0'];
  const sts = await getObject<{ metadata?: { name?: string }; spec?: { replicas?: number } }>(cfg.kc, { apiVersion: workload.apiVersion, kind: workload.kind, namespace: r.metadata.namespace, name: workload.name });
  const replicas = sts?.spec?.replicas ?? 1;
  return Array.from({ length: Math.max(1, replicas) }, (_, i) => `host-${i}`);
}

function withHost(hosts: readonly RecoveredHost[] | undefined, entry: RecoveredHost): RecoveredHost[] {
  const list = [...(hosts ?? [])];
  const index = list.findIndex((h) => h.host === entry.host);
  if (index >= 0) list[index] = entry;
  else list.push(entry);
  return list;
}

async function writeStatus(cfg: HandlerConfig, r: StoredRecovery, status: Record<string, unknown>): Promise<void> {
  await patchStatus(cfg.kc, recoveryRef(r.metadata.namespace, r.metadata.name), status, {
    fieldManager: RECOVERY_FIELD_MANAGER, plural: PLURAL, ...(r.metadata.resourceVersion ? { resourceVersion: r.metadata.resourceVersion } : {}),
  });
}

/**
 * POST /agent/v1/recovery/claim: what to recover, with the host recorded Running; undefined (204)
 * when the Recovery is IfNotRecovered and this host already Succeeded at its current generation.
 */
export async function claimRecovery(cfg: HandlerConfig, agent: AgentIdentity, req: RecoveryClaimRequest): Promise<ClaimedRecovery | undefined> {
  const ctx = await recoveryContext(cfg, agent, req.namespace, req.recovery, req.host);
  const { host } = ctx;
  const log = cfg.log.child({ namespace: req.namespace, recovery: req.recovery, host, pod: agent.podName });
  const repository = await readRepository(cfg, ctx.recovery);
  let claimed: StoredRecovery | undefined;
  await retryOnConflict(async () => {
    const r = await readRecovery(cfg, req.namespace, req.recovery);
    const generation = generationOf(r);
    const entry = r.status?.recoveredHosts?.find((h) => h.host === host);
    if (r.spec.recoveryPolicy === 'IfNotRecovered' && entry?.phase === 'Succeeded' && entry.generation === generation) {
      claimed = undefined;
      return;
    }
    const at = now(cfg);
    const hosts = withHost(r.status?.recoveredHosts, { host, phase: 'Running', generation, pod: agent.podName });
    const phase = aggregatePhase(hosts, generation, await expectedHosts(cfg, r));
    const newRound = r.status?.startTime === undefined || r.status.observedGeneration !== generation || r.status.phase === 'Succeeded' || r.status.phase === 'Failed';
    const status: Record<string, unknown> = {
      recoveredHosts: hosts, phase, observedGeneration: generation,
      ...(newRound ? { startTime: kubeTime(at) } : {}),
      // A new round of recovery: the previous round's end is no longer the Recovery's.
      ...(phase === 'Running' ? { completionTime: null, error: null } : {}),
    };
    await writeStatus(cfg, r, status);
    claimed = r;
  });
  if (claimed === undefined) {
    log.info({}, 'host already recovered at this generation (IfNotRecovered): nothing to do');
    return undefined;
  }
  const r = claimed;
  log.info({ generation: generationOf(r), via: ctx.via }, 'recovery claimed');
  return {
    namespace: req.namespace,
    recovery: req.recovery,
    generation: generationOf(r),
    host,
    policy: r.spec.recoveryPolicy,
    repository: {
      namespace: repository.metadata.namespace, name: repository.metadata.name,
      // The backend spec names the Secret but holds no secret values.
      backend: repository.spec.backend, storageSecretName: repository.spec.backend.storageSecretName,
    },
    snapshot: r.spec.snapshot,
    paths: r.spec.paths ?? [],
    target: recoveryTarget(r.spec),
    args: r.spec.containerAttributes?.args ?? [],
  };
}

function outcomeEntry(host: string, pod: string, generation: number, outcome: RecoveryOutcome, at: Date): RecoveredHost {
  return {
    host, phase: outcome.phase, generation, pod, completionTime: kubeTime(at),
    ...(outcome.snapshotId ? { snapshotId: outcome.snapshotId } : {}),
    ...(outcome.files !== undefined ? { files: outcome.files } : {}),
    ...(outcome.bytes !== undefined ? { bytes: outcome.bytes } : {}),
    ...(outcome.phase === 'Failed' ? { error: outcome.error ?? 'the agent reported a failure without a message; see its log' } : {}),
  };
}

function sameOutcome(entry: RecoveredHost | undefined, e: RecoveredHost): boolean {
  return entry !== undefined && entry.phase === e.phase && entry.generation === e.generation && entry.pod === e.pod &&
    entry.snapshotId === e.snapshotId && entry.error === e.error;
}

/**
 * POST /agent/v1/recovery/report: records the host's outcome, the Recovery's phase, stats,
 * condition and an Event. 409 when the Recovery's generation is not the claimed one (it changed:
 * the pod restarts and claims again).
 */
export async function reportRecovery(cfg: HandlerConfig, agent: AgentIdentity, req: RecoveryReportRequest): Promise<RecoveryReportAnswer> {
  const ctx = await recoveryContext(cfg, agent, req.namespace, req.recovery, req.host);
  const log = cfg.log.child({ namespace: req.namespace, recovery: req.recovery, host: req.host, pod: agent.podName });
  const at = now(cfg);
  let phase: string = 'Unknown';
  let repeated = false;
  let recovery = ctx.recovery;
  await retryOnConflict(async () => {
    const r = await readRecovery(cfg, req.namespace, req.recovery);
    const generation = generationOf(r);
    if (req.generation !== generation) {
      throw new HttpError(409, `Recovery ${req.namespace}/${req.recovery} changed while recovering (generation ${req.generation} claimed, now ${generation}); the result is dropped: restart and claim again`, 'generation');
    }
    const entry = outcomeEntry(req.host, agent.podName, generation, req.outcome, at);
    const previous = r.status?.recoveredHosts?.find((h) => h.host === req.host);
    // A repeated report (the first answer was lost on the way back) is answered again, not recorded twice.
    if (sameOutcome(previous, entry)) {
      repeated = true;
      phase = r.status?.phase ?? 'Unknown';
      recovery = r;
      return;
    }
    const hosts = withHost(r.status?.recoveredHosts, entry);
    phase = aggregatePhase(hosts, generation, await expectedHosts(cfg, r));
    const finished = phase === 'Succeeded' || phase === 'Failed';
    const live = current(hosts, generation).filter((h) => h.phase === 'Succeeded');
    const stats = {
      files: live.reduce((n, h) => n + (h.files ?? 0), 0),
      bytes: live.reduce((n, h) => n + (h.bytes ?? 0), 0),
      ...(req.outcome.durationSeconds !== undefined ? { durationSeconds: req.outcome.durationSeconds } : {}),
    };
    const status: Record<string, unknown> = {
      recoveredHosts: hosts, phase, observedGeneration: generation, stats,
      ...(r.status?.startTime === undefined ? { startTime: kubeTime(at) } : {}),
      ...(req.outcome.phase === 'Succeeded' && req.outcome.snapshotId ? { snapshotId: req.outcome.snapshotId } : {}),
      ...(finished ? { completionTime: kubeTime(at) } : {}),
      ...(phase === 'Failed' ? { error: failureSummary(hosts, generation) } : { error: null }),
    };
    if (finished) {
      status.conditions = setCondition(r.status?.conditions, phase === 'Succeeded'
        ? { type: CONDITION_RECOVERED, status: 'True', reason: 'RecoverySucceeded', message: `every host recovered (${live.map((h) => h.host).join(', ')})`, observedGeneration: generation }
        : { type: CONDITION_RECOVERED, status: 'False', reason: 'RecoveryFailed', message: failureSummary(hosts, generation), observedGeneration: generation }, at);
    }
    await writeStatus(cfg, r, status);
    recovery = r;
  });
  if (!repeated) {
    const o = req.outcome;
    const e = o.phase === 'Succeeded'
      ? { type: 'Normal' as const, reason: 'RecoverySucceeded', message: `host ${req.host}: restored snapshot ${(o.snapshotId ?? '').slice(0, 8) || '(unknown)'} (${o.files ?? 0} files, ${o.bytes ?? 0} bytes)` }
      : { type: 'Warning' as const, reason: 'RecoveryFailed', message: `host ${req.host}: ${o.error ?? 'no message'}` };
    try {
      await emitEvent(cfg.kc, recoveryRef(req.namespace, req.recovery, recovery.metadata.uid), {
        ...e, message: e.message.slice(0, 1000), action: 'Recover',
        related: { apiVersion: 'v1', kind: 'Pod', namespace: req.namespace, name: agent.podName, ...(agent.pod.metadata?.uid ? { uid: agent.pod.metadata.uid } : {}) },
      }, CONTROLLER, at);
    } catch (error) {
      log.warn({ err: (error as Error).message, reason: e.reason }, 'could not record an Event');
    }
  }
  log.info({ outcome: req.outcome.phase, phase, repeated }, 'recovery reported');
  return { recovery: req.recovery, host: req.host, phase };
}

function failureSummary(hosts: readonly RecoveredHost[], generation: number): string {
  return current(hosts, generation).filter((h) => h.phase === 'Failed').map((h) => `host ${h.host}: ${h.error ?? 'failed'}`).join('; ').slice(0, 4096);
}
