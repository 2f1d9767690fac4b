// The sweep function against the real kube-apiserver: its server is invoked the way Knative's
// PingSource (binary-mode CloudEvent, from shared/runtime/fixtures/knative.json) and OpenFaaS's
// cron-connector call it, at a controlled `now`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { CustomObjectsApi, EventsV1Api } from '@kubernetes/client-node';
import { pino } from 'pino';
import { mustParseSchedule, nextRunAfter } from '../shared/api/index.ts';
import type { Backup, BackupTrigger } from '../shared/api/index.ts';
import { patchStatus } from '../shared/kube/index.ts';
import type { RunningServer } from '../shared/runtime/index.ts';
import { createSweep, createSweepServer, forEachLimited, optionsFromEnv, scheduledTriggerName } from '../functions/sweep/index.ts';
import { deleteNamespace, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const quiet = pino({ level: 'silent' });

let cluster: Cluster;
let ns: string;
let now = new Date();
const servers: RunningServer[] = [];

interface Fixture { name: string; headers: Record<string, string[]>; body: string }
const fixtures = JSON.parse(readFileSync(new URL('../shared/runtime/fixtures/knative.json', import.meta.url), 'utf8')) as Fixture[];
const ping = fixtures.find((f) => f.name === 'ping-json');

before(async () => {
  cluster = await useCluster();
  ns = await freshNamespace(cluster, 'sweep');
});

after(async () => {
  for (const s of servers) await s.close();
  if (ns) await deleteNamespace(cluster, ns);
});

/** A sweep server limited to `namespaces` (STASH_NAMESPACES), so it never acts on other tests' Backups. */
async function startServer(...namespaces: string[]): Promise<RunningServer> {
  const server = await createSweepServer({ kc: cluster.kc, now: () => now, namespaces, logger: quiet })
    .listen(0, { host: '127.0.0.1', handleSignals: false });
  servers.push(server);
  return server;
}

/** Knative's PingSource request, exactly as the fixture recorded it (binary mode). */
async function sendPing(server: RunningServer): Promise<Response> {
  assert.ok(ping, 'fixture ping-json exists');
  const headers = new Headers();
  for (const [k, v] of Object.entries(ping.headers)) headers.set(k, v[0] ?? '');
  headers.set('Ce-Id', crypto.randomUUID());
  return fetch(`${server.url}/`, { method: 'POST', headers, body: ping.body });
}

/** OpenFaaS cron-connector: POST with an empty body and X-Connector: cron-connector. */
async function sendCron(server: RunningServer): Promise<Response> {
  return fetch(`${server.url}/`, { method: 'POST', headers: { 'X-Connector': 'cron-connector', 'X-Callback-Url': '' }, body: '' });
}

function backupBody(name: string, schedule: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: `${GROUP}/${VERSION}`, kind: 'Backup', metadata: { name, namespace: ns },
    spec: {
      schedule, backupAgent: { name: 'pg-backup' }, repository: { name: 'repo' },
      targetRef: { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'pg' }, ...extra,
    },
  };
}

async function createBackup(namespace: string, body: Record<string, unknown>): Promise<Backup> {
  const api = cluster.kc.makeApiClient(CustomObjectsApi);
  return await api.createNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backups', namespace, body }) as Backup;
}

async function getBackup(name: string): Promise<Backup> {
  const api = cluster.kc.makeApiClient(CustomObjectsApi);
  return await api.getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backups', namespace: ns, name }) as Backup;
}

async function triggersOf(backup: string, namespace = ns): Promise<BackupTrigger[]> {
  const api = cluster.kc.makeApiClient(CustomObjectsApi);
  const list = await api.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backuptriggers', namespace }) as { items: BackupTrigger[] };
  return list.items.filter((t) => t.spec.targetBackup.name === backup).sort((a, b) => (a.metadata.name ?? '').localeCompare(b.metadata.name ?? ''));
}

async function eventsFor(name: string): Promise<{ reason?: string; type?: string; note?: string }[]> {
  const list = await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns });
  return list.items.filter((e) => e.regarding?.name === name && e.regarding.kind === 'Backup');
}

const hourly = mustParseSchedule('@hourly');
const secs = (d: Date): string => `${d.toISOString().slice(0, 19)}Z`;

test('sweep: PingSource and cron-connector calls start one run per due tick, skip overlaps, collapse missed ticks', async () => {
  const server = await startServer(ns);
  const created = await createBackup(ns, backupBody('db', '@hourly'));
  await createBackup(ns, backupBody('paused', '@hourly', { paused: true }));
  await createBackup(ns, backupBody('bad', '@every 30s'));
  const createdAt = new Date(created.metadata.creationTimestamp as string);
  const tick1 = nextRunAfter(hourly, createdAt);

  // Before the first tick: nothing runs, the next tick is announced.
  now = new Date(tick1.getTime() - 60_000);
  assert.equal((await sendPing(server)).status, 202);
  assert.deepEqual(await triggersOf('db'), []);
  let db = await getBackup('db');
  assert.equal(db.status?.nextScheduledTime, secs(tick1));
  assert.equal(db.status?.lastScheduledTime, undefined);
  assert.equal(db.status?.conditions?.find((c) => c.type === 'Scheduled')?.status, 'True');

  // The first tick, through Knative's PingSource event.
  now = new Date(tick1.getTime() + 20_000);
  assert.equal((await sendPing(server)).status, 202);
  let runs = await triggersOf('db');
  assert.deepEqual(runs.map((t) => t.metadata.name), [scheduledTriggerName('db', tick1)]);
  const run1 = runs[0]!;
  assert.deepEqual(run1.spec, { targetBackup: { name: 'db' }, origin: 'Schedule', scheduledTime: secs(tick1) });
  assert.equal(run1.metadata.labels?.['stash.appscode.com/backup'], 'db');
  const owner = (run1.metadata.ownerReferences as { kind: string; name: string; uid: string; controller: boolean }[])[0];
  assert.deepEqual([owner?.kind, owner?.name, owner?.uid, owner?.controller], ['Backup', 'db', created.metadata.uid, true]);
  // The run is the record of its tick: the sweep wrote no status (handle-trigger records it).
  db = await getBackup('db');
  assert.equal(db.status?.lastScheduledTime, undefined);
  assert.equal(db.status?.nextScheduledTime, secs(tick1));

  // The same minute again through OpenFaaS's cron-connector: nothing created, nothing written.
  assert.equal((await sendCron(server)).status, 202);
  assert.equal((await triggersOf('db')).length, 1);
  assert.equal((await getBackup('db')).metadata.resourceVersion, db.metadata.resourceVersion, 'no write to the Backup');

  // A minute later, with no handle-trigger running: the sweep records the tick itself.
  now = new Date(tick1.getTime() + 80_000);
  assert.equal((await sendPing(server)).status, 202);
  assert.equal((await triggersOf('db')).length, 1);
  db = await getBackup('db');
  assert.equal(db.status?.lastScheduledTime, secs(tick1));
  assert.equal(db.status?.nextScheduledTime, secs(new Date(tick1.getTime() + 3_600_000)));

  // Paused and invalid Backups: no runs, conditions and an Event say why.
  assert.deepEqual(await triggersOf('paused'), []);
  assert.deepEqual(await triggersOf('bad'), []);
  const paused = await getBackup('paused');
  assert.equal(paused.status?.conditions?.find((c) => c.type === 'Scheduled')?.reason, 'Paused');
  const bad = await getBackup('bad');
  const badCondition = bad.status?.conditions?.find((c) => c.type === 'Scheduled');
  assert.equal(badCondition?.status, 'False');
  assert.equal(badCondition?.reason, 'InvalidSchedule');
  assert.match(badCondition?.message ?? '', /@every 30s.*at least 1m/);
  const badEvents = await eventsFor('bad');
  assert.ok(badEvents.some((e) => e.type === 'Warning' && e.reason === 'InvalidSchedule' && /at least 1m/.test(e.note ?? '')), JSON.stringify(badEvents));

  // Next tick while run 1 is still Pending (no status yet): skipped, recorded, an Event.
  const tick2 = new Date(tick1.getTime() + 3_600_000);
  now = new Date(tick2.getTime() + 5_000);
  assert.equal((await sendPing(server)).status, 202);
  assert.equal((await triggersOf('db')).length, 1);
  db = await getBackup('db');
  assert.equal(db.status?.lastSkippedTime, secs(tick2));
  assert.equal(db.status?.lastScheduledTime, secs(tick2));
  const events = await eventsFor('db');
  assert.ok(events.some((e) => e.type === 'Warning' && e.reason === 'BackupSkipped' && /skipped: previous run still running/.test(e.note ?? '')), JSON.stringify(events));

  // Run 1 finishes; the system is down for five hours: one run, for the latest tick.
  await patchStatus(cluster.kc, { apiVersion: `${GROUP}/${VERSION}`, kind: 'BackupTrigger', namespace: ns, name: run1.metadata.name! }, { phase: 'Succeeded' }, { fieldManager: 'test' });
  const tick7 = new Date(tick2.getTime() + 5 * 3_600_000);
  now = new Date(tick7.getTime() + 40_000);
  assert.equal((await sendCron(server)).status, 202);
  runs = await triggersOf('db');
  assert.deepEqual(runs.map((t) => t.metadata.name).sort(), [scheduledTriggerName('db', tick1), scheduledTriggerName('db', tick7)].sort());
  db = await getBackup('db');
  assert.equal(db.status?.lastScheduledTime, secs(tick2), 'the new run records tick 7; the status is not written');
  assert.equal(db.status?.lastSkippedTime, secs(tick2));
  now = new Date(tick7.getTime() + 100_000);
  assert.equal((await sendCron(server)).status, 202);
  db = await getBackup('db');
  assert.equal(db.status?.lastScheduledTime, secs(tick7));
  assert.equal(db.status?.nextScheduledTime, secs(new Date(tick7.getTime() + 3_600_000)));
  assert.equal((await triggersOf('db')).length, 2);
});

test('sweep: pruned history never runs a tick again (the tick is on the Backup before its run can be pruned)', async () => {
  const server = await startServer(ns);
  const made = await createBackup(ns, backupBody('pruned', '@hourly', { backupHistoryLimit: 0 }));
  const tick = nextRunAfter(hourly, new Date(made.metadata.creationTimestamp as string));
  now = new Date(tick.getTime() - 60_000);
  assert.equal((await sendPing(server)).status, 202); // the first sweep: the condition
  now = new Date(tick.getTime() + 15_000);
  assert.equal((await sendPing(server)).status, 202);
  const [run] = await triggersOf('pruned');
  assert.equal(run?.metadata.name, scheduledTriggerName('pruned', tick));
  // What handle-trigger does: record the tick on the Backup when it sees the run, then (the run
  // having finished, backupHistoryLimit 0) delete the run.
  const ref = { apiVersion: `${GROUP}/${VERSION}`, kind: 'Backup', namespace: ns, name: 'pruned' };
  await patchStatus(cluster.kc, ref, { lastScheduledTime: secs(tick), nextScheduledTime: secs(nextRunAfter(hourly, tick)) }, { fieldManager: 'test' });
  await cluster.kc.makeApiClient(CustomObjectsApi).deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backuptriggers', namespace: ns, name: run.metadata.name });
  const version = (await getBackup('pruned')).metadata.resourceVersion;
  for (const at of [20_000, 90_000, 1_800_000]) {
    now = new Date(tick.getTime() + at);
    assert.equal((await sendPing(server)).status, 202);
    assert.deepEqual(await triggersOf('pruned'), [], `+${at / 1000}s: the pruned tick is not run again`);
  }
  assert.equal((await getBackup('pruned')).metadata.resourceVersion, version, 'and nothing was written');
  // The next tick runs.
  now = new Date(tick.getTime() + 3_600_000 + 5_000);
  assert.equal((await sendPing(server)).status, 202);
  assert.deepEqual((await triggersOf('pruned')).map((t) => t.metadata.name), [scheduledTriggerName('pruned', nextRunAfter(hourly, tick))]);
});

test('sweep: two sweeps at the same moment start exactly one run per tick', async () => {
  const a = await startServer(ns);
  const b = await startServer(ns);
  const names = ['race-0', 'race-1', 'race-2', 'race-3', 'race-4'];
  let createdAt = new Date(0);
  for (const name of names) {
    const made = await createBackup(ns, backupBody(name, '*/5 * * * *'));
    createdAt = new Date(Math.max(createdAt.getTime(), Date.parse(made.metadata.creationTimestamp as string)));
  }
  const every5 = mustParseSchedule('*/5 * * * *');
  let tick = nextRunAfter(every5, createdAt);
  const firstTick = tick;
  const versions = new Map<string, string | undefined>();
  const expected = new Map<string, string[]>(names.map((n) => [n, []]));
  for (let round = 0; round < 3; round++) {
    now = new Date(tick.getTime() + 1_000);
    const responses = await Promise.all([sendPing(a), sendCron(b), sendPing(b), sendCron(a)]);
    assert.deepEqual(responses.map((r) => r.status), [202, 202, 202, 202]);
    for (const name of names) {
      expected.get(name)!.push(scheduledTriggerName(name, tick));
      const runs = await triggersOf(name);
      assert.deepEqual(runs.map((t) => t.metadata.name).sort(), [...expected.get(name)!].sort(), `round ${round}, ${name}`);
      // finish the run so the next tick is not an overlap
      for (const r of runs) {
        await patchStatus(cluster.kc, { apiVersion: `${GROUP}/${VERSION}`, kind: 'BackupTrigger', namespace: ns, name: r.metadata.name! }, { phase: 'Succeeded' }, { fieldManager: 'test' });
      }
      const backup = await getBackup(name);
      // Round 0 is the Backups' first sweep: the condition is written (with the tick, by the sweep
      // whose plan was create; a sweep that saw the run first writes the condition alone). Later
      // rounds write nothing: each run is the record of its tick (no handle-trigger here).
      assert.equal(backup.status?.conditions?.find((c) => c.type === 'Scheduled')?.status, 'True');
      assert.ok([undefined, secs(firstTick)].includes(backup.status?.lastScheduledTime), `round ${round}, ${name}: ${backup.status?.lastScheduledTime}`);
      if (round > 0) assert.equal(backup.metadata.resourceVersion, versions.get(name), `round ${round}, ${name}: no status write`);
      versions.set(name, backup.metadata.resourceVersion as string | undefined);
      assert.equal(backup.status?.lastSkippedTime, undefined, 'concurrent sweeps do not mistake their own run for an overlap');
    }
    tick = nextRunAfter(every5, tick);
  }
});

test('sweep: STASH_NAMESPACES limits the sweep (one list per namespace) and the events it acts on to those namespaces', async () => {
  const a = await freshNamespace(cluster, 'sweep-a');
  const b = await freshNamespace(cluster, 'sweep-b');
  const other = await freshNamespace(cluster, 'sweep-other');
  try {
    let latest = 0;
    for (const namespace of [a, b, other]) {
      const made = await createBackup(namespace, { ...backupBody('db', '@hourly'), metadata: { name: 'db', namespace } });
      latest = Math.max(latest, Date.parse(made.metadata.creationTimestamp as string));
    }
    const tick = nextRunAfter(hourly, new Date(latest));
    const options = optionsFromEnv({ STASH_NAMESPACES: `${a},${b}` });
    assert.deepEqual(options, { namespaces: [a, b] });
    assert.deepEqual(optionsFromEnv({}), {});
    assert.throws(() => optionsFromEnv({ STASH_NAMESPACES: 'Not_A_Namespace' }), /STASH_NAMESPACES=.*"Not_A_Namespace" is not a namespace name/);

    // Through the server: an ApiServerSource event about an object in a namespace it does not serve starts no sweep.
    now = new Date(tick.getTime() + 10_000);
    const server = await startServer(...(options.namespaces ?? []));
    const event = fixtures.find((f) => f.name === 'apiserver-ref-add');
    assert.ok(event, 'fixture apiserver-ref-add exists');
    const headers = new Headers();
    for (const [k, v] of Object.entries(event.headers)) headers.set(k, v[0] ?? '');
    headers.set('Ce-Id', crypto.randomUUID());
    headers.set('Ce-Namespace', other);
    headers.set('Ce-Name', 'db');
    const body = JSON.stringify({ kind: 'Backup', namespace: other, name: 'db', apiVersion: `${GROUP}/${VERSION}` });
    assert.equal((await fetch(`${server.url}/`, { method: 'POST', headers, body })).status, 202);
    for (const namespace of [a, b, other]) assert.deepEqual(await triggersOf('db', namespace), [], `no sweep ran (${namespace})`);

    // The tick: both served namespaces get their run, the other namespace nothing.
    assert.equal((await sendPing(server)).status, 202);
    for (const namespace of [a, b]) {
      assert.deepEqual((await triggersOf('db', namespace)).map((t) => t.metadata.name), [scheduledTriggerName('db', tick)], namespace);
    }
    assert.deepEqual(await triggersOf('db', other), []);
    const untouched = await cluster.kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backups', namespace: other, name: 'db' }) as Backup;
    assert.equal(untouched.status, undefined, 'the unserved Backup has no status written');

    // createSweep directly: the summary counts only the served namespaces' objects.
    const summary = await createSweep({ kc: cluster.kc, ...options, now: () => now })(quiet);
    assert.equal(summary.backups, 2);
    assert.equal(summary.triggers, 2);
    assert.equal(summary.created, 0);
  } finally {
    for (const namespace of [a, b, other]) await deleteNamespace(cluster, namespace);
  }
});

test('sweep: 1,000 Backups (timing reported, not asserted)', async () => {
  const bigNs = await freshNamespace(cluster, 'sweep-1000');
  try {
    const api = cluster.kc.makeApiClient(CustomObjectsApi);
    const createStart = Date.now();
    let latest = 0;
    await forEachLimited(Array.from({ length: 1000 }, (_, i) => i), 16, async (i) => {
      const made = await api.createNamespacedCustomObject({
        group: GROUP, version: VERSION, plural: 'backups', namespace: bigNs,
        body: { ...backupBody(`b-${String(i).padStart(4, '0')}`, '@hourly'), metadata: { name: `b-${String(i).padStart(4, '0')}`, namespace: bigNs } },
      }) as Backup;
      latest = Math.max(latest, Date.parse(made.metadata.creationTimestamp as string));
    });
    const createMs = Date.now() - createStart;
    const tick = nextRunAfter(hourly, new Date(latest));
    const sweep = createSweep({ kc: cluster.kc, namespaces: [bigNs], now: () => now });

    now = new Date(tick.getTime() - 60_000);
    const first = await sweep(quiet); // nothing due; writes the first status of every Backup
    now = new Date(tick.getTime() - 30_000);
    const idle = await sweep(quiet); // nothing due, nothing to write
    now = new Date(tick.getTime() + 10_000);
    const due = await sweep(quiet); // 1,000 runs start: 1,000 creates, no status write
    now = new Date(tick.getTime() + 20_000);
    const again = await sweep(quiet); // the same minute: the runs are the record, nothing to do
    now = new Date(tick.getTime() + 70_000);
    const converge = await sweep(quiet); // no handle-trigger here: the sweep records the ticks itself
    now = new Date(tick.getTime() + 130_000);
    const after = await sweep(quiet); // all recorded: nothing to write

    assert.equal(first.backups, 1000);
    assert.equal(first.statusWrites, 1000);
    assert.equal(idle.statusWrites, 0);
    assert.equal(due.created, 1000);
    assert.equal(due.statusWrites, 0);
    assert.equal(due.failed, 0);
    assert.equal(again.created + again.alreadyCreated + again.skipped + again.statusWrites, 0);
    assert.equal(converge.created + converge.skipped, 0);
    assert.equal(converge.statusWrites, 1000);
    assert.equal(converge.failed, 0);
    assert.equal(after.created + after.skipped + after.statusWrites, 0);
    const list = await api.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backuptriggers', namespace: bigNs }) as { items: unknown[] };
    assert.equal(list.items.length, 1000);
    console.log(`# 1,000 Backups: created in ${createMs} ms; sweep (first status writes) ${first.totalMs} ms (lists ${first.listMs} ms); ` +
      `idle sweep ${idle.totalMs} ms (lists ${idle.listMs} ms); sweep starting 1,000 runs ${due.totalMs} ms; same minute ${again.totalMs} ms; ` +
      `sweep recording 1,000 ticks ${converge.totalMs} ms; sweep after ${after.totalMs} ms`);
  } finally {
    await deleteNamespace(cluster, bigNs);
  }
});
