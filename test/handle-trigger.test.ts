// handle-trigger against the real kube-apiserver and kube-controller-manager: a Deployment whose
// controllers made a ReplicaSet and Pods, a Backup on it, BackupTriggers; the REAL agent client
// (agent/cluster) talks to the REAL handle-trigger server on a loopback port with Pod-bound
// ServiceAccount tokens from TokenRequest (audience stash).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CoordinationV1Api, CoreV1Api, CustomObjectsApi, EventsV1Api } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { pino } from 'pino';
import { createFunctionsClient, FunctionsCallError, LeaseLostError, runClaimedRun, sidecarLoop } from '../agent/cluster/index.ts';
import type { ClaimedRun, FunctionsClient, RunOutcome } from '../agent/cluster/index.ts';
import { createHandleTriggerServer, optionsFromEnv } from '../functions/handle-trigger/index.ts';
import { createSweep, scheduledTriggerName } from '../functions/sweep/index.ts';
import { mustParseSchedule, nextRunAfter } from '../shared/api/index.ts';
import type { Backup } from '../shared/api/index.ts';
import { applyYaml, deleteNamespace, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { defaultServiceAccount } from './support/node.ts';
import { triggerCaller } from './support/rbac.ts';
import { waitFor } from './support/wait.ts';

const LEASE_SECONDS = 3;
const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';

let cluster: Cluster;
let ns: string;
let dir: string;
let server: Awaited<ReturnType<ReturnType<typeof createHandleTriggerServer>['listen']>>;
let webPods: V1Pod[];
let otherPod: V1Pod;
let clients: FunctionsClient[];
let tokenFiles: string[];

/** Stops every agent run still going when the tests end (a failed assertion must not leave renewals running). */
const stopAll = new AbortController();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type Trigger = { metadata: { name: string; ownerReferences?: { kind: string; name: string }[]; generateName?: string }; spec: { origin?: string }; status?: { phase?: string; error?: string; snapshotId?: string; bytes?: number; files?: number; completionTime?: string; hosts?: { host: string; phase: string; pod?: string; error?: string }[]; conditions?: { type: string; status: string; reason?: string; message?: string }[] } };

async function getTrigger(name: string): Promise<Trigger | undefined> {
  try {
    return await cluster.kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backuptriggers', name }) as Trigger;
  } catch (error) {
    if ((error as { code?: number }).code === 404) return undefined;
    throw error;
  }
}

async function listTriggers(): Promise<Trigger[]> {
  const list = await cluster.kc.makeApiClient(CustomObjectsApi).listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backuptriggers' }) as { items: Trigger[] };
  return list.items;
}

async function getStatus(kind: 'backups' | 'repositories', name: string): Promise<Record<string, unknown>> {
  const obj = await cluster.kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: kind, name }) as { status?: Record<string, unknown> };
  return obj.status ?? {};
}

async function createTrigger(name: string, backup = 'app'): Promise<void> {
  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: BackupTrigger
metadata: {name: ${name}}
spec: {targetBackup: {name: ${backup}}, origin: Manual}
`, ns);
  await invoke(name);
}

/** Reconcile a run as its ApiServerSource event would: POST /invoke {kind, namespace, name}. */
async function invoke(name: string): Promise<void> {
  const res = await fetch(`${server.url}/invoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'BackupTrigger', namespace: ns, name }) });
  assert.equal(res.status, 202, await res.text());
}

/** The per-minute sweep, as OpenFaaS's cron-connector calls it. */
async function sweep(): Promise<void> {
  const res = await fetch(`${server.url}/`, { method: 'POST', headers: { 'x-connector': 'cron-connector' } });
  assert.equal(res.status, 202, await res.text());
}

async function podToken(pod: V1Pod, audiences?: string[], serviceAccount = 'default'): Promise<string> {
  const answer = await cluster.kc.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({
    namespace: ns, name: serviceAccount,
    body: { spec: { ...(audiences ? { audiences } : {}), expirationSeconds: 3600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata?.name ?? '', uid: pod.metadata?.uid ?? '' } } },
  });
  return answer.status?.token ?? '';
}

async function saToken(serviceAccount: string): Promise<string> {
  const answer = await cluster.kc.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({ namespace: ns, name: serviceAccount, body: { spec: { expirationSeconds: 3600 } } });
  return answer.status?.token ?? '';
}

/** A client with a token bound to `pod`; audience stash, or the apiserver's own audience ('api'). */
async function clientFor(pod: V1Pod, audience: 'stash' | 'api' = 'stash'): Promise<{ client: FunctionsClient; tokenFile: string }> {
  const tokenFile = path.join(dir, `${pod.metadata?.name ?? 'pod'}-${audience}.token`);
  await writeFile(tokenFile, await podToken(pod, audience === 'stash' ? ['stash'] : undefined));
  return { client: createFunctionsClient({ baseUrl: server.url, tokenFile }), tokenFile };
}

async function podsOf(prefix: string, count: number): Promise<V1Pod[]> {
  return waitFor(`${count} pod(s) of Deployment ${prefix}`, async () => {
    const pods = await cluster.kc.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: ns, labelSelector: `app=${prefix}` });
    return pods.items.length >= count ? pods.items.slice(0, count) : undefined;
  }, 60_000);
}

async function lease(name = 'app-host-0') {
  return cluster.kc.makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace: ns, name });
}

/** Another holder takes the lease, retrying when a renewal changed it in between (409 Conflict). */
async function takeLease(holder: string): Promise<void> {
  const api = cluster.kc.makeApiClient(CoordinationV1Api);
  for (let attempt = 0; ; attempt++) {
    const current = await lease();
    const now = new Date();
    const renewTime = Object.assign(new Date(now), { toJSON: () => `${now.toISOString().slice(0, -1)}000Z` });
    try {
      await api.replaceNamespacedLease({ namespace: ns, name: 'app-host-0', body: { ...current, spec: { ...current.spec, holderIdentity: holder, renewTime } } });
      return;
    } catch (error) {
      if ((error as { code?: number }).code !== 409 || attempt > 10) throw error;
    }
  }
}

async function eventsOn(name: string, reason: string) {
  const list = await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns });
  return list.items.filter((e) => e.regarding?.name === name && e.reason === reason);
}

before(async () => {
  cluster = await useCluster();
  ns = await freshNamespace(cluster, 'handle-trigger');
  dir = await mkdtemp(path.join(tmpdir(), 'handle-trigger-'));
  const handleTrigger = createHandleTriggerServer({
    kc: cluster.kc, timing: { leaseDurationSeconds: LEASE_SECONDS, pendingTimeoutSeconds: 600 },
    logger: pino({ level: process.env.LOG_LEVEL ?? 'warn' }),
    // Only this file's namespace: the sweep never walks (or acts on) other tests' runs.
    namespaces: [ns],
  });
  server = await handleTrigger.listen(0, { host: '127.0.0.1' });
  // The ServiceAccount controller makes `default`; pods cannot be admitted before it exists.
  await defaultServiceAccount(cluster, ns);
  await applyYaml(cluster, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: other}
spec:
  replicas: 1
  selector: {matchLabels: {app: other}}
  template:
    metadata: {labels: {app: other}}
    spec: {containers: [{name: other, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Repository
metadata: {name: repo}
spec: {backend: {rest: {url: "http://rest-server.example:8000/app"}, storageSecretName: repo-secret}}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Backup
metadata: {name: app}
spec:
  schedule: "@hourly"
  backupAgent: stash-volume-backup
  repository: {name: repo}
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  targetDirectories: [/data]
  excludes: ["*.tmp"]
  retentionPolicy: {keepLast: 3, prune: true}
  backupHistoryLimit: 2
`, ns);
  webPods = await podsOf('web', 2);
  [otherPod] = await podsOf('other', 1) as [V1Pod];
  const made = await Promise.all(webPods.map((p) => clientFor(p)));
  clients = made.map((m) => m.client);
  tokenFiles = made.map((m) => m.tokenFile);
});

after(async () => {
  stopAll.abort();
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  if (ns) await deleteNamespace(cluster, ns);
});

/** A work whose end the test decides; it rejects with the abort reason when the signal fires. */
function controlledWork() {
  let finish: (outcome: RunOutcome) => void = () => undefined;
  let started: (run: ClaimedRun) => void = () => undefined;
  const startedPromise = new Promise<ClaimedRun>((resolve) => { started = resolve; });
  let abortReason: unknown;
  const work = (run: ClaimedRun, signal: AbortSignal) => new Promise<RunOutcome>((resolve, reject) => {
    started(run);
    finish = resolve;
    signal.addEventListener('abort', () => {
      abortReason = signal.reason;
      reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    }, { once: true });
  });
  return { work, started: startedPromise, finish: (o: RunOutcome) => finish(o), abortReason: () => abortReason };
}

test('one replica claims the run and keeps it by renewing; the other replica gets nothing; the report finishes the run', { timeout: 90_000 }, async () => {
  await createTrigger('run-1');
  const initialised = await getTrigger('run-1');
  assert.equal(initialised?.status?.phase, 'Pending');
  assert.deepEqual(initialised?.status?.hosts, [{ host: 'host-0', phase: 'Pending' }]);
  assert.deepEqual(initialised?.metadata.ownerReferences?.map((o) => [o.kind, o.name]), [['Backup', 'app']], 'the run is owned by its Backup');

  const target = { namespace: ns, backup: 'app', host: 'host-0' };
  const works = [controlledWork(), controlledWork()];
  // Both replicas claim at the same moment: exactly one gets the run.
  const runs = [0, 1].map((i) => runClaimedRun(clients[i] as FunctionsClient, target, (works[i] as ReturnType<typeof controlledWork>).work, { signal: stopAll.signal }));
  const first = await Promise.race(runs.map((r, i) => r.then((res) => ({ i, res }))));
  assert.equal(first.res.status, 'idle', 'the loser answers first with nothing to do (204)');
  const winner = 1 - first.i;
  const winnerPod = webPods[winner]?.metadata?.name;
  const loser = clients[first.i] as FunctionsClient;
  const work = works[winner] as ReturnType<typeof controlledWork>;
  const run = await work.started;
  assert.equal(run.trigger, 'run-1');
  assert.equal(run.host, 'host-0');
  assert.equal(run.hostname, 'host-0');
  assert.equal(run.leaseDurationSeconds, LEASE_SECONDS);
  assert.deepEqual(run.targetDirectories, ['/data']);
  assert.deepEqual(run.excludes, ['*.tmp']);
  assert.deepEqual(run.retentionPolicy, { keepLast: 3, prune: true });
  assert.deepEqual(run.repository, { namespace: ns, name: 'repo', backend: { rest: { url: 'http://rest-server.example:8000/app' }, storageSecretName: 'repo-secret' }, storageSecretName: 'repo-secret' });
  assert.ok(run.tags.includes(`stash.appscode.com/backup=app`), `tags ${run.tags.join(',')}`);

  const running = await getTrigger('run-1');
  assert.equal(running?.status?.phase, 'Running');
  assert.equal(running?.status?.hosts?.[0]?.phase, 'Running');
  assert.equal(running?.status?.hosts?.[0]?.pod, winnerPod);
  assert.equal((await getStatus('backups', 'app')).phase, 'Running');
  const taken = await lease();
  assert.equal(taken.spec?.holderIdentity, winnerPod);
  const firstRenew = new Date(String(taken.spec?.renewTime)).getTime();

  // Longer than a lease: only renewals keep it; meanwhile the other replica still gets nothing.
  await sleep((LEASE_SECONDS + 1) * 1000);
  assert.equal(await loser.claim(target), undefined);
  const renewed = await lease();
  assert.equal(renewed.spec?.holderIdentity, winnerPod);
  assert.ok(new Date(String(renewed.spec?.renewTime)).getTime() > firstRenew, 'the lease was renewed');
  await sweep();
  assert.equal((await getTrigger('run-1'))?.status?.phase, 'Running', 'a renewing agent is not timed out');

  work.finish({ phase: 'Succeeded', snapshotId: '4f2a9c1e0b7d6a5f', bytes: 123456, files: 42, repository: { snapshotCount: 1, totalSize: 200000, integrity: 'True' } });
  const result = await runs[winner];
  assert.equal(result?.status, 'reported');
  if (result?.status === 'reported') assert.equal(result.phase, 'Succeeded');

  const done = await getTrigger('run-1');
  assert.equal(done?.status?.phase, 'Succeeded');
  assert.equal(done?.status?.snapshotId, '4f2a9c1e0b7d6a5f');
  assert.equal(done?.status?.bytes, 123456);
  assert.equal(done?.status?.files, 42);
  assert.ok(done?.status?.completionTime);
  assert.ok(done?.status?.conditions?.some((c) => c.type === 'Recorded' && c.status === 'True'));
  const backup = await getStatus('backups', 'app');
  assert.equal(backup.phase, 'Ready');
  assert.equal((backup.lastRun as { name?: string }).name, 'run-1');
  assert.equal(backup.lastSnapshotId, '4f2a9c1e0b7d6a5f');
  assert.equal(backup.lastBackupSize, 123456);
  assert.equal(backup.lastSuccessfulBackupTime, done?.status?.completionTime);
  const repo = await getStatus('repositories', 'repo');
  assert.equal(repo.snapshotCount, 1);
  assert.equal(repo.totalSize, 200000);
  assert.equal(repo.integrity, 'True');
  assert.ok(repo.lastBackupTime);
  const events = await eventsOn('app', 'BackupSucceeded');
  assert.equal(events.length, 1);
  assert.equal(events[0]?.type, 'Normal');
  assert.match(events[0]?.note ?? '', /Manual run run-1 succeeded .*snapshot 4f2a9c1e, 123456 bytes added, 42 files/);
  assert.equal((await lease()).spec?.holderIdentity, undefined, 'the lease was released');

  // Reconciling again changes nothing and records no second Event.
  await invoke('run-1');
  await sweep();
  assert.equal((await eventsOn('app', 'BackupSucceeded'))[0]?.series, undefined);
});

test('refusals: another workload\'s pod (403), the wrong host (403), a token without audience stash (401), no token, a bad body (400)', { timeout: 90_000 }, async () => {
  await createTrigger('run-2');
  const target = { namespace: ns, backup: 'app', host: 'host-0' };

  const other = await clientFor(otherPod);
  await assert.rejects(other.client.claim(target), (error: unknown) => {
    assert.ok(error instanceof FunctionsCallError);
    assert.equal(error.status, 403);
    assert.match(error.message, /does not belong to Deployment web, the target of Backup app/);
    return true;
  });

  await assert.rejects((clients[0] as FunctionsClient).claim({ ...target, host: 'host-1' }), (error: unknown) => {
    assert.ok(error instanceof FunctionsCallError);
    assert.equal(error.status, 403);
    assert.match(error.message, /backs up as host-0, not host-1/);
    return true;
  });

  const apiAudience = await clientFor(webPods[0] as V1Pod, 'api');
  await assert.rejects(apiAudience.client.claim(target), (error: unknown) => {
    assert.ok(error instanceof FunctionsCallError);
    assert.equal(error.status, 401);
    assert.match(error.message, /audience stash/);
    return true;
  });

  const missing = createFunctionsClient({ baseUrl: server.url, tokenFile: path.join(dir, 'absent.token') });
  await assert.rejects(missing.claim(target), /cannot read the ServiceAccount token at .*absent\.token \(ENOENT\)/);
  const noToken = await fetch(`${server.url}/agent/v1/claim`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(target) });
  assert.equal(noToken.status, 401);
  assert.match((await noToken.json() as { error: string }).error, /no bearer token/);

  const token = await readFile(tokenFiles[0] as string, 'utf8');
  const bad = await fetch(`${server.url}/agent/v1/report`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ namespace: ns, trigger: 'run-2', host: 'host-0', outcome: { phase: 'Done' } }),
  });
  assert.equal(bad.status, 400);
  const badBody = await bad.json() as { error: string; field: string };
  assert.equal(badBody.field, 'outcome.phase');
  assert.match(badBody.error, /outcome\.phase: /);
  assert.equal((await getTrigger('run-2'))?.status?.phase, 'Pending', 'nothing was claimed');
});

test('a lost lease: the renewal answers 409 and the work is aborted; the run of an agent that died is failed by the sweep', { timeout: 90_000 }, async () => {
  const target = { namespace: ns, backup: 'app', host: 'host-0' };
  const work = controlledWork();
  const running = runClaimedRun(clients[0] as FunctionsClient, target, work.work, { signal: stopAll.signal });
  const run = await work.started;
  assert.equal(run.trigger, 'run-2');

  // Another holder takes the lease (as a replica would after it expired).
  await takeLease('intruder');
  const result = await running;
  assert.equal(result.status, 'lost');
  assert.ok(work.abortReason() instanceof LeaseLostError, 'the work\'s AbortSignal fired with LeaseLostError');
  assert.match(String((work.abortReason() as Error).message), /held by pod intruder, not this pod/);

  // run-3: claimed by an agent that then dies (never renews, never reports).
  await createTrigger('run-3');
  const dead = await waitFor('the intruder\'s lease to expire and run-3 to be claimed', async () => (await (clients[1] as FunctionsClient).claim(target)) ?? undefined, 20_000);
  assert.equal(dead.trigger, 'run-3');
  assert.equal((await getTrigger('run-3'))?.status?.phase, 'Running');
  // Two lease durations without renewal: the sweep fails both runs with the reason.
  await sleep((2 * LEASE_SECONDS + 1) * 1000);
  await sweep();
  const failed3 = await getTrigger('run-3');
  assert.equal(failed3?.status?.phase, 'Failed');
  assert.match(failed3?.status?.error ?? '', new RegExp(`host-0: the agent in pod ${webPods[1]?.metadata?.name ?? ''} stopped renewing its lease`));
  const failed2 = await getTrigger('run-2');
  assert.equal(failed2?.status?.phase, 'Failed');
  // By now the lease serves run-3 (taken after the intruder's expired).
  assert.match(failed2?.status?.error ?? '', new RegExp(`the agent in pod ${webPods[0]?.metadata?.name ?? ''} lost its lease to ${webPods[1]?.metadata?.name ?? ''} and did not report`));
  const backup = await getStatus('backups', 'app');
  assert.equal(backup.phase, 'Failed');
  assert.equal((backup.lastRun as { phase?: string }).phase, 'Failed');
  assert.ok((await eventsOn('app', 'BackupFailed')).some((e) => e.type === 'Warning' && /stopped renewing its lease/.test(e.note ?? '')));

  // The dead agent's late report is refused.
  await assert.rejects((clients[1] as FunctionsClient).report({ namespace: ns, trigger: 'run-3', host: 'host-0', outcome: { phase: 'Succeeded' } }), LeaseLostError);
});

test('history: finished runs beyond backupHistoryLimit (2) are pruned, oldest first; unfinished runs never', { timeout: 90_000 }, async () => {
  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: BackupTrigger
metadata: {name: run-4}
spec: {targetBackup: {name: app}, origin: Manual}
`, ns);
  await sweep();
  const names = (await listTriggers()).map((t) => t.metadata.name).sort();
  assert.deepEqual(names, ['run-2', 'run-3', 'run-4'], 'run-1 (oldest finished) pruned; run-4 (Pending) kept');
  assert.equal((await getTrigger('run-4'))?.status?.phase, 'Pending');
});

test('a run of a missing Backup fails with a condition naming it', { timeout: 90_000 }, async () => {
  await createTrigger('ghost-run', 'ghost');
  const t = await getTrigger('ghost-run');
  assert.equal(t?.status?.phase, 'Failed');
  const valid = t?.status?.conditions?.find((c) => c.type === 'Valid');
  assert.equal(valid?.status, 'False');
  assert.equal(valid?.reason, 'BackupNotFound');
  assert.match(valid?.message ?? '', new RegExp(`Backup ${ns}/ghost named in spec.targetBackup.name does not exist`));

  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: Backup
metadata: {name: norepo}
spec: {schedule: "@hourly", backupAgent: stash-volume-backup, repository: {name: missing-repo}, targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}, targetDirectories: [/data]}
`, ns);
  await createTrigger('norepo-run', 'norepo');
  const norepo = await getTrigger('norepo-run');
  assert.equal(norepo?.status?.phase, 'Failed');
  assert.match(norepo?.status?.error ?? '', new RegExp(`Repository ${ns}/missing-repo named in Backup norepo's spec.repository does not exist`));
  assert.ok((await eventsOn('norepo', 'BackupFailed')).length === 1, 'a Warning Event on the Backup');
});

test('STASH_NAMESPACES: a server for other namespaces ignores this namespace\'s run events and leaves its runs out of the sweep', { timeout: 90_000 }, async () => {
  const elsewhere = await createHandleTriggerServer({
    kc: cluster.kc, timing: { leaseDurationSeconds: LEASE_SECONDS, pendingTimeoutSeconds: 600 },
    logger: pino({ level: 'silent' }), ...optionsFromEnv({ STASH_NAMESPACES: `${ns}-elsewhere,${ns}-too` }),
  }).listen(0, { host: '127.0.0.1' });
  try {
    await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: BackupTrigger
metadata: {name: unserved-run}
spec: {targetBackup: {name: ghost}, origin: Manual}
`, ns);
    const event = await fetch(`${elsewhere.url}/invoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'BackupTrigger', namespace: ns, name: 'unserved-run' }) });
    assert.equal(event.status, 202, 'an event about another namespace is accepted and dropped');
    const swept = await fetch(`${elsewhere.url}/`, { method: 'POST', headers: { 'x-connector': 'cron-connector' } });
    assert.equal(swept.status, 202);
    assert.equal((await getTrigger('unserved-run'))?.status, undefined, 'neither the event nor the sweep touched the run');
    // Its trigger endpoint refuses a Backup of this namespace before any token is looked at.
    const manual = await fetch(`${elsewhere.url}/v1/namespaces/${ns}/backups/app/trigger`, { method: 'POST' });
    assert.equal(manual.status, 404);
    const body = await manual.json() as { error: string; field?: string };
    assert.match(body.error, new RegExp(`Backup app is in namespace ${ns}, which this handle-trigger does not serve \\(STASH_NAMESPACES=${ns}-elsewhere,${ns}-too\\)`));
    assert.equal(body.field, 'namespace');
  } finally {
    await elsewhere.close();
  }
  // This namespace's server does reconcile it (the Backup is missing, so the run fails).
  await sweep();
  assert.equal((await getTrigger('unserved-run'))?.status?.phase, 'Failed');
});

test('the trigger endpoint: no token 401, a ServiceAccount without rights 403, with a Role allowing create backuptriggers 201', { timeout: 90_000 }, async () => {
  const url = `${server.url}/v1/namespaces/${ns}/backups/app/trigger`;
  const anonymous = await fetch(url, { method: 'POST' });
  assert.equal(anonymous.status, 401);

  await applyYaml(cluster, 'apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: nobody}\n', ns);
  const ciToken = await triggerCaller(cluster, ns);
  const denied = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${await saToken('nobody')}` } });
  assert.equal(denied.status, 403);
  const deniedBody = await denied.json() as { error: string };
  assert.match(deniedBody.error, new RegExp(`system:serviceaccount:${ns}:nobody may not create backuptriggers.stash.appscode.com in namespace ${ns}`));
  assert.match(deniedBody.error, /grant the verb "create" on resource "backuptriggers"/);

  const created = await waitFor('the RoleBinding to take effect', async () => {
    const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${ciToken}` } });
    return res.status === 201 ? await res.json() as { namespace: string; name: string } : undefined;
  }, 10_000);
  assert.equal(created.namespace, ns);
  assert.match(created.name, /^app-manual-[a-z0-9]{5}$/);
  const t = await getTrigger(created.name);
  assert.equal(t?.spec.origin, 'Manual');
  assert.deepEqual(t?.metadata.ownerReferences?.map((o) => [o.kind, o.name]), [['Backup', 'app']]);
  assert.equal(t?.status?.phase, 'Pending');
  assert.deepEqual(t?.status?.hosts, [{ host: 'host-0', phase: 'Pending' }]);

  const missing = await fetch(`${server.url}/v1/namespaces/${ns}/backups/nope/trigger`, { method: 'POST', headers: { authorization: `Bearer ${ciToken}` } });
  assert.equal(missing.status, 404);
  assert.match((await missing.json() as { error: string }).error, new RegExp(`Backup ${ns}/nope does not exist`));
});

test('a StatefulSet run has one host per replica; each replica claims its own host-<ordinal> and the run sums them', { timeout: 90_000 }, async () => {
  await applyYaml(cluster, `
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  podManagementPolicy: Parallel
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Backup
metadata: {name: sts}
spec:
  schedule: "@hourly"
  backupAgent: stash-volume-backup
  repository: {name: repo}
  targetRef: {apiVersion: apps/v1, kind: StatefulSet, name: db}
  targetDirectories: [/var/lib/db]
`, ns);
  const pods = await podsOf('db', 2);
  await createTrigger('sts-run', 'sts');
  assert.deepEqual((await getTrigger('sts-run'))?.status?.hosts, [{ host: 'host-0', phase: 'Pending' }, { host: 'host-1', phase: 'Pending' }]);
  const byOrdinal = pods.sort((a, b) => (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''));
  const replicas = await Promise.all(byOrdinal.map((p) => clientFor(p)));
  const results = await Promise.all(replicas.map(({ client }, i) => runClaimedRun(client, { namespace: ns, backup: 'sts', host: `host-${i}` },
    (run) => {
      assert.equal(run.hostname, `host-${i}`);
      return Promise.resolve({ phase: 'Succeeded' as const, snapshotId: `snap${i}`, bytes: 100 * (i + 1), files: 10 });
    }, { signal: stopAll.signal })));
  assert.deepEqual(results.map((r) => r.status), ['reported', 'reported']);
  const run = await getTrigger('sts-run');
  assert.equal(run?.status?.phase, 'Succeeded');
  assert.equal(run?.status?.bytes, 300);
  assert.equal(run?.status?.files, 20);
  assert.deepEqual(run?.status?.hosts?.map((h) => [h.host, h.phase, h.pod]), byOrdinal.map((p, i) => [`host-${i}`, 'Succeeded', p.metadata?.name]));
  // Replica 0 cannot pretend to be replica 1.
  await createTrigger('sts-run-2', 'sts');
  await assert.rejects((replicas[0]?.client as FunctionsClient).claim({ namespace: ns, backup: 'sts', host: 'host-1' }), /backs up as host-0, not host-1/);
});

test('a database run: the pod of the run\'s Job (Pod -> Job -> BackupTrigger) claims exactly that run', { timeout: 90_000 }, async () => {
  await applyYaml(cluster, `
apiVersion: appcatalog.appscode.com/v1alpha1
kind: AppBinding
metadata: {name: pg}
spec: {type: kubedb.com/postgres, clientConfig: {url: "postgres://pg.example:5432/app"}}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Backup
metadata: {name: pgdump}
spec:
  schedule: "@daily"
  backupAgent: pg-backup
  repository: {name: repo}
  targetRef: {apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: pg}
  containerAttributes: {args: [app]}
`, ns);
  await createTrigger('pg-older', 'pgdump');
  await sleep(1100); // creationTimestamp has seconds precision: make pg-run clearly newer
  await createTrigger('pg-run', 'pgdump');
  const run = await getTrigger('pg-run') as Trigger & { metadata: { uid: string } };
  await applyYaml(cluster, `
apiVersion: batch/v1
kind: Job
metadata:
  name: pg-run-job
  ownerReferences: [{apiVersion: stash.appscode.com/v1alpha2, kind: BackupTrigger, name: pg-run, uid: ${run.metadata.uid}, controller: true}]
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {app: pg-run-job}}
    spec: {restartPolicy: Never, containers: [{name: stash, image: registry.k8s.io/pause:3.10}]}
`, ns);
  const [jobPod] = await podsOf('pg-run-job', 1) as [V1Pod];
  const { client } = await clientFor(jobPod);
  const claimed = await client.claim({ namespace: ns, backup: 'pgdump', host: 'host-0' });
  assert.equal(claimed?.trigger, 'pg-run', 'the Job\'s own run, not the older pending one');
  assert.equal(claimed?.targetKind, 'AppBinding');
  assert.deepEqual(claimed?.args, ['app']);
  const entry = (await getTrigger('pg-run'))?.status?.hosts?.[0] as { job?: string; pod?: string; phase: string };
  assert.equal(entry.phase, 'Running');
  assert.equal(entry.job, 'pg-run-job');
  assert.equal(entry.pod, jobPod.metadata?.name);
  const answer = await client.report({ namespace: ns, trigger: 'pg-run', host: 'host-0', outcome: { phase: 'Failed', error: 'pg_dump: connection refused' } });
  assert.equal(answer.phase, 'Failed');
  assert.match((await getTrigger('pg-run'))?.status?.error ?? '', /host-0: pg_dump: connection refused/);
  // The same report again (its first answer lost on the way back) is answered, not refused.
  const again = await client.report({ namespace: ns, trigger: 'pg-run', host: 'host-0', outcome: { phase: 'Failed', error: 'pg_dump: connection refused' } });
  assert.equal(again.phase, 'Failed');
  // A workload pod is not the database's agent.
  await assert.rejects((clients[0] as FunctionsClient).claim({ namespace: ns, backup: 'pgdump', host: 'host-0' }), /does not belong to AppBinding pg/);
});

test('the sidecar loop claims every waiting run of its Backup, one after another, until stopped', { timeout: 90_000 }, async () => {
  const waiting = (await listTriggers()).filter((t) => t.metadata.name.startsWith('app-manual-') || t.metadata.name === 'run-4');
  assert.ok(waiting.length >= 2, 'run-4 and the manual run wait');
  const stop = new AbortController();
  const done: string[] = [];
  const loop = sidecarLoop(clients[0] as FunctionsClient, { namespace: ns, backup: 'app', host: 'host-0' },
    (run) => Promise.resolve({ phase: 'Succeeded' as const, snapshotId: `snap-${run.trigger}`, bytes: 1, files: 1 }),
    { intervalSeconds: 0.2, signal: stop.signal, onRun: (r) => { if (r.status === 'reported') done.push(r.run.trigger); } });
  await waitFor('the loop to run every waiting run', async () => {
    const active = (await listTriggers()).filter((t) => t.status?.phase === 'Pending' || t.status?.phase === 'Running' || t.status === undefined);
    return active.some((t) => t.metadata.name.startsWith('app-manual-') || t.metadata.name === 'run-4') ? undefined : true;
  }, 30_000);
  stop.abort();
  await loop;
  assert.deepEqual([...done].sort(), waiting.map((t) => t.metadata.name).sort());
  assert.equal((await getStatus('backups', 'app')).phase, 'Ready');
});

test('a scheduled run: its first event records its tick on the Backup (lastScheduledTime, nextScheduledTime); an older run never moves it back; pruned at once (backupHistoryLimit 0), the tick is not run again', { timeout: 90_000 }, async () => {
  const schedNs = await freshNamespace(cluster, 'handle-trigger-sched');
  let clock = new Date();
  const scheduledServer = await createHandleTriggerServer({
    // The clock runs up to an hour ahead of the apiserver's (the next @hourly tick): a pending
    // timeout longer than that keeps the run Pending until the test moves the clock past it.
    kc: cluster.kc, timing: { leaseDurationSeconds: LEASE_SECONDS, pendingTimeoutSeconds: 7200 },
    logger: pino({ level: 'silent' }), namespaces: [schedNs], now: () => clock,
  }).listen(0, { host: '127.0.0.1' });
  const custom = cluster.kc.makeApiClient(CustomObjectsApi);
  const backupOf = async () => await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: schedNs, plural: 'backups', name: 'nightly' }) as Backup;
  const runsOf = async () => (await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: schedNs, plural: 'backuptriggers' }) as { items: Trigger[] }).items;
  const invokeIn = async (name: string) => {
    const res = await fetch(`${scheduledServer.url}/invoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'BackupTrigger', namespace: schedNs, name }) });
    assert.equal(res.status, 202, await res.text());
  };
  const secs = (d: Date): string => `${d.toISOString().slice(0, 19)}Z`;
  try {
    // A Deployment with no replicas exists (the run's host-0 waits: Pending), a Repository, the Backup.
    await applyYaml(cluster, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: idle}
spec:
  replicas: 0
  selector: {matchLabels: {app: idle}}
  template:
    metadata: {labels: {app: idle}}
    spec: {containers: [{name: idle, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Repository
metadata: {name: repo}
spec: {backend: {rest: {url: "http://rest-server.example:8000/idle"}, storageSecretName: repo-secret}}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Backup
metadata: {name: nightly}
spec:
  schedule: "@hourly"
  backupAgent: stash-volume-backup
  repository: {name: repo}
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: idle}
  targetDirectories: [/data]
  backupHistoryLimit: 0
`, schedNs);
    const hourly = mustParseSchedule('@hourly');
    const tick = nextRunAfter(hourly, new Date((await backupOf()).metadata.creationTimestamp as string));
    const sweepAt = async (at: Date) => createSweep({ kc: cluster.kc, namespaces: [schedNs], now: () => at })(pino({ level: 'silent' }));
    await sweepAt(new Date(tick.getTime() - 60_000)); // the Backup's first sweep: the Scheduled condition
    const due = await sweepAt(new Date(tick.getTime() + 15_000));
    assert.deepEqual([due.created, due.statusWrites], [1, 0], 'the sweep creates the run and writes no status');
    const runName = scheduledTriggerName('nightly', tick);
    assert.equal((await backupOf()).status?.lastScheduledTime, undefined);

    // The run's creation event: handle-trigger initialises it and records its tick on the Backup.
    clock = new Date(tick.getTime() + 16_000);
    await invokeIn(runName);
    assert.equal((await runsOf()).find((t) => t.metadata.name === runName)?.status?.phase, 'Pending');
    let backup = await backupOf();
    assert.equal(backup.status?.lastScheduledTime, secs(tick));
    assert.equal(backup.status?.nextScheduledTime, secs(nextRunAfter(hourly, tick)));
    const recordedVersion = backup.metadata.resourceVersion;

    // Its event again, and an older scheduled run's event: lastScheduledTime stays (no write at all).
    await invokeIn(runName);
    const older = new Date(tick.getTime() - 3_600_000);
    const olderName = scheduledTriggerName('nightly', older);
    await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: BackupTrigger
metadata: {name: ${olderName}}
spec: {targetBackup: {name: nightly}, origin: Schedule, scheduledTime: "${secs(older)}"}
`, schedNs);
    await invokeIn(olderName);
    backup = await backupOf();
    assert.equal(backup.status?.lastScheduledTime, secs(tick), 'an older run never moves lastScheduledTime back');
    assert.equal(backup.metadata.resourceVersion, recordedVersion, 'no Backup status write for a tick already recorded');

    // No agent claims the runs: past the pending timeout they fail, are recorded and (limit 0) pruned at once.
    clock = new Date(tick.getTime() + 7_300_000);
    await invokeIn(runName);
    await invokeIn(olderName);
    assert.deepEqual(await runsOf(), [], 'both runs pruned');
    backup = await backupOf();
    assert.equal(backup.status?.lastRun?.phase, 'Failed');
    assert.equal(backup.status?.lastScheduledTime, secs(tick));

    // The sweep after the pruning, in the tick's hour: the tick is not run again, nothing to write.
    for (const at of [tick.getTime() + 701_000, tick.getTime() + 3_000_000]) {
      const again = await sweepAt(new Date(at));
      assert.deepEqual([again.created, again.alreadyCreated, again.skipped, again.statusWrites], [0, 0, 0, 0]);
    }
    assert.deepEqual(await runsOf(), []);
  } finally {
    await scheduledServer.close();
    await deleteNamespace(cluster, schedNs);
  }
});
