// expand-template against the real kube-apiserver and kube-controller-manager (garbage collector,
// Deployment controller): the handler called directly and through the function's HTTP server with
// Knative binary-mode CloudEvents.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { AppsV1Api, CoreV1Api, CustomObjectsApi, EventsV1Api, KubeConfig, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import type { KubernetesObject } from '@kubernetes/client-node';
import { pino } from 'pino';
import { parse, stringify } from 'yaml';
import { API_ACCESS, reconcileForObject, reconcileTarget, resyncAll } from '../functions/expand-template/handler.ts';
import { createExpandTemplateServer } from '../functions/expand-template/index.ts';
import { checkTemplate, FIELD_MANAGER, planDefaultBackup, readDefaultBackupRequest } from '../functions/expand-template/plan.ts';
import type { Target } from '../functions/expand-template/plan.ts';
import { mergePatch } from '../shared/kube/index.ts';
import type { RunningServer } from '../shared/runtime/index.ts';
import { applyYaml, deleteNamespace, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { repoRoot } from './support/tools.ts';

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const samples = path.join(repoRoot, 'test/fixtures/design-samples');
const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const API_VERSION = `${GROUP}/${VERSION}`;

let cluster: Cluster;
/** The namespaces this file created: every handler call is limited to them, so other test files' objects are never touched. */
const namespaces: string[] = [];
const options = { namespaces };
/** BackupTemplates are cluster-scoped: each test uses its own, deleted at the end. */
const templates: string[] = [];
/** ClusterRoles and ClusterRoleBindings this file created (same names). */
const clusterRoles: string[] = [];
let server: RunningServer | undefined;

before(async () => {
  cluster = await useCluster();
});

after(async () => {
  await server?.close();
  for (const ns of namespaces) await deleteNamespace(cluster, ns);
  const rbac = cluster.kc.makeApiClient(RbacAuthorizationV1Api);
  for (const name of clusterRoles) {
    await rbac.deleteClusterRoleBinding({ name }).catch(() => undefined);
    await rbac.deleteClusterRole({ name }).catch(() => undefined);
  }
  for (const name of templates) {
    await custom().deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: 'backuptemplates', name }).catch(() => undefined);
  }
});

const custom = (): CustomObjectsApi => cluster.kc.makeApiClient(CustomObjectsApi);
const apps = (): AppsV1Api => cluster.kc.makeApiClient(AppsV1Api);

async function namespace(prefix: string): Promise<string> {
  const ns = await freshNamespace(cluster, prefix);
  namespaces.push(ns);
  return ns;
}

type Sample = Record<string, unknown> & { metadata: Record<string, unknown> & { annotations?: Record<string, string> }; spec: Record<string, unknown> };

function sample(file: string): Sample {
  return parse(readFileSync(path.join(samples, file), 'utf8')) as Sample;
}

/** Server-side applies `object` (into `ns`, whatever namespace the sample names) and returns it as stored. */
async function apply(object: Sample, ns?: string): Promise<KubernetesObject> {
  if (ns !== undefined) object.metadata.namespace = ns;
  const [stored] = await applyYaml(cluster, stringify(object));
  assert.ok(stored);
  return stored;
}

/** The design's BackupTemplate (09 or 10) under a unique name; returns the name. */
async function templateFrom(file: string, change: (t: Sample) => void = () => undefined): Promise<string> {
  const template = sample(file);
  const name = `${String(template.metadata.name)}-${randomBytes(4).toString('hex')}`;
  template.metadata.name = name;
  change(template);
  await apply(template);
  templates.push(name);
  return name;
}

async function updateTemplate(name: string, file: string, change: (t: Sample) => void): Promise<void> {
  const template = sample(file);
  template.metadata.name = name;
  change(template);
  await apply(template);
}

/** The storage Secret the templates name, in `ns`. */
async function storageSecret(ns: string, name = 'gcs-secret'): Promise<void> {
  await cluster.kc.makeApiClient(CoreV1Api).createNamespacedSecret({ namespace: ns, body: { metadata: { name }, stringData: { RESTIC_PASSWORD: 'not-used-here' } } });
}

/** The design's annotated Deployment (11) in `ns`, naming `template`. */
async function annotatedDeployment(ns: string, template: string, annotations: Record<string, string> = {}, name = 'stash-demo'): Promise<KubernetesObject> {
  const deployment = sample('11-deployment-default-backup.yaml');
  deployment.metadata.namespace = ns;
  deployment.metadata.name = name;
  deployment.metadata.annotations = { ...deployment.metadata.annotations, 'stash.appscode.com/backupTemplate': template, ...annotations };
  return apply(deployment);
}

async function getCustom(plural: 'backups' | 'repositories', ns: string, name: string): Promise<KubernetesObject & { spec: Record<string, unknown> } | undefined> {
  try {
    return await custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, name }) as KubernetesObject & { spec: Record<string, unknown> };
  } catch (error) {
    if ((error as { code?: number }).code === 404) return undefined;
    throw error;
  }
}

async function listNames(plural: 'backups' | 'repositories', ns: string): Promise<string[]> {
  const list = await custom().listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural }) as { items: KubernetesObject[] };
  return list.items.map((i) => i.metadata?.name ?? '').sort();
}

async function events(ns: string, regarding: string): Promise<{ type: string; reason: string; note: string; count: number }[]> {
  const list = await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns });
  return list.items.filter((e) => e.regarding?.name === regarding && e.reportingController === FIELD_MANAGER).map((e) => ({
    type: e.type ?? '', reason: e.reason ?? '', note: e.note ?? '', count: e.series?.count ?? 1,
  }));
}

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** What the pure plan makes of the objects as stored: the expectation every cluster result is held to. */
async function planned(target: KubernetesObject, templateName: string): Promise<{ repository: unknown; backup: unknown }> {
  const t = JSON.parse(JSON.stringify(target)) as Target;
  const request = readDefaultBackupRequest(t);
  assert.equal(request.state, 'on');
  const raw: unknown = await custom().getClusterCustomObject({ group: GROUP, version: VERSION, plural: 'backuptemplates', name: templateName });
  const checked = checkTemplate(templateName, raw);
  assert.ok(checked.ok);
  const plan = planDefaultBackup({
    target: t, template: checked.template, targetDirectories: request.state === 'on' ? request.targetDirectories : undefined,
    storageSecret: 'present', existing: {}, backups: [],
  });
  assert.equal(plan.action, 'apply');
  return plan.action === 'apply' ? { repository: plan.repository, backup: plan.backup } : { repository: undefined, backup: undefined };
}

/**
 * This function wrote nothing since `earlier`: same generation, spec, labels and owners, and its
 * managedFields entry (whose time moves with every apply that changes something) is the same.
 * (The resourceVersion itself may move: other functions under test write the status. The handler's
 * 'unchanged' outcome is the resourceVersion check around its own applies.)
 */
function assertNotWritten(now: (KubernetesObject & { spec?: unknown }) | undefined, earlier: (KubernetesObject & { spec?: unknown }) | undefined): void {
  assert.ok(now && earlier);
  assert.equal(now.metadata?.generation, earlier.metadata?.generation);
  assert.deepEqual(appliedPart(now), appliedPart(earlier));
  const entry = (o: KubernetesObject): unknown => o.metadata?.managedFields?.find((m) => m.manager === FIELD_MANAGER);
  assert.deepEqual(entry(now), entry(earlier));
}

/** The part of a stored object the function applies: metadata name/namespace/labels/ownerReferences and spec. */
function appliedPart(object: (KubernetesObject & { spec?: unknown }) | undefined): unknown {
  if (object === undefined) return undefined;
  const m = object.metadata ?? {};
  return {
    apiVersion: object.apiVersion, kind: object.kind,
    metadata: { name: m.name, namespace: m.namespace, labels: m.labels, ownerReferences: m.ownerReferences }, spec: object.spec,
  };
}

test('the design sample: Deployment 11 + volume template 09 -> the planned Repository and Backup; idempotent; template change; user edits survive; opt-out deletes; GC', async () => {
  const ns = await namespace('expand-sample');
  const templateName = await templateFrom('09-backup-template-volume.yaml');
  await storageSecret(ns);
  const deployment = await annotatedDeployment(ns, templateName);
  const key = { kind: 'Deployment', namespace: ns, name: 'stash-demo' };

  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'created');
  const repository = await getCustom('repositories', ns, 'deployment-stash-demo');
  const backup = await getCustom('backups', ns, 'deployment-stash-demo');
  const expected = await planned(deployment, templateName);
  assert.deepEqual(appliedPart(repository), expected.repository);
  assert.deepEqual(appliedPart(backup), expected.backup);
  // Spelled out once, so the plan itself is held to the design too.
  assert.deepEqual(repository?.spec, { backend: { gcs: { bucket: 'stash-backup-repo', prefix: `${ns}/stash-demo` }, storageSecretName: 'gcs-secret' } });
  assert.deepEqual(backup?.spec, {
    schedule: '@every 1h', backupAgent: { name: 'stash-volume-backup' }, repository: { name: 'deployment-stash-demo' },
    targetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'stash-demo' }, targetDirectories: ['/source/data'],
    retentionPolicy: { name: 'keep-last-5', keepLast: 5, prune: true },
  });
  assert.deepEqual(backup?.metadata?.ownerReferences, [{ apiVersion: 'apps/v1', kind: 'Deployment', name: 'stash-demo', uid: deployment.metadata?.uid }]);
  assert.deepEqual((await events(ns, 'stash-demo')).map((e) => [e.type, e.reason]), [['Normal', 'DefaultBackupCreated']]);

  // Twice, and a sweep: nothing is written. The Deployment's ReplicaSet carries the same annotations
  // (the Deployment controller copies them) and gets no default backup of its own.
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'unchanged');
  await eventually('the Deployment controller to create the ReplicaSet', async () =>
    (await apps().listNamespacedReplicaSet({ namespace: ns })).items.some((rs) => rs.metadata?.annotations?.['stash.appscode.com/backup'] === 'true'), 120_000);
  const swept = await resyncAll(cluster.kc, log, options);
  assert.deepEqual(swept.failures, {});
  assert.deepEqual(Object.entries(swept.outcomes).filter(([id]) => id.includes(`/${ns}/`)), [[`Deployment/${ns}/stash-demo`, 'unchanged']]);
  const [replicaSet] = (await apps().listNamespacedReplicaSet({ namespace: ns })).items;
  assert.equal(await reconcileTarget(cluster.kc, { kind: 'ReplicaSet', namespace: ns, name: replicaSet?.metadata?.name ?? '' }, log, options), 'off');
  assert.deepEqual(await listNames('backups', ns), ['deployment-stash-demo']);
  assertNotWritten(await getCustom('repositories', ns, 'deployment-stash-demo'), repository);
  assertNotWritten(await getCustom('backups', ns, 'deployment-stash-demo'), backup);
  assert.equal((await events(ns, 'stash-demo')).length, 1, 'no Event when nothing changed');

  // A person pauses the Backup and adds an exclude (fields the template does not set)...
  await mergePatch(cluster.kc, { apiVersion: API_VERSION, kind: 'Backup', namespace: ns, name: 'deployment-stash-demo' },
    { spec: { paused: true, excludes: ['*.tmp'] } }, { fieldManager: 'stash-test' });
  // ...and the template changes: schedule, prefix, retention dropped. Its event re-expands every user.
  await updateTemplate(templateName, '09-backup-template-volume.yaml', (t) => {
    t.spec.schedule = '@every 2h';
    (t.spec.backend as { gcs: { prefix: string } }).gcs.prefix = 'k8s/${metadata.namespace}/${metadata.name}';
    delete t.spec.retentionPolicy;
  });
  const byTemplate = await reconcileForObject(cluster.kc, { kind: 'BackupTemplate', name: templateName }, log, options);
  assert.deepEqual(byTemplate, { outcomes: { [`Deployment/${ns}/stash-demo`]: 'updated' }, failures: {} });
  const updated = await getCustom('backups', ns, 'deployment-stash-demo');
  assert.deepEqual(updated?.spec, {
    schedule: '@every 2h', backupAgent: { name: 'stash-volume-backup' }, repository: { name: 'deployment-stash-demo' },
    targetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'stash-demo' }, targetDirectories: ['/source/data'],
    paused: true, excludes: ['*.tmp'],
  }, 'the template\'s fields follow it (retentionPolicy gone); the person\'s own fields stay');
  assert.equal(((await getCustom('repositories', ns, 'deployment-stash-demo'))?.spec.backend as { gcs: { prefix: string } }).gcs.prefix, `k8s/${ns}/stash-demo`);
  assert.ok((await events(ns, 'stash-demo')).some((e) => e.reason === 'DefaultBackupUpdated' && e.note.includes(templateName)));

  // The annotations change: targetDirectories follows.
  await annotatedDeployment(ns, templateName, { 'stash.appscode.com/targetDirectories': '[/source/data,/var/log]' });
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'updated');
  assert.deepEqual((await getCustom('backups', ns, 'deployment-stash-demo'))?.spec.targetDirectories, ['/source/data', '/var/log']);

  // Opting out deletes both generated objects, and only them: a person's own Backup in the namespace stays.
  const own = sample('02-backup-volume.yaml');
  own.metadata.name = 'my-own-backup';
  (own.spec.targetRef as { name: string }).name = 'another-workload';
  await apply(own, ns);
  await annotatedDeployment(ns, templateName, { 'stash.appscode.com/backup': 'false' });
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'removed');
  await eventually('the generated objects to be deleted', async () =>
    (await getCustom('backups', ns, 'deployment-stash-demo')) === undefined && (await getCustom('repositories', ns, 'deployment-stash-demo')) === undefined);
  assert.deepEqual(await listNames('backups', ns), ['my-own-backup']);
  assert.ok((await events(ns, 'stash-demo')).some((e) => e.reason === 'DefaultBackupRemoved'));
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'off');

  // Opting in again, then deleting the Deployment: the garbage collector removes what it owned.
  await annotatedDeployment(ns, templateName, { 'stash.appscode.com/backup': 'true' });
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'created');
  await apps().deleteNamespacedDeployment({ name: 'stash-demo', namespace: ns });
  await eventually('garbage collection of the generated Repository and Backup', async () =>
    (await getCustom('backups', ns, 'deployment-stash-demo')) === undefined && (await getCustom('repositories', ns, 'deployment-stash-demo')) === undefined, 120_000);
  assert.deepEqual(await listNames('backups', ns), ['my-own-backup']);
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'gone');
});

test('the design AppBinding sample 12 + database template 10 -> a database Backup', async () => {
  const ns = await namespace('expand-db');
  const templateName = await templateFrom('10-backup-template-database.yaml');
  await storageSecret(ns);
  const appBinding = sample('12-appbinding-default-backup.yaml');
  appBinding.metadata.namespace = ns;
  appBinding.metadata.annotations = { ...appBinding.metadata.annotations, 'stash.appscode.com/backupTemplate': templateName };
  const stored = await apply(appBinding);

  assert.equal(await reconcileTarget(cluster.kc, { kind: 'AppBinding', namespace: ns, name: 'quick-postgres' }, log, options), 'created');
  const backup = await getCustom('backups', ns, 'appbinding-quick-postgres');
  const expected = await planned(stored, templateName);
  assert.deepEqual(appliedPart(backup), expected.backup);
  assert.deepEqual(appliedPart(await getCustom('repositories', ns, 'appbinding-quick-postgres')), expected.repository);
  assert.deepEqual(backup?.spec, {
    schedule: '@every 1h', backupAgent: { name: 'pg-backup' }, repository: { name: 'appbinding-quick-postgres' },
    targetRef: { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'quick-postgres' },
    retentionPolicy: { name: 'keep-last-5', keepLast: 5, prune: true },
  });
  assert.equal(await reconcileTarget(cluster.kc, { kind: 'AppBinding', namespace: ns, name: 'quick-postgres' }, log, options), 'unchanged');
  // Found by the sweep and by its template's event too.
  assert.equal((await resyncAll(cluster.kc, log, options)).outcomes[`AppBinding/${ns}/quick-postgres`], 'unchanged');
  assert.deepEqual(await reconcileForObject(cluster.kc, { kind: 'BackupTemplate', name: templateName }, log, options),
    { outcomes: { [`AppBinding/${ns}/quick-postgres`]: 'unchanged' }, failures: {} });
});

test('bad input: a Warning Event on the workload naming the problem and the fix, and nothing created', async () => {
  const ns = await namespace('expand-bad');
  const templateName = await templateFrom('09-backup-template-volume.yaml');
  const key = { kind: 'Deployment', namespace: ns, name: 'stash-demo' };
  const warnings = async (): Promise<{ reason: string; note: string; count: number }[]> =>
    (await events(ns, 'stash-demo')).filter((e) => e.type === 'Warning');
  const nothingCreated = async (): Promise<void> => {
    assert.deepEqual(await listNames('backups', ns), []);
    assert.deepEqual(await listNames('repositories', ns), []);
  };

  // Unknown template.
  const missing = `no-such-template-${randomBytes(4).toString('hex')}`;
  await annotatedDeployment(ns, missing);
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'refused');
  let warning = (await warnings()).find((e) => e.reason === 'BackupTemplateNotFound');
  assert.match(warning?.note ?? '', new RegExp(`BackupTemplate ${missing} \\(cluster-scoped\\) .* does not exist: create it`));
  await nothingCreated();
  // Again: the same Event, counted.
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'refused');
  assert.equal((await warnings()).find((e) => e.reason === 'BackupTemplateNotFound')?.count, 2);

  // The storage Secret does not exist in the workload's namespace.
  await annotatedDeployment(ns, templateName);
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'refused');
  warning = (await warnings()).find((e) => e.reason === 'StorageSecretNotFound');
  assert.match(warning?.note ?? '', new RegExp(`Secret ${ns}/gcs-secret, the storageSecretName of BackupTemplate ${templateName}, does not exist`));
  assert.match(warning?.note ?? '', /create Secret gcs-secret in namespace/);
  await nothingCreated();

  // Malformed targetDirectories, and a boolean written the YAML 1.1 way.
  await storageSecret(ns);
  await annotatedDeployment(ns, templateName, { 'stash.appscode.com/targetDirectories': '[source/data' });
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'refused');
  assert.match((await warnings()).find((e) => e.reason === 'InvalidDefaultBackupAnnotations')?.note ?? '', /has no closing "\]"/);
  await annotatedDeployment(ns, templateName, { 'stash.appscode.com/targetDirectories': '[/source/data]', 'stash.appscode.com/backup': 'True' });
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'refused');
  assert.ok((await warnings()).some((e) => /is "True" \(a boolean written another way\).*write stash\.appscode\.com\/backup: "true"/.test(e.note)));
  await nothingCreated();

  // A template whose prefix, expanded for this workload, no longer fits.
  const longTemplate = await templateFrom('09-backup-template-volume.yaml', (t) => {
    (t.spec.backend as { gcs: { prefix: string } }).gcs.prefix = `${'p'.repeat(1000)}/\${metadata.name}`;
  });
  const longName = `long-${'n'.repeat(58)}`;
  await annotatedDeployment(ns, longTemplate, {}, longName);
  assert.equal(await reconcileTarget(cluster.kc, { ...key, name: longName }, log, options), 'refused');
  const expansion = (await events(ns, longName)).find((e) => e.reason === 'InvalidExpandedBackup');
  assert.equal(expansion?.type, 'Warning');
  assert.match(expansion?.note ?? '', /spec\.backend\.gcs\.prefix.*shorten the prefix/);
  await nothingCreated();
  await apps().deleteNamespacedDeployment({ name: longName, namespace: ns });

  // A hand-written Backup of the same Deployment: the default one is not generated.
  await apply(sample('02-backup-volume.yaml'), ns);
  await annotatedDeployment(ns, templateName);
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'refused');
  assert.match((await warnings()).find((e) => e.reason === 'TargetHasAnotherBackup')?.note ?? '', /also the target of Backup .*\/backup-volume-demo/);
  assert.deepEqual(await listNames('backups', ns), ['backup-volume-demo']);
  assert.deepEqual(await listNames('repositories', ns), []);
});

test('a workload deleted with --cascade=orphan: its generated objects are kept, Stash does not delete them later, the orphaned ReplicaSet gets none', async () => {
  const ns = await namespace('expand-orphan');
  const templateName = await templateFrom('09-backup-template-volume.yaml');
  await storageSecret(ns);
  await annotatedDeployment(ns, templateName);
  const key = { kind: 'Deployment', namespace: ns, name: 'stash-demo' };
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'created');
  await apps().deleteNamespacedDeployment({ name: 'stash-demo', namespace: ns, propagationPolicy: 'Orphan' });
  await eventually('the garbage collector to orphan the generated objects', async () =>
    (await getCustom('backups', ns, 'deployment-stash-demo'))?.metadata?.ownerReferences === undefined &&
    (await getCustom('repositories', ns, 'deployment-stash-demo'))?.metadata?.ownerReferences === undefined &&
    (await apps().listNamespacedDeployment({ namespace: ns })).items.length === 0, 120_000);
  assert.equal(await reconcileTarget(cluster.kc, key, log, options), 'gone');
  assert.deepEqual((await resyncAll(cluster.kc, log, options)).failures, {});
  assert.deepEqual(await listNames('backups', ns), ['deployment-stash-demo']);
  assert.deepEqual(await listNames('repositories', ns), ['deployment-stash-demo']);
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

test('through the HTTP server: Knative Reference CloudEvents for the Deployment and the BackupTemplate; a ping repairs a lost opt-out', async () => {
  const ns = await namespace('expand-http');
  const templateName = await templateFrom('09-backup-template-volume.yaml');
  await storageSecret(ns);
  const deployment = await annotatedDeployment(ns, templateName);
  server ??= await createExpandTemplateServer(cluster.kc, { logger: log, namespaces }).listen(0, { host: '127.0.0.1', handleSignals: false });
  const url = server.url;
  const deploymentRef = { apiVersion: 'apps/v1', kind: 'Deployment', namespace: ns, name: 'stash-demo' };

  const added = await sendRefEvent(url, 'add', deploymentRef);
  assert.equal(added.status, 202, await added.text());
  const backup = await getCustom('backups', ns, 'deployment-stash-demo');
  assert.deepEqual(appliedPart(backup), (await planned(deployment, templateName)).backup);

  // The same event again: nothing changes.
  assert.equal((await sendRefEvent(url, 'update', deploymentRef)).status, 202);
  assertNotWritten(await getCustom('backups', ns, 'deployment-stash-demo'), backup);

  // The template changes; its (cluster-scoped) event re-expands the Deployment.
  await updateTemplate(templateName, '09-backup-template-volume.yaml', (t) => { t.spec.schedule = '*/30 * * * *'; });
  const templateEvent = await sendRefEvent(url, 'update', { apiVersion: API_VERSION, kind: 'BackupTemplate', name: templateName });
  assert.equal(templateEvent.status, 202, await templateEvent.text());
  assert.equal((await getCustom('backups', ns, 'deployment-stash-demo'))?.spec.schedule, '*/30 * * * *');

  // A plain JSON call is accepted; an event about a kind expand-template does not handle is refused without retry.
  const invoked = await fetch(`${url}/invoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'Deployment', namespace: ns, name: 'stash-demo' }) });
  assert.equal(invoked.status, 202);
  assert.equal((await sendRefEvent(url, 'add', { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'x' })).status, 422);

  // The annotation goes and its event is lost: the ping sweep deletes the generated objects.
  const without = sample('11-deployment-default-backup.yaml');
  without.metadata.namespace = ns;
  without.metadata.annotations = {};
  await apply(without);
  assert.equal((await sendPing(url)).status, 202);
  await eventually('the sweep to delete the generated objects', async () =>
    (await getCustom('backups', ns, 'deployment-stash-demo')) === undefined && (await getCustom('repositories', ns, 'deployment-stash-demo')) === undefined);
  // A cron-connector call is a sweep too.
  assert.equal((await fetch(url, { method: 'POST', headers: { 'x-connector': 'cron-connector' } })).status, 202);
  assert.deepEqual(await listNames('backups', ns), []);
});

/** A client authenticated as ServiceAccount `ns/name`, bound to a ClusterRole of exactly `rules`. */
async function asServiceAccount(ns: string, name: string, rules: readonly { apiGroups: string[]; resources: string[]; verbs: string[] }[]): Promise<KubeConfig> {
  const roleName = `stash-expand-template-test-${randomBytes(4).toString('hex')}`;
  clusterRoles.push(roleName);
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: ns } }));
  await applyYaml(cluster, stringify({ apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: roleName }, rules }));
  await applyYaml(cluster, stringify({
    apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: roleName },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: roleName },
    subjects: [{ kind: 'ServiceAccount', name, namespace: ns }],
  }));
  const answer = await cluster.kc.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({ namespace: ns, name, body: { spec: { expirationSeconds: 3600 } } });
  const server = cluster.kc.getCurrentCluster();
  assert.ok(server);
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [server], users: [{ name, token: answer.status?.token ?? '' }],
    contexts: [{ name, cluster: server.name, user: name }], currentContext: name,
  });
  return kc;
}

/** Runs `call` until RBAC, computed from an informer cache, lets the new binding count. */
async function onceAuthorized<T>(call: () => Promise<T>): Promise<T> {
  let result: { value: T } | undefined;
  await eventually('the ClusterRoleBinding to take effect', async () => {
    try {
      result = { value: await call() };
      return true;
    } catch (error) {
      if ((error as Error).name === 'ForbiddenError') return false;
      throw error;
    }
  }, 15_000);
  assert.ok(result);
  return result.value;
}

test('as a ServiceAccount holding only API_ACCESS (no Secrets): the whole flow works; the storage Secret is then not checked', async () => {
  const ns = await namespace('expand-rbac');
  const templateName = await templateFrom('09-backup-template-volume.yaml');
  const kc = await asServiceAccount(ns, 'expand-template', API_ACCESS);
  const key = { kind: 'Deployment', namespace: ns, name: 'stash-demo' };

  // A refusal twice: the Event is created, then read and counted.
  await annotatedDeployment(ns, `no-such-template-${randomBytes(4).toString('hex')}`);
  assert.equal(await onceAuthorized(() => reconcileTarget(kc, key, log, options)), 'refused');
  assert.equal(await reconcileTarget(kc, key, log, options), 'refused');
  assert.equal((await events(ns, 'stash-demo')).find((e) => e.reason === 'BackupTemplateNotFound')?.count, 2);

  // No Secret gcs-secret exists in the namespace, but the role may not look: the objects are created.
  await annotatedDeployment(ns, templateName);
  assert.equal(await reconcileTarget(kc, key, log, options), 'created');
  assert.equal(await reconcileTarget(kc, key, log, options), 'unchanged');
  assert.deepEqual((await resyncAll(kc, log, options)).failures, {});
  assert.deepEqual((await reconcileForObject(kc, { kind: 'BackupTemplate', name: templateName }, log, options)).outcomes, { [`Deployment/${ns}/stash-demo`]: 'unchanged' });

  await annotatedDeployment(ns, templateName, { 'stash.appscode.com/backup': 'false' });
  assert.equal(await reconcileTarget(kc, key, log, options), 'removed');
  assert.deepEqual(await listNames('backups', ns), []);
  assert.deepEqual(await listNames('repositories', ns), []);
});

test('a role that may not delete Repositories: on opt-out the Backup goes, the Repository stays, and a Warning says how to delete it', async () => {
  const ns = await namespace('expand-rbac-nodelete');
  const templateName = await templateFrom('09-backup-template-volume.yaml');
  const rules = API_ACCESS.map((r) => (r.resources.includes('repositories')
    ? [{ ...r, resources: ['backups'] }, { ...r, resources: ['repositories'], verbs: r.verbs.filter((v) => v !== 'delete') }]
    : [r])).flat();
  const kc = await asServiceAccount(ns, 'expand-template', rules);
  const key = { kind: 'Deployment', namespace: ns, name: 'stash-demo' };
  await storageSecret(ns);
  await annotatedDeployment(ns, templateName);
  assert.equal(await onceAuthorized(() => reconcileTarget(kc, key, log, options)), 'created');

  await annotatedDeployment(ns, templateName, { 'stash.appscode.com/backup': 'false' });
  assert.equal(await reconcileTarget(kc, key, log, options), 'removed');
  assert.deepEqual(await listNames('backups', ns), []);
  assert.deepEqual(await listNames('repositories', ns), ['deployment-stash-demo']);
  const warning = (await events(ns, 'stash-demo')).find((e) => e.reason === 'DeleteForbidden');
  assert.equal(warning?.type, 'Warning');
  assert.match(warning?.note ?? '', new RegExp(`Repository ${ns}/deployment-stash-demo generated for Deployment ${ns}/stash-demo is no longer wanted but this function may not delete it: delete it yourself`));
});
