// handle-trigger's pure decisions, as tables: expected hosts, run status transitions, dead agents,
// aggregate phase, leases, the Backup after a run, history pruning.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backup, BackupTrigger, HostRun } from '../../shared/api/index.ts';
import {
  aggregate, backupStatusAfterRun, claimableRun, claimHost, CONDITION_RECORDED, expectedHosts, expireHosts, initialStatus, leaseDecision, leaseLive,
  leaseName, nextRunStatus, renewDecision, reportHost, runEvent, scheduleStatusAfterRun, triggersToPrune,
} from './plan.ts';
import type { LeaseView, TargetFacts } from './plan.ts';

const T0 = new Date('2026-11-25T10:00:00Z');
const at = (seconds: number): Date => new Date(T0.getTime() + seconds * 1000);
const iso = (seconds: number): string => `${at(seconds).toISOString().slice(0, 19)}Z`;
const timing = { leaseDurationSeconds: 30, pendingTimeoutSeconds: 600 };

function trigger(name: string, status?: BackupTrigger['status'], created = 0): BackupTrigger {
  return {
    apiVersion: 'stash.appscode.com/v1alpha2', kind: 'BackupTrigger',
    metadata: { name, namespace: 'demo', creationTimestamp: iso(created) },
    spec: { targetBackup: { name: 'app' }, origin: 'Manual' },
    ...(status ? { status } : {}),
  };
}

const recorded = [{ type: CONDITION_RECORDED, status: 'True' as const, reason: 'BackupStatusUpdated', message: '', lastTransitionTime: iso(0) }];

test('expectedHosts: one host-0 for Deployment-like kinds and AppBinding, one per StatefulSet replica, one per DaemonSet node', () => {
  const cases: [string, TargetFacts, ReturnType<typeof expectedHosts>][] = [
    ['Deployment', { kind: 'Deployment', name: 'web', exists: true }, { ok: true, hosts: ['host-0'] }],
    ['ReplicaSet', { kind: 'ReplicaSet', name: 'web', exists: true }, { ok: true, hosts: ['host-0'] }],
    ['ReplicationController', { kind: 'ReplicationController', name: 'web', exists: true }, { ok: true, hosts: ['host-0'] }],
    ['AppBinding', { kind: 'AppBinding', name: 'pg', exists: true }, { ok: true, hosts: ['host-0'] }],
    ['StatefulSet x3', { kind: 'StatefulSet', name: 'db', exists: true, replicas: 3 }, { ok: true, hosts: ['host-0', 'host-1', 'host-2'] }],
    ['StatefulSet default replicas', { kind: 'StatefulSet', name: 'db', exists: true }, { ok: true, hosts: ['host-0'] }],
    ['DaemonSet', { kind: 'DaemonSet', name: 'logs', exists: true, nodeNames: ['node-b', 'node-a', 'node-b'] }, { ok: true, hosts: ['node-a', 'node-b'] }],
  ];
  for (const [name, facts, want] of cases) assert.deepEqual(expectedHosts(facts), want, name);

  const failures: [string, TargetFacts, string][] = [
    ['missing workload', { kind: 'Deployment', name: 'web', exists: false }, 'TargetNotFound'],
    ['StatefulSet scaled to 0', { kind: 'StatefulSet', name: 'db', exists: true, replicas: 0 }, 'NoReplicas'],
    ['DaemonSet without pods', { kind: 'DaemonSet', name: 'logs', exists: true, nodeNames: [] }, 'NoReplicas'],
    ['unsupported kind', { kind: 'CronJob', name: 'x', exists: true }, 'UnsupportedTarget'],
  ];
  for (const [name, facts, reason] of failures) {
    const r = expectedHosts(facts);
    assert.equal(r.ok, false, name);
    if (!r.ok) {
      assert.equal(r.reason, reason, name);
      assert.match(r.message, new RegExp(facts.name), `${name}: the message names the object`);
    }
  }
});

test('initialStatus: Pending hosts, or Failed with a Valid=False condition saying why', () => {
  const ok = initialStatus({ ok: true, hosts: ['host-0', 'host-1'] }, 1, T0);
  assert.equal(ok.phase, 'Pending');
  assert.deepEqual(ok.hosts, [{ host: 'host-0', phase: 'Pending' }, { host: 'host-1', phase: 'Pending' }]);
  assert.equal(ok.conditions?.[0]?.type, 'Valid');
  assert.equal(ok.conditions?.[0]?.status, 'True');

  const bad = initialStatus({ ok: false, reason: 'TargetNotFound', message: 'Deployment web named in ... does not exist' }, 1, T0);
  assert.equal(bad.phase, 'Failed');
  assert.equal(bad.completionTime, iso(0));
  assert.match(bad.error ?? '', /does not exist/);
  assert.deepEqual(bad.conditions?.map((c) => [c.type, c.status, c.reason]), [['Valid', 'False', 'TargetNotFound']]);
});

test('aggregate: Pending, Running, Succeeded, Failed and totals', () => {
  const h = (host: string, phase: HostRun['phase'], extra: Partial<HostRun> = {}): HostRun => ({ host, phase, ...extra });
  const cases: [string, HostRun[], Partial<ReturnType<typeof aggregate>>][] = [
    ['nothing claimed', [h('host-0', 'Pending')], { phase: 'Pending' }],
    ['one running', [h('host-0', 'Running', { startTime: iso(5) }), h('host-1', 'Pending')], { phase: 'Running', startTime: iso(5) }],
    ['one done, one running', [h('host-0', 'Succeeded', { startTime: iso(1), completionTime: iso(9) }), h('host-1', 'Running', { startTime: iso(2) })], { phase: 'Running', startTime: iso(1) }],
    ['all succeeded', [
      h('host-0', 'Succeeded', { startTime: iso(1), completionTime: iso(9), snapshotId: 'aaaa', bytes: 10, files: 2 }),
      h('host-1', 'Succeeded', { startTime: iso(2), completionTime: iso(12), snapshotId: 'bbbb', bytes: 5, files: 3 }),
    ], { phase: 'Succeeded', startTime: iso(1), completionTime: iso(12), snapshotId: 'bbbb', bytes: 15, files: 5 }],
    ['one failed', [
      h('host-0', 'Succeeded', { completionTime: iso(9), snapshotId: 'aaaa', bytes: 10 }),
      h('host-1', 'Failed', { completionTime: iso(8), error: 'restic: repository is locked' }),
    ], { phase: 'Failed', completionTime: iso(9), snapshotId: 'aaaa', error: 'host-1: restic: repository is locked' }],
    ['no hosts', [], { phase: 'Failed', error: 'the run has no hosts' }],
  ];
  for (const [name, hosts, want] of cases) {
    const got = aggregate(hosts);
    for (const [key, value] of Object.entries(want)) assert.deepEqual(got[key as keyof typeof got], value, `${name}: ${key}`);
  }
});

test('expireHosts: a Running host whose agent stopped renewing fails with the reason; live ones stay', () => {
  const running: HostRun = { host: 'host-0', phase: 'Running', pod: 'web-1', startTime: iso(0) };
  const lease = (renewed: number, holder = 'web-1', trigger = 'run-1'): LeaseView => ({ holder, renewTime: at(renewed), durationSeconds: 30, trigger });
  const cases: [string, LeaseView | undefined, number, 'Running' | 'Failed', RegExp?][] = [
    ['renewed just now', lease(100), 110, 'Running'],
    ['lease expired but within the grace of one more duration', lease(100), 150, 'Running'],
    ['stopped renewing two durations ago', lease(100), 161, 'Failed', /web-1 stopped renewing its lease \(last renewed .*\): the pod died/],
    ['lease taken by another pod, shortly after the claim', lease(10, 'web-2'), 20, 'Running'],
    ['lease taken by another pod long ago', lease(10, 'web-2'), 100, 'Failed', /lost its lease to web-2/],
    ['lease now serves another run', lease(100, 'web-1', 'run-2'), 110, 'Failed', /lost its lease/],
    ['no lease at all, long after the claim', undefined, 100, 'Failed', /lost its lease/],
  ];
  for (const [name, l, nowS, phase, message] of cases) {
    const [got] = expireHosts([running], new Map([['host-0', l]]), 'run-1', T0, timing, at(nowS));
    assert.equal(got?.phase, phase, name);
    if (message) {
      assert.match(got?.error ?? '', message, name);
      assert.equal(got?.completionTime, iso(nowS), name);
    }
  }
  const [pending] = expireHosts([{ host: 'host-0', phase: 'Pending' }], new Map(), 'run-1', T0, timing, at(601));
  assert.equal(pending?.phase, 'Failed');
  assert.match(pending?.error ?? '', /no agent claimed host-0 within 600s/);
  const [waiting] = expireHosts([{ host: 'host-0', phase: 'Pending' }], new Map(), 'run-1', T0, timing, at(599));
  assert.equal(waiting?.phase, 'Pending');
});

test('claim -> report -> nextRunStatus: a run goes Pending, Running, Succeeded with its totals and a Completed condition', () => {
  const pending = initialStatus({ ok: true, hosts: ['host-0'] }, 1, T0);
  const running = claimHost(pending, 'host-0', 'web-1', undefined, at(5));
  assert.equal(running.phase, 'Running');
  assert.equal(running.startTime, iso(5));
  assert.deepEqual(running.hosts, [{ host: 'host-0', phase: 'Running', pod: 'web-1', startTime: iso(5) }]);
  const live = new Map([['host-0', { holder: 'web-1', renewTime: at(20), durationSeconds: 30, trigger: 'run-1' }]]);
  assert.deepEqual(nextRunStatus(running, live, 'run-1', T0, timing, at(25)), running, 'a live run is left as it is');

  const reported = reportHost(running, 'host-0', { phase: 'Succeeded', snapshotId: 'abcdef0123', bytes: 2048, files: 7 }, at(40));
  const done = nextRunStatus(reported, new Map(), 'run-1', T0, timing, at(41));
  assert.equal(done.phase, 'Succeeded');
  assert.equal(done.completionTime, iso(40));
  assert.equal(done.snapshotId, 'abcdef0123');
  assert.equal(done.bytes, 2048);
  assert.equal(done.files, 7);
  assert.deepEqual(done.hosts?.[0], { host: 'host-0', phase: 'Succeeded', pod: 'web-1', startTime: iso(5), completionTime: iso(40), snapshotId: 'abcdef0123', bytes: 2048, files: 7 });
  const completed = done.conditions?.find((c) => c.type === 'Completed');
  assert.equal(completed?.reason, 'Succeeded');
  assert.deepEqual(nextRunStatus(done, new Map(), 'run-1', T0, timing, at(100)), done, 'a finished run never changes');

  const failed = nextRunStatus(reportHost(running, 'host-0', { phase: 'Failed' }, at(40)), new Map(), 'run-1', T0, timing, at(41));
  assert.equal(failed.phase, 'Failed');
  assert.match(failed.error ?? '', /host-0: the agent reported a failure without a message/);
});

test('leases: only a live holder keeps others out', () => {
  const live: LeaseView = { holder: 'web-1', renewTime: at(0), durationSeconds: 30 };
  assert.equal(leaseLive(live, at(29)), true);
  assert.equal(leaseLive(live, at(30)), false);
  assert.equal(leaseLive({ durationSeconds: 30 }, at(0)), false, 'released');
  const cases: [string, LeaseView | undefined, boolean, string, number, ReturnType<typeof leaseDecision>][] = [
    ['no lease', undefined, false, 'web-2', 1, { action: 'create' }],
    ['live, other holder', live, true, 'web-2', 10, { action: 'held', holder: 'web-1' }],
    ['live, same pod', live, true, 'web-1', 10, { action: 'take', from: 'web-1' }],
    ['expired, other holder', live, true, 'web-2', 31, { action: 'take', from: 'web-1' }],
    ['released', { durationSeconds: 30 }, true, 'web-2', 1, { action: 'take' }],
  ];
  for (const [name, lease, exists, pod, nowS, want] of cases) assert.deepEqual(leaseDecision(lease, exists, pod, at(nowS)), want, name);
  assert.equal(leaseName('app', 'host-0'), 'app-host-0');
});

test('renewDecision: ok only while this pod holds the lease for this run and the run still counts it', () => {
  const entry: HostRun = { host: 'host-0', phase: 'Running', pod: 'web-1' };
  const lease: LeaseView = { holder: 'web-1', renewTime: at(0), durationSeconds: 30, trigger: 'run-1' };
  assert.deepEqual(renewDecision(lease, entry, 'host-0', 'web-1', 'run-1', 'app-host-0'), { ok: true });
  const refusals: [string, LeaseView | undefined, HostRun | undefined, RegExp][] = [
    ['another holder', { ...lease, holder: 'web-2' }, entry, /held by pod web-2, not this pod/],
    ['released', { durationSeconds: 30 }, entry, /held by nobody/],
    ['lease for another run', { ...lease, trigger: 'run-2' }, entry, /the lease was lost/],
    ['host failed by the sweep', lease, { ...entry, phase: 'Failed', error: 'stopped renewing' }, /no longer this pod's: it is Failed \(stopped renewing\)/],
    ['host run by another pod', lease, { ...entry, pod: 'web-2' }, /pod web-2 runs it now/],
    ['no such host', lease, undefined, /has no host host-0/],
  ];
  for (const [name, l, e, message] of refusals) {
    const d = renewDecision(l, e, 'host-0', 'web-1', 'run-1', 'app-host-0');
    assert.equal(d.ok, false, name);
    if (!d.ok) assert.match(d.message, message, name);
  }
});

test('claimableRun: the oldest unfinished run with this host Pending; a Job pod only its own run', () => {
  const pendingHost = { hosts: [{ host: 'host-0', phase: 'Pending' as const }], phase: 'Pending' as const };
  const triggers = [
    trigger('newer', pendingHost, 20),
    trigger('older', pendingHost, 10),
    trigger('running', { phase: 'Running', hosts: [{ host: 'host-0', phase: 'Running', pod: 'x' }] }, 1),
    trigger('finished', { phase: 'Failed', hosts: [{ host: 'host-0', phase: 'Pending' }] }, 0),
    trigger('uninitialised', undefined, 0),
  ];
  assert.equal(claimableRun(triggers, 'host-0')?.metadata.name, 'older');
  assert.equal(claimableRun(triggers, 'host-1'), undefined);
  assert.equal(claimableRun(triggers, 'host-0', 'newer')?.metadata.name, 'newer');
  assert.equal(claimableRun(triggers, 'host-0', 'running'), undefined);
});

function backupWith(status?: Backup['status']): Backup {
  return {
    apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Backup', metadata: { name: 'app', namespace: 'demo' },
    spec: { schedule: '@hourly', backupAgent: 'stash-volume-backup', repository: { name: 'repo' }, targetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'web' }, targetDirectories: ['/data'] },
    ...(status ? { status } : {}),
  };
}

test('backupStatusAfterRun and runEvent: success and failure, never going back to an older run', () => {
  const ok = trigger('run-2', { phase: 'Succeeded', startTime: iso(0), completionTime: iso(12), snapshotId: '0123456789ab', bytes: 4096, files: 3 });
  const patch = backupStatusAfterRun(backupWith({ phase: 'Ready' }), ok, at(13));
  assert.deepEqual(patch?.lastRun, { name: 'run-2', phase: 'Succeeded', startTime: iso(0), completionTime: iso(12), snapshotId: '0123456789ab' });
  assert.equal(patch?.lastBackupTime, iso(12));
  assert.equal(patch?.lastSuccessfulBackupTime, iso(12));
  assert.equal(patch?.lastSnapshotId, '0123456789ab');
  assert.equal(patch?.lastBackupSize, 4096);
  assert.equal(patch?.phase, 'Ready');
  assert.deepEqual(patch?.conditions?.map((c) => [c.type, c.status, c.reason]), [['LastRunSucceeded', 'True', 'BackupSucceeded']]);
  assert.deepEqual(runEvent(ok), { type: 'Normal', reason: 'BackupSucceeded', message: 'Manual run run-2 succeeded in 12s: snapshot 01234567, 4096 bytes added, 3 files' });

  const bad = trigger('run-3', { phase: 'Failed', completionTime: iso(20), error: 'host-0: the agent in pod web-1 stopped renewing its lease' });
  const failedPatch = backupStatusAfterRun(backupWith({ phase: 'Ready', lastSuccessfulBackupTime: iso(12), lastRun: { name: 'run-2', phase: 'Succeeded', completionTime: iso(12) } }), bad, at(21));
  assert.equal(failedPatch?.phase, 'Failed');
  assert.equal(failedPatch?.lastBackupTime, iso(20));
  assert.equal(failedPatch?.lastSuccessfulBackupTime, undefined, 'a failure keeps the last success');
  assert.equal(failedPatch?.lastRun?.error, 'host-0: the agent in pod web-1 stopped renewing its lease');
  assert.equal(runEvent(bad).type, 'Warning');
  assert.match(runEvent(bad).message, /Manual run run-3 failed: host-0: the agent in pod web-1 stopped renewing/);

  assert.equal(backupStatusAfterRun(backupWith({ lastRun: { name: 'run-9', phase: 'Succeeded', completionTime: iso(50) } }), bad, at(60)), undefined, 'older run');
  assert.equal(backupStatusAfterRun(backupWith(), trigger('run-4', { phase: 'Running' }), at(1)), undefined, 'unfinished run');
  assert.equal(backupStatusAfterRun(backupWith({ phase: 'Paused' }), ok, at(13))?.phase, undefined, 'Paused stays Paused');
});

test('triggersToPrune: finished and recorded runs beyond the limit, oldest first; never Pending or Running', () => {
  const done = (name: string, completed: number) => trigger(name, { phase: 'Succeeded', completionTime: iso(completed), conditions: recorded });
  const triggers = [
    done('r5', 50), done('r1', 10), done('r3', 30), done('r2', 20), done('r4', 40),
    trigger('running', { phase: 'Running' }), trigger('pending', { phase: 'Pending' }), trigger('new'),
    trigger('failed-unrecorded', { phase: 'Failed', completionTime: iso(1) }),
  ];
  assert.deepEqual(triggersToPrune(triggers, 2), ['r1', 'r2', 'r3']);
  assert.deepEqual(triggersToPrune(triggers, undefined), [], 'default limit 5 keeps all five');
  assert.deepEqual(triggersToPrune(triggers, 0), ['r1', 'r2', 'r3', 'r4', 'r5']);
});

test('scheduleStatusAfterRun: a scheduled run records its tick and the next one on the Backup, never moving lastScheduledTime back', () => {
  const scheduledRun = (tick: string, origin: 'Schedule' | 'Manual' = 'Schedule'): BackupTrigger => ({
    ...trigger(`app-${Date.parse(tick) / 1000}`), spec: { targetBackup: { name: 'app' }, origin, scheduledTime: tick },
  });
  const run11 = scheduledRun('2026-11-25T11:00:00Z');
  // No lastScheduledTime yet, or an older one: both fields, next after the tick (or after now when later).
  assert.deepEqual(scheduleStatusAfterRun(backupWith(), run11, new Date('2026-11-25T11:00:20Z')),
    { lastScheduledTime: '2026-11-25T11:00:00Z', nextScheduledTime: '2026-11-25T12:00:00Z' });
  assert.deepEqual(scheduleStatusAfterRun(backupWith({ lastScheduledTime: '2026-11-25T10:00:00Z', nextScheduledTime: '2026-11-25T11:00:00Z' }), run11, new Date('2026-11-25T11:00:20Z')),
    { lastScheduledTime: '2026-11-25T11:00:00Z', nextScheduledTime: '2026-11-25T12:00:00Z' });
  // Seen late (handle-trigger was down until 12:10): next is after now, not a tick already past.
  assert.deepEqual(scheduleStatusAfterRun(backupWith({ lastScheduledTime: '2026-11-25T10:00:00Z' }), run11, new Date('2026-11-25T12:10:00Z')),
    { lastScheduledTime: '2026-11-25T11:00:00Z', nextScheduledTime: '2026-11-25T13:00:00Z' });
  // The same tick, or a newer one recorded (a later run, a skipped tick): nothing to write.
  assert.equal(scheduleStatusAfterRun(backupWith({ lastScheduledTime: '2026-11-25T11:00:00Z' }), run11, new Date('2026-11-25T11:00:20Z')), undefined);
  assert.equal(scheduleStatusAfterRun(backupWith({ lastScheduledTime: '2026-11-25T12:00:00Z' }), run11, new Date('2026-11-25T12:30:00Z')), undefined, 'an older run never moves it back');
  // Not a scheduled run: nothing.
  assert.equal(scheduleStatusAfterRun(backupWith(), trigger('manual'), new Date('2026-11-25T11:00:20Z')), undefined);
  assert.equal(scheduleStatusAfterRun(backupWith(), scheduledRun('2026-11-25T11:00:00Z', 'Manual'), new Date('2026-11-25T11:00:20Z')), undefined);
  // A time zone: the next 03:00 Europe/Berlin.
  const berlin = { ...backupWith(), spec: { ...backupWith().spec, schedule: '0 3 * * *', timezone: 'Europe/Berlin' } };
  assert.deepEqual(scheduleStatusAfterRun(berlin, scheduledRun('2026-11-25T02:00:00Z'), new Date('2026-11-25T02:00:20Z')),
    { lastScheduledTime: '2026-11-25T02:00:00Z', nextScheduledTime: '2026-11-26T02:00:00Z' });
  // Paused, or a schedule that does not parse: the tick is still recorded (the run exists), no next tick.
  const paused = { ...backupWith(), spec: { ...backupWith().spec, paused: true } };
  assert.deepEqual(scheduleStatusAfterRun(paused, run11, new Date('2026-11-25T11:00:20Z')), { lastScheduledTime: '2026-11-25T11:00:00Z' });
  const invalid = { ...backupWith(), spec: { ...backupWith().spec, schedule: '@every 30s' } };
  assert.deepEqual(scheduleStatusAfterRun(invalid, run11, new Date('2026-11-25T11:00:20Z')), { lastScheduledTime: '2026-11-25T11:00:00Z' });
});
