// run-recovery against the real kube-apiserver and kube-controller-manager: the design's Recovery
// samples -> one owned Job (a volume, a database) or an init container in the workload (applied
// once, removed exactly when the Recovery is deleted); missing references are reported; a Job that
// fails without a report fails the Recovery; the HTTP server routes Knative CloudEvents, /invoke
// and pings; STASH_NAMESPACES limits what is served.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { AppsV1Api, BatchV1Api, CustomObjectsApi, EventsV1Api } from '@kubernetes/client-node';
import type { V1Deployment, V1Job } from '@kubernetes/client-node';
import { pino } from 'pino';
import { parse, parseAllDocuments } from 'yaml';
import { createRunRecovery, createRunRecoveryServer, FIELD_MANAGER, FINALIZER, jobName, optionsFromEnv, RECOVERY_LABEL } from '../functions/run-recovery/index.ts';
import type { HandlerOptions, ServerOptions } from '../functions/run-recovery/index.ts';
import type { AgentTemplate, Recovery } from '../shared/api/index.ts';
import { patchStatus } from '../shared/kube/index.ts';
import type { RunningServer } from '../shared/runtime/index.ts';
import { applyYaml, deleteNamespace, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { waitFor as eventually } from './support/wait.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const root = new URL('../', import.meta.url);
const read = (path: string): string => readFileSync(new URL(path, root), 'utf8');
const FUNCTIONS_URL = 'http://handle-trigger.stash-system.svc.cluster.local';

let cluster: Cluster;
let ns: string;
let volumeTemplate: string;
let pgTemplate: string;
const servers: RunningServer[] = [];

before(async () => {
  cluster = await useCluster();
  ns = await freshNamespace(cluster, 'run-recovery');
  volumeTemplate = `stash-volume-recovery-${ns}`;
  pgTemplate = `pg-recovery-${ns}`;
  // The default recovery AgentTemplates, under names of this test's own (AgentTemplates are cluster-scoped).
  const defaults = parseAllDocuments(read('shared/api/defaults/agent-templates.yaml')).map((d) => d.toJS() as AgentTemplate);
  for (const [name, as] of [['stash-volume-recovery', volumeTemplate], ['pg-recovery', pgTemplate]] as const) {
    const t = defaults.find((d) => d.metadata.name === name);
    assert.ok(t, name);
    await applyYaml(cluster, JSON.stringify({ ...t, metadata: { ...t.metadata, name: as } }));
  }
  await applyYaml(cluster, inNs(read('test/fixtures/design-samples/01-repository.yaml')));
  await applyYaml(cluster, inNs(read('test/fixtures/design-samples/05-appbinding.yaml')));
  await applyYaml(cluster, JSON.stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'quick-postgres-auth', namespace: ns }, stringData: { POSTGRES_USER: 'postgres', POSTGRES_PASSWORD: 'not-in-the-job' } }));
});

after(async () => {
  for (const s of servers) await s.close();
  if (ns) {
    await deleteNamespace(cluster, ns);
    for (const name of [volumeTemplate, pgTemplate]) {
      await cluster.kc.makeApiClient(CustomObjectsApi).deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name }).catch(() => undefined);
    }
  }
});

function inNs(yaml: string): string {
  return yaml.replace('namespace: demo', `namespace: ${ns}`);
}

type Editable = Record<string, unknown> & { metadata: Record<string, unknown>; spec: Record<string, unknown> };

/** A design Recovery sample in this namespace, under `name`, with this test's AgentTemplate. */
function recoveryYaml(file: string, name: string, edit: (r: Editable) => void = () => undefined): string {
  const r = parse(read(`test/fixtures/design-samples/${file}`)) as Editable;
  r.metadata = { ...r.metadata, name, namespace: ns };
  r.spec.repository = { name: 'stash-backup-repo', namespace: ns };
  r.spec.recoveryAgent = (r.spec.recoveryAgent as string).startsWith('pg-') ? pgTemplate : volumeTemplate;
  edit(r);
  return JSON.stringify(r);
}

function deploymentYaml(name: string): string {
  const d = parse(read('test/fixtures/design-samples/11-deployment-default-backup.yaml')) as Editable;
  d.metadata = { ...d.metadata, name, namespace: ns };
  return JSON.stringify(d);
}

const custom = () => cluster.kc.makeApiClient(CustomObjectsApi);
const batch = () => cluster.kc.makeApiClient(BatchV1Api);
const apps = () => cluster.kc.makeApiClient(AppsV1Api);
/** The typed client returns class instances: compare plain JSON. */
const plain = <T>(value: T): T => JSON.parse(JSON.stringify(value ?? null)) as T;

async function getRecovery(name: string): Promise<Recovery | undefined> {
  try {
    return await custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'recoveries', namespace: ns, name }) as Recovery;
  } catch (error) {
    if ((error as { code?: number }).code === 404) return undefined;
    throw error;
  }
}

async function ready(name: string): Promise<{ status: string; reason?: string; message?: string } | undefined> {
  return (await getRecovery(name))?.status?.conditions?.find((c) => c.type === 'Ready');
}

async function jobsOf(recovery: string): Promise<V1Job[]> {
  return (await batch().listNamespacedJob({ namespace: ns, labelSelector: `${RECOVERY_LABEL}=${recovery}` })).items;
}

async function deployment(name: string): Promise<V1Deployment> {
  return plain(await apps().readNamespacedDeployment({ namespace: ns, name }));
}

async function events(regarding: string): Promise<{ type: string; reason: string; note: string }[]> {
  const list = await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns });
  return list.items.filter((e) => e.regarding?.name === regarding).map((e) => ({ type: e.type ?? '', reason: e.reason ?? '', note: e.note ?? '' }));
}

const handlerOptions = (extra: HandlerOptions = {}): HandlerOptions => ({ functionsUrl: FUNCTIONS_URL, namespaces: [ns], ...extra });

async function startServer(options: Omit<ServerOptions, 'logger'> = {}): Promise<RunningServer> {
  const server = await createRunRecoveryServer(cluster.kc, { logger: log, ...handlerOptions(), ...options }).listen(0, { host: '127.0.0.1', handleSignals: false });
  servers.push(server);
  return server;
}

/** A Knative ApiServerSource Reference-mode event in binary mode, as the adapter sends it. */
async function sendRefEvent(server: RunningServer, ref: { apiVersion: string; kind: string; namespace?: string; name: string }, action: 'add' | 'update' | 'delete' = 'add'): Promise<Response> {
  const headers: Record<string, string> = {
    'ce-specversion': '1.0', 'ce-id': crypto.randomUUID(), 'ce-source': 'https://127.0.0.1:6443', 'ce-type': `dev.knative.apiserver.ref.${action}`,
    'ce-time': new Date().toISOString(), 'ce-kind': ref.kind, 'ce-name': ref.name, 'ce-apiversion': ref.apiVersion, 'content-type': 'application/json',
  };
  if (ref.namespace) headers['ce-namespace'] = ref.namespace;
  return fetch(`${server.url}/`, { method: 'POST', headers, body: JSON.stringify(ref) });
}

async function invoke(server: RunningServer, kind: string, name: string, namespace: string | undefined = ns): Promise<Response> {
  return fetch(`${server.url}/invoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind, name, ...(namespace ? { namespace } : {}) }) });
}

async function sendPing(server: RunningServer): Promise<Response> {
  return fetch(`${server.url}/`, {
    method: 'POST',
    headers: { 'ce-specversion': '1.0', 'ce-id': crypto.randomUUID(), 'ce-source': '/apis/v1/namespaces/stash-system/pingsources/run-recovery', 'ce-type': 'dev.knative.sources.ping', 'content-type': 'application/json' },
    body: '{}',
  });
}

const recoveryRef = (name: string) => ({ apiVersion: `${GROUP}/${VERSION}`, kind: 'Recovery', namespace: ns, name });

test('a volume Recovery: exactly one Job, owned by the Recovery, Pending; reconciling again (also concurrently) changes nothing', async () => {
  await applyYaml(cluster, recoveryYaml('03-recovery-volume.yaml', 'volume-demo'));
  const recoverer = createRunRecovery(cluster.kc, handlerOptions());
  assert.equal(await recoverer.reconcileRecovery(ns, 'volume-demo', log), 'job-created');
  const jobs = await jobsOf('volume-demo');
  assert.equal(jobs.length, 1);
  const job = plain(jobs[0]!);
  const recovery = await getRecovery('volume-demo');
  assert.equal(job.metadata?.name, jobName('volume-demo'));
  assert.deepEqual(job.metadata?.ownerReferences, [{ apiVersion: `${GROUP}/${VERSION}`, kind: 'Recovery', name: 'volume-demo', uid: recovery?.metadata.uid, controller: true, blockOwnerDeletion: true }]);
  assert.equal(job.spec?.backoffLimit, 0);
  const pod = job.spec?.template.spec;
  assert.equal(pod?.restartPolicy, 'Never');
  const c = pod?.containers[0];
  assert.equal(c?.name, 'stash-recover');
  assert.deepEqual(c?.volumeMounts?.find((m) => m.name === 'stash-recovery-target'), { name: 'stash-recovery-target', mountPath: '/source/data' });
  assert.deepEqual(pod?.volumes?.find((v) => v.name === 'stash-recovery-target')?.persistentVolumeClaim, { claimName: 'stash-recovered' });
  assert.equal(c?.env?.find((e) => e.name === 'STASH_SNAPSHOT_HOST')?.value, 'host-0');
  assert.equal(c?.env?.find((e) => e.name === 'RECOVERY_NAME')?.value, 'volume-demo');
  assert.equal(recovery?.status?.phase, 'Pending');
  const condition = recovery?.status?.conditions?.find((x) => x.type === 'Ready');
  assert.equal(condition?.status, 'True');
  assert.equal(condition?.reason, 'JobCreated');
  assert.ok((await events('volume-demo')).some((e) => e.type === 'Normal' && e.reason === 'RecoveryJobCreated'));

  const outcomes = await Promise.all([recoverer.reconcileRecovery(ns, 'volume-demo', log), recoverer.reconcileRecovery(ns, 'volume-demo', log)]);
  assert.deepEqual(outcomes, ['job-exists', 'job-exists']);
  const again = await jobsOf('volume-demo');
  assert.equal(again.length, 1);
  assert.equal(again[0]?.metadata?.resourceVersion === undefined, false);
  assert.equal((await getRecovery('volume-demo'))?.metadata.resourceVersion, recovery?.metadata.resourceVersion, 'the Recovery was not written again');
});

test('a database Recovery (AppBinding + Secret): a Job with the DB_* environment and the Secret by reference', async () => {
  await applyYaml(cluster, recoveryYaml('07-recovery-database.yaml', 'database-demo'));
  const recoverer = createRunRecovery(cluster.kc, handlerOptions());
  assert.equal(await recoverer.reconcileRecovery(ns, 'database-demo', log), 'job-created');
  const jobs = await jobsOf('database-demo');
  assert.equal(jobs.length, 1);
  const pod = plain(jobs[0]!).spec?.template.spec;
  assert.deepEqual(pod?.initContainers?.map((c) => c.name), ['pg-recovery']);
  assert.deepEqual(pod?.containers.map((c) => c.name), ['stash-update-status']);
  const env = Object.fromEntries((pod?.initContainers?.[0]?.env ?? []).map((e) => [e.name, e]));
  assert.equal(env.DB_HOST?.value, `quick-postgres.${ns}.svc`);
  assert.equal(env.DB_PORT?.value, '5432');
  assert.equal(env.DB_TYPE?.value, 'kubedb.com/postgres');
  assert.deepEqual(env.DB_PASSWORD?.valueFrom?.secretKeyRef, { name: 'quick-postgres-auth', key: 'POSTGRES_PASSWORD' });
  assert.deepEqual(env.DB_USER?.valueFrom?.secretKeyRef, { name: 'quick-postgres-auth', key: 'POSTGRES_USER', optional: true });
  assert.equal(JSON.stringify(jobs[0]).includes('not-in-the-job'), false, 'no secret value in the Job');
  assert.match((await ready('database-demo'))?.message ?? '', /recovers into AppBinding .*\/quick-postgres$/);
  assert.equal(await recoverer.reconcileRecovery(ns, 'database-demo', log), 'job-exists');
  assert.equal((await jobsOf('database-demo')).length, 1);
});

test('a Deployment Recovery: the init container applied once, idempotent; deleting the Recovery restores the pod template exactly and releases it', async () => {
  await applyYaml(cluster, deploymentYaml('stash-demo'));
  await applyYaml(cluster, recoveryYaml('04-recovery-workload.yaml', 'workload-demo', (r) => { r.spec.recoveryAgent = volumeTemplate; }));
  const original = await deployment('stash-demo');
  const recoverer = createRunRecovery(cluster.kc, handlerOptions());
  assert.equal(await recoverer.reconcileRecovery(ns, 'workload-demo', log), 'applied');
  const applied = await deployment('stash-demo');
  const podSpec = applied.spec?.template.spec;
  assert.deepEqual(podSpec?.initContainers?.map((c) => c.name), ['stash-recover']);
  assert.deepEqual(podSpec?.containers.map((c) => c.name), ['busybox'], 'the app containers are untouched');
  const init = podSpec?.initContainers?.[0];
  assert.deepEqual(init?.volumeMounts?.[0], { name: 'source-data', mountPath: '/source/data' }, 'the app\'s mount of spec.paths, writable');
  assert.deepEqual(init?.env?.slice(0, 4).map((e) => [e.name, e.value ?? e.valueFrom?.fieldRef?.fieldPath]), [
    ['RECOVERY_NAME', 'workload-demo'], ['NAMESPACE', ns], ['POD_NAME', 'metadata.name'], ['NODE_NAME', 'spec.nodeName'],
  ]);
  assert.deepEqual(podSpec?.volumes?.map((v) => v.name), ['source-data', 'stash-recovery-tmp', 'stash-recovery-repository', 'stash-recovery-token']);
  assert.equal(applied.metadata?.generation, (original.metadata?.generation ?? 0) + 1);
  const recovery = await getRecovery('workload-demo');
  assert.ok((recovery?.metadata.finalizers as string[] | undefined)?.includes(FINALIZER));
  assert.equal(recovery?.status?.phase, 'Pending');
  assert.equal(recovery?.status?.conditions?.find((c) => c.type === 'Ready')?.reason, 'InitContainerApplied');
  assert.ok((await events('workload-demo')).some((e) => e.type === 'Normal' && e.reason === 'InitContainerApplied'));

  // Again: nothing is written to the workload or the Recovery.
  assert.equal(await recoverer.reconcileRecovery(ns, 'workload-demo', log), 'unchanged');
  const again = await deployment('stash-demo');
  assert.equal(again.metadata?.generation, applied.metadata?.generation);
  assert.deepEqual(again.spec, applied.spec);
  const entry = (d: V1Deployment): unknown => d.metadata?.managedFields?.find((m) => m.manager === FIELD_MANAGER);
  assert.deepEqual(entry(again), entry(applied), 'run-recovery applied nothing');
  assert.equal((await getRecovery('workload-demo'))?.metadata.resourceVersion, recovery?.metadata.resourceVersion);
  // A workload event maps to the Recovery: still nothing to do.
  assert.deepEqual((await recoverer.reconcileWorkload('Deployment', ns, 'stash-demo', log)).outcomes, { [`${ns}/workload-demo`]: 'unchanged' });

  await custom().deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'recoveries', namespace: ns, name: 'workload-demo' });
  assert.equal(await recoverer.reconcileRecovery(ns, 'workload-demo', log), 'removed');
  const restored = await deployment('stash-demo');
  assert.deepEqual(restored.spec?.template, original.spec?.template);
  assert.equal(await getRecovery('workload-demo'), undefined, 'the finalizer is released, so the Recovery is gone');
  assert.equal(await recoverer.reconcileRecovery(ns, 'workload-demo', log), 'gone');
});

test('missing AgentTemplate, Repository, workload or AppBinding, a workload path no container mounts: Ready=False with the reason and a Warning Event; nothing created', async () => {
  await applyYaml(cluster, deploymentYaml('unmounted'));
  const cases: Record<string, { yaml: string; reason: string; message: RegExp }> = {
    'no-template': { yaml: recoveryYaml('03-recovery-volume.yaml', 'no-template', (r) => { r.spec.recoveryAgent = `absent-${ns}`; }), reason: 'AgentTemplateNotFound', message: /AgentTemplate absent-.* \(cluster-scoped\) named by spec\.recoveryAgent does not exist/ },
    'no-repo': { yaml: recoveryYaml('03-recovery-volume.yaml', 'no-repo', (r) => { r.spec.repository = { name: 'absent-repo' }; }), reason: 'RepositoryNotFound', message: /Repository .*\/absent-repo named by spec\.repository does not exist: create it/ },
    'no-workload': { yaml: recoveryYaml('04-recovery-workload.yaml', 'no-workload', (r) => { r.spec.recoverTo = { workload: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'absent' } }; }), reason: 'TargetNotFound', message: /Deployment .*\/absent named by spec\.recoverTo\.workload does not exist/ },
    'no-binding': { yaml: recoveryYaml('07-recovery-database.yaml', 'no-binding', (r) => { r.spec.recoverTo = { workload: { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'absent-db' } }; }), reason: 'AppBindingNotFound', message: /AppBinding .*\/absent-db \(spec\.recoverTo\.workload\) does not exist/ },
    'unmounted-path': { yaml: recoveryYaml('04-recovery-workload.yaml', 'unmounted-path', (r) => { r.spec.paths = ['/var/elsewhere']; r.spec.recoverTo = { workload: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'unmounted' } }; }), reason: 'PathNotMounted', message: /spec\.paths entry \/var\/elsewhere is not on any volume/ },
    'cronjob': { yaml: recoveryYaml('04-recovery-workload.yaml', 'cronjob', (r) => { r.spec.recoverTo = { workload: { apiVersion: 'batch/v1', kind: 'CronJob', name: 'nightly' } }; }), reason: 'UnsupportedTarget', message: /CronJob nightly \(batch\/v1\) cannot be recovered into/ },
  };
  const before = await deployment('unmounted');
  const recoverer = createRunRecovery(cluster.kc, handlerOptions());
  for (const [name, c] of Object.entries(cases)) {
    await applyYaml(cluster, c.yaml);
    assert.equal(await recoverer.reconcileRecovery(ns, name, log), 'refused', name);
    const condition = await ready(name);
    assert.equal(condition?.status, 'False', name);
    assert.equal(condition?.reason, c.reason, name);
    assert.match(condition?.message ?? '', c.message, name);
    assert.equal((await getRecovery(name))?.status?.phase, 'Pending');
    assert.equal((await jobsOf(name)).length, 0, `${name}: no Job`);
    assert.ok((await events(name)).some((e) => e.type === 'Warning' && e.reason === c.reason), `${name}: a Warning ${c.reason} Event`);
    assert.equal((await getRecovery(name))?.metadata.finalizers, undefined, `${name}: no finalizer`);
  }
  const after = await deployment('unmounted');
  assert.equal(after.metadata?.generation, before.metadata?.generation, 'the workload was not applied to');
  assert.deepEqual(after.spec?.template, before.spec?.template);
  // Refused again: no second Event, no write.
  const rv = (await getRecovery('no-repo'))?.metadata.resourceVersion;
  assert.equal(await recoverer.reconcileRecovery(ns, 'no-repo', log), 'refused');
  assert.equal((await getRecovery('no-repo'))?.metadata.resourceVersion, rv);
  assert.equal((await events('no-repo')).filter((e) => e.reason === 'RepositoryNotFound').length, 1);
  // The Repository appears: its event makes the Recovery's Job.
  await applyYaml(cluster, inNs(read('test/fixtures/design-samples/01-repository.yaml')).replace('name: stash-backup-repo', 'name: absent-repo'));
  assert.deepEqual((await recoverer.reconcileReferrers('Repository', ns, 'absent-repo', log)).outcomes, { [`${ns}/no-repo`]: 'job-created' });
  assert.equal((await ready('no-repo'))?.status, 'True');
});

test('a recovery Job that fails without a report fails the Recovery with the Job\'s reason; a reported Recovery is left as the agent reported it', async () => {
  await applyYaml(cluster, recoveryYaml('03-recovery-volume.yaml', 'deadline'));
  await applyYaml(cluster, recoveryYaml('03-recovery-volume.yaml', 'reported'));
  const server = await startServer({ activeDeadlineSeconds: 1 });
  for (const name of ['deadline', 'reported']) assert.equal((await invoke(server, 'Recovery', name)).status, 202);
  // The agent of "reported" reported (handle-trigger wrote the status).
  await patchStatus(cluster.kc, recoveryRef('reported'), { phase: 'Succeeded', recoveredHosts: [{ host: 'host-0', phase: 'Succeeded', snapshotId: 'abcd1234' }] }, { fieldManager: 'handle-trigger-test' });
  for (const name of ['deadline', 'reported']) {
    await eventually(`the Job controller to fail ${name}'s Job (DeadlineExceeded)`, async () => {
      const job = await batch().readNamespacedJob({ namespace: ns, name: jobName(name) });
      return job.status?.conditions?.find((c) => c.type === 'Failed' && c.status === 'True');
    });
    assert.equal((await sendRefEvent(server, { apiVersion: 'batch/v1', kind: 'Job', namespace: ns, name: jobName(name) })).status, 202);
  }
  const failed = await getRecovery('deadline');
  assert.equal(failed?.status?.phase, 'Failed');
  assert.match(failed?.status?.error ?? '', /DeadlineExceeded/);
  assert.deepEqual(failed?.status?.recoveredHosts?.map((h) => [h.host, h.phase]), [['host-0', 'Failed']]);
  assert.equal(failed?.status?.conditions?.find((c) => c.type === 'Ready')?.reason, 'JobFailed');
  assert.ok((await events('deadline')).some((e) => e.type === 'Warning' && e.reason === 'JobFailed' && /DeadlineExceeded/.test(e.note)));
  const reported = await getRecovery('reported');
  assert.equal(reported?.status?.phase, 'Succeeded');
  assert.deepEqual(reported?.status?.recoveredHosts, [{ host: 'host-0', phase: 'Succeeded', snapshotId: 'abcd1234' }]);
  assert.equal((await events('reported')).some((e) => e.reason === 'JobFailed'), false);
  // Again: nothing changes, no second Job.
  const rv = (await getRecovery('deadline'))?.metadata.resourceVersion;
  assert.equal((await invoke(server, 'Job', jobName('deadline'))).status, 202);
  assert.equal((await getRecovery('deadline'))?.metadata.resourceVersion, rv);
  assert.equal((await jobsOf('deadline')).length, 1);
});

test('through the HTTP server: a Knative CloudEvent and POST /invoke reach the handler; a deletion event removes the init container; a ping resyncs', async () => {
  await applyYaml(cluster, deploymentYaml('http-demo'));
  await applyYaml(cluster, recoveryYaml('04-recovery-workload.yaml', 'http-workload', (r) => { r.spec.recoverTo = { workload: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'http-demo' } }; }));
  const original = await deployment('http-demo');
  const server = await startServer();
  const added = await sendRefEvent(server, recoveryRef('http-workload'));
  assert.equal(added.status, 202, await added.text());
  assert.deepEqual((await deployment('http-demo')).spec?.template.spec?.initContainers?.map((c) => c.name), ['pg-recovery']);
  assert.equal((await sendRefEvent(server, { apiVersion: 'apps/v1', kind: 'Deployment', namespace: ns, name: 'http-demo' }, 'update')).status, 202);

  await applyYaml(cluster, recoveryYaml('03-recovery-volume.yaml', 'http-volume'));
  assert.equal((await invoke(server, 'Recovery', 'http-volume')).status, 202);
  assert.equal((await jobsOf('http-volume')).length, 1);

  // Created while no event arrived: the ping resync makes its Job.
  await applyYaml(cluster, recoveryYaml('03-recovery-volume.yaml', 'http-missed'));
  assert.equal((await sendPing(server)).status, 202);
  assert.equal((await jobsOf('http-missed')).length, 1);

  // A kind run-recovery does not handle is refused without retry.
  assert.equal((await sendRefEvent(server, { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'x' })).status, 422);

  await custom().deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'recoveries', namespace: ns, name: 'http-workload' });
  assert.equal((await sendRefEvent(server, recoveryRef('http-workload'), 'update')).status, 202);
  assert.deepEqual((await deployment('http-demo')).spec?.template, original.spec?.template);
  assert.equal(await getRecovery('http-workload'), undefined);
});

test('STASH_NAMESPACES: a server for other namespaces ignores this namespace\'s events and leaves it out of its resync', async () => {
  await applyYaml(cluster, recoveryYaml('03-recovery-volume.yaml', 'unserved'));
  const options = optionsFromEnv({ STASH_NAMESPACES: `${ns}-elsewhere, ${ns}-too` });
  assert.deepEqual(options.namespaces, [`${ns}-elsewhere`, `${ns}-too`]);
  const elsewhere = await startServer(options);
  assert.equal((await sendRefEvent(elsewhere, recoveryRef('unserved'))).status, 202);
  assert.equal((await invoke(elsewhere, 'Recovery', 'unserved')).status, 202);
  assert.equal((await invoke(elsewhere, 'Repository', 'stash-backup-repo')).status, 202);
  assert.equal((await invoke(elsewhere, 'AgentTemplate', volumeTemplate, undefined)).status, 202);
  assert.equal((await sendPing(elsewhere)).status, 202);
  assert.equal((await jobsOf('unserved')).length, 0, 'no Job for a Recovery in a namespace not served');
  assert.equal((await getRecovery('unserved'))?.status, undefined, 'the Recovery was not touched');
  // This namespace's server serves it (an AgentTemplate event reaches the Recoveries naming it).
  assert.equal((await invoke(await startServer(), 'AgentTemplate', volumeTemplate, undefined)).status, 202);
  assert.equal((await jobsOf('unserved')).length, 1);
});

test('a StatefulSet with its own init container: the recovery init container goes after it (server-side apply appends), each pod recovers its own host; removal restores it', async () => {
  await applyYaml(cluster, JSON.stringify({
    apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'db', namespace: ns },
    spec: {
      serviceName: 'db', replicas: 2, selector: { matchLabels: { app: 'db' } },
      template: {
        metadata: { labels: { app: 'db' } },
        spec: {
          initContainers: [{ name: 'prepare', image: 'busybox', command: ['true'], volumeMounts: [{ name: 'data', mountPath: '/var/lib/db' }] }],
          containers: [{ name: 'db', image: 'busybox', securityContext: { runAsUser: 999 }, volumeMounts: [{ name: 'data', mountPath: '/var/lib/db', subPath: 'db' }] }],
          volumes: [{ name: 'data', emptyDir: {} }],
        },
      },
    },
  }));
  await applyYaml(cluster, recoveryYaml('04-recovery-workload.yaml', 'sts', (r) => {
    r.spec.paths = ['/var/lib/db/base'];
    r.spec.recoverTo = { workload: { apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'db' } };
  }));
  const original = plain(await apps().readNamespacedStatefulSet({ namespace: ns, name: 'db' }));
  const recoverer = createRunRecovery(cluster.kc, handlerOptions());
  assert.equal(await recoverer.reconcileRecovery(ns, 'sts', log), 'applied');
  const applied = plain(await apps().readNamespacedStatefulSet({ namespace: ns, name: 'db' }));
  const inits = applied.spec?.template.spec?.initContainers ?? [];
  assert.deepEqual(inits.map((c) => c.name), ['prepare', 'pg-recovery']);
  assert.deepEqual(inits[1]?.volumeMounts?.[0], { name: 'data', mountPath: '/var/lib/db', subPath: 'db' });
  assert.equal(inits[1]?.securityContext?.runAsUser, 999, 'runs as the app container that mounts the path');
  assert.equal(inits[1]?.env?.some((e) => e.name === 'STASH_SNAPSHOT_HOST'), false);
  assert.equal(await recoverer.reconcileRecovery(ns, 'sts', log), 'unchanged');
  await custom().deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'recoveries', namespace: ns, name: 'sts' });
  assert.deepEqual((await recoverer.reconcileWorkload('StatefulSet', ns, 'db', log)).outcomes, { [`${ns}/sts`]: 'removed' });
  assert.deepEqual(plain(await apps().readNamespacedStatefulSet({ namespace: ns, name: 'db' })).spec?.template, original.spec?.template);
});
