// Recovery end to end (docs/recovery.md): run-recovery and handle-trigger as processes fed by
// Knative's real adapters (test/support/stack.ts, as in test/e2e.test.ts), against the real control
// plane; the pods run-recovery renders (a recovery Job's Pod, a Deployment's Pod with the recovery
// init container) run through the kubelet stand-in (test/support/kubelet.ts) with their real env,
// volumes and projected token, and actually recover.
//
// The snapshots are taken with the agent (standalone) as host-0, the host a Deployment's or a
// database's backup writes, from the very paths the backup sidecar would see (the data directory
// bind-mounted at the container path in a private mount namespace, as the kubelet stand-in does).
// The design's samples are used with the changes a local run needs: the Repository's backend is a
// LOCAL hostPath directory instead of GCS, and the recovered volume a hostPath directory instead of
// a PVC.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { AppsV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi, EventsV1Api } from '@kubernetes/client-node';
import type { V1Container, V1Deployment, V1Job, V1Pod, V1PodTemplateSpec, V1Volume } from '@kubernetes/client-node';
import { parse, stringify } from 'yaml';
import { agentTemplate as agentTemplateSchema, appBinding as appBindingSchema, recovery as recoverySchema, repository as repositorySchema } from '../shared/api/index.ts';
import { planInitContainer, planRecoveryJob } from '../functions/run-recovery/plan.ts';
import type { Workload } from '../functions/run-recovery/plan.ts';
import { applyYaml, deleteNamespacesReleasing, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { startPostgres } from './support/databases.ts';
import type { PostgresServer } from './support/databases.ts';
import { runContainer } from './support/kubelet.ts';
import type { ContainerRun } from './support/kubelet.ts';
import { startStack } from './support/stack.ts';
import type { Stack } from './support/stack.ts';
import { repoRoot, toolPath } from './support/tools.ts';
import { fileContents } from './support/files.ts';
import { runCaptured } from './support/run.ts';
import type { Captured } from './support/run.ts';
import { waitFor as eventually } from './support/wait.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const PASSWORD = `e2e-recovery-${randomBytes(6).toString('hex')}`;
const samples = path.join(repoRoot, 'test/fixtures/design-samples');

let cluster: Cluster;
let stack: Stack;
let dir: string;
const ns = { volume: '', workload: '', database: '', system: '' };
let postgres: PostgresServer | undefined;

const custom = (): CustomObjectsApi => cluster.kc.makeApiClient(CustomObjectsApi);
const apps = (): AppsV1Api => cluster.kc.makeApiClient(AppsV1Api);
const core = (): CoreV1Api => cluster.kc.makeApiClient(CoreV1Api);
/** The typed client returns class instances: compare plain JSON. */
const plain = <T>(value: T): T => JSON.parse(JSON.stringify(value ?? null)) as T;

type Sample = Record<string, unknown> & { metadata: Record<string, unknown>; spec: Record<string, unknown> };

function sample(file: string, namespace: string): Sample {
  const object = parse(readFileSync(path.join(samples, file), 'utf8')) as Sample;
  object.metadata.namespace = namespace;
  return object;
}

async function getCustom<T>(plural: string, namespace: string, name: string, group = GROUP, version = VERSION): Promise<T | undefined> {
  try {
    return await custom().getNamespacedCustomObject({ group, version, plural, namespace, name }) as T;
  } catch (error) {
    if ((error as { code?: number }).code === 404) return undefined;
    throw error;
  }
}

interface RecoveredHost { host: string; phase: string; snapshotId?: string; generation?: number; files?: number; pod?: string; error?: string }
interface RecoveryObject {
  metadata: { name: string; namespace: string; uid: string; generation: number; finalizers?: string[] };
  status?: { phase?: string; snapshotId?: string; error?: string; recoveredHosts?: RecoveredHost[]; conditions?: { type: string; status: string; reason: string; message: string }[] };
}

const getRecovery = (namespace: string, name: string): Promise<RecoveryObject | undefined> => getCustom<RecoveryObject>('recoveries', namespace, name);

async function eventsOf(namespace: string, regarding: string): Promise<{ type: string; reason: string; note: string }[]> {
  const list = await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace });
  return list.items.filter((e) => e.regarding?.name === regarding).map((e) => ({ type: e.type ?? '', reason: e.reason ?? '', note: e.note ?? '' }));
}

async function deployment(namespace: string, name = 'stash-demo'): Promise<V1Deployment> {
  return plain(await apps().readNamespacedDeployment({ name, namespace }));
}

// ---------------------------------------------------------------------------------------------
// What the apiserver adds to what Stash applies, so a plan compares with the stored object (as in e2e.test.ts).

function containerDefaults(c: V1Container): V1Container {
  return {
    ...c,
    ...(c.env ? { env: c.env.map((e) => (e.valueFrom?.fieldRef ? { ...e, valueFrom: { fieldRef: { apiVersion: 'v1', ...e.valueFrom.fieldRef } } } : e)) } : {}),
    terminationMessagePath: c.terminationMessagePath ?? '/dev/termination-log',
    terminationMessagePolicy: c.terminationMessagePolicy ?? 'File',
    imagePullPolicy: c.imagePullPolicy ?? 'IfNotPresent',
    resources: c.resources ?? {},
  };
}

function volumeDefaults(v: V1Volume): V1Volume {
  if (v.secret) return { ...v, secret: { defaultMode: 420, ...v.secret } };
  if (v.projected) return { ...v, projected: { defaultMode: 420, ...v.projected } };
  if (v.hostPath) return { ...v, hostPath: { type: '', ...v.hostPath } };
  return v;
}

/** Canonical JSON: keys sorted, so two objects compare regardless of key order. */
function canonicalJson(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonicalJson);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonicalJson((value as Record<string, unknown>)[k])]));
  }
  return value;
}


/** A directory of random files (binary, text, nested). */
async function randomTree(root: string, label: string): Promise<void> {
  await mkdir(path.join(root, 'nested/deeper'), { recursive: true });
  await writeFile(path.join(root, 'index.html'), `<h1>${label}</h1>\n`);
  await writeFile(path.join(root, 'nested/random.bin'), randomBytes(256 * 1024 + 17));
  await writeFile(path.join(root, 'nested/deeper/notes.txt'), `${randomBytes(32).toString('hex')}\n`.repeat(500));
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * The agent's standalone CLI, in a private mount namespace where each `binds` host directory is
 * bind-mounted at its container path (so a snapshot records the paths the pod sees).
 */
function agentCli(args: string[], binds: Record<string, string> = {}, env: Record<string, string> = {}): Promise<Captured> {
  const script = ['set -e'];
  for (const [target, source] of Object.entries(binds)) script.push(`mkdir -p ${shellQuote(target)} && mount --bind ${shellQuote(source)} ${shellQuote(target)}`);
  script.push(`exec ${[process.execPath, path.join(repoRoot, 'agent/bin/stash.js'), ...args].map(shellQuote).join(' ')}`);
  const base: Record<string, string | undefined> = { ...process.env, STASH_RESTIC: toolPath('restic'), STASH_CACHE_DIR: path.join(dir, 'restic-cache'), ...env };
  delete base.KUBECONFIG;
  return runCaptured('unshare', ['-m', '--propagation', 'private', 'bash', '-c', script.join('\n')], base);
}

const lastJson = <T>(stdout: string): T => JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as T;

interface LocalRepository { repoDir: string; resticRepo: string; passwordFile: string }

/** The Repository sample with a LOCAL hostPath backend (a temp dir) and its storage Secret; the restic repository initialised. */
async function localRepository(namespace: string): Promise<LocalRepository> {
  const repoDir = path.join(dir, namespace, 'repository');
  await mkdir(repoDir, { recursive: true });
  const repository = sample('01-repository.yaml', namespace);
  repository.spec.backend = { local: { mountPath: repoDir, subPath: 'repo', hostPath: { path: repoDir } }, storageSecretName: 'local-secret' };
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'local-secret', namespace }, stringData: { RESTIC_PASSWORD: PASSWORD } }));
  await applyYaml(cluster, stringify(repository));
  const passwordFile = path.join(dir, namespace, 'password');
  await writeFile(passwordFile, PASSWORD, { mode: 0o600 });
  const resticRepo = path.join(repoDir, 'repo');
  const init = await agentCli(['init', '--repo', resticRepo, '--password-file', passwordFile, '--json']);
  assert.equal(init.code, 0, init.stderr);
  return { repoDir, resticRepo, passwordFile };
}

/** A snapshot of `dataDir` as the backup sidecar of a Deployment takes it: host-0, the directory at `containerPath`. */
async function volumeSnapshot(repo: LocalRepository, dataDir: string, containerPath: string): Promise<string> {
  const backup = await agentCli(['backup', '--repo', repo.resticRepo, '--password-file', repo.passwordFile, '--json', '--host', 'host-0', containerPath], { [containerPath]: dataDir });
  assert.equal(backup.code, 0, backup.stderr);
  const { snapshotId } = lastJson<{ snapshotId: string }>(backup.stdout);
  assert.match(snapshotId, /^[0-9a-f]{64}$/);
  return snapshotId;
}

/** Runs `containerName` of `pod` with the kubelet stand-in (handle-trigger's loopback URL for its Service). */
function runPodContainer(pod: V1Pod, containerName: string, envOverrides: Record<string, string> = {}): Promise<ContainerRun> {
  return runContainer({
    cluster, pod, containerName, stateDir: path.join(dir, 'kubelet'),
    envOverrides: { STASH_FUNCTIONS_URL: stack.functionsUrl, ...envOverrides }, timeoutMs: 240_000,
  });
}

async function podOfJob(namespace: string, job: string): Promise<V1Pod> {
  return plain(await eventually(`the Pod of Job ${job} (the Job controller)`, async () => {
    const pods = await core().listNamespacedPod({ namespace, labelSelector: `batch.kubernetes.io/job-name=${job}` });
    return pods.items[0];
  }, 60_000));
}

async function jobOf(namespace: string, name: string): Promise<V1Job> {
  return plain(await eventually(`run-recovery's Job ${name}`, async () => {
    try {
      return await cluster.kc.makeApiClient(BatchV1Api).readNamespacedJob({ namespace, name });
    } catch (error) {
      if ((error as { code?: number }).code === 404) return undefined;
      throw error;
    }
  }, 60_000));
}

/** run-recovery's plan for the stored objects compares with the Job it created (what the apiserver adds aside). */
async function assertPlannedJob(namespace: string, recoveryName: string, agentTemplateName: string, job: V1Job, appBindingName?: string): Promise<void> {
  const planned = planRecoveryJob({
    recovery: recoverySchema.parse(await getRecovery(namespace, recoveryName)),
    agentTemplate: agentTemplateSchema.parse(await custom().getClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name: agentTemplateName })),
    repository: repositorySchema.parse(await getCustom('repositories', namespace, 'stash-backup-repo')),
    ...(appBindingName ? { appBinding: appBindingSchema.parse(await getCustom('appbindings', namespace, appBindingName, 'appcatalog.appscode.com', 'v1alpha1')) } : {}),
    options: { functionsUrl: stack.functionsUrl },
  });
  assert.ok(planned.ok, JSON.stringify(planned));
  const want = plain(planned.job);
  assert.deepEqual(job.metadata?.ownerReferences, want.metadata?.ownerReferences);
  for (const [k, v] of Object.entries(want.metadata?.labels ?? {})) assert.equal(job.metadata?.labels?.[k], v, `label ${k}`);
  const podSpec = job.spec?.template.spec;
  const wantSpec = want.spec?.template.spec;
  assert.deepEqual(canonicalJson(podSpec?.initContainers), canonicalJson(wantSpec?.initContainers?.map(containerDefaults)));
  assert.deepEqual(canonicalJson(podSpec?.containers), canonicalJson(wantSpec?.containers.map(containerDefaults)));
  assert.deepEqual(canonicalJson(podSpec?.volumes), canonicalJson(wantSpec?.volumes?.map(volumeDefaults)));
}

async function recoveryFinished(namespace: string, name: string, generation?: number): Promise<RecoveryObject> {
  return eventually(`Recovery ${namespace}/${name} to finish`, async () => {
    const r = await getRecovery(namespace, name);
    const live = (r?.status?.recoveredHosts ?? []).filter((h) => generation === undefined || h.generation === generation);
    const done = r?.status?.phase === 'Succeeded' || r?.status?.phase === 'Failed';
    return done && (generation === undefined || live.length > 0) ? r : undefined;
  }, 30_000);
}

before(async () => {
  cluster = await useCluster();
  dir = await mkdtemp(path.join(os.tmpdir(), 'stash-e2e-recovery-'));
  for (const key of Object.keys(ns) as (keyof typeof ns)[]) ns[key] = await freshNamespace(cluster, `e2e-rec-${key}`);
  await applyYaml(cluster, await readFile(path.join(repoRoot, 'shared/api/defaults/agent-templates.yaml'), 'utf8'));
  stack = await startStack({
    cluster,
    stateDir: path.join(dir, 'stack'),
    systemNamespace: ns.system,
    namespaces: [ns.volume, ns.workload, ns.database],
  });
});

after(async () => {
  await stack?.stop();
  await postgres?.stop();
  // Recoveries into workloads hold run-recovery's finalizer: with the stack gone, nobody would remove it.
  await deleteNamespacesReleasing(cluster, Object.values(ns), 'recoveries');
  if (process.env.STASH_E2E_KEEP === undefined) await rm(dir, { recursive: true, force: true });
  else console.log(`kept ${dir} (stack logs in ${path.join(dir, 'stack')})`);
});

test('volume: the design\'s volume Recovery makes run-recovery create its Job; the Job\'s Pod restores the snapshot byte for byte into the volume and the Recovery succeeds', { timeout: 300_000 }, async () => {
  const namespace = ns.volume;
  const repo = await localRepository(namespace);
  const dataDir = path.join(dir, namespace, 'data');
  await randomTree(dataDir, 'volume');
  const snapshotId = await volumeSnapshot(repo, dataDir, '/source/data');

  // The recovered volume: a hostPath directory with a stale file the snapshot lacks (a rollback removes it).
  const target = path.join(dir, namespace, 'recovered');
  await mkdir(target, { recursive: true });
  await writeFile(path.join(target, 'stale.txt'), 'not in the snapshot\n');
  const recovery = sample('03-recovery-volume.yaml', namespace) as Sample & { spec: { repository: { namespace?: string }; recoverTo: { volume: Record<string, unknown> } } };
  recovery.spec.repository.namespace = namespace;
  recovery.spec.recoverTo.volume = { mountPath: recovery.spec.recoverTo.volume.mountPath, hostPath: { path: target } };
  await applyYaml(cluster, stringify(recovery));
  const name = 'recovery-volume-demo';

  const job = await jobOf(namespace, `${name}-recovery`);
  await assertPlannedJob(namespace, name, 'stash-volume-recovery', job);
  const ready = await eventually('Ready=True on the Recovery', async () => (await getRecovery(namespace, name))?.status?.conditions?.find((c) => c.type === 'Ready' && c.status === 'True'));
  assert.equal(ready.reason, 'JobCreated');
  assert.ok((await eventsOf(namespace, name)).some((e) => e.reason === 'RecoveryJobCreated'));

  const pod = await podOfJob(namespace, job.metadata?.name ?? '');
  assert.equal(pod.metadata?.ownerReferences?.[0]?.kind, 'Job');
  assert.equal(pod.metadata?.ownerReferences?.[0]?.name, job.metadata?.name);
  for (const container of [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])]) {
    const result = await runPodContainer(pod, container.name);
    assert.equal(result.exitCode, 0, `container ${container.name} failed:\n${result.stderr.slice(-4000)}\n${result.stdout.slice(-2000)}`);
  }

  // The one path's content lands directly in the volume, byte for byte; the stale file is gone.
  const restored = await fileContents(target);
  assert.equal(restored.size, 3, JSON.stringify([...restored.keys()]));
  assert.deepEqual(restored, await fileContents(dataDir));

  const r = await recoveryFinished(namespace, name);
  assert.equal(r.status?.phase, 'Succeeded', JSON.stringify(r.status));
  assert.equal(r.status?.snapshotId, snapshotId);
  assert.deepEqual(r.status?.recoveredHosts?.map((h) => [h.host, h.phase, h.snapshotId, h.generation, h.pod]), [['host-0', 'Succeeded', snapshotId, r.metadata.generation, pod.metadata?.name]]);
  assert.ok((r.status?.recoveredHosts?.[0]?.files ?? 0) >= 3, JSON.stringify(r.status));
  const events = await eventually('a RecoverySucceeded Event', async () => {
    const list = await eventsOf(namespace, name);
    return list.some((e) => e.reason === 'RecoverySucceeded') ? list : undefined;
  });
  assert.ok(events.every((e) => e.type === 'Normal'), JSON.stringify(events));
});

test('workload: a Deployment Recovery puts the init container in the pod template; its Pod recovers once (IfNotRecovered), then on every start (Always); deleting the Recovery restores the template exactly', { timeout: 300_000 }, async () => {
  const namespace = ns.workload;
  const repo = await localRepository(namespace);
  const appDir = path.join(dir, namespace, 'app-data');
  await randomTree(appDir, 'workload');
  const snapshotId = await volumeSnapshot(repo, appDir, '/data');
  const snapshotTree = await fileContents(appDir);
  // The app's data is lost after the backup: a file changed, one deleted, one the snapshot lacks.
  await writeFile(path.join(appDir, 'index.html'), 'corrupted\n');
  await rm(path.join(appDir, 'nested/random.bin'));
  await writeFile(path.join(appDir, 'nested/junk.txt'), 'not in the snapshot\n');

  // The design's Deployment (without its default-backup annotations), its data volume a hostPath at /data.
  const demo = sample('11-deployment-default-backup.yaml', namespace) as Sample & { spec: { template: { spec: { containers: V1Container[]; volumes: unknown[] } } } };
  delete demo.metadata.annotations;
  demo.spec.template.spec.volumes = [{ name: 'source-data', hostPath: { path: appDir, type: 'Directory' } }];
  const [app] = demo.spec.template.spec.containers;
  assert.ok(app?.volumeMounts?.[0]);
  app.volumeMounts[0].mountPath = '/data';
  await applyYaml(cluster, stringify(demo));
  await eventually('the Deployment to settle', async () => {
    const d = await deployment(namespace);
    return d.status?.observedGeneration === d.metadata?.generation && d.status?.replicas === 1 ? d : undefined;
  });
  const original = await deployment(namespace);

  // The design's "Recover into same Workload" sample: the volume recovery agent (the sample names the
  // PostgreSQL one, which has no business in a busybox Deployment), paths = what the app mounts.
  const recovery = sample('04-recovery-workload.yaml', namespace) as Sample & { spec: { repository: { namespace?: string }; recoveryAgent: string; paths: string[] } };
  const name = 'recovery-database-demo';
  recovery.spec.repository.namespace = namespace;
  recovery.spec.recoveryAgent = 'stash-volume-recovery';
  recovery.spec.paths = ['/data'];
  await applyYaml(cluster, stringify(recovery));

  const hasInit = (t: V1PodTemplateSpec | undefined): boolean => (t?.spec?.initContainers ?? []).some((c) => c.name === 'stash-recover');
  const injected = await eventually('the recovery init container in the pod template', async () => {
    const d = await deployment(namespace);
    return hasInit(d.spec?.template) ? d : undefined;
  }, 60_000);
  const plan = planInitContainer({
    recovery: recoverySchema.parse(await getRecovery(namespace, name)),
    agentTemplate: agentTemplateSchema.parse(await custom().getClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name: 'stash-volume-recovery' })),
    repository: repositorySchema.parse(await getCustom('repositories', namespace, 'stash-backup-repo')),
    workload: { ...original, apiVersion: 'apps/v1', kind: 'Deployment' } as Workload,
    options: { functionsUrl: stack.functionsUrl },
  });
  assert.ok(plan.ok && plan.applyConfig.spec, JSON.stringify(plan));
  const planned = plan.applyConfig.spec.template.spec;
  assert.ok(original.spec?.template.spec);
  assert.deepEqual(canonicalJson(injected.spec?.template), canonicalJson({
    ...original.spec.template,
    spec: {
      ...original.spec.template.spec,
      initContainers: [...(original.spec.template.spec.initContainers ?? []), ...planned.initContainers.map(containerDefaults)],
      volumes: [...(original.spec.template.spec.volumes ?? []), ...planned.volumes.map(volumeDefaults)],
    },
  }));
  const ready = await eventually('Ready=True on the Recovery', async () => (await getRecovery(namespace, name))?.status?.conditions?.find((c) => c.type === 'Ready' && c.status === 'True'));
  assert.equal(ready.reason, 'InitContainerApplied');

  // The Deployment controller rolls out a ReplicaSet whose Pods carry the init container (Pending: no kubelet).
  const podWithInit = async (): Promise<V1Pod> => plain(await eventually('a Pod of the Deployment with the recovery init container', async () => {
    const pods = await core().listNamespacedPod({ namespace, labelSelector: 'app=stash-demo' });
    return pods.items
      .filter((p) => p.metadata?.deletionTimestamp === undefined && (p.spec?.initContainers ?? []).some((c) => c.name === 'stash-recover'))
      .sort((a, b) => String(b.metadata?.creationTimestamp ?? '').localeCompare(String(a.metadata?.creationTimestamp ?? '')))[0];
  }, 60_000));
  const pod = await podWithInit();
  const rsName = pod.metadata?.ownerReferences?.find((o) => o.kind === 'ReplicaSet')?.name ?? '';
  const rs = await apps().readNamespacedReplicaSet({ namespace, name: rsName });
  assert.equal(rs.metadata?.ownerReferences?.[0]?.kind, 'Deployment');
  assert.equal(rs.metadata?.ownerReferences?.[0]?.name, 'stash-demo');
  assert.deepEqual(pod.spec?.initContainers?.map((c) => c.name), ['stash-recover']);

  // First start: the init container restores /data to the snapshot (the junk file removed).
  const first = await runPodContainer(pod, 'stash-recover');
  assert.equal(first.exitCode, 0, `${first.stderr.slice(-4000)}\n${first.stdout.slice(-2000)}`);
  assert.deepEqual(await fileContents(appDir), snapshotTree);
  const r1 = await recoveryFinished(namespace, name);
  assert.equal(r1.status?.phase, 'Succeeded', JSON.stringify(r1.status));
  assert.deepEqual(r1.status?.recoveredHosts?.map((h) => [h.host, h.phase, h.snapshotId, h.generation, h.pod]), [['host-0', 'Succeeded', snapshotId, r1.metadata.generation, pod.metadata?.name]]);
  await eventually('a RecoverySucceeded Event', async () => ((await eventsOf(namespace, name)).some((e) => e.reason === 'RecoverySucceeded') ? true : undefined));

  // Second start, IfNotRecovered: the claim answers 204, the agent exits 0 and restores nothing.
  await writeFile(path.join(appDir, 'index.html'), 'changed by the app after the recovery\n');
  const second = await runPodContainer(await podWithInit(), 'stash-recover');
  assert.equal(second.exitCode, 0, second.stderr.slice(-4000));
  assert.match(second.stdout + second.stderr, /already recovered/);
  assert.equal(await readFile(path.join(appDir, 'index.html'), 'utf8'), 'changed by the app after the recovery\n');
  assert.equal((await getRecovery(namespace, name))?.status?.phase, 'Succeeded');

  // recoveryPolicy Always (the design's "Auto Recovery"): every start recovers.
  await custom().patchNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'recoveries', namespace, name, body: [{ op: 'add', path: '/spec/recoveryPolicy', value: 'Always' }] });
  const generation = (await getRecovery(namespace, name))?.metadata.generation ?? 0;
  assert.ok(generation > r1.metadata.generation);
  for (const start of ['third', 'fourth']) {
    const run = await runPodContainer(await podWithInit(), 'stash-recover');
    assert.equal(run.exitCode, 0, `${start} start: ${run.stderr.slice(-4000)}`);
    assert.doesNotMatch(run.stdout, /already recovered/);
    assert.deepEqual(await fileContents(appDir), snapshotTree, `${start} start restores the snapshot`);
    const r = await recoveryFinished(namespace, name, generation);
    assert.equal(r.status?.phase, 'Succeeded', JSON.stringify(r.status));
    assert.deepEqual(r.status?.recoveredHosts?.map((h) => [h.host, h.phase, h.snapshotId, h.generation]), [['host-0', 'Succeeded', snapshotId, generation]]);
    await writeFile(path.join(appDir, 'index.html'), `changed by the app after the ${start} start\n`);
  }

  // Deleting the Recovery removes exactly what was added (its delete event through the adapter).
  await custom().deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'recoveries', namespace, name });
  await eventually('the Recovery to be released and gone', async () => ((await getRecovery(namespace, name)) === undefined ? true : undefined), 30_000);
  const restored = await deployment(namespace);
  assert.ok(!hasInit(restored.spec?.template));
  assert.deepEqual(restored.spec?.template, original.spec?.template);
});

test('database: the design\'s PostgreSQL Recovery makes run-recovery create its Job; the Job\'s containers run in order and restore the database', { timeout: 300_000 }, async () => {
  const namespace = ns.database;
  postgres = await startPostgres();
  await postgres.psql('CREATE DATABASE mydb;');
  await postgres.psql(`CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);
    INSERT INTO items SELECT g, 'item-' || g, g * 1.5 FROM generate_series(1, 500) g;`, 'mydb');
  const rows = (): Promise<string> => postgres?.psql("SELECT count(*) || '/' || coalesce(string_agg(id || ':' || name || ':' || price, ',' ORDER BY id), '') FROM items;", 'mydb') ?? Promise.resolve('');
  const want = await rows();
  assert.match(want, /^500\/1:item-1:1\.5,/);

  const repo = await localRepository(namespace);
  const appBinding = sample('05-appbinding.yaml', namespace) as unknown as { spec: { clientConfig: { service: { port: number } } } };
  appBinding.spec.clientConfig.service.port = postgres.port; // the AppBinding's Service port = the real server's port
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'quick-postgres-auth', namespace }, stringData: { POSTGRES_USER: postgres.user, POSTGRES_PASSWORD: postgres.password } }));
  await applyYaml(cluster, stringify(appBinding));

  // The snapshot: the agent's database backup as host-0 (the host a database backup Job writes), of
  // all databases (the design's default; the Recovery sample names none, so it recovers such a snapshot).
  const backup = await agentCli(['backup', '--repo', repo.resticRepo, '--password-file', repo.passwordFile, '--json', '--host', 'host-0',
    '--db-type', 'postgres', '--db-host', postgres.host, '--db-port', String(postgres.port), '--db-user', postgres.user], {}, { DB_PASSWORD: postgres.password });
  assert.equal(backup.code, 0, backup.stderr);

  // The data is lost.
  await postgres.psql('DELETE FROM items WHERE id > 100; UPDATE items SET name = \'broken\';', 'mydb');
  assert.notEqual(await rows(), want);

  const recovery = sample('07-recovery-database.yaml', namespace) as Sample & { spec: { repository: { namespace?: string } } };
  recovery.spec.repository.namespace = namespace;
  await applyYaml(cluster, stringify(recovery));
  const name = 'recovery-database-demo';
  const job = await jobOf(namespace, `${name}-recovery`);
  await assertPlannedJob(namespace, name, 'pg-recovery', job, 'quick-postgres');
  const pod = await podOfJob(namespace, job.metadata?.name ?? '');
  assert.deepEqual([...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].map((c) => c.name), ['pg-recovery', 'stash-update-status']);
  for (const container of [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])]) {
    // DB_HOST: the AppBinding's Service stands for the loopback address of the real server.
    const result = await runPodContainer(pod, container.name, { DB_HOST: '127.0.0.1' });
    assert.equal(result.exitCode, 0, `container ${container.name} failed:\n${result.stderr.slice(-4000)}\n${result.stdout.slice(-2000)}`);
  }
  assert.equal(await rows(), want);

  const r = await recoveryFinished(namespace, name);
  assert.equal(r.status?.phase, 'Succeeded', JSON.stringify(r.status));
  assert.deepEqual(r.status?.recoveredHosts?.map((h) => [h.host, h.phase]), [['host-0', 'Succeeded']]);
  assert.match(r.status?.recoveredHosts?.[0]?.snapshotId ?? '', /^[0-9a-f]{64}$/);
  await eventually('a RecoverySucceeded Event', async () => ((await eventsOf(namespace, name)).some((e) => e.reason === 'RecoverySucceeded') ? true : undefined));
});
