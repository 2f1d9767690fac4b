// handle-trigger, the pure part: which hosts a run expects, how a run's status moves (claimed,
// timed out, finished), what the Backup's status and Event say about a run (its scheduled tick,
// its outcome), which old runs to prune, and what a Lease allows. No I/O: handler.ts reads the
// objects and applies these.
import { nextRunAfter, parseSchedule } from '../../shared/api/index.ts';
import type { Backup, BackupStatus, BackupTrigger, BackupTriggerStatus, Condition, HostRun, RunPhase } from '../../shared/api/index.ts';
import { kubeTime, setCondition as setKubeCondition } from '../../shared/kube/index.ts';
import type { Condition as KubeCondition, ConditionInput } from '../../shared/kube/index.ts';

export const DEFAULT_HISTORY_LIMIT = 5;

/** setCondition over the API's condition type (whose reason and message are optional). */
export function setCondition(conditions: readonly Condition[] | undefined, input: ConditionInput, now: Date): Condition[] {
  return setKubeCondition(conditions as readonly KubeCondition[] | undefined, input, now);
}

/** Condition types on a BackupTrigger. */
export const CONDITION_VALID = 'Valid';
export const CONDITION_COMPLETED = 'Completed';
/** True once the Backup's status and Event say how this run ended (so they are written once). */
export const CONDITION_RECORDED = 'Recorded';
/** Condition type on a Backup: how its last run ended. */
export const CONDITION_LAST_RUN = 'LastRunSucceeded';

const FINISHED: ReadonlySet<string> = new Set<RunPhase>(['Succeeded', 'Failed', 'Skipped']);

export function isFinished(phase: string | undefined): boolean {
  return phase !== undefined && FINISHED.has(phase);
}

// ---------------------------------------------------------------------------------------------
// Expected hosts

/** What handler.ts found out about the Backup's target. */
export interface TargetFacts {
  kind: string;
  name: string;
  /** False when the workload / AppBinding does not exist. */
  exists: boolean;
  /** StatefulSet spec.replicas (default 1). */
  replicas?: number;
  /** DaemonSet: the nodes its pods run on (or are meant for). */
  nodeNames?: string[];
}

export type HostsResult = { ok: true; hosts: string[] } | { ok: false; reason: string; message: string };

export const SUPPORTED_KINDS = ['Deployment', 'ReplicaSet', 'ReplicationController', 'StatefulSet', 'DaemonSet', 'AppBinding'] as const;

/**
 * The hosts a run backs up: one `host-0` for Deployment, ReplicaSet, ReplicationController and
 * AppBinding (one replica backs up); `host-<ordinal>` per StatefulSet replica; the node name per
 * DaemonSet pod.
 */
export function expectedHosts(target: TargetFacts): HostsResult {
  const what = `${target.kind} ${target.name}`;
  if (!(SUPPORTED_KINDS as readonly string[]).includes(target.kind)) {
    return { ok: false, reason: 'UnsupportedTarget', message: `the Backup's spec.targetRef names ${what}, a kind Stash cannot back up; use one of ${SUPPORTED_KINDS.join(', ')}` };
  }
  if (!target.exists) {
    return { ok: false, reason: 'TargetNotFound', message: `${what} named in the Backup's spec.targetRef does not exist; create it or fix spec.targetRef` };
  }
  switch (target.kind) {
    case 'StatefulSet': {
      const replicas = target.replicas ?? 1;
      if (replicas < 1) return { ok: false, reason: 'NoReplicas', message: `${what} is scaled to 0 replicas: nothing to back up; scale it up and trigger again` };
      return { ok: true, hosts: Array.from({ length: replicas }, (_, i) => `host-${i}`) };
    }
    case 'DaemonSet': {
      const nodes = [...new Set(target.nodeNames ?? [])].sort();
      if (nodes.length === 0) return { ok: false, reason: 'NoReplicas', message: `${what} has no pods on any node: nothing to back up; check its node selector and tolerations` };
      return { ok: true, hosts: nodes };
    }
    default:
      return { ok: true, hosts: ['host-0'] };
  }
}

// ---------------------------------------------------------------------------------------------
// Run status

export interface RunTiming {
  leaseDurationSeconds: number;
  /** A host Pending longer than this after the run was created fails: no agent ever claimed it. */
  pendingTimeoutSeconds: number;
}

/** What a host's Lease says, as handler.ts read it. */
export interface LeaseView {
  holder?: string;
  renewTime?: Date;
  durationSeconds?: number;
  /** The run the holder works on (annotation). */
  trigger?: string;
}

/** The lease is live: renewed within its duration. */
export function leaseLive(lease: LeaseView | undefined, now: Date): boolean {
  if (lease?.holder === undefined || lease.holder === '' || lease.renewTime === undefined) return false;
  return now.getTime() < lease.renewTime.getTime() + (lease.durationSeconds ?? 0) * 1000;
}

/** The status a new run starts with. */
export function initialStatus(hosts: HostsResult, generation: number | undefined, now: Date, conditions?: Condition[]): BackupTriggerStatus {
  const time = kubeTime(now);
  if (!hosts.ok) {
    return {
      phase: 'Failed', completionTime: time, error: hosts.message, hosts: [],
      conditions: setCondition(conditions, { type: CONDITION_VALID, status: 'False', reason: hosts.reason, message: hosts.message }, now),
      ...(generation === undefined ? {} : { observedGeneration: generation }),
    };
  }
  return {
    phase: 'Pending',
    hosts: hosts.hosts.map((host) => ({ host, phase: 'Pending' })),
    conditions: setCondition(conditions, {
      type: CONDITION_VALID, status: 'True', reason: 'HostsResolved',
      message: `waiting for an agent to claim ${hosts.hosts.join(', ')}`,
    }, now),
    ...(generation === undefined ? {} : { observedGeneration: generation }),
  };
}

/** A failed run for a reason found before any host ran (e.g. the Backup is missing). */
export function invalidStatus(status: BackupTriggerStatus | undefined, reason: string, message: string, now: Date): BackupTriggerStatus {
  return {
    ...status,
    phase: 'Failed',
    completionTime: status?.completionTime ?? kubeTime(now),
    error: message,
    conditions: setCondition(status?.conditions, { type: CONDITION_VALID, status: 'False', reason, message }, now),
  };
}

/**
 * Fails hosts whose agent is gone: Running without a live lease of its own for longer than a
 * lease duration past its last renewal, or Pending longer than pendingTimeoutSeconds.
 */
export function expireHosts(
  hosts: readonly HostRun[], leases: ReadonlyMap<string, LeaseView | undefined>, runName: string, createdAt: Date, timing: RunTiming, now: Date,
): HostRun[] {
  const grace = timing.leaseDurationSeconds * 1000;
  return hosts.map((h) => {
    if (h.phase === 'Running') {
      const lease = leases.get(h.host);
      const ours = lease !== undefined && lease.holder === h.pod && (lease.trigger === undefined || lease.trigger === runName);
      if (ours && leaseLive(lease, now)) return h;
      if (ours && lease.renewTime !== undefined && now.getTime() < lease.renewTime.getTime() + (lease.durationSeconds ?? timing.leaseDurationSeconds) * 1000 + grace) return h;
      const started = h.startTime === undefined ? createdAt : new Date(h.startTime);
      if (!ours && now.getTime() < started.getTime() + timing.leaseDurationSeconds * 1000 + grace) return h;
      const last = ours && lease.renewTime !== undefined ? kubeTime(lease.renewTime) : h.startTime ?? 'the claim';
      const reason = ours
        ? `the agent in pod ${h.pod ?? '?'} stopped renewing its lease (last renewed ${last}, lease ${lease.durationSeconds ?? timing.leaseDurationSeconds}s): the pod died, restarted or cannot reach handle-trigger; check the pod and its stash container's log, then trigger again`
        : `the agent in pod ${h.pod ?? '?'} lost its lease${lease?.holder ? ` to ${lease.holder}` : ''} and did not report: check the pod and its stash container's log, then trigger again`;
      return { ...h, phase: 'Failed', completionTime: kubeTime(now), error: reason };
    }
    if (h.phase === 'Pending' && now.getTime() > createdAt.getTime() + timing.pendingTimeoutSeconds * 1000) {
      return {
        ...h, phase: 'Failed', completionTime: kubeTime(now),
        error: `no agent claimed ${h.host} within ${timing.pendingTimeoutSeconds}s: check that the workload's pods run with the stash sidecar (or the database Job started) and can reach handle-trigger`,
      };
    }
    return h;
  });
}

export interface Aggregate {
  phase: RunPhase;
  startTime?: string;
  completionTime?: string;
  snapshotId?: string;
  bytes?: number;
  files?: number;
  error?: string;
}

function latest(times: (string | undefined)[]): string | undefined {
  return times.filter((t): t is string => t !== undefined).sort().at(-1);
}

/**
 * The run's phase from its hosts: Pending until one is claimed, Running until all finished, then
 * Succeeded when every host succeeded, else Failed. Totals add up the hosts; snapshotId is the
 * one of the host that finished last (the only one for a single-host run).
 */
export function aggregate(hosts: readonly HostRun[]): Aggregate {
  const starts = hosts.map((h) => h.startTime).filter((t): t is string => t !== undefined).sort();
  const startTime = starts[0];
  const out: Aggregate = { phase: 'Pending' };
  if (startTime !== undefined) out.startTime = startTime;
  if (hosts.length === 0) return { phase: 'Failed', error: 'the run has no hosts' };
  if (!hosts.every((h) => isFinished(h.phase))) {
    out.phase = hosts.some((h) => h.phase !== 'Pending') ? 'Running' : 'Pending';
    return out;
  }
  const failed = hosts.filter((h) => h.phase === 'Failed');
  out.phase = failed.length === 0 ? 'Succeeded' : 'Failed';
  const completion = latest(hosts.map((h) => h.completionTime));
  if (completion !== undefined) out.completionTime = completion;
  const withSnapshot = hosts.filter((h) => h.snapshotId !== undefined && h.phase === 'Succeeded')
    .sort((a, b) => (a.completionTime ?? '').localeCompare(b.completionTime ?? ''));
  const snapshot = withSnapshot.at(-1)?.snapshotId;
  if (snapshot !== undefined) out.snapshotId = snapshot;
  if (hosts.some((h) => h.bytes !== undefined)) out.bytes = hosts.reduce((n, h) => n + (h.bytes ?? 0), 0);
  if (hosts.some((h) => h.files !== undefined)) out.files = hosts.reduce((n, h) => n + (h.files ?? 0), 0);
  if (failed.length > 0) out.error = failed.map((h) => `${h.host}: ${h.error ?? 'failed without a message'}`).join('; ');
  return out;
}

/**
 * The run's next status: hosts of dead agents failed, phase and totals from the hosts, the
 * Completed condition once finished. Returns the same status when there is nothing to change.
 */
export function nextRunStatus(
  status: BackupTriggerStatus, leases: ReadonlyMap<string, LeaseView | undefined>, runName: string, createdAt: Date, timing: RunTiming, now: Date,
): BackupTriggerStatus {
  if (isFinished(status.phase)) return status;
  const hosts = expireHosts(status.hosts ?? [], leases, runName, createdAt, timing, now);
  const agg = aggregate(hosts);
  const next: BackupTriggerStatus = { ...status, hosts, phase: agg.phase };
  for (const key of ['startTime', 'completionTime', 'snapshotId', 'bytes', 'files', 'error'] as const) {
    if (agg[key] !== undefined) (next as Record<string, unknown>)[key] = agg[key];
  }
  if (isFinished(agg.phase)) {
    next.completionTime ??= kubeTime(now);
    const message = agg.phase === 'Succeeded'
      ? `all ${hosts.length} host(s) backed up${agg.snapshotId ? `; snapshot ${agg.snapshotId.slice(0, 8)}` : ''}`
      : agg.error ?? 'failed';
    next.conditions = setCondition(status.conditions, { type: CONDITION_COMPLETED, status: 'True', reason: agg.phase, message }, now);
  }
  return next;
}

/** The host's entry after the agent of `pod` claimed it. */
export function claimHost(status: BackupTriggerStatus, host: string, pod: string, job: string | undefined, now: Date): BackupTriggerStatus {
  const time = kubeTime(now);
  const hosts = (status.hosts ?? []).map((h): HostRun => h.host === host
    ? { host, phase: 'Running', pod, startTime: time, ...(job === undefined ? {} : { job }) }
    : h);
  return { ...status, hosts, phase: 'Running', startTime: status.startTime ?? time };
}

/** The host's entry after its agent reported. */
export function reportHost(
  status: BackupTriggerStatus, host: string, outcome: { phase: 'Succeeded' | 'Failed'; snapshotId?: string; bytes?: number; files?: number; error?: string }, now: Date,
): BackupTriggerStatus {
  const hosts = (status.hosts ?? []).map((h): HostRun => {
    if (h.host !== host) return h;
    const next: HostRun = { host, phase: outcome.phase, completionTime: kubeTime(now) };
    if (h.pod !== undefined) next.pod = h.pod;
    if (h.job !== undefined) next.job = h.job;
    if (h.startTime !== undefined) next.startTime = h.startTime;
    if (outcome.snapshotId !== undefined) next.snapshotId = outcome.snapshotId;
    if (outcome.bytes !== undefined) next.bytes = outcome.bytes;
    if (outcome.files !== undefined) next.files = outcome.files;
    if (outcome.phase === 'Failed') next.error = outcome.error ?? 'the agent reported a failure without a message; see its log';
    return next;
  });
  return { ...status, hosts };
}

// ---------------------------------------------------------------------------------------------
// Claims and leases

export type LeaseDecision =
  | { action: 'create' }
  | { action: 'take'; from?: string }
  | { action: 'held'; holder: string };

/** May `pod` take the host's lease? Only when nobody else holds it live. */
export function leaseDecision(lease: LeaseView | undefined, exists: boolean, pod: string, now: Date): LeaseDecision {
  if (!exists) return { action: 'create' };
  if (lease?.holder !== undefined && lease.holder !== '' && lease.holder !== pod && leaseLive(lease, now)) return { action: 'held', holder: lease.holder };
  return lease?.holder ? { action: 'take', from: lease.holder } : { action: 'take' };
}

export type RenewDecision = { ok: true } | { ok: false; message: string };

/**
 * May the agent of `pod` go on with `host` of run `runName`? Only while it holds the lease and the
 * run still counts it as this host's agent.
 */
export function renewDecision(
  lease: LeaseView | undefined, entry: HostRun | undefined, host: string, pod: string, runName: string, leaseName: string,
): RenewDecision {
  if (entry === undefined) return { ok: false, message: `run ${runName} has no host ${host}: stop this backup and claim again` };
  if (entry.phase !== 'Running' || entry.pod !== pod) {
    const why = entry.phase === 'Running' ? `pod ${entry.pod ?? '?'} runs it now` : `it is ${entry.phase}${entry.error ? ` (${entry.error})` : ''}`;
    return { ok: false, message: `host ${entry.host} of run ${runName} is no longer this pod's: ${why}; stop this backup and claim again` };
  }
  if (lease?.holder !== pod || (lease.trigger !== undefined && lease.trigger !== runName)) {
    const holder = lease?.holder ? `pod ${lease.holder}` : 'nobody';
    return { ok: false, message: `lease ${leaseName} is held by ${holder}, not this pod: the lease was lost; stop this backup and claim again` };
  }
  return { ok: true };
}

/** The oldest run of the Backup whose `host` waits for an agent (optionally only `onlyRun`). */
export function claimableRun(triggers: readonly BackupTrigger[], host: string, onlyRun?: string): BackupTrigger | undefined {
  return [...triggers]
    .filter((t) => onlyRun === undefined || t.metadata.name === onlyRun)
    .filter((t) => !isFinished(t.status?.phase) && (t.status?.hosts ?? []).some((h) => h.host === host && h.phase === 'Pending'))
    .sort(byCreation)[0];
}

function creationOf(t: BackupTrigger): string {
  const created = (t.metadata as { creationTimestamp?: unknown }).creationTimestamp;
  return created instanceof Date ? created.toISOString() : typeof created === 'string' ? created : '';
}

function byCreation(a: BackupTrigger, b: BackupTrigger): number {
  return creationOf(a).localeCompare(creationOf(b)) || (a.metadata.name ?? '').localeCompare(b.metadata.name ?? '');
}

/** The Lease of a Backup's host: `<backup>-<host>`, cut to a valid name. */
export function leaseName(backup: string, host: string): string {
  return `${backup}-${host}`.slice(0, 253).replace(/[-.]+$/, '');
}

// ---------------------------------------------------------------------------------------------
// The Backup after a run

function shortId(id: string | undefined): string {
  return id === undefined ? 'none' : id.slice(0, 8);
}

function duration(start: string | undefined, end: string | undefined): string {
  if (start === undefined || end === undefined) return '';
  const seconds = Math.max(0, Math.round((Date.parse(end) - Date.parse(start)) / 1000));
  return ` in ${seconds}s`;
}

/** The Event on the Backup for a finished run. */
export function runEvent(trigger: BackupTrigger): { type: 'Normal' | 'Warning'; reason: string; message: string } {
  const s = trigger.status ?? {};
  const origin = trigger.spec.origin ?? 'Manual';
  const name = trigger.metadata.name ?? '';
  if (s.phase === 'Succeeded') {
    const totals = [s.bytes === undefined ? undefined : `${s.bytes} bytes added`, s.files === undefined ? undefined : `${s.files} files`].filter(Boolean).join(', ');
    return {
      type: 'Normal', reason: 'BackupSucceeded',
      message: `${origin} run ${name} succeeded${duration(s.startTime, s.completionTime)}: snapshot ${shortId(s.snapshotId)}${totals ? `, ${totals}` : ''}`,
    };
  }
  return { type: 'Warning', reason: 'BackupFailed', message: `${origin} run ${name} failed: ${s.error ?? 'no reason recorded'}` };
}

/**
 * The Backup status fields a finished run sets, or undefined when the Backup already says so or
 * records a newer run. lastBackupTime/lastRun follow the most recent finished run;
 * lastSuccessfulBackupTime, lastSnapshotId and lastBackupSize only successful ones.
 */
export function backupStatusAfterRun(backup: Backup, trigger: BackupTrigger, now: Date): Partial<BackupStatus> | undefined {
  const s = trigger.status;
  const name = trigger.metadata.name ?? '';
  if (s === undefined || !isFinished(s.phase) || s.phase === undefined) return undefined;
  const current = backup.status ?? {};
  const completion = s.completionTime ?? kubeTime(now);
  const newer = current.lastRun === undefined || current.lastRun.name === name ||
    (current.lastRun.completionTime ?? '') <= completion;
  if (!newer) return undefined;
  const lastRun: NonNullable<BackupStatus['lastRun']> = { name, phase: s.phase };
  if (s.startTime !== undefined) lastRun.startTime = s.startTime;
  lastRun.completionTime = completion;
  if (s.snapshotId !== undefined) lastRun.snapshotId = s.snapshotId;
  if (s.error !== undefined) lastRun.error = s.error;
  const patch: Partial<BackupStatus> = { lastRun, lastBackupTime: completion };
  if (s.phase === 'Succeeded') {
    patch.lastSuccessfulBackupTime = completion;
    if (s.snapshotId !== undefined) patch.lastSnapshotId = s.snapshotId;
    if (s.bytes !== undefined) patch.lastBackupSize = s.bytes;
  }
  if (current.phase !== 'Invalid' && current.phase !== 'Paused') patch.phase = s.phase === 'Succeeded' ? 'Ready' : 'Failed';
  const event = runEvent(trigger);
  patch.conditions = setCondition(current.conditions, {
    type: CONDITION_LAST_RUN, status: s.phase === 'Succeeded' ? 'True' : 'False', reason: event.reason, message: event.message,
  }, now);
  return patch;
}

/**
 * The schedule fields a scheduled run sets on its Backup: lastScheduledTime = the run's tick and
 * nextScheduledTime = the schedule's next tick after max(tick, now); undefined when the run is not
 * a scheduled one or the Backup already records this tick or a later one (never goes back). The
 * sweep writes no status when it creates the run: this is what records the tick on the Backup, and
 * it must happen before the run can be pruned. A paused Backup or one whose schedule does not
 * parse gets lastScheduledTime only (the sweep keeps nextScheduledTime unset for those).
 */
export function scheduleStatusAfterRun(backup: Backup, trigger: BackupTrigger, now: Date): Pick<BackupStatus, 'lastScheduledTime' | 'nextScheduledTime'> | undefined {
  if (trigger.spec.origin !== 'Schedule' || trigger.spec.scheduledTime === undefined) return undefined;
  const tick = Date.parse(trigger.spec.scheduledTime);
  if (!Number.isFinite(tick)) return undefined;
  const stored = backup.status?.lastScheduledTime === undefined ? NaN : Date.parse(backup.status.lastScheduledTime);
  if (stored >= tick) return undefined;
  const patch: Pick<BackupStatus, 'lastScheduledTime' | 'nextScheduledTime'> = { lastScheduledTime: kubeTime(new Date(tick)) };
  if (backup.spec.paused === true) return patch;
  const parsed = parseSchedule(backup.spec.schedule ?? '', backup.spec.timezone);
  if (parsed.ok) patch.nextScheduledTime = kubeTime(nextRunAfter(parsed.schedule, new Date(Math.max(tick, now.getTime()))));
  return patch;
}

/** Backup phase while one of its runs is going: Running (unless Invalid or Paused). */
export function backupPhaseWhileRunning(backup: Backup): Partial<BackupStatus> | undefined {
  const phase = backup.status?.phase;
  if (phase === 'Running' || phase === 'Invalid' || phase === 'Paused') return undefined;
  return { phase: 'Running' };
}

// ---------------------------------------------------------------------------------------------
// History

/**
 * Finished runs of one Backup beyond its backupHistoryLimit, oldest first: the ones to delete.
 * Pending and Running runs are never pruned and do not count against the limit; neither do
 * finished runs whose outcome is not yet recorded on the Backup.
 */
export function triggersToPrune(triggers: readonly BackupTrigger[], limit: number | undefined): string[] {
  const keep = limit ?? DEFAULT_HISTORY_LIMIT;
  const finished = triggers
    .filter((t) => isFinished(t.status?.phase) && t.status?.conditions?.some((c) => c.type === CONDITION_RECORDED && c.status === 'True'))
    .sort((a, b) => (a.status?.completionTime ?? '').localeCompare(b.status?.completionTime ?? '') || byCreation(a, b));
  const excess = finished.length - keep;
  return excess > 0 ? finished.slice(0, excess).map((t) => t.metadata.name ?? '').filter((n) => n !== '') : [];
}
