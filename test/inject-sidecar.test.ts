// inject-sidecar against the real kube-apiserver and kube-controller-manager: the handler called
// directly and through the function's HTTP server with Knative binary-mode CloudEvents.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { AppsV1Api, CoreV1Api, CustomObjectsApi, EventsV1Api, KubernetesObjectApi, PatchStrategy, RbacAuthorizationV1Api, setHeaderOptions } from '@kubernetes/client-node';
import type { KubernetesObject, V1Container, V1Deployment, V1Pod, V1PodTemplateSpec, V1StatefulSet } from '@kubernetes/client-node';
import { pino } from 'pino';
import { parseAllDocuments, stringify } from 'yaml';
import { reconcileBackup, reconcileForObject, resyncAll } from '../functions/inject-sidecar/handler.ts';
import { createInjectSidecarServer } from '../functions/inject-sidecar/index.ts';
import { expectedSampleContainer, expectedSampleVolumes } from '../functions/inject-sidecar/fixtures/design-sample.ts';
import { FIELD_MANAGER, FINALIZER } from '../functions/inject-sidecar/plan.ts';
import { applyObject, mergePatch } from '../shared/kube/index.ts';
import type { RunningServer } from '../shared/runtime/index.ts';
import { applyYaml, deleteNamespace, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { designSample as sample } from './support/samples.ts';
import { repoRoot } from './support/tools.ts';

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';

let cluster: Cluster;
/**
 * The namespaces this file created. Every handler call is limited to them: sweeps and
 * AgentTemplate events would otherwise reconcile other test files' Backups too (and leave
 * finalizers nobody removes once this file is done).
 */
const namespaces: string[] = [];
const options = { namespaces };
let server: RunningServer | undefined;

before(async () => {
  cluster = await useCluster();
  // The default AgentTemplates (cluster-scoped) as Stash installs them.
  await applyYaml(cluster, readFileSync(path.join(repoRoot, 'shared/api/defaults/agent-templates.yaml'), 'utf8'));
});

after(async () => {
  await server?.close();
  for (const ns of namespaces) await deleteNamespace(cluster, ns);
});

async function namespace(prefix: string): Promise<string> {
  const ns = await freshNamespace(cluster, prefix);
  namespaces.push(ns);
  return ns;
}

async function apply(object: unknown): Promise<void> {
  await applyYaml(cluster, stringify(object));
}

/** The design's volume sample in `ns`: Repository 01, Deployment 11 and Backup 02. */
async function designSample(ns: string): Promise<void> {
  await apply(sample('01-repository.yaml', ns));
  await apply(sample('11-deployment-default-backup.yaml', ns));
  await apply(sample('02-backup-volume.yaml', ns));
}

const apps = (): AppsV1Api => cluster.kc.makeApiClient(AppsV1Api);
const custom = (): CustomObjectsApi => cluster.kc.makeApiClient(CustomObjectsApi);

/** The Deployment as plain JSON (the typed client returns class instances). */
async function deployment(ns: string, name = 'stash-demo'): Promise<V1Deployment> {
  return JSON.parse(JSON.stringify(await apps().readNamespacedDeployment({ name, namespace: ns }))) as V1Deployment;
}

interface BackupObject extends KubernetesObject {
  spec: Record<string, unknown>;
  status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
}

async function getBackup(ns: string, name = 'backup-volume-demo'): Promise<BackupObject | undefined> {
  try {
    return await custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backups', name }) as BackupObject;
  } catch (error) {
    if ((error as { code?: number }).code === 404) return undefined;
    throw error;
  }
}

/** JSON merge patch of the Backup's spec (null deletes a field), as a person editing it would. */
async function patchBackupSpec(ns: string, spec: Record<string, unknown>, name = 'backup-volume-demo'): Promise<void> {
  await mergePatch(cluster.kc, { apiVersion: `${GROUP}/${VERSION}`, kind: 'Backup', namespace: ns, name }, { spec }, { fieldManager: 'stash-test' });
}

async function deleteBackup(ns: string, name = 'backup-volume-demo'): Promise<void> {
  await custom().deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backups', name });
}

function condition(backup: BackupObject | undefined, type: string): { status: string; reason: string; message: string } | undefined {
  return backup?.status?.conditions?.find((c) => c.type === type);
}

async function events(ns: string, regarding: string): Promise<{ type: string; reason: string; note: string; count: number }[]> {
  const list = await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns });
  return list.items.filter((e) => e.regarding?.name === regarding).map((e) => ({
    type: e.type ?? '', reason: e.reason ?? '', note: e.note ?? '', count: e.series?.count ?? 1,
  }));
}

/** The sidecar as stored: apiserver defaults beside what Stash applied. */
function withDefaults(container: V1Container): V1Container {
  return {
    ...container,
    env: container.env?.map((e) => (e.valueFrom?.fieldRef ? { ...e, valueFrom: { fieldRef: { apiVersion: 'v1', ...e.valueFrom.fieldRef } } } : e)),
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
  };
}

/**
 * Nothing was written to the spec: same generation, same spec, and Stash's managedFields entry
 * (whose time changes with every apply that changes something) is the same. The controllers
 * keep writing status, so the resourceVersion itself may move.
 */
function assertSameSpec(now: V1Deployment, earlier: V1Deployment): void {
  assert.equal(now.metadata?.generation, earlier.metadata?.generation);
  assert.deepEqual(now.spec, earlier.spec);
  const entry = (d: V1Deployment): unknown => d.metadata?.managedFields?.find((m) => m.manager === FIELD_MANAGER);
  assert.deepEqual(entry(now), entry(earlier));
}

function templateJson(d: { spec?: { template?: V1PodTemplateSpec } }): string {
  return JSON.stringify(d.spec?.template);
}

test('the design volume sample: exact sidecar, idempotent, schedule changes do not restart, attributes do, deletion restores the template', async () => {
  const ns = await namespace('inject-sample');
  await designSample(ns);
  const original = await deployment(ns);
  const originalTemplate = templateJson(original);

  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'injected');
  const injected = await deployment(ns);
  const podSpec = injected.spec?.template.spec;
  assert.deepEqual(podSpec?.containers.map((c) => c.name), ['busybox', 'stash-backup']);
  assert.deepEqual(podSpec?.containers[1], withDefaults(expectedSampleContainer(ns)));
  assert.deepEqual(podSpec?.volumes?.map((v) => v.name), ['source-data', 'stash-tmp', 'stash-repository', 'stash-token']);
  assert.deepEqual(podSpec?.volumes?.slice(1), [
    expectedSampleVolumes[0],
    { name: 'stash-repository', secret: { secretName: 'gcs-secret', defaultMode: 420, optional: true } },
    { name: 'stash-token', projected: { defaultMode: 420, sources: [{ serviceAccountToken: { audience: 'stash', expirationSeconds: 3600, path: 'token' } }] } },
  ]);
  assert.deepEqual(injected.spec?.strategy, original.spec?.strategy, 'the update strategy is untouched');
  assert.equal(injected.metadata?.generation, (original.metadata?.generation ?? 0) + 1);

  const backup = await getBackup(ns);
  assert.ok(backup?.metadata?.finalizers?.includes(FINALIZER));
  assert.equal(condition(backup, 'SidecarInjected')?.status, 'True');
  assert.equal(condition(backup, 'Ready')?.status, 'True');
  assert.deepEqual((await events(ns, 'backup-volume-demo')).filter((e) => e.reason === 'SidecarInjected').map((e) => [e.type, e.count]), [['Normal', 1]]);

  // Twice: nothing is written, no second Event.
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'unchanged');
  const again = await deployment(ns);
  assert.equal(again.metadata?.generation, injected.metadata?.generation);
  assertSameSpec(again, injected);
  assert.deepEqual((await events(ns, 'backup-volume-demo')).filter((e) => e.reason === 'SidecarInjected').map((e) => e.count), [1]);

  // Schedule and retention reach no pod.
  await patchBackupSpec(ns, { schedule: '*/5 * * * *', retentionPolicy: { keepDaily: 7 } });
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'unchanged');
  assert.equal((await deployment(ns)).metadata?.generation, injected.metadata?.generation);

  // containerAttributes do.
  await patchBackupSpec(ns, { containerAttributes: { resources: { limits: { memory: '256Mi', cpu: null }, requests: null } } });
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'injected');
  const resized = await deployment(ns);
  assert.equal(resized.metadata?.generation, (injected.metadata?.generation ?? 0) + 1);
  const sidecar = resized.spec?.template.spec?.containers.find((c) => c.name === 'stash-backup');
  assert.deepEqual(sidecar?.resources, { limits: { memory: '256Mi' } }, 'requests and cpu the Backup no longer sets are gone');

  // Deleting the Backup puts the pod template back exactly as it was, then releases the Backup.
  await deleteBackup(ns);
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'removed');
  const restored = await deployment(ns);
  assert.equal(templateJson(restored), originalTemplate);
  assert.deepEqual(restored.spec?.template, original.spec?.template);
  assert.equal(await getBackup(ns), undefined, 'the finalizer is gone, so the Backup is gone');
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'gone');
});

/** A Knative ApiServerSource Reference-mode event in binary mode, as the adapter sends it. */
async function sendRefEvent(url: string, action: 'add' | 'update' | 'delete', ref: { apiVersion: string; kind: string; namespace?: string; name: string }): Promise<Response> {
  const headers: Record<string, string> = {
    'ce-specversion': '1.0',
    'ce-id': crypto.randomUUID(),
    'ce-source': 'https://127.0.0.1:6443',
    'ce-type': `dev.knative.apiserver.ref.${action}`,
    'ce-time': new Date().toISOString(),
    'ce-kind': ref.kind,
    'ce-name': ref.name,
    'ce-apiversion': ref.apiVersion,
    'content-type': 'application/json',
  };
  if (ref.namespace) headers['ce-namespace'] = ref.namespace;
  return fetch(url, { method: 'POST', headers, body: JSON.stringify(ref) });
}

async function sendPing(url: string): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: {
      'ce-specversion': '1.0', 'ce-id': crypto.randomUUID(), 'ce-source': '/apis/v1/namespaces/stash-system/pingsources/sweep',
      'ce-type': 'dev.knative.sources.ping', 'content-type': 'application/json',
    },
    body: '{}',
  });
}

async function functionUrl(): Promise<string> {
  server ??= await createInjectSidecarServer(cluster.kc, { logger: log, namespaces }).listen(0, { host: '127.0.0.1', handleSignals: false });
  return server.url;
}

test('through the HTTP server: Knative binary CloudEvents for the Backup, then its deletion; a cron-connector call', async () => {
  const ns = await namespace('inject-http');
  await designSample(ns);
  const original = await deployment(ns);
  const url = await functionUrl();
  const backupRef = { apiVersion: `${GROUP}/${VERSION}`, kind: 'Backup', namespace: ns, name: 'backup-volume-demo' };

  const added = await sendRefEvent(url, 'add', backupRef);
  assert.equal(added.status, 202, await added.text());
  const injected = await deployment(ns);
  assert.deepEqual(injected.spec?.template.spec?.containers[1], withDefaults(expectedSampleContainer(ns)));

  // The same event again, and an update for it: nothing changes.
  assert.equal((await sendRefEvent(url, 'add', backupRef)).status, 202);
  assert.equal((await sendRefEvent(url, 'update', { ...backupRef, kind: 'Deployment', apiVersion: 'apps/v1', name: 'stash-demo' })).status, 202);
  assertSameSpec(await deployment(ns), injected);

  // A plain JSON call and a cron-connector call are accepted too.
  const invoked = await fetch(`${url}/invoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'Backup', namespace: ns, name: 'backup-volume-demo' }) });
  assert.equal(invoked.status, 202);
  const cron = await fetch(url, { method: 'POST', headers: { 'x-connector': 'cron-connector' } });
  assert.equal(cron.status, 202);
  assertSameSpec(await deployment(ns), injected);

  // An event about a kind inject-sidecar does not handle is refused without retry.
  const unknown = await sendRefEvent(url, 'add', { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'x' });
  assert.equal(unknown.status, 422);

  await deleteBackup(ns);
  const deleted = await sendRefEvent(url, 'delete', backupRef);
  assert.equal(deleted.status, 202);
  assert.deepEqual((await deployment(ns)).spec?.template, original.spec?.template);
  assert.equal(await getBackup(ns), undefined);
});

test('events out of order, duplicated or missing converge to the same state; a ping resync repairs what was missed', async () => {
  const reference = await namespace('inject-ref');
  await designSample(reference);
  await reconcileBackup(cluster.kc, { namespace: reference, name: 'backup-volume-demo' }, log, options);

  const ns = await namespace('inject-order');
  const url = await functionUrl();
  const backupRef = { apiVersion: `${GROUP}/${VERSION}`, kind: 'Backup', namespace: ns, name: 'backup-volume-demo' };
  // An event for a Backup that does not exist yet.
  assert.equal((await sendRefEvent(url, 'add', backupRef)).status, 202);
  // The Backup and the Deployment appear; only the Deployment's event arrives, before the Repository exists.
  await apply(sample('02-backup-volume.yaml', ns));
  await apply(sample('11-deployment-default-backup.yaml', ns));
  assert.equal((await sendRefEvent(url, 'add', { apiVersion: 'apps/v1', kind: 'Deployment', namespace: ns, name: 'stash-demo' })).status, 202);
  assert.equal(condition(await getBackup(ns), 'Ready')?.reason, 'RepositoryNotFound');
  const before = await deployment(ns);
  assert.equal(before.spec?.template.spec?.containers.length, 1, 'nothing is patched while the Repository is missing');
  // The Repository appears; its event is lost. A duplicated stale Backup event changes nothing yet... the ping repairs.
  await apply(sample('01-repository.yaml', ns));
  assert.equal((await sendPing(url)).status, 202);
  const converged = await deployment(ns);
  const ref = await deployment(reference);
  const normalise = (d: V1Deployment): string => JSON.stringify(d.spec?.template).replaceAll(d.metadata?.namespace ?? '', 'NS');
  assert.equal(normalise(converged), normalise(ref));
  // Late duplicates of every event change nothing.

  for (const r of [backupRef, { apiVersion: 'apps/v1', kind: 'Deployment', namespace: ns, name: 'stash-demo' },
    { apiVersion: `${GROUP}/${VERSION}`, kind: 'Repository', namespace: ns, name: 'stash-backup-repo' },
    { apiVersion: `${GROUP}/${VERSION}`, kind: 'AgentTemplate', name: 'stash-volume-backup' }]) {
    assert.equal((await sendRefEvent(url, 'update', r)).status, 202);
  }
  assertSameSpec(await deployment(ns), converged);
  assert.equal(condition(await getBackup(ns), 'Ready')?.status, 'True');

  // The Deployment is deleted and recreated without Stash hearing of it: the sweep re-injects.
  await apps().deleteNamespacedDeployment({ name: 'stash-demo', namespace: ns });
  await apply(sample('11-deployment-default-backup.yaml', ns));
  assert.equal((await deployment(ns)).spec?.template.spec?.containers.length, 1);
  const swept = await resyncAll(cluster.kc, log, options);
  assert.equal(swept.outcomes[`${ns}/backup-volume-demo`], 'injected');
  assert.equal(normalise(await deployment(ns)), normalise(ref));
});

interface RefusalCase {
  name: string;
  reason: string;
  message: RegExp;
  setup: (ns: string) => Promise<{ kind: string; apiVersion: string; name: string } | undefined>;
  backup: (ns: string) => Record<string, unknown>;
}

function backupObject(ns: string, spec: Record<string, unknown>): ReturnType<typeof sample> {
  const b = sample('02-backup-volume.yaml', ns);
  b.spec = { ...b.spec, ...spec };
  return b;
}

const refusalCases: RefusalCase[] = [
  {
    name: 'missing AgentTemplate', reason: 'AgentTemplateNotFound', message: /AgentTemplate no-such-agent .*does not exist/,
    setup: async (ns) => { await apply(sample('01-repository.yaml', ns)); await apply(sample('11-deployment-default-backup.yaml', ns)); return { kind: 'Deployment', apiVersion: 'apps/v1', name: 'stash-demo' }; },
    backup: (ns) => backupObject(ns, { backupAgent: 'no-such-agent' }),
  },
  {
    name: 'missing Repository', reason: 'RepositoryNotFound', message: /Repository .*\/stash-backup-repo .*does not exist/,
    setup: async (ns) => { await apply(sample('11-deployment-default-backup.yaml', ns)); return { kind: 'Deployment', apiVersion: 'apps/v1', name: 'stash-demo' }; },
    backup: (ns) => backupObject(ns, {}),
  },
  {
    name: 'missing workload', reason: 'TargetNotFound', message: /Deployment .*\/stash-demo named by spec\.targetRef does not exist/,
    setup: async (ns) => { await apply(sample('01-repository.yaml', ns)); return undefined; },
    backup: (ns) => backupObject(ns, {}),
  },
  {
    name: 'unsupported kind (CronJob)', reason: 'UnsupportedTarget', message: /CronJob nightly/,
    setup: async (ns) => {
      await apply(sample('01-repository.yaml', ns));
      await apply({
        apiVersion: 'batch/v1', kind: 'CronJob', metadata: { name: 'nightly', namespace: ns },
        spec: { schedule: '0 3 * * *', suspend: true, jobTemplate: { spec: { template: { spec: { restartPolicy: 'Never', containers: [{ name: 'c', image: 'busybox' }] } } } } },
      });
      return { kind: 'CronJob', apiVersion: 'batch/v1', name: 'nightly' };
    },
    backup: (ns) => backupObject(ns, { targetRef: { apiVersion: 'batch/v1', kind: 'CronJob', name: 'nightly' } }),
  },
  {
    name: "a database operator's StatefulSet", reason: 'TargetManagedByController', message: /controlled by ConfigMap quick-postgres .*stashed\/stash#1308/,
    setup: async (ns) => {
      await apply(sample('01-repository.yaml', ns));
      // The "operator's" object: a real owner, so the garbage collector keeps the StatefulSet.
      const owner = await cluster.kc.makeApiClient(CoreV1Api).createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'quick-postgres' } } });
      await apply(statefulSet(ns, 'quick-postgres', [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'quick-postgres', uid: owner.metadata?.uid ?? '', controller: true }]));
      return { kind: 'StatefulSet', apiVersion: 'apps/v1', name: 'quick-postgres' };
    },
    backup: (ns) => backupObject(ns, { targetRef: { apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'quick-postgres' }, targetDirectories: ['/data'] }),
  },
];

function statefulSet(ns: string, name: string, ownerReferences?: unknown[], replicas = 2): Record<string, unknown> {
  return {
    apiVersion: 'apps/v1', kind: 'StatefulSet',
    metadata: { name, namespace: ns, ...(ownerReferences ? { ownerReferences } : {}) },
    spec: {
      serviceName: name, replicas, podManagementPolicy: 'Parallel', selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: 'db', image: 'postgres:16', volumeMounts: [{ name: 'data', mountPath: '/data' }] }] },
      },
      volumeClaimTemplates: [{ metadata: { name: 'data' }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } }],
    },
  };
}

async function readWorkload(ns: string, target: { kind: string; apiVersion: string; name: string }): Promise<KubernetesObject> {
  return KubernetesObjectApi.makeApiClient(cluster.kc).read({ apiVersion: target.apiVersion, kind: target.kind, metadata: { name: target.name, namespace: ns } });
}

/** Reads the workload until its controller stops writing its status (the resourceVersion holds for 1 s). */
async function settled(ns: string, target: { kind: string; apiVersion: string; name: string }): Promise<KubernetesObject> {
  let last = await readWorkload(ns, target);
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const next = await readWorkload(ns, target);
    if (next.metadata?.resourceVersion === last.metadata?.resourceVersion) return next;
    last = next;
  }
  return last;
}

for (const c of refusalCases) {
  test(`${c.name}: a Ready=False ${c.reason} condition and a Warning Event; the workload untouched`, async () => {
    const ns = await namespace('inject-refuse');
    const target = await c.setup(ns);
    const before = target ? await settled(ns, target) : undefined;
    await apply(c.backup(ns));
    assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'refused');
    assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'refused');
    const backup = await getBackup(ns);
    const ready = condition(backup, 'Ready');
    assert.equal(ready?.status, 'False');
    assert.equal(ready?.reason, c.reason);
    assert.match(ready?.message ?? '', c.message);
    assert.equal(condition(backup, 'SidecarInjected'), undefined);
    assert.ok(!backup?.metadata?.finalizers?.includes(FINALIZER), 'no finalizer before anything was applied');
    const warnings = (await events(ns, 'backup-volume-demo')).filter((e) => e.type === 'Warning' && e.reason === c.reason);
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]?.count, 1, 'a resync with the same refusal does not repeat the Event');
    if (target && before) {
      const afterwards = await readWorkload(ns, target);
      assert.equal(afterwards.metadata?.resourceVersion, before.metadata?.resourceVersion);
      assert.ok(!(afterwards.metadata?.managedFields ?? []).some((m) => m.manager === FIELD_MANAGER));
    }
  });
}

test('a StatefulSet gets per-replica host identity, and its pods carry the pod-index label it reads', async () => {
  const ns = await namespace('inject-sts');
  await apply(sample('01-repository.yaml', ns));
  // No replicas yet: the controller creates the pods from the injected template once scaled up.
  await apply(statefulSet(ns, 'web', undefined, 0));
  await apply(backupObject(ns, { targetRef: { apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'web' }, targetDirectories: ['/data'] }));
  // Through the workload's own event.
  const result = await reconcileForObject(cluster.kc, { kind: 'StatefulSet', namespace: ns, name: 'web' }, log, options);
  assert.deepEqual(result.outcomes, { [`${ns}/backup-volume-demo`]: 'injected' });
  const sts = JSON.parse(JSON.stringify(await apps().readNamespacedStatefulSet({ name: 'web', namespace: ns }))) as V1StatefulSet;
  const sidecar = sts.spec?.template.spec?.containers.find((c) => c.name === 'stash-backup');
  const env = Object.fromEntries((sidecar?.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom?.fieldRef?.fieldPath]));
  assert.equal(env.POD_INDEX, "metadata.labels['apps.kubernetes.io/pod-index']");
  assert.equal(env.STASH_HOST, 'host-$(POD_INDEX)');
  assert.deepEqual(sidecar?.volumeMounts?.[0], { name: 'data', mountPath: '/data', readOnly: true });
  assert.equal(sts.spec?.updateStrategy?.type, 'RollingUpdate', 'the default strategy, untouched');
  // Scaled up, the StatefulSet controller creates web-0 and web-1 from the new template, each
  // labelled with the index the sidecar's POD_INDEX reads.
  await apps().patchNamespacedStatefulSetScale({ name: 'web', namespace: ns, body: { spec: { replicas: 2 } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  const core = cluster.kc.makeApiClient(CoreV1Api);
  let pods: V1Pod[] = [];
  for (let i = 0; i < 100 && pods.length < 2; i++) {
    pods = (await core.listNamespacedPod({ namespace: ns })).items.filter((p) => p.spec?.containers.some((c) => c.name === 'stash-backup'));
    if (pods.length < 2) await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepEqual(pods.map((p) => [p.metadata?.name, p.metadata?.labels?.['apps.kubernetes.io/pod-index']]).sort(), [['web-0', '0'], ['web-1', '1']]);
});

test("the workload's ServiceAccount gains no RoleBinding; the Secret is only mounted", async () => {
  const ns = await namespace('inject-rbac');
  const rbac = cluster.kc.makeApiClient(RbacAuthorizationV1Api);
  const clusterBindings = async (): Promise<string[]> => (await rbac.listClusterRoleBinding()).items
    .filter((b) => (b.subjects ?? []).some((s) => s.namespace === ns)).map((b) => b.metadata?.name ?? '');
  await designSample(ns);
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'injected');
  assert.deepEqual((await rbac.listNamespacedRoleBinding({ namespace: ns })).items, []);
  assert.deepEqual((await rbac.listNamespacedRole({ namespace: ns })).items, []);
  assert.deepEqual(await clusterBindings(), []);
  const podSpec = (await deployment(ns)).spec?.template.spec;
  assert.equal(podSpec?.serviceAccountName, undefined, 'the pod keeps its ServiceAccount');
  const sidecar = podSpec?.containers.find((c) => c.name === 'stash-backup');
  assert.ok(!(sidecar?.env ?? []).some((e) => e.valueFrom?.secretKeyRef), 'no Secret value in the environment');
});

test('a second Backup of the same workload is refused; it takes over when the first is deleted', async () => {
  const ns = await namespace('inject-two');
  await designSample(ns);
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'injected');
  const second = backupObject(ns, { targetDirectories: ['/source/data'] });
  second.metadata.name = 'second';
  await apply(second);
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'second' }, log, options), 'refused');
  assert.equal(condition(await getBackup(ns, 'second'), 'Ready')?.reason, 'TargetHasAnotherBackup');
  const env = (await deployment(ns)).spec?.template.spec?.containers[1]?.env?.find((e) => e.name === 'BACKUP_NAME');
  assert.equal(env?.value, 'backup-volume-demo');

  await deleteBackup(ns);
  const result = await reconcileForObject(cluster.kc, { kind: 'Backup', namespace: ns, name: 'backup-volume-demo' }, log, options);
  assert.equal(result.outcomes[`${ns}/backup-volume-demo`], 'removed');
  const takenOver = (await deployment(ns)).spec?.template.spec?.containers[1]?.env?.find((e) => e.name === 'BACKUP_NAME');
  assert.equal(takenOver?.value, 'second');
  assert.equal(condition(await getBackup(ns, 'second'), 'SidecarInjected')?.status, 'True');
});

test('a Backup whose workload is gone is released on deletion; a changed targetRef moves the sidecar', async () => {
  const ns = await namespace('inject-gone');
  await designSample(ns);
  const other = sample('11-deployment-default-backup.yaml', ns);
  other.metadata.name = 'other';
  await apply(other);
  const originalOther = await deployment(ns, 'other');
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'injected');

  // targetRef moves from stash-demo to other: the sidecar leaves stash-demo and appears in other.
  const original = sample('11-deployment-default-backup.yaml') as unknown as V1Deployment;
  await patchBackupSpec(ns, { targetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'other' } });
  assert.equal(await reconcileForObject(cluster.kc, { kind: 'Deployment', namespace: ns, name: 'stash-demo' }, log, options).then((r) => r.outcomes[`${ns}/backup-volume-demo`]), 'injected');
  assert.deepEqual((await deployment(ns)).spec?.template.spec?.containers.map((c) => c.name), original.spec?.template.spec?.containers.map((c) => c.name));
  assert.deepEqual((await deployment(ns, 'other')).spec?.template.spec?.containers.map((c) => c.name), ['busybox', 'stash-backup']);

  // The workload disappears, then the Backup is deleted: the finalizer is simply removed.
  await apps().deleteNamespacedDeployment({ name: 'other', namespace: ns });
  await deleteBackup(ns);
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'removed');
  assert.equal(await getBackup(ns), undefined);
  assert.ok(originalOther.metadata?.uid);
});

// Shared YAML for the default templates must parse as what the handler reads.
test('the default AgentTemplates installed above include stash-volume-backup', async () => {
  const docs = parseAllDocuments(readFileSync(path.join(repoRoot, 'shared/api/defaults/agent-templates.yaml'), 'utf8')).map((d) => d.toJS() as { metadata: { name: string } });
  assert.ok(docs.some((d) => d.metadata.name === 'stash-volume-backup'));
  const stored = await custom().getClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name: 'stash-volume-backup' }) as { spec: { containers: unknown[] } };
  assert.equal(stored.spec.containers.length, 1);
});

test('run as a program: PORT, KUBECONFIG and STASH_NAMESPACES from the environment; a ping injects; SIGTERM drains and exits 0', async () => {
  const ns = await namespace('inject-main');
  await designSample(ns);
  const child = spawn(process.execPath, [path.join(repoRoot, 'functions/inject-sidecar/index.ts')], {
    env: { ...process.env, PORT: '0', KUBECONFIG: cluster.kubeconfigPath, STASH_NAMESPACES: ns, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => { resolve(code); }));
  try {
    const lines = createInterface({ input: child.stdout });
    let port: number | undefined;
    for await (const line of lines) {
      const record = JSON.parse(line) as { msg?: string; port?: number };
      if (record.msg === 'listening') {
        port = record.port;
        break;
      }
    }
    assert.ok(port, 'the server logged the port it listens on');
    const answer = await sendPing(`http://127.0.0.1:${port}`);
    assert.equal(answer.status, 202);
    assert.deepEqual((await deployment(ns)).spec?.template.spec?.containers[1], withDefaults(expectedSampleContainer(ns)));
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0);
});

test('a field another manager took over is a conflict reported as a condition, never forced back', async () => {
  const ns = await namespace('inject-conflict');
  await designSample(ns);
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'injected');
  // Another tool applies (forcing) its own image for the sidecar container.
  await applyObject(cluster.kc, {
    apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'stash-demo', namespace: ns },
    spec: { template: { spec: { containers: [{ name: 'stash-backup', image: 'someone-else:1' }] } } },
  } as KubernetesObject, { fieldManager: 'other-tool', force: true });
  const taken = await deployment(ns);
  assert.equal(await reconcileBackup(cluster.kc, { namespace: ns, name: 'backup-volume-demo' }, log, options), 'refused');
  const ready = condition(await getBackup(ns), 'Ready');
  assert.equal(ready?.reason, 'ApplyConflict');
  assert.match(ready?.message ?? '', /other-tool/);
  assert.match(ready?.message ?? '', /image/);
  assertSameSpec(await deployment(ns), taken);
  assert.equal((await deployment(ns)).spec?.template.spec?.containers[1]?.image, 'someone-else:1');
  assert.equal((await events(ns, 'backup-volume-demo')).filter((e) => e.type === 'Warning' && e.reason === 'ApplyConflict').length, 1);
});
