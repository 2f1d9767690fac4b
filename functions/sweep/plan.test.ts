// The schedule planner over time: a table of Backups, runs and clocks -> the one action per Backup.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backup, BackupTrigger, RunPhase } from '../../shared/api/index.ts';
import { backupTrigger, DNS_SUBDOMAIN_PATTERN, mustParseSchedule } from '../../shared/api/index.ts';
import { kubeTime } from '../../shared/kube/index.ts';
import type { Condition } from '../../shared/kube/index.ts';
import { BACKUP_LABEL, latestTickAtOrBefore, nameLabelValue, planSchedules, SCHEDULE_CONDITION, scheduledTriggerName } from './plan.ts';
import type { BackupPlan } from './plan.ts';
import { scheduleStatusAfterRun } from '../handle-trigger/plan.ts';

interface BackupInput {
  name?: string;
  namespace?: string;
  schedule: string;
  timezone?: string;
  paused?: boolean;
  created: string;
  lastScheduled?: string;
  nextScheduled?: string;
  conditions?: Condition[];
}

function backup(input: BackupInput): Backup {
  return {
    apiVersion: 'stash.appscode.com/v1alpha2',
    kind: 'Backup',
    metadata: {
      name: input.name ?? 'db', namespace: input.namespace ?? 'demo', uid: 'uid-1', resourceVersion: '7', generation: 3,
      creationTimestamp: input.created,
    },
    spec: {
      schedule: input.schedule,
      ...(input.timezone ? { timezone: input.timezone } : {}),
      ...(input.paused !== undefined ? { paused: input.paused } : {}),
      backupAgent: 'pg-backup',
      repository: { name: 'repo' },
      targetRef: { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'pg' },
    },
    status: {
      ...(input.lastScheduled ? { lastScheduledTime: input.lastScheduled } : {}),
      ...(input.nextScheduled ? { nextScheduledTime: input.nextScheduled } : {}),
      ...(input.conditions ? { conditions: input.conditions } : {}),
    },
  };
}

function run(name: string, backupName: string, phase: RunPhase | undefined, namespace = 'demo', scheduledTime?: string): BackupTrigger {
  return {
    apiVersion: 'stash.appscode.com/v1alpha2', kind: 'BackupTrigger',
    metadata: { name, namespace },
    spec: { targetBackup: { name: backupName }, ...(scheduledTime ? { origin: 'Schedule' as const, scheduledTime } : {}) },
    ...(phase ? { status: { phase } } : {}),
  };
}

const scheduled = (since: string, message = 'x'): Condition => ({ type: SCHEDULE_CONDITION, status: 'True', reason: 'Scheduled', message, lastTransitionTime: since, observedGeneration: 3 });
/** The Scheduled condition as the sweep writes it for @hourly: a sweep finds nothing to change in it. */
const hourlyScheduled = scheduled('2026-11-20T00:00:30Z', 'schedule "@hourly" (UTC) is valid');
const unix = (iso: string): number => Date.parse(iso) / 1000;

interface Expect {
  action: BackupPlan['action'];
  tick?: string;
  next?: string;
  trigger?: string;
  lastSkipped?: string;
  condition?: { status: string; reason: string; message?: RegExp };
}

interface Case {
  name: string;
  backup: BackupInput;
  runs?: BackupTrigger[];
  now: string;
  expect: Expect;
}

const cases: Case[] = [
  {
    name: 'hourly, created 10:30: nothing at 10:45 (anchored at creation, not run at once)',
    backup: { schedule: '@hourly', created: '2026-11-25T10:30:00Z' },
    now: '2026-11-25T10:45:00Z',
    expect: { action: 'wait', next: '2026-11-25T11:00:00Z', condition: { status: 'True', reason: 'Scheduled' } },
  },
  {
    name: 'hourly, created 10:30: first run at 11:00',
    backup: { schedule: '@hourly', created: '2026-11-25T10:30:00Z' },
    now: '2026-11-25T11:00:20Z',
    expect: { action: 'create', tick: '2026-11-25T11:00:00Z', next: '2026-11-25T12:00:00Z', trigger: `db-${unix('2026-11-25T11:00:00Z')}` },
  },
  {
    name: 'created exactly on a tick: that tick is not run',
    backup: { schedule: '@hourly', created: '2026-11-25T10:00:00Z' },
    now: '2026-11-25T10:00:40Z',
    expect: { action: 'wait', next: '2026-11-25T11:00:00Z' },
  },
  {
    name: 'the tick already recorded: wait for the next',
    backup: { schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T11:00:00Z', nextScheduled: '2026-11-25T12:00:00Z', conditions: [scheduled('2026-11-20T00:00:30Z')] },
    now: '2026-11-25T11:30:00Z',
    expect: { action: 'wait' },
  },
  {
    name: 'missed ticks while down (03:00 .. 09:00): one run, for the latest tick',
    backup: { schedule: '0 * * * *', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T03:00:00Z', conditions: [scheduled('2026-11-20T00:00:30Z')] },
    now: '2026-11-25T09:10:00Z',
    expect: { action: 'create', tick: '2026-11-25T09:00:00Z', next: '2026-11-25T10:00:00Z', trigger: `db-${unix('2026-11-25T09:00:00Z')}` },
  },
  {
    name: '@every 90m: ticks anchored at the epoch',
    backup: { schedule: '@every 90m', created: '2026-11-25T00:00:00Z' },
    now: '2026-11-25T10:40:00Z',
    // 2026-11-25T10:30Z is 1795 * 5400 s after the epoch.
    expect: { action: 'create', tick: '2026-11-25T10:30:00Z', next: '2026-11-25T12:00:00Z' },
  },
  {
    name: 'cron with a time zone: 03:00 Europe/Berlin is 02:00 UTC in winter',
    backup: { schedule: '0 3 * * *', timezone: 'Europe/Berlin', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-24T02:00:00Z', conditions: [scheduled('2026-11-20T00:00:30Z')] },
    now: '2026-11-25T02:00:30Z',
    expect: { action: 'create', tick: '2026-11-25T02:00:00Z', next: '2026-11-26T02:00:00Z' },
  },
  {
    name: 'CRON_TZ prefix: 01:00 America/New_York on the day DST starts is 06:00 UTC, the next day 05:00 UTC',
    backup: { schedule: 'CRON_TZ=America/New_York 0 1 * * *', created: '2026-03-01T00:00:00Z', lastScheduled: '2026-03-07T06:00:00Z', conditions: [scheduled('2026-03-01T00:00:30Z')] },
    now: '2026-03-08T06:00:30Z',
    expect: { action: 'create', tick: '2026-03-08T06:00:00Z', next: '2026-03-09T05:00:00Z' },
  },
  {
    name: 'DST gap: 02:30 Europe/Berlin does not exist on 2026-03-29; the run still happens that day (03:30 CEST)',
    backup: { schedule: '30 2 * * *', timezone: 'Europe/Berlin', created: '2026-03-01T00:00:00Z', lastScheduled: '2026-03-28T01:30:00Z', conditions: [scheduled('2026-03-01T00:00:30Z')] },
    now: '2026-03-29T01:30:30Z',
    expect: { action: 'create', tick: '2026-03-29T01:30:00Z', next: '2026-03-30T00:30:00Z' },
  },
  {
    name: 'DST fall-back: 01:30 America/New_York comes twice on 2026-11-01; a fixed-hour cron runs once',
    backup: { schedule: '30 1 * * *', timezone: 'America/New_York', created: '2026-10-01T00:00:00Z', lastScheduled: '2026-11-01T05:30:00Z', conditions: [scheduled('2026-10-01T00:00:30Z')] },
    now: '2026-11-01T06:30:30Z',
    expect: { action: 'wait', next: '2026-11-02T06:30:00Z' },
  },
  {
    name: 'DST fall-back: an hourly cron runs in both 01:00 hours (an hour apart)',
    backup: { schedule: '0 * * * *', timezone: 'America/New_York', created: '2026-10-01T00:00:00Z', lastScheduled: '2026-11-01T05:00:00Z', conditions: [scheduled('2026-10-01T00:00:30Z')] },
    now: '2026-11-01T06:00:30Z',
    expect: { action: 'create', tick: '2026-11-01T06:00:00Z', next: '2026-11-01T07:00:00Z' },
  },
  {
    name: 'paused: no run, condition False/Paused, nextScheduledTime removed',
    backup: { schedule: '@hourly', paused: true, created: '2026-11-25T00:00:00Z', nextScheduled: '2026-11-25T11:00:00Z' },
    now: '2026-11-25T11:00:30Z',
    expect: { action: 'paused', condition: { status: 'False', reason: 'Paused', message: /spec\.paused/ } },
  },
  {
    name: 'resumed after a pause: the tick missed while paused is not run at once',
    backup: {
      schedule: '@hourly', paused: false, created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-24T11:00:00Z',
      conditions: [{ type: SCHEDULE_CONDITION, status: 'False', reason: 'Paused', message: 'x', lastTransitionTime: '2026-11-24T11:30:00Z' }],
    },
    now: '2026-11-25T11:20:00Z',
    expect: { action: 'wait', next: '2026-11-25T12:00:00Z', condition: { status: 'True', reason: 'Scheduled' } },
  },
  {
    name: 'resumed at 11:20: the 12:00 tick runs',
    backup: { schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-24T11:00:00Z', conditions: [scheduled('2026-11-25T11:20:00Z')] },
    now: '2026-11-25T12:00:10Z',
    expect: { action: 'create', tick: '2026-11-25T12:00:00Z' },
  },
  {
    name: 'previous run still Running: the tick is skipped and recorded',
    backup: { schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T10:00:00Z', conditions: [scheduled('2026-11-20T00:00:30Z')] },
    runs: [run('db-old', 'db', 'Running'), run('db-done', 'db', 'Succeeded')],
    now: '2026-11-25T11:00:05Z',
    expect: { action: 'skip', tick: '2026-11-25T11:00:00Z', lastSkipped: '2026-11-25T11:00:00Z', next: '2026-11-25T12:00:00Z' },
  },
  {
    name: 'a manual trigger without a status yet counts as Pending: skipped',
    backup: { schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T10:00:00Z', conditions: [scheduled('2026-11-20T00:00:30Z')] },
    runs: [run('manual', 'db', undefined)],
    now: '2026-11-25T11:00:05Z',
    expect: { action: 'skip', tick: '2026-11-25T11:00:00Z', lastSkipped: '2026-11-25T11:00:00Z' },
  },
  {
    name: 'finished runs (Succeeded, Failed, Skipped) and runs of other Backups or namespaces do not block',
    backup: { schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T10:00:00Z', conditions: [scheduled('2026-11-20T00:00:30Z')] },
    runs: [run('a', 'db', 'Succeeded'), run('b', 'db', 'Failed'), run('c', 'db', 'Skipped'), run('d', 'other', 'Running'), run('e', 'db', 'Running', 'elsewhere')],
    now: '2026-11-25T11:00:05Z',
    expect: { action: 'create', tick: '2026-11-25T11:00:00Z' },
  },
  {
    name: 'the run for this tick exists, the status does not say so yet: the run is the record (wait, not skip, not a second run)',
    backup: { schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T10:00:00Z', conditions: [scheduled('2026-11-20T00:00:30Z')] },
    runs: [run(`db-${unix('2026-11-25T11:00:00Z')}`, 'db', 'Running', 'demo', '2026-11-25T11:00:00Z')],
    now: '2026-11-25T11:00:50Z',
    expect: { action: 'wait', next: '2026-11-25T12:00:00Z' },
  },
  {
    name: 'a BackupTrigger made by hand with this tick\'s name (not a scheduled run): the tick is recorded, nothing created',
    backup: { schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T10:00:00Z', conditions: [scheduled('2026-11-20T00:00:30Z')] },
    runs: [run(`db-${unix('2026-11-25T11:00:00Z')}`, 'db', 'Succeeded')],
    now: '2026-11-25T11:00:50Z',
    expect: { action: 'recorded', tick: '2026-11-25T11:00:00Z', next: '2026-11-25T12:00:00Z' },
  },
  {
    name: 'invalid: @every 30s is below the 1m minimum',
    backup: { schedule: '@every 30s', created: '2026-11-25T00:00:00Z' },
    now: '2026-11-25T11:00:00Z',
    expect: { action: 'invalid', condition: { status: 'False', reason: 'InvalidSchedule', message: /at least 1m/ } },
  },
  {
    name: 'invalid: six cron fields',
    backup: { schedule: '0 0 3 * * *', created: '2026-11-25T00:00:00Z' },
    now: '2026-11-25T11:00:00Z',
    expect: { action: 'invalid', condition: { status: 'False', reason: 'InvalidSchedule', message: /has 6 fields, cron needs 5/ } },
  },
  {
    name: 'invalid: unknown time zone',
    backup: { schedule: '@daily', timezone: 'Mars/Olympus', created: '2026-11-25T00:00:00Z' },
    now: '2026-11-25T11:00:00Z',
    expect: { action: 'invalid', condition: { status: 'False', reason: 'InvalidSchedule', message: /not an IANA time zone/ } },
  },
  {
    name: 'invalid: minute 61',
    backup: { schedule: '61 * * * *', created: '2026-11-25T00:00:00Z' },
    now: '2026-11-25T11:00:00Z',
    expect: { action: 'invalid', condition: { status: 'False', reason: 'InvalidSchedule', message: /not valid cron/ } },
  },
];

for (const c of cases) {
  test(`planSchedules: ${c.name}`, () => {
    const plans = planSchedules([backup(c.backup)], c.runs ?? [], new Date(c.now));
    assert.equal(plans.length, 1);
    const plan = plans[0]!;
    assert.equal(plan.action, c.expect.action);
    if (c.expect.tick !== undefined) {
      assert.ok('tick' in plan);
      assert.equal(plan.tick.toISOString(), new Date(c.expect.tick).toISOString());
      // A new run is the record of its tick: the status is written only with a condition change.
      if (plan.action === 'create' && plan.condition === undefined) assert.equal(plan.status, undefined);
      else assert.equal(plan.status?.lastScheduledTime, c.expect.tick);
    }
    if (c.expect.next !== undefined) {
      assert.ok('next' in plan);
      assert.equal(kubeTime(plan.next), c.expect.next);
      if (plan.status?.nextScheduledTime !== undefined) assert.equal(plan.status.nextScheduledTime, c.expect.next);
    }
    if (c.expect.lastSkipped !== undefined) assert.equal(plan.status?.lastSkippedTime, c.expect.lastSkipped);
    else assert.equal(plan.status?.lastSkippedTime, undefined);
    if (c.expect.condition !== undefined) {
      const cond = plan.status?.conditions?.find((x) => x.type === SCHEDULE_CONDITION);
      assert.ok(cond, 'the Scheduled condition is written');
      assert.equal(cond.status, c.expect.condition.status);
      assert.equal(cond.reason, c.expect.condition.reason);
      assert.equal(cond.observedGeneration, 3);
      if (c.expect.condition.message) assert.match(cond.message, c.expect.condition.message);
    }
    if (plan.action === 'create') {
      const t = plan.trigger;
      if (c.expect.trigger !== undefined) assert.equal(t.metadata.name, c.expect.trigger);
      assert.equal(t.metadata.name, `db-${unix(plan.tick.toISOString())}`);
      assert.equal(t.metadata.namespace, 'demo');
      assert.deepEqual(t.spec, { targetBackup: { name: 'db' }, origin: 'Schedule', scheduledTime: plan.tick.toISOString().replace('.000Z', 'Z') });
      assert.deepEqual(t.metadata.labels, { [BACKUP_LABEL]: 'db', 'app.kubernetes.io/managed-by': 'stash' });
      assert.deepEqual(t.metadata.ownerReferences, [{ apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Backup', name: 'db', uid: 'uid-1', controller: true, blockOwnerDeletion: true }]);
      assert.equal(backupTrigger.safeParse(t).success, true, 'the trigger passes the BackupTrigger schema');
    } else {
      assert.equal('trigger' in plan, false);
    }
    if (plan.action === 'invalid' || plan.action === 'paused') {
      assert.equal(plan.status?.lastScheduledTime, undefined);
      if (c.backup.nextScheduled !== undefined) assert.equal(plan.status?.nextScheduledTime, null);
    }
  });
}

test('planSchedules: a Backup being deleted starts no run and writes nothing', () => {
  const b = backup({ schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T10:00:00Z' });
  b.metadata.deletionTimestamp = '2026-11-25T10:59:00Z';
  const [plan] = planSchedules([b], [], new Date('2026-11-25T11:00:30Z'));
  assert.equal(plan?.action, 'deleting');
  assert.equal(plan?.status, undefined);
});

test('planSchedules: nothing to write when status already says it all', () => {
  const b = backup({ schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T11:00:00Z', nextScheduled: '2026-11-25T12:00:00Z', conditions: [{ ...scheduled('2026-11-20T00:00:30Z'), message: 'schedule "@hourly" (UTC) is valid' }] });
  const [plan] = planSchedules([b], [], new Date('2026-11-25T11:30:00Z'));
  assert.equal(plan?.action, 'wait');
  assert.equal(plan?.status, undefined);
});

test('planSchedules: a due run costs one write, its BackupTrigger: no status patch while the condition stands', () => {
  const b = backup({ schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T10:00:00Z', nextScheduled: '2026-11-25T11:00:00Z', conditions: [hourlyScheduled] });
  const [plan] = planSchedules([b], [], new Date('2026-11-25T11:00:20Z'));
  assert.equal(plan?.action, 'create');
  assert.equal(plan?.condition, undefined);
  assert.equal(plan?.status, undefined);
});

test('planSchedules: a Backup\'s first sweep that also starts a run writes the condition, with the tick in the same write', () => {
  const b = backup({ schedule: '@hourly', created: '2026-11-25T10:30:00Z' });
  const [plan] = planSchedules([b], [], new Date('2026-11-25T11:00:20Z'));
  assert.equal(plan?.action, 'create');
  assert.deepEqual(plan?.status && { ...plan.status, conditions: plan.status.conditions?.map((c) => c.type) },
    { conditions: [SCHEDULE_CONDITION], lastScheduledTime: '2026-11-25T11:00:00Z', nextScheduledTime: '2026-11-25T12:00:00Z' });
});

test('planSchedules: after the run is created, sweeps of the same minute create nothing and write nothing; the next minute records the tick if handle-trigger did not', () => {
  const b = backup({ schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T10:00:00Z', nextScheduled: '2026-11-25T11:00:00Z', conditions: [hourlyScheduled] });
  const [due] = planSchedules([b], [], new Date('2026-11-25T11:00:20Z'));
  assert.ok(due?.action === 'create');
  const runs = [due.trigger];
  for (const at of ['2026-11-25T11:00:20Z', '2026-11-25T11:00:59Z']) {
    const [again] = planSchedules([b], runs, new Date(at));
    assert.equal(again?.action, 'wait', at);
    assert.equal(again?.status, undefined, `${at}: nothing to write (handle-trigger records the tick)`);
  }
  // handle-trigger did not record it: a minute after the tick the sweep records it itself.
  runs[0] = { ...due.trigger, status: { phase: 'Running' } };
  const [later] = planSchedules([b], runs, new Date('2026-11-25T11:01:00Z'));
  assert.equal(later?.action, 'wait');
  assert.deepEqual(later?.status, { lastScheduledTime: '2026-11-25T11:00:00Z', nextScheduledTime: '2026-11-25T12:00:00Z' });
  // Once handle-trigger (or that sweep) recorded it: nothing to write.
  const recordedBackup = backup({ schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T11:00:00Z', nextScheduled: '2026-11-25T12:00:00Z', conditions: [hourlyScheduled] });
  const [settled] = planSchedules([recordedBackup], runs, new Date('2026-11-25T11:05:00Z'));
  assert.equal(settled?.action, 'wait');
  assert.equal(settled?.status, undefined);
});

test('planSchedules: a scheduled run counts as the handled tick even when lastScheduledTime is older or missing; older runs never pull the anchor back', () => {
  const noStatus = backup({ schedule: '@hourly', created: '2026-11-25T09:30:00Z', conditions: [hourlyScheduled] });
  const runs = [
    run(`db-${unix('2026-11-25T10:00:00Z')}`, 'db', 'Succeeded', 'demo', '2026-11-25T10:00:00Z'),
    run(`db-${unix('2026-11-25T11:00:00Z')}`, 'db', 'Succeeded', 'demo', '2026-11-25T11:00:00Z'),
  ];
  assert.equal(planSchedules([noStatus], runs, new Date('2026-11-25T11:30:00Z'))[0]?.action, 'wait');
  const [nextTick] = planSchedules([noStatus], runs, new Date('2026-11-25T12:00:10Z'));
  assert.equal(nextTick?.action, 'create');
  assert.equal(nextTick && 'tick' in nextTick ? nextTick.tick.toISOString() : '', '2026-11-25T12:00:00.000Z');
  // lastScheduledTime newer than every run left (history pruned): it is the anchor.
  const newer = backup({ schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T12:00:00Z', nextScheduled: '2026-11-25T13:00:00Z', conditions: [hourlyScheduled] });
  const [plan] = planSchedules([newer], runs, new Date('2026-11-25T12:30:00Z'));
  assert.equal(plan?.action, 'wait');
  assert.equal(plan?.status, undefined, 'an older run never moves lastScheduledTime back');
  // A Manual run with a scheduledTime is no scheduled run: it does not count as the tick's run.
  const manual: BackupTrigger = { ...run('db-manual', 'db', 'Succeeded'), spec: { targetBackup: { name: 'db' }, origin: 'Manual', scheduledTime: '2026-11-25T12:00:00Z' } };
  const [withManual] = planSchedules([backup({ schedule: '@hourly', created: '2026-11-20T00:00:00Z', lastScheduled: '2026-11-25T11:00:00Z', conditions: [hourlyScheduled] })], [manual], new Date('2026-11-25T12:00:10Z'));
  assert.equal(withManual?.action, 'create');
});

test('planSchedules with handle-trigger and backupHistoryLimit 0: every run is pruned as soon as it ends, and no tick ever runs twice', () => {
  // Three hours of a */15 schedule, a sweep every 30 s; each run is seen by handle-trigger (which
  // records its tick on the Backup: scheduleStatusAfterRun) when created, and finishes and is
  // pruned within 20 s: before any sweep could record its tick itself.
  let b = backup({ schedule: '*/15 * * * *', created: '2026-11-25T10:05:00Z' });
  let runs: BackupTrigger[] = [];
  const started: string[] = [];
  const apply = (patch: object | undefined): void => {
    if (patch) b = { ...b, status: { ...b.status, ...patch } };
    if (b.status?.nextScheduledTime === null) delete b.status.nextScheduledTime;
  };
  for (let second = 0; second <= 3 * 3600; second += 30) {
    const now = new Date(Date.parse('2026-11-25T10:05:10Z') + second * 1000);
    runs = runs.filter((r) => now.getTime() < Date.parse(r.spec.scheduledTime ?? '') + 20_000);
    const [plan] = planSchedules([b], runs, now);
    assert.ok(plan);
    apply(plan.status);
    if (plan.action === 'create') {
      runs.push(plan.trigger);
      started.push(plan.tick.toISOString());
      apply(scheduleStatusAfterRun(b, plan.trigger, now));
    }
    assert.ok(plan.action === 'create' || plan.action === 'wait', `${now.toISOString()}: ${plan.action}`);
  }
  const expected = Array.from({ length: 12 }, (_, i) => new Date(Date.parse('2026-11-25T10:15:00Z') + i * 15 * 60_000).toISOString());
  assert.deepEqual(started, expected);
  assert.equal(b.status?.lastScheduledTime, '2026-11-25T13:00:00Z');
  assert.equal(b.status?.nextScheduledTime, '2026-11-25T13:15:00Z');
});

test('planSchedules: a sweep over time starts one run per tick and skips while a run is active', () => {
  let b = backup({ schedule: '*/15 * * * *', created: '2026-11-25T10:05:00Z' });
  const runs: BackupTrigger[] = [];
  const started: string[] = [];
  const skipped: string[] = [];
  for (let minute = 0; minute <= 60; minute++) {
    const now = new Date(Date.parse('2026-11-25T10:05:30Z') + minute * 60_000);
    // the run started at 10:30 lasts 20 minutes
    for (const r of runs) if (r.metadata.name === `db-${unix('2026-11-25T10:30:00Z')}` && now.getTime() >= Date.parse('2026-11-25T10:50:00Z')) r.status = { phase: 'Succeeded' };
    const [plan] = planSchedules([b], runs, now);
    assert.ok(plan);
    if (plan.action === 'create') {
      runs.push({ ...plan.trigger, status: plan.tick.getTime() === Date.parse('2026-11-25T10:30:00Z') ? { phase: 'Running' } : { phase: 'Succeeded' } });
      started.push(plan.tick.toISOString());
    }
    if (plan.action === 'skip') skipped.push(plan.tick.toISOString());
    if (plan.status) b = { ...b, status: { ...b.status, ...plan.status, nextScheduledTime: plan.status.nextScheduledTime ?? undefined } };
  }
  assert.deepEqual(started, ['2026-11-25T10:15:00.000Z', '2026-11-25T10:30:00.000Z', '2026-11-25T11:00:00.000Z']);
  assert.deepEqual(skipped, ['2026-11-25T10:45:00.000Z']);
});

test('scheduledTriggerName: <backup>-<unix seconds>, cut and hashed to stay a valid name of at most 253 characters', () => {
  const tick = new Date('2026-11-25T11:00:00Z');
  assert.equal(scheduledTriggerName('db', tick), 'db-1795604400');
  const long = `${'a'.repeat(120)}.${'b'.repeat(131)}`; // 252 characters
  const other = `${'a'.repeat(120)}.${'b'.repeat(130)}c`;
  const name = scheduledTriggerName(long, tick);
  assert.ok(name.length <= 253);
  assert.match(name, new RegExp(DNS_SUBDOMAIN_PATTERN));
  assert.match(name, /-[0-9a-f]{8}-1795604400$/);
  assert.notEqual(name, scheduledTriggerName(other, tick));
  // a cut that would end on a '.' drops it
  const dotted = `${'a'.repeat(233)}.${'b'.repeat(19)}`;
  assert.match(scheduledTriggerName(dotted, tick), new RegExp(DNS_SUBDOMAIN_PATTERN));
  assert.equal(nameLabelValue('db'), 'db');
  const label = nameLabelValue(long);
  assert.ok(label.length <= 63);
  assert.match(label, /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/);
});

test('latestTickAtOrBefore agrees with the schedule on plain days', () => {
  const s = mustParseSchedule('0 3 * * *', 'Europe/Berlin');
  assert.equal(latestTickAtOrBefore(s, new Date('2026-11-25T02:00:00Z')).toISOString(), '2026-11-25T02:00:00.000Z');
  assert.equal(latestTickAtOrBefore(s, new Date('2026-11-25T01:59:59Z')).toISOString(), '2026-11-24T02:00:00.000Z');
});
