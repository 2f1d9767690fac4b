// The schedule planner: which Backups are due, and what each sweep must write. Pure: the same
// Backups, BackupTriggers and `now` give the same plan on every replica, so concurrent sweeps
// agree on the name of the run they create and the apiserver's AlreadyExists makes it one run.
import { createHash } from 'node:crypto';
import { API_VERSION, nextRunAfter, parseSchedule, previousRunAtOrBefore } from '../../shared/api/index.ts';
import type { Backup, BackupTrigger, RunPhase, Schedule } from '../../shared/api/index.ts';
import { conditionUnchanged, kubeTime } from '../../shared/kube/index.ts';
import type { Condition, ConditionInput } from '../../shared/kube/index.ts';

/** Label every scheduled BackupTrigger carries: the Backup's name (hashed when longer than 63). */
export const BACKUP_LABEL = 'stash.appscode.com/backup';
/**
 * Backup condition the sweep owns: True (reason Scheduled) while scheduled runs start; False with
 * reason Paused or InvalidSchedule otherwise. Its lastTransitionTime to True is when scheduling
 * (re)started: ticks before it are not run, so resuming a paused Backup does not start a run at once.
 */
export const SCHEDULE_CONDITION = 'Scheduled';

const MAX_NAME = 253;
const MAX_LABEL_VALUE = 63;

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

/**
 * `text` cut to `limit` characters, ending in `-<8 hex of a hash of text>` when it had to be cut,
 * so different long names stay different. Separators left at the cut are dropped, keeping the
 * result a valid DNS subdomain / label value.
 */
export function fitName(text: string, limit: number): string {
  if (text.length <= limit) return text;
  const head = text.slice(0, limit - 9).replace(/[-._]+$/, '');
  return `${head}-${shortHash(text)}`;
}

/** A Backup (or BackupTrigger) name as a label value (at most 63 characters). */
export function nameLabelValue(name: string): string {
  return fitName(name, MAX_LABEL_VALUE);
}

/** `<backup>-<unix seconds of the tick>`, at most 253 characters. */
export function scheduledTriggerName(backupName: string, tick: Date): string {
  const suffix = `-${Math.floor(tick.getTime() / 1000)}`;
  return `${fitName(backupName, MAX_NAME - suffix.length)}${suffix}`;
}

/** A run that still occupies its Backup: no phase yet (just created) counts as Pending. */
export function isActiveRun(trigger: BackupTrigger): boolean {
  const phase: RunPhase | undefined = trigger.status?.phase;
  return phase === undefined || phase === 'Pending' || phase === 'Running';
}

/** The status fields the sweep writes; null removes a field (JSON merge patch). */
export interface ScheduleStatusPatch {
  lastScheduledTime?: string;
  nextScheduledTime?: string | null;
  lastSkippedTime?: string;
  conditions?: Condition[];
}

interface PlanBase {
  namespace: string;
  name: string;
  /** The Backup as listed: its uid and resourceVersion guard the writes. */
  backup: Backup;
  /** undefined: nothing to write. */
  status: ScheduleStatusPatch | undefined;
  /** The schedule condition to set, if it changes; `status.conditions` already holds it. */
  condition: ConditionInput | undefined;
}

export type BackupPlan =
  | (PlanBase & { action: 'invalid'; message: string })
  | (PlanBase & { action: 'paused' })
  /** The Backup is being deleted (a finalizer holds it): no new runs. */
  | (PlanBase & { action: 'deleting' })
  | (PlanBase & { action: 'wait'; next: Date })
  /** Create `trigger`; AlreadyExists means another sweep created it: fine. The run records its tick: no status write unless the condition changes. */
  | (PlanBase & { action: 'create'; tick: Date; next: Date; trigger: BackupTrigger })
  /** A BackupTrigger of this Backup has the tick's name but is not its scheduled run (made by hand): record the tick. */
  | (PlanBase & { action: 'recorded'; tick: Date; next: Date; existing: string })
  /** A previous run is still Pending/Running: record the skipped tick. */
  | (PlanBase & { action: 'skip'; tick: Date; next: Date; running: string[] });

/**
 * The last tick at or before `now`. previousRunAtOrBefore misses a tick that cron-parser moved out
 * of a daylight-saving gap (`30 2 * * *` in Europe/Berlin on the spring-forward day runs at 03:30
 * local by nextRunAfter, but prev() jumps to the day before); stepping forward with nextRunAfter
 * from there finds it, so the run the status announced as nextScheduledTime really starts.
 */
export function latestTickAtOrBefore(schedule: Schedule, now: Date): Date {
  let tick = previousRunAtOrBefore(schedule, now);
  for (let i = 0; i < 4; i++) {
    const after = nextRunAfter(schedule, tick);
    if (after.getTime() > now.getTime()) break;
    tick = after;
  }
  return tick;
}

/** `YYYY-MM-DD HH:MM` of `date` on the wall clock of `zone`. */
function wallClock(date: Date, zone: string): string {
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
    .formatToParts(date);
  const get = (type: string): string => parts.find((p) => p.type === type)?.value ?? '';
  return `${get('year')}-${get('month')}-${get('day')} ${get('hour')}:${get('minute')}`;
}

/**
 * True when `tick` repeats the wall-clock time of `last` because the clock fell back (01:30 comes
 * twice on the day daylight saving time ends). A cron whose hour field names fixed hours runs
 * once then, as Vixie cron does; an hour wildcard (`0 * * * *`) runs both, an hour apart.
 */
export function repeatsWallClock(schedule: Schedule, last: Date, tick: Date): boolean {
  if (schedule.kind !== 'cron' || schedule.timezone === undefined) return false;
  const hourField = schedule.expression.split(' ')[1] ?? '*';
  if (hourField.includes('*')) return false;
  return wallClock(last, schedule.timezone) === wallClock(tick, schedule.timezone);
}

function runsByBackup(triggers: readonly BackupTrigger[]): Map<string, BackupTrigger[]> {
  const map = new Map<string, BackupTrigger[]>();
  for (const t of triggers) {
    const key = `${t.metadata.namespace ?? ''}/${t.spec.targetBackup.name}`;
    const list = map.get(key);
    if (list) list.push(t);
    else map.set(key, [t]);
  }
  return map;
}

function conditionPatch(backup: Backup, condition: ConditionInput, now: Date): { condition: ConditionInput | undefined; conditions: Condition[] | undefined } {
  const current = (backup.status?.conditions ?? []) as Condition[];
  if (conditionUnchanged(current, condition)) return { condition: undefined, conditions: undefined };
  const index = current.findIndex((c) => c.type === condition.type);
  const existing = index >= 0 ? current[index] : undefined;
  const next: Condition = {
    ...condition,
    lastTransitionTime: existing !== undefined && existing.status === condition.status ? existing.lastTransitionTime : kubeTime(now),
  };
  const conditions = index >= 0 ? current.map((c, i) => (i === index ? next : c)) : [...current, next];
  return { condition, conditions };
}

/** The BackupTrigger the sweep creates for `tick`. */
export function scheduledTrigger(backup: Backup, tick: Date): BackupTrigger {
  const name = backup.metadata.name ?? '';
  const ownerReferences = backup.metadata.uid === undefined ? undefined : [{
    apiVersion: API_VERSION, kind: 'Backup', name, uid: backup.metadata.uid as string, controller: true, blockOwnerDeletion: true,
  }];
  return {
    apiVersion: API_VERSION,
    kind: 'BackupTrigger',
    metadata: {
      name: scheduledTriggerName(name, tick),
      namespace: backup.metadata.namespace,
      labels: { [BACKUP_LABEL]: nameLabelValue(name), 'app.kubernetes.io/managed-by': 'stash' },
      ...(ownerReferences ? { ownerReferences } : {}),
    },
    spec: { targetBackup: { name }, origin: 'Schedule', scheduledTime: kubeTime(tick) },
  };
}

/**
 * How long after a scheduled run's tick the sweep leaves recording it in the Backup's status to
 * handle-trigger. Sweeps come once a minute: the ones of the tick's minute write nothing, the next
 * one records the tick if handle-trigger has not.
 */
export const STATUS_GRACE_MS = 60_000;

/** The newest spec.scheduledTime among `runs` made by the schedule (epoch ms), if any. */
export function newestScheduledTick(runs: readonly BackupTrigger[]): number | undefined {
  let newest: number | undefined;
  for (const t of runs) {
    if (t.spec.origin !== 'Schedule' || t.spec.scheduledTime === undefined) continue;
    const at = Date.parse(t.spec.scheduledTime);
    if (Number.isFinite(at)) newest = maxDefined(newest, at);
  }
  return newest;
}

function maxDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || !Number.isFinite(a)) return b;
  if (b === undefined || !Number.isFinite(b)) return a;
  return Math.max(a, b);
}

function patchOrUndefined(patch: ScheduleStatusPatch): ScheduleStatusPatch | undefined {
  return Object.keys(patch).length > 0 ? patch : undefined;
}

function planOne(backup: Backup, runs: readonly BackupTrigger[], now: Date): BackupPlan {
  const namespace = backup.metadata.namespace ?? 'default';
  const name = backup.metadata.name ?? '';
  const generation = typeof backup.metadata.generation === 'number' ? backup.metadata.generation : undefined;
  const withGeneration = (c: ConditionInput): ConditionInput => (generation === undefined ? c : { ...c, observedGeneration: generation });
  const status = backup.status ?? {};

  if (backup.metadata.deletionTimestamp !== undefined) {
    return { action: 'deleting', namespace, name, backup, condition: undefined, status: undefined };
  }
  const parsed = parseSchedule(backup.spec.schedule ?? '', backup.spec.timezone);
  if (!parsed.ok) {
    const message = `${parsed.error.message}; no scheduled runs start until spec.schedule is fixed (BackupTriggers still run)`;
    const { condition, conditions } = conditionPatch(backup, withGeneration({ type: SCHEDULE_CONDITION, status: 'False', reason: 'InvalidSchedule', message }), now);
    const patch: ScheduleStatusPatch = {};
    if (conditions) patch.conditions = conditions;
    if (status.nextScheduledTime !== undefined) patch.nextScheduledTime = null;
    return { action: 'invalid', namespace, name, backup, message, condition, status: Object.keys(patch).length > 0 ? patch : undefined };
  }
  const schedule: Schedule = parsed.schedule;
  const zone = schedule.timezone ?? 'UTC';

  if (backup.spec.paused === true) {
    const { condition, conditions } = conditionPatch(backup, withGeneration({
      type: SCHEDULE_CONDITION, status: 'False', reason: 'Paused',
      message: `schedule "${schedule.text}" (${zone}) is paused: set spec.paused to false to resume scheduled runs`,
    }), now);
    const patch: ScheduleStatusPatch = {};
    if (conditions) patch.conditions = conditions;
    if (status.nextScheduledTime !== undefined) patch.nextScheduledTime = null;
    return { action: 'paused', namespace, name, backup, condition, status: Object.keys(patch).length > 0 ? patch : undefined };
  }

  const next = nextRunAfter(schedule, now);
  const previous = ((status.conditions ?? []) as Condition[]).find((c) => c.type === SCHEDULE_CONDITION);
  const { condition, conditions } = conditionPatch(backup, withGeneration({
    type: SCHEDULE_CONDITION, status: 'True', reason: 'Scheduled', message: `schedule "${schedule.text}" (${zone}) is valid`,
  }), now);
  const base = { namespace, name, backup, condition };

  // The last tick already handled: the newer of status.lastScheduledTime and the newest scheduled
  // run. The run is the durable record of its tick (the sweep writes no status when it creates
  // one); handle-trigger copies its tick to lastScheduledTime before the run can be pruned.
  const recordedTick = status.lastScheduledTime === undefined ? undefined : Date.parse(status.lastScheduledTime);
  const runTick = newestScheduledTick(runs);
  const handledTick = maxDefined(recordedTick, runTick);
  // The anchor: the last tick handled, else the Backup's creation (a Backup created at 10:30 with
  // @hourly first runs at 11:00, not at once). Scheduling (re)starts when the condition turns
  // True: not on a tick missed while paused or while the schedule was invalid.
  const anchorText = status.lastScheduledTime ?? (backup.metadata.creationTimestamp as string | undefined);
  let anchor = anchorText === undefined ? now.getTime() : Date.parse(anchorText);
  if (runTick !== undefined) anchor = Math.max(anchor, runTick);
  if (previous !== undefined) {
    const since = previous.status === 'True' ? Date.parse(previous.lastTransitionTime) : now.getTime();
    if (Number.isFinite(since)) anchor = Math.max(anchor, since);
  }
  const tick = latestTickAtOrBefore(schedule, now);

  if (!(tick.getTime() > anchor)) {
    const patch: ScheduleStatusPatch = {};
    if (conditions) patch.conditions = conditions;
    const unrecorded = runTick !== undefined && !(recordedTick !== undefined && recordedTick >= runTick);
    // A run newer than lastScheduledTime: handle-trigger records its tick when it sees the run;
    // within STATUS_GRACE_MS of the tick the sweep leaves that to it (a second sweep of the same
    // minute writes nothing), after it the sweep records the tick itself.
    if (unrecorded && now.getTime() < runTick + STATUS_GRACE_MS) return { action: 'wait', next, ...base, status: patchOrUndefined(patch) };
    if (unrecorded) patch.lastScheduledTime = kubeTime(new Date(runTick));
    if (status.nextScheduledTime === undefined || Date.parse(status.nextScheduledTime) !== next.getTime()) patch.nextScheduledTime = kubeTime(next);
    return { action: 'wait', next, ...base, status: patchOrUndefined(patch) };
  }

  const tickStatus: ScheduleStatusPatch = { ...(conditions ? { conditions } : {}), lastScheduledTime: kubeTime(tick), nextScheduledTime: kubeTime(next) };
  if (handledTick !== undefined && repeatsWallClock(schedule, new Date(handledTick), tick)) {
    return { action: 'wait', next, ...base, status: tickStatus };
  }
  const triggerName = scheduledTriggerName(name, tick);
  // A BackupTrigger of this Backup already has this tick's name without being its scheduled run
  // (made by hand): the sweep cannot create the run, so it records the tick as handled.
  const existing = runs.find((t) => t.metadata.name === triggerName);
  if (existing) {
    return { action: 'recorded', tick, next, existing: triggerName, ...base, status: tickStatus };
  }
  const running = runs.filter(isActiveRun).map((t) => t.metadata.name ?? '').sort();
  if (running.length > 0) {
    return { action: 'skip', tick, next, running, ...base, status: { ...tickStatus, lastSkippedTime: kubeTime(tick) } };
  }
  // No status write for a new run, unless the condition changes (the Backup's first sweep): then
  // the tick goes into the same write.
  return { action: 'create', tick, next, trigger: scheduledTrigger(backup, tick), ...base, status: conditions ? tickStatus : undefined };
}

/**
 * One plan per Backup. `triggers` are all BackupTriggers (any namespace); a Backup's runs are those
 * whose spec.targetBackup names it in its namespace.
 */
export function planSchedules(backups: readonly Backup[], triggers: readonly BackupTrigger[], now: Date): BackupPlan[] {
  const runs = runsByBackup(triggers);
  return backups.map((b) => planOne(b, runs.get(`${b.metadata.namespace ?? ''}/${b.metadata.name ?? ''}`) ?? [], now));
}
