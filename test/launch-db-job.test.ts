// launch-db-job against the real kube-apiserver and kube-controller-manager: the design's database
// AppBinding + Backup and a BackupTrigger -> exactly one Job, owned by the run; the Job controller
// makes its Pod; a Job past its deadline fails the run's host; missing references are reported;
// deleting the Backup garbage-collects runs and Jobs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { BatchV1Api, CoreV1Api, CustomObjectsApi, EventsV1Api } from '@kubernetes/client-node';
import type { V1Container, V1Job } from '@kubernetes/client-node';
import { pino } from 'pino';
import { parse, parseAllDocuments } from 'yaml';
import { agentTemplate as agentTemplateSchema, appBinding as appBindingSchema, backup as backupSchema, repository as repositorySchema } from '../shared/api/index.ts';
import type { AgentTemplate, Backup, BackupTrigger } from '../shared/api/index.ts';
import type { RunningServer } from '../shared/runtime/index.ts';
import { createLaunchDbJobServer, jobName, optionsFromEnv, planDatabaseJob, TRIGGER_LABEL } from '../functions/launch-db-job/index.ts';
import type { ServerOptions } from '../functions/launch-db-job/index.ts';
import { applyYaml, deleteNamespace, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { waitFor as eventually } from './support/wait.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const quiet = pino({ level: 'silent' });
const root = new URL('../', import.meta.url);
const read = (path: string): string => readFileSync(new URL(path, root), 'utf8');

let cluster: Cluster;
let ns: string;
let templateName: string;
const servers: RunningServer[] = [];

interface Fixture { name: string; headers: Record<string, string[]>; body: string }
const fixtures = JSON.parse(read('shared/runtime/fixtures/knative.json')) as Fixture[];

before(async () => {
  cluster = await useCluster();
  ns = await freshNamespace(cluster, 'launch-db-job');
  templateName = `pg-backup-${ns}`;
  // The default pg-backup AgentTemplate, under a name of this test's own (AgentTemplates are cluster-scoped).
  const pg = parseAllDocuments(read('shared/api/defaults/agent-templates.yaml')).map((d) => d.toJS() as AgentTemplate).find((t) => t.metadata.name === 'pg-backup');
  assert.ok(pg);
  await applyYaml(cluster, JSON.stringify({ ...pg, metadata: { ...pg.metadata, name: templateName } }));
  // The design's samples (namespace demo -> this test's namespace; backupAgent -> the template above).
  await applyYaml(cluster, read('test/fixtures/design-samples/05-appbinding.yaml').replace('namespace: demo', `namespace: ${ns}`));
  await applyYaml(cluster, read('test/fixtures/design-samples/01-repository.yaml').replace('namespace: demo', `namespace: ${ns}`));
  await applyYaml(cluster, designBackupYaml('backup-database-demo'));
});

after(async () => {
  for (const s of servers) await s.close();
  if (ns) {
    await deleteNamespace(cluster, ns);
    await cluster.kc.makeApiClient(CustomObjectsApi).deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name: templateName }).catch(() => undefined);
  }
});

function designBackupYaml(name: string, edit: (b: Record<string, unknown> & { spec: Record<string, unknown> }) => void = () => undefined): string {
  const b = parse(read('test/fixtures/design-samples/06-backup-database.yaml')) as Record<string, unknown> & { metadata: Record<string, unknown>; spec: Record<string, unknown> };
  b.metadata = { ...b.metadata, name, namespace: ns };
  b.spec.backupAgent = { name: templateName };
  edit(b);
  return JSON.stringify(b);
}

/** A server limited to this file's namespace (unless `options` say otherwise): its resync never acts on other tests' objects. */
async function startServer(options: Omit<ServerOptions, 'logger'> = {}): Promise<RunningServer> {
  const server = await createLaunchDbJobServer(cluster.kc, { logger: quiet, functionsUrl: 'http://handle-trigger.stash-system.svc.cluster.local', namespaces: [ns], ...options })
    .listen(0, { host: '127.0.0.1', handleSignals: false });
  servers.push(server);
  return server;
}

/** The ApiServerSource Reference-mode event Knative sends for an object (the fixture, its data replaced). */
async function sendRefEvent(server: RunningServer, kind: string, name: string): Promise<Response> {
  const fixture = fixtures.find((f) => f.name === 'apiserver-ref-add');
  assert.ok(fixture);
  const headers = new Headers();
  for (const [k, v] of Object.entries(fixture.headers)) headers.set(k, v[0] ?? '');
  headers.set('Ce-Id', crypto.randomUUID());
  headers.set('Ce-Kind', kind);
  headers.set('Ce-Name', name);
  headers.set('Ce-Namespace', ns);
  return fetch(`${server.url}/`, { method: 'POST', headers, body: JSON.stringify({ kind, namespace: ns, name, apiVersion: `${GROUP}/${VERSION}` }) });
}

async function invoke(server: RunningServer, kind: string, name: string): Promise<Response> {
  return fetch(`${server.url}/invoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind, namespace: ns, name }) });
}

async function sendPing(server: RunningServer): Promise<Response> {
  const fixture = fixtures.find((f) => f.name === 'ping-empty');
  assert.ok(fixture);
  const headers = new Headers();
  for (const [k, v] of Object.entries(fixture.headers)) headers.set(k, v[0] ?? '');
  headers.set('Ce-Id', crypto.randomUUID());
  return fetch(`${server.url}/`, { method: 'POST', headers });
}

const custom = () => cluster.kc.makeApiClient(CustomObjectsApi);
const batch = () => cluster.kc.makeApiClient(BatchV1Api);

async function getBackup(name: string): Promise<Backup> {
  return await custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backups', namespace: ns, name }) as Backup;
}

async function getTrigger(name: string): Promise<BackupTrigger> {
  return await custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backuptriggers', namespace: ns, name }) as BackupTrigger;
}

/** A run as the sweep (or handle-trigger for a manual one) leaves it: owned by its Backup. */
async function createTrigger(name: string, backupName: string): Promise<BackupTrigger> {
  const backup = await getBackup(backupName);
  return await custom().createNamespacedCustomObject({
    group: GROUP, version: VERSION, plural: 'backuptriggers', namespace: ns,
    body: {
      apiVersion: `${GROUP}/${VERSION}`, kind: 'BackupTrigger',
      metadata: { name, namespace: ns, ownerReferences: [{ apiVersion: `${GROUP}/${VERSION}`, kind: 'Backup', name: backupName, uid: backup.metadata.uid, controller: true, blockOwnerDeletion: true }] },
      spec: { targetBackup: { name: backupName } },
    },
  }) as BackupTrigger;
}

async function jobsOf(trigger: string): Promise<V1Job[]> {
  return (await batch().listNamespacedJob({ namespace: ns, labelSelector: `${TRIGGER_LABEL}=${trigger}` })).items;
}

/** The typed client returns class instances: compare plain JSON. */
const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value ?? null)) as unknown;

/** What Stash decides in a container (the apiserver adds defaults such as terminationMessagePath). */
function essentials(c: V1Container): unknown {
  return plain({ name: c.name, image: c.image, command: c.command, args: c.args, env: c.env, volumeMounts: c.volumeMounts, resources: c.resources, imagePullPolicy: c.imagePullPolicy });
}

async function conditionOf(name: string): Promise<{ status: string; reason?: string; message?: string } | undefined> {
  return (await getBackup(name)).status?.conditions?.find((c) => c.type === 'DatabaseJobReady');
}

test('launch-db-job: the design database Backup and a run give exactly the planned Job, once, owned by the run', async () => {
  const server = await startServer();
  assert.equal((await sendRefEvent(server, 'Backup', 'backup-database-demo')).status, 202);
  const ready = await conditionOf('backup-database-demo');
  assert.equal(ready?.status, 'True', JSON.stringify(ready));
  assert.match(ready?.message ?? '', /AppBinding .*\/quick-postgres \(kubedb\.com\/postgres\)/);

  const trigger = await createTrigger('backup-database-demo-1', 'backup-database-demo');
  assert.equal((await sendRefEvent(server, 'BackupTrigger', trigger.metadata.name!)).status, 202);
  // Twice more, concurrently: still one Job.
  const again = await Promise.all([invoke(server, 'BackupTrigger', trigger.metadata.name!), sendRefEvent(server, 'BackupTrigger', trigger.metadata.name!)]);
  assert.deepEqual(again.map((r) => r.status), [202, 202]);
  const jobs = await jobsOf(trigger.metadata.name!);
  assert.equal(jobs.length, 1);
  const job = jobs[0]!;
  assert.equal(job.metadata?.name, jobName(trigger.metadata.name!));

  // Exactly the Job the planner gives for the stored objects.
  const stored = {
    backup: backupSchema.parse(await getBackup('backup-database-demo')),
    trigger: await getTrigger(trigger.metadata.name!),
    appBinding: appBindingSchema.parse(await custom().getNamespacedCustomObject({ group: 'appcatalog.appscode.com', version: 'v1alpha1', plural: 'appbindings', namespace: ns, name: 'quick-postgres' })),
    agentTemplate: agentTemplateSchema.parse(await custom().getClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name: templateName })),
    repository: repositorySchema.parse(await custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'repositories', namespace: ns, name: 'stash-backup-repo' })),
  };
  const planned = planDatabaseJob({ ...stored, options: { functionsUrl: 'http://handle-trigger.stash-system.svc.cluster.local' } });
  assert.ok(planned.ok);
  const want = planned.job;
  assert.deepEqual(plain(job.metadata?.ownerReferences), [{ apiVersion: `${GROUP}/${VERSION}`, kind: 'BackupTrigger', name: trigger.metadata.name, uid: trigger.metadata.uid, controller: true, blockOwnerDeletion: true }]);
  for (const [k, v] of Object.entries(want.metadata?.labels ?? {})) assert.equal(job.metadata?.labels?.[k], v, `label ${k}`);
  assert.equal(job.spec?.backoffLimit, 0);
  assert.equal(job.spec?.activeDeadlineSeconds, 21600);
  assert.equal(job.spec?.ttlSecondsAfterFinished, 86400);
  const podSpec = job.spec?.template.spec;
  assert.equal(podSpec?.restartPolicy, 'Never');
  assert.equal(podSpec?.automountServiceAccountToken, false);
  assert.deepEqual(plain(podSpec?.nodeSelector), { 'cloud.google.com/gke-nodepool': 'pool-highcpu32' });
  assert.deepEqual(podSpec?.initContainers?.map(essentials), want.spec?.template.spec?.initContainers?.map(essentials));
  assert.deepEqual(podSpec?.containers.map(essentials), want.spec?.template.spec?.containers.map(essentials));
  assert.deepEqual(podSpec?.volumes?.map((v) => ({ name: v.name, secret: v.secret?.secretName, audience: v.projected?.sources?.[0]?.serviceAccountToken?.audience, emptyDir: v.emptyDir !== undefined })), [
    { name: 'tmp', secret: undefined, audience: undefined, emptyDir: true },
    { name: 'stash-repository', secret: 'gcs-secret', audience: undefined, emptyDir: false },
    { name: 'stash-token', secret: undefined, audience: 'stash', emptyDir: false },
  ]);
  const dump = podSpec?.initContainers?.find((c) => c.name === 'pg-backup');
  assert.deepEqual(dump?.args?.slice(-2), ['mydb', 'anotherdb']);
  assert.deepEqual(plain(dump?.env?.find((e) => e.name === 'DB_PASSWORD')?.valueFrom?.secretKeyRef), { name: 'quick-postgres-auth', key: 'POSTGRES_PASSWORD' });
  assert.equal(dump?.env?.find((e) => e.name === 'DB_HOST')?.value, `quick-postgres.${ns}.svc`);

  // The Job controller creates the Pod (it stays Pending: there is no kubelet).
  const pod = await eventually('the Job\'s Pod', async () => {
    const pods = await cluster.kc.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: ns, labelSelector: `batch.kubernetes.io/job-name=${job.metadata?.name ?? ''}` });
    return pods.items[0];
  });
  assert.equal(pod.metadata?.ownerReferences?.[0]?.name, job.metadata?.name);
  assert.equal(pod.spec?.initContainers?.[1]?.env?.find((e) => e.name === 'TRIGGER_NAME')?.value, trigger.metadata.name);
  assert.equal(pod.spec?.volumes?.find((v) => v.name === 'stash-token')?.projected?.sources?.[0]?.serviceAccountToken?.audience, 'stash');

  // An Event tells the Backup's owner which Job runs the backup.
  const events = await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns });
  assert.ok(events.items.some((e) => e.regarding?.name === 'backup-database-demo' && e.reason === 'BackupJobCreated' && (e.note ?? '').includes(job.metadata?.name ?? '?')));
});

test('launch-db-job: a run created while no event arrived gets its Job from the PingSource resync', async () => {
  const server = await startServer();
  const trigger = await createTrigger('backup-database-demo-2', 'backup-database-demo');
  assert.equal((await jobsOf(trigger.metadata.name!)).length, 0);
  assert.equal((await sendPing(server)).status, 202);
  assert.equal((await jobsOf(trigger.metadata.name!)).length, 1);
});

test('launch-db-job: a Job past its deadline fails the run\'s host with the Job\'s reason', async () => {
  await applyYaml(cluster, designBackupYaml('deadline'));
  const server = await startServer({ activeDeadlineSeconds: 1 });
  const trigger = await createTrigger('deadline-1', 'deadline');
  assert.equal((await invoke(server, 'BackupTrigger', 'deadline-1')).status, 202);
  const name = jobName(trigger.metadata.name!);
  await eventually('the Job controller to fail the Job (DeadlineExceeded)', async () => {
    const job = await batch().readNamespacedJob({ namespace: ns, name });
    return job.status?.conditions?.find((c) => c.type === 'Failed' && c.status === 'True');
  });
  assert.equal((await sendRefEvent(server, 'Job', name)).status, 202);
  const run = await getTrigger('deadline-1');
  const host = run.status?.hosts?.find((h) => h.host === 'host-0');
  assert.equal(host?.phase, 'Failed');
  assert.equal(host?.job, name);
  assert.match(host?.error ?? '', /DeadlineExceeded/);
  // Again: nothing changes, no second Job.
  assert.equal((await invoke(server, 'Job', name)).status, 202);
  assert.equal((await jobsOf('deadline-1')).length, 1);
});

test('launch-db-job: a missing AppBinding, AgentTemplate or Repository -> condition and Warning Event, no Job', async () => {
  await applyYaml(cluster, designBackupYaml('no-binding', (b) => { b.spec.targetRef = { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'absent-db' }; }));
  await applyYaml(cluster, designBackupYaml('no-template', (b) => { b.spec.backupAgent = { name: `absent-template-${ns}` }; }));
  await applyYaml(cluster, designBackupYaml('no-repo', (b) => { b.spec.repository = { name: 'absent-repo' }; }));
  await applyYaml(cluster, designBackupYaml('bad-type'));
  const server = await startServer();
  const expected: Record<string, { reason: string; message: RegExp }> = {
    'no-binding': { reason: 'AppBindingNotFound', message: /AppBinding .*\/absent-db \(spec\.targetRef\) does not exist: create it/ },
    'no-template': { reason: 'AgentTemplateNotFound', message: /AgentTemplate absent-template-.* \(spec\.backupAgent\) does not exist/ },
    'no-repo': { reason: 'RepositoryNotFound', message: /Repository .*\/absent-repo \(spec\.repository\) does not exist: create it/ },
  };
  for (const [name, want] of Object.entries(expected)) {
    assert.equal((await sendRefEvent(server, 'Backup', name)).status, 202);
    const condition = await conditionOf(name);
    assert.equal(condition?.status, 'False');
    assert.equal(condition?.reason, want.reason);
    assert.match(condition?.message ?? '', want.message);
  }
  const events = (await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns })).items;
  for (const [name, want] of Object.entries(expected)) {
    assert.ok(events.some((e) => e.regarding?.name === name && e.type === 'Warning' && e.reason === want.reason), `Warning ${want.reason} for ${name}`);
  }

  // A run of it: no Job; within the grace period the event is retried (503), after it the host fails.
  await createTrigger('no-binding-1', 'no-binding');
  assert.equal((await invoke(server, 'BackupTrigger', 'no-binding-1')).status, 503);
  assert.equal((await jobsOf('no-binding-1')).length, 0);
  const impatient = await startServer({ missingGraceSeconds: 0 });
  assert.equal((await invoke(impatient, 'BackupTrigger', 'no-binding-1')).status, 202);
  assert.equal((await jobsOf('no-binding-1')).length, 0);
  const host = (await getTrigger('no-binding-1')).status?.hosts?.find((h) => h.host === 'host-0');
  assert.equal(host?.phase, 'Failed');
  assert.match(host?.error ?? '', /absent-db/);

  // An unsupported AppBinding type: condition, no Job.
  await applyYaml(cluster, read('test/fixtures/design-samples/05-appbinding.yaml').replace('namespace: demo', `namespace: ${ns}`).replace('name: quick-postgres\n  namespace', 'name: mongo\n  namespace').replace('kubedb.com/postgres', 'kubedb.com/mongodb'));
  await applyYaml(cluster, designBackupYaml('bad-type', (b) => { b.spec.targetRef = { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'mongo' }; }));
  assert.equal((await invoke(server, 'AppBinding', 'mongo')).status, 202);
  const unsupported = await conditionOf('bad-type');
  assert.equal(unsupported?.reason, 'UnsupportedDatabase');
  assert.match(unsupported?.message ?? '', /kubedb\.com\/mongodb, which Stash cannot back up/);
  await createTrigger('bad-type-1', 'bad-type');
  assert.equal((await invoke(server, 'BackupTrigger', 'bad-type-1')).status, 202);
  assert.equal((await jobsOf('bad-type-1')).length, 0);
  assert.equal((await getTrigger('bad-type-1')).status?.hosts?.[0]?.phase, 'Failed');

  // The AppBinding appears: an AppBinding event makes the condition True again.
  await applyYaml(cluster, read('test/fixtures/design-samples/05-appbinding.yaml').replace('namespace: demo', `namespace: ${ns}`).replace('name: quick-postgres\n  namespace', 'name: absent-db\n  namespace'));
  assert.equal((await sendRefEvent(server, 'AppBinding', 'absent-db')).status, 202);
  assert.equal((await conditionOf('no-binding'))?.status, 'True');
});

test('launch-db-job: a server for other namespaces (STASH_NAMESPACES) ignores this namespace\'s events and leaves it out of its resync', async () => {
  await applyYaml(cluster, designBackupYaml('unserved'));
  const options = optionsFromEnv({ STASH_NAMESPACES: `${ns}-elsewhere, ${ns}-too` });
  assert.deepEqual(options.namespaces, [`${ns}-elsewhere`, `${ns}-too`]);
  const elsewhere = await startServer(options);
  await createTrigger('unserved-1', 'unserved');
  for (const [kind, name] of [['BackupTrigger', 'unserved-1'], ['Backup', 'unserved'], ['AppBinding', 'quick-postgres'], ['Repository', 'stash-backup-repo']] as const) {
    assert.equal((await sendRefEvent(elsewhere, kind, name)).status, 202, `${kind} event`);
  }
  assert.equal((await invoke(elsewhere, 'BackupTrigger', 'unserved-1')).status, 202);
  assert.equal((await sendPing(elsewhere)).status, 202);
  // The AgentTemplate is cluster-scoped: its event reaches only the Backups of the served namespaces.
  assert.equal((await fetch(`${elsewhere.url}/invoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'AgentTemplate', name: templateName }) })).status, 202);
  assert.equal((await jobsOf('unserved-1')).length, 0, 'no Job for a run in a namespace not served');
  assert.equal(await conditionOf('unserved'), undefined, 'the Backup was not touched');
  // This namespace's server does serve it.
  assert.equal((await sendPing(await startServer())).status, 202);
  assert.equal((await jobsOf('unserved-1')).length, 1);
  assert.equal((await conditionOf('unserved'))?.status, 'True');
});

test('launch-db-job: deleting the Backup garbage-collects its runs and their Jobs', async () => {
  await applyYaml(cluster, designBackupYaml('doomed'));
  const server = await startServer();
  await createTrigger('doomed-1', 'doomed');
  await createTrigger('doomed-2', 'doomed');
  for (const t of ['doomed-1', 'doomed-2']) assert.equal((await invoke(server, 'BackupTrigger', t)).status, 202);
  assert.equal((await jobsOf('doomed-1')).length + (await jobsOf('doomed-2')).length, 2);
  await custom().deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backups', namespace: ns, name: 'doomed' });
  await eventually('the garbage collector to remove the runs and the Jobs', async () => {
    const triggers = (await custom().listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backuptriggers', namespace: ns }) as { items: BackupTrigger[] }).items
      .filter((t) => t.spec.targetBackup.name === 'doomed');
    const jobs = [...await jobsOf('doomed-1'), ...await jobsOf('doomed-2')];
    return triggers.length === 0 && jobs.length === 0 ? true : undefined;
  }, 60_000);
});
