// Stash end to end (issue 4, "What it must show"): the six functions as processes, fed only by
// Knative's real adapters (one ApiServerSource receive adapter per function in place of Broker +
// Trigger, and mtping: test/support/stack.ts), against the real control plane, with the real test
// node (scripts/node.sh: kubelet, containerd, runc, kube-scheduler, kube-proxy and CoreDNS;
// test/support/node.ts) running the pods of the volume and database namespaces from the locally
// built images: the Deployment's busybox with the injected stash-backup sidecar, and
// launch-db-job's Job (init containers, then the status container). The agents run `stash` from
// the stash-agent image with real restic and pg_dump; they reach handle-trigger on the host at the
// pod network's gateway, and PostgreSQL (on the host too) by the name the AppBinding's Service
// gives, quick-postgres.<namespace>.svc, which the node's CoreDNS resolves.
// The pods of the other namespaces (scheduled, convergence, bad input) stay Pending: those tests
// are about what the functions write, not about running it.
//
// The design's samples are used with these changes: the Repository's backend is a LOCAL hostPath
// directory (a temp dir) instead of GCS, so the snapshots can be restored and compared here; the
// AppBinding's clientConfig.service keeps its form (name quick-postgres, scheme http) but its port
// is the test PostgreSQL's, and the Service quick-postgres is a selector-less one for that server
// on the host (hostService: its name resolves to the gateway, which leads to the host's loopback
// with the same port, so the port cannot be mapped to 5432); the database Backup's
// podAttributes.nodeSelector names the test node instead of a GKE node pool. The samples' memory
// limit of 128Mi on the agent's container is kept: the agent fits in it (it did not while every
// in-cluster command loaded @kubernetes/client-node, and before the image carried a compile cache).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { AppsV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi, EventsV1Api } from '@kubernetes/client-node';
import type { V1Container, V1ContainerStatus, V1Deployment, V1Job, V1Pod, V1PodTemplateSpec, V1Volume } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { agentTemplate as agentTemplateSchema, appBinding as appBindingSchema, backup as backupSchema, repository as repositorySchema } from '../shared/api/index.ts';
import type { BackupTrigger } from '../shared/api/index.ts';
import { planSidecar } from '../functions/inject-sidecar/plan.ts';
import type { Workload } from '../functions/inject-sidecar/plan.ts';
import { planDatabaseJob, TRIGGER_LABEL } from '../functions/launch-db-job/plan.ts';
import { BACKUP_LABEL } from '../functions/sweep/plan.ts';
import { createRestic } from '../agent/restic/restic.ts';
import { recoverDatabase } from '../agent/db/index.ts';
import { applyYaml, deleteNamespacesReleasing, freshNamespace, getCustomObject, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { startPostgres } from './support/databases.ts';
import type { PostgresServer } from './support/databases.ts';
import { hostService, NODE_NAME, nodeNamespace, podGateway, podInPhase, podLog, podReport, runningPod } from './support/node.ts';
import { startStack } from './support/stack.ts';
import type { Stack } from './support/stack.ts';
import { triggerCaller } from './support/rbac.ts';
import { designSample as sample } from './support/samples.ts';
import { repoRoot, toolPath } from './support/tools.ts';
import { fileContents } from './support/files.ts';
import { runCaptured } from './support/run.ts';
import type { Captured } from './support/run.ts';
import { waitFor as eventually } from './support/wait.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const PASSWORD = `e2e-${randomBytes(6).toString('hex')}`;

let cluster: Cluster;
let stack: Stack;
let dir: string;
const ns = { volume: '', database: '', scheduled: '', convergence: '', bad: '', system: '' };
let scheduledCreated = 0;

const custom = (): CustomObjectsApi => cluster.kc.makeApiClient(CustomObjectsApi);
const apps = (): AppsV1Api => cluster.kc.makeApiClient(AppsV1Api);
const core = (): CoreV1Api => cluster.kc.makeApiClient(CoreV1Api);
/** The typed client returns class instances: compare plain JSON. */
const plain = <T>(value: T): T => JSON.parse(JSON.stringify(value ?? null)) as T;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const getCustom = <T>(plural: string, namespace: string, name: string, group = GROUP, version = VERSION): Promise<T | undefined> =>
  getCustomObject<T>(cluster, plural, namespace, name, group, version);

interface BackupObject {
  metadata: { name: string; namespace: string; uid: string; creationTimestamp: string; finalizers?: string[] };
  status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
}

async function deployment(namespace: string, name = 'stash-demo'): Promise<V1Deployment> {
  return plain(await apps().readNamespacedDeployment({ name, namespace }));
}

async function warningEvents(namespace: string, regarding: string): Promise<{ reason: string; note: string }[]> {
  const list = await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace });
  return list.items.filter((e) => e.regarding?.name === regarding && e.type === 'Warning').map((e) => ({ reason: e.reason ?? '', note: e.note ?? '' }));
}

async function triggersOf(namespace: string): Promise<BackupTrigger[]> {
  const list = await custom().listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backuptriggers', namespace }) as { items: BackupTrigger[] };
  return list.items;
}

async function createTrigger(namespace: string, name: string, backup: string): Promise<void> {
  await custom().createNamespacedCustomObject({
    group: GROUP, version: VERSION, plural: 'backuptriggers', namespace,
    body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'BackupTrigger', metadata: { name, namespace }, spec: { targetBackup: { name: backup } } },
  });
}

async function runFinished(namespace: string, name: string, timeoutMs = 120_000): Promise<BackupTrigger> {
  return eventually(`BackupTrigger ${namespace}/${name} to finish`, async () => {
    const t = await getCustom<BackupTrigger>('backuptriggers', namespace, name);
    return t?.status?.phase === 'Succeeded' || t?.status?.phase === 'Failed' ? t : undefined;
  }, timeoutMs, 500);
}

// ---------------------------------------------------------------------------------------------
// What the apiserver adds to what Stash applies, so a plan compares with the stored object.

function containerDefaults(c: V1Container): V1Container {
  return {
    ...c,
    ...(c.env ? { env: c.env.map((e) => (e.valueFrom?.fieldRef ? { ...e, valueFrom: { fieldRef: { apiVersion: 'v1', ...e.valueFrom.fieldRef } } } : e)) } : {}),
    terminationMessagePath: c.terminationMessagePath ?? '/dev/termination-log',
    terminationMessagePolicy: c.terminationMessagePolicy ?? 'File',
    imagePullPolicy: c.imagePullPolicy ?? 'IfNotPresent',
  };
}

function volumeDefaults(v: V1Volume): V1Volume {
  if (v.secret) return { ...v, secret: { defaultMode: 420, ...v.secret } };
  if (v.projected) return { ...v, projected: { defaultMode: 420, ...v.projected } };
  if (v.hostPath) return { ...v, hostPath: { type: '', ...v.hostPath } };
  return v;
}

/** The original pod template plus what the plan applies (containers and volumes appended, by name). */
function expectedTemplate(original: V1PodTemplateSpec, containers: V1Container[], volumes: V1Volume[]): V1PodTemplateSpec {
  const spec = original.spec;
  assert.ok(spec);
  return {
    ...original,
    spec: {
      ...spec,
      containers: [...spec.containers, ...containers.map(containerDefaults)],
      volumes: [...(spec.volumes ?? []), ...volumes.map(volumeDefaults)],
    },
  };
}

/** Canonical JSON: keys sorted, so two objects compare regardless of key order. */
function canonicalJson(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonicalJson);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonicalJson((value as Record<string, unknown>)[k])]));
  }
  return value;
}

/** mtping ticks on the minute, and every resync repairs what events do: keep the next 15 s clear of a tick. */
async function clearOfTick(): Promise<void> {
  const second = new Date().getSeconds();
  if (second > 44) await sleep((61 - second) * 1000);
}

/** Waits until `fn`'s log has had no line about `namespace` for 2 s. */
async function quiet(fn: string, namespace: string): Promise<void> {
  let count = -1;
  for (let stable = 0; stable < 8;) {
    const now = stack.log(fn).split('\n').filter((l) => l.includes(namespace)).length;
    stable = now === count ? stable + 1 : 0;
    count = now;
    await sleep(250);
  }
}


function runCli(args: string[]): Promise<Captured> {
  return runCaptured(process.execPath, [path.join(repoRoot, 'agent/bin/stash.js'), ...args], { ...process.env, STASH_RESTIC: toolPath('restic') });
}

// ---------------------------------------------------------------------------------------------
// The design's volume sample with a local repository and a hostPath data volume.

interface VolumeSetup { repoDir: string; dataDir: string }

async function volumeSample(namespace: string, name: string): Promise<VolumeSetup> {
  const repoDir = path.join(dir, namespace, 'repository');
  const dataDir = path.join(dir, namespace, 'data');
  await mkdir(repoDir, { recursive: true });
  await mkdir(path.join(dataDir, 'nested/deeper'), { recursive: true });
  await writeFile(path.join(dataDir, 'index.html'), `<h1>${name}</h1>\n`);
  await writeFile(path.join(dataDir, 'nested/random.bin'), randomBytes(256 * 1024));
  await writeFile(path.join(dataDir, 'nested/deeper/notes.txt'), 'stash e2e\n'.repeat(1000));
  const repository = sample('01-repository.yaml', namespace);
  // LOCAL instead of the design's GCS bucket: a hostPath directory the sidecar mounts at the same path.
  repository.spec.backend = { local: { mountPath: repoDir, subPath: 'repo', hostPath: { path: repoDir } }, storageSecretName: 'local-secret' };
  const demo = sample('11-deployment-default-backup.yaml', namespace) as { metadata: Record<string, unknown>; spec: { template: { spec: { volumes: unknown[] } } } };
  delete demo.metadata.annotations; // the default-backup annotations belong to expand-template's sample
  demo.spec.template.spec.volumes = [{ name: 'source-data', hostPath: { path: dataDir, type: 'Directory' } }];
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'local-secret', namespace }, stringData: { RESTIC_PASSWORD: PASSWORD } }));
  await applyYaml(cluster, stringify(repository));
  await applyYaml(cluster, stringify(demo));
  return { repoDir, dataDir };
}

function volumeBackup(namespace: string, edit: (spec: Record<string, unknown>) => void = () => undefined): string {
  const backup = sample('02-backup-volume.yaml', namespace);
  edit(backup.spec);
  return stringify(backup);
}

const hasSidecar = (t: V1PodTemplateSpec | undefined): boolean => (t?.spec?.containers ?? []).some((c) => c.name === 'stash-backup');

/** What inject-sidecar's plan gives for the stored objects and the original Deployment. */
async function plannedTemplate(namespace: string, backupName: string, original: V1Deployment): Promise<V1PodTemplateSpec> {
  const backup = backupSchema.parse(await getCustom('backups', namespace, backupName));
  const agentTemplate = agentTemplateSchema.parse(await custom().getClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name: 'stash-volume-backup' }));
  const repository = repositorySchema.parse(await getCustom('repositories', namespace, 'stash-backup-repo'));
  const plan = planSidecar({ backup, agentTemplate, repository, workload: { ...original, apiVersion: 'apps/v1', kind: 'Deployment' } as Workload, options: { functionsUrl: stack.functionsUrl } });
  assert.equal(plan.action, 'apply', JSON.stringify(plan));
  assert.ok(plan.action === 'apply' && plan.applyConfig.spec);
  const planned = plan.applyConfig.spec.template.spec;
  assert.ok(original.spec?.template);
  return expectedTemplate(original.spec.template, planned.containers, planned.volumes);
}

let volume: VolumeSetup;
let volumeOriginal: V1Deployment;
let sidecarPod: V1Pod;
let postgres: PostgresServer | undefined;
let freshPostgres: PostgresServer | undefined;
let dbJob: V1Job;
let dbRepoDir: string;

before(async () => {
  cluster = await useCluster();
  dir = await mkdtemp(path.join(os.tmpdir(), 'stash-e2e-'));
  // The volume and database namespaces' pods run on the test node; the others' stay Pending.
  const onNode: readonly (keyof typeof ns)[] = ['volume', 'database'];
  for (const key of Object.keys(ns) as (keyof typeof ns)[]) {
    ns[key] = onNode.includes(key) ? await nodeNamespace(cluster, `e2e-${key}`) : await freshNamespace(cluster, `e2e-${key}`);
  }
  await applyYaml(cluster, await readFile(path.join(repoRoot, 'shared/api/defaults/agent-templates.yaml'), 'utf8'));

  // The scheduled Backup is created first, so its first `@every 1m` tick (on the minute) has likely
  // passed by the time its test runs.
  await volumeSample(ns.scheduled, 'scheduled');
  await applyYaml(cluster, volumeBackup(ns.scheduled, (spec) => { spec.schedule = '@every 1m'; }));
  scheduledCreated = Date.parse((await getCustom<BackupObject>('backups', ns.scheduled, 'backup-volume-demo'))?.metadata.creationTimestamp ?? '');

  stack = await startStack({
    cluster,
    stateDir: path.join(dir, 'stack'),
    systemNamespace: ns.system,
    namespaces: [ns.volume, ns.database, ns.scheduled, ns.convergence, ns.bad],
    agentHost: podGateway, // the agents in the node's pods reach handle-trigger at the gateway
  });
});

after(async () => {
  await stack?.stop();
  await postgres?.stop();
  await freshPostgres?.stop();
  // Backups hold inject-sidecar's finalizer: with the stack gone, nobody would remove it.
  await deleteNamespacesReleasing(cluster, Object.values(ns), 'backups');
  if (process.env.STASH_E2E_KEEP === undefined) await rm(dir, { recursive: true, force: true });
  else console.log(`kept ${dir} (stack logs in ${path.join(dir, 'stack')})`);
});

test('volume: the adapters\' events make inject-sidecar patch the Deployment exactly as planned; the rollout\'s Pod runs on the node with the sidecar', { timeout: 240_000 }, async () => {
  volume = await volumeSample(ns.volume, 'volume');
  volumeOriginal = await deployment(ns.volume);
  assert.ok(!hasSidecar(volumeOriginal.spec?.template));

  await clearOfTick();
  await applyYaml(cluster, volumeBackup(ns.volume));
  const injected = await eventually('the sidecar in the Deployment', async () => {
    const d = await deployment(ns.volume);
    return hasSidecar(d.spec?.template) ? d : undefined;
  }, 60_000);
  assert.deepEqual(canonicalJson(injected.spec?.template), canonicalJson(await plannedTemplate(ns.volume, 'backup-volume-demo', volumeOriginal)));
  const sidecar = injected.spec?.template.spec?.containers.find((c) => c.name === 'stash-backup');
  assert.equal(sidecar?.env?.find((e) => e.name === 'STASH_FUNCTIONS_URL')?.value, stack.functionsUrl);
  assert.deepEqual(injected.spec?.strategy, volumeOriginal.spec?.strategy);
  // Whichever event got there first (the Backup's add, or an update of its Deployment) came from the receive adapter.
  const applied = await eventually('inject-sidecar\'s log of the apply', () => Promise.resolve(stack.log('inject-sidecar').split('\n')
    .find((l) => l.includes(`"namespace":"${ns.volume}"`) && l.includes('applied the backup sidecar'))));
  assert.match(applied, /"eventType":"ref\.(add|update)"/);

  const backup = await getCustom<BackupObject>('backups', ns.volume, 'backup-volume-demo');
  assert.equal(backup?.status?.conditions?.find((c) => c.type === 'SidecarInjected')?.status, 'True');

  // The Deployment controller rolls out a ReplicaSet whose Pod carries the sidecar; the node runs
  // it: busybox and the agent, both started and ready.
  sidecarPod = plain(await runningPod(cluster, ns.volume, 'app=stash-demo', (p) => (p.spec?.containers ?? []).some((c) => c.name === 'stash-backup') &&
    (p.status?.containerStatuses ?? []).length === 2 && (p.status?.containerStatuses ?? []).every((c) => c.ready === true && c.state?.running !== undefined), 180_000));
  assert.equal(sidecarPod.spec?.nodeName, NODE_NAME);
  const rsName = sidecarPod.metadata?.ownerReferences?.find((o) => o.kind === 'ReplicaSet')?.name ?? '';
  const rs = await apps().readNamespacedReplicaSet({ namespace: ns.volume, name: rsName });
  assert.equal(rs.metadata?.ownerReferences?.[0]?.name, 'stash-demo');
  assert.deepEqual(plain(sidecarPod.spec?.containers.map((c) => c.name)), ['busybox', 'stash-backup']);
});

test('database: a BackupTrigger makes launch-db-job create exactly the planned Job; the Job controller creates its Pod', { timeout: 120_000 }, async () => {
  postgres = await startPostgres();
  await postgres.psql('CREATE DATABASE mydb; CREATE DATABASE anotherdb;');
  await postgres.psql(`CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);
    INSERT INTO items SELECT g, 'item-' || g, g * 1.5 FROM generate_series(1, 500) g;`, 'mydb');
  await postgres.psql("CREATE TABLE events (v bigint, at text); INSERT INTO events SELECT g, 'e' || g FROM generate_series(1, 2000) g;", 'anotherdb');

  const namespace = ns.database;
  dbRepoDir = path.join(dir, namespace, 'repository');
  await mkdir(dbRepoDir, { recursive: true });
  const repository = sample('01-repository.yaml', namespace);
  repository.spec.backend = { local: { mountPath: dbRepoDir, subPath: 'repo', hostPath: { path: dbRepoDir } }, storageSecretName: 'local-secret' };
  const appBinding = sample('05-appbinding.yaml', namespace) as unknown as { spec: { clientConfig: { service: { name: string; port: number; scheme: string } } } };
  // The design's Service, for the PostgreSQL on the host: the Job's pod finds it by name (CoreDNS).
  assert.deepEqual(appBinding.spec.clientConfig.service, { name: 'quick-postgres', port: 5432, scheme: 'http' }, 'the design\'s AppBinding');
  appBinding.spec.clientConfig.service.port = postgres.port;
  await hostService(cluster, namespace, 'quick-postgres', postgres.port);
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'local-secret', namespace }, stringData: { RESTIC_PASSWORD: PASSWORD } }));
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'quick-postgres-auth', namespace }, stringData: { POSTGRES_USER: postgres.user, POSTGRES_PASSWORD: postgres.password } }));
  await applyYaml(cluster, stringify(repository));
  await applyYaml(cluster, stringify(appBinding));
  const backup = sample('06-backup-database.yaml', namespace);
  backup.spec.backupAgent = { name: 'pg-backup' };
  // The design's GKE node pool does not exist here: the same podAttributes, naming the test node.
  (backup.spec.podAttributes as { nodeSelector: Record<string, string> }).nodeSelector = { 'kubernetes.io/hostname': NODE_NAME };
  await applyYaml(cluster, stringify(backup));
  await eventually('launch-db-job to accept the database Backup', async () => {
    const b = await getCustom<BackupObject>('backups', namespace, 'backup-database-demo');
    return b?.status?.conditions?.find((c) => c.type === 'DatabaseJobReady' && c.status === 'True');
  });

  await createTrigger(namespace, 'backup-database-demo-e2e', 'backup-database-demo');
  const jobs = await eventually('the Job of the run', async () => {
    const list = await cluster.kc.makeApiClient(BatchV1Api).listNamespacedJob({ namespace, labelSelector: `${TRIGGER_LABEL}=backup-database-demo-e2e` });
    return list.items.length > 0 ? list.items : undefined;
  });
  await sleep(1_000); // later events for the same run must not add a second Job
  const again = await cluster.kc.makeApiClient(BatchV1Api).listNamespacedJob({ namespace, labelSelector: `${TRIGGER_LABEL}=backup-database-demo-e2e` });
  assert.equal(again.items.length, 1);
  dbJob = plain(jobs[0] as V1Job);

  const planned = planDatabaseJob({
    backup: backupSchema.parse(await getCustom('backups', namespace, 'backup-database-demo')),
    trigger: (await getCustom<BackupTrigger>('backuptriggers', namespace, 'backup-database-demo-e2e')) as BackupTrigger,
    agentTemplate: agentTemplateSchema.parse(await custom().getClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name: 'pg-backup' })),
    appBinding: appBindingSchema.parse(await getCustom('appbindings', namespace, 'quick-postgres', 'appcatalog.appscode.com', 'v1alpha1')),
    repository: repositorySchema.parse(await getCustom('repositories', namespace, 'stash-backup-repo')),
    options: { functionsUrl: stack.functionsUrl },
  });
  assert.ok(planned.ok, JSON.stringify(planned));
  const want = plain(planned.job);
  assert.equal(dbJob.metadata?.name, want.metadata?.name);
  assert.deepEqual(dbJob.metadata?.ownerReferences, want.metadata?.ownerReferences);
  for (const [k, v] of Object.entries(want.metadata?.labels ?? {})) assert.equal(dbJob.metadata?.labels?.[k], v, `label ${k}`);
  const podSpec = dbJob.spec?.template.spec;
  const wantSpec = want.spec?.template.spec;
  assert.deepEqual(canonicalJson(podSpec?.initContainers), canonicalJson(wantSpec?.initContainers?.map(containerDefaults)));
  assert.deepEqual(canonicalJson(podSpec?.containers), canonicalJson(wantSpec?.containers.map(containerDefaults)));
  assert.deepEqual(canonicalJson(podSpec?.volumes), canonicalJson(wantSpec?.volumes?.map(volumeDefaults)));
  for (const field of ['restartPolicy', 'automountServiceAccountToken', 'nodeSelector'] as const) {
    assert.deepEqual(podSpec?.[field], wantSpec?.[field], field);
  }
  for (const field of ['backoffLimit', 'activeDeadlineSeconds', 'ttlSecondsAfterFinished'] as const) {
    assert.equal(dbJob.spec?.[field], want.spec?.[field], field);
  }
  assert.deepEqual(podSpec?.nodeSelector, { 'kubernetes.io/hostname': NODE_NAME }, 'podAttributes.nodeSelector');
  for (const c of [...(podSpec?.initContainers ?? []), ...(podSpec?.containers ?? [])]) {
    const env = (name: string): string | undefined => c.env?.find((e) => e.name === name)?.value;
    if (env('DB_HOST') === undefined) continue;
    assert.deepEqual([env('DB_HOST'), env('DB_PORT'), env('DB_SCHEME')], [`quick-postgres.${namespace}.svc`, String(postgres.port), 'http'], `${c.name}: the AppBinding's service`);
  }
  assert.ok([...(podSpec?.initContainers ?? []), ...(podSpec?.containers ?? [])].some((c) => c.env?.some((e) => e.name === 'DB_HOST')), 'some container gets DB_HOST');

  const pod = await eventually('the Job\'s Pod', async () => {
    const pods = await core().listNamespacedPod({ namespace, labelSelector: `batch.kubernetes.io/job-name=${dbJob.metadata?.name ?? ''}` });
    return pods.items[0];
  });
  assert.equal(pod.metadata?.ownerReferences?.[0]?.name, dbJob.metadata?.name);
});

/** The run, finished; fails with the pod's status, logs and Events when it did not Succeed. */
async function runSucceeded(namespace: string, name: string, pod: V1Pod): Promise<BackupTrigger> {
  let run: BackupTrigger;
  try {
    run = await runFinished(namespace, name, 180_000);
  } catch (error) {
    throw new Error(`${String(error)}\n${await podReport(cluster, pod)}`, { cause: error });
  }
  assert.equal(run.status?.phase, 'Succeeded', `${JSON.stringify(run.status)}\n${await podReport(cluster, pod)}`);
  return run;
}

test('volume, the kubelet\'s part: the sidecar on the node runs a BackupTrigger and one from the HTTP endpoint, and keeps running; the snapshot restores byte for byte', { timeout: 420_000 }, async () => {
  assert.ok(sidecarPod, 'the volume test ran first');
  const namespace = ns.volume;
  const podName = sidecarPod.metadata?.name ?? '';

  await createTrigger(namespace, 'backup-volume-demo-now', 'backup-volume-demo');
  const run = await runSucceeded(namespace, 'backup-volume-demo-now', sidecarPod);
  const snapshotId = run.status?.hosts?.find((h) => h.host === 'host-0')?.snapshotId ?? '';
  assert.match(snapshotId, /^[0-9a-f]{64}$/, `the run records its snapshot: ${JSON.stringify(run.status)}`);

  // The same through handle-trigger's authenticated endpoint, as a ServiceAccount allowed to create runs.
  const token = await triggerCaller(cluster, namespace);
  const created = await eventually('the endpoint to accept the ServiceAccount (RBAC takes effect)', async () => {
    const res = await fetch(`${stack.functionsUrl}/v1/namespaces/${namespace}/backups/backup-volume-demo/trigger`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    return res.status === 201 ? await res.json() as { name: string } : undefined;
  }, 15_000, 500);
  const second = await runSucceeded(namespace, created.name, sidecarPod);
  const secondSnapshot = second.status?.hosts?.find((h) => h.host === 'host-0')?.snapshotId ?? '';
  assert.match(secondSnapshot, /^[0-9a-f]{64}$/, JSON.stringify(second.status));
  assert.notEqual(secondSnapshot, snapshotId, 'each run makes its own snapshot');

  // The sidecar (and the app) kept running between and after the runs: the same containers, never restarted.
  const pod = plain(await core().readNamespacedPod({ namespace, name: podName }));
  assert.equal(pod.status?.phase, 'Running', await podReport(cluster, pod));
  for (const name of ['busybox', 'stash-backup']) {
    const status: V1ContainerStatus | undefined = pod.status?.containerStatuses?.find((c) => c.name === name);
    assert.ok(status?.state?.running, `${name} is running: ${JSON.stringify(status)}`);
    assert.equal(status.restartCount, 0, `${name} never restarted: ${JSON.stringify(status)}`);
  }
  // The agent in the sidecar claimed and reported both runs.
  const log = await podLog(cluster, namespace, podName, 'stash-backup');
  for (const trigger of ['backup-volume-demo-now', created.name]) {
    for (const said of ['claimed a run', 'reported the outcome']) {
      assert.ok(log.split('\n').some((l) => l.includes(said) && l.includes(`"trigger":"${trigger}"`)), `the sidecar's log says "${said}" for ${trigger}:\n${log}`);
    }
  }

  // Restore the first run's snapshot (written by restic in the pod into the hostPath repository)
  // with the standalone CLI on the host and compare bytes.
  const passwordFile = path.join(dir, 'password');
  await writeFile(passwordFile, PASSWORD, { mode: 0o600 });
  const target = path.join(dir, 'restored-volume');
  const recovered = await runCli(['recover', '--repo', path.join(volume.repoDir, 'repo'), '--password-file', passwordFile, '--snapshot', snapshotId, '--target', target]);
  assert.equal(recovered.code, 0, recovered.stderr);
  const restored = await fileContents(path.join(target, 'source/data'));
  const source = await fileContents(volume.dataDir);
  assert.equal(restored.size, 3);
  assert.deepEqual(restored, source);
});

test('database, the kubelet\'s part: the Job\'s pod runs its containers in order on the node, the run succeeds, the dump restores into a fresh server', { timeout: 420_000 }, async () => {
  assert.ok(dbJob && postgres, 'the database test ran first');
  const namespace = ns.database;
  const jobName = dbJob.metadata?.name ?? '';
  const listed = plain((await core().listNamespacedPod({ namespace, labelSelector: `batch.kubernetes.io/job-name=${jobName}` })).items[0] as V1Pod);
  let pod: V1Pod;
  try {
    pod = plain(await podInPhase(cluster, namespace, listed.metadata?.name ?? '', ['Succeeded', 'Failed'], 300_000));
  } catch (error) {
    throw new Error(`${String(error)}\n${await podReport(cluster, listed)}`, { cause: error });
  }
  assert.equal(pod.status?.phase, 'Succeeded', await podReport(cluster, pod));
  assert.equal(pod.spec?.nodeName, NODE_NAME);

  // Init containers one after the other, then the container: each exited 0, none started before the previous ended.
  const order = [
    ...(pod.spec?.initContainers ?? []).map((c) => pod.status?.initContainerStatuses?.find((s) => s.name === c.name) ?? { name: c.name }),
    ...(pod.spec?.containers ?? []).map((c) => pod.status?.containerStatuses?.find((s) => s.name === c.name) ?? { name: c.name }),
  ];
  assert.deepEqual(order.map((s) => s.name), ['stash-init', 'pg-backup', 'stash-update-status']);
  let previousEnd = 0;
  for (const status of order) {
    const terminated = (status as V1ContainerStatus).state?.terminated;
    assert.equal(terminated?.exitCode, 0, `container ${status.name}: ${JSON.stringify(status)}\n${await podReport(cluster, pod)}`);
    const started = Date.parse(String(terminated.startedAt));
    const finished = Date.parse(String(terminated.finishedAt));
    // Container times have second resolution: "not before" is all they can show.
    assert.ok(started >= previousEnd && finished >= started, `${status.name} ran after the previous container: ${JSON.stringify(order)}`);
    previousEnd = finished;
  }
  const job = await eventually('the Job to complete', async () => {
    const j = await cluster.kc.makeApiClient(BatchV1Api).readNamespacedJob({ namespace, name: jobName });
    return j.status?.conditions?.some((c) => c.type === 'Complete' && c.status === 'True') ? j : undefined;
  });
  assert.equal(job.status?.succeeded, 1);
  assert.equal(job.status?.failed ?? 0, 0);

  await runSucceeded(namespace, 'backup-database-demo-e2e', pod);

  freshPostgres = await startPostgres();
  const restic = createRestic({ repository: path.join(dbRepoDir, 'repo'), env: { RESTIC_PASSWORD: PASSWORD }, args: [], files: [] },
    { binary: toolPath('restic'), cacheDir: path.join(dir, 'restic-cache') });
  await recoverDatabase(restic, { engine: 'postgres', host: freshPostgres.host, port: freshPostgres.port, user: freshPostgres.user, password: freshPostgres.password, databases: ['mydb', 'anotherdb'] });
  const contents = async (pg: PostgresServer): Promise<string[]> => [
    await pg.psql("SELECT string_agg(id || ':' || name || ':' || price, ',' ORDER BY id) FROM items;", 'mydb'),
    await pg.psql("SELECT count(*), sum(v), string_agg(at, ',' ORDER BY v) FROM events;", 'anotherdb'),
  ];
  const want = await contents(postgres);
  assert.match(want[0] ?? '', /^1:item-1:1\.5,/);
  assert.deepEqual(await contents(freshPostgres), want);
});

test('scheduled: a real mtping tick reaches the sweep, which creates exactly one BackupTrigger for the `@every 1m` tick', { timeout: 260_000 }, async () => {
  const namespace = ns.scheduled;
  const pingSource = `${ns.system}/${stack.pingSources.sweep}`;
  const isRun = (t: BackupTrigger): boolean => t.metadata.labels?.[BACKUP_LABEL] === 'backup-volume-demo';
  await eventually('the sweep to create the scheduled run', async () => ((await triggersOf(namespace)).some(isRun) ? true : undefined), 200_000, 1_000);
  const triggers = (await triggersOf(namespace)).filter(isRun);
  assert.equal(triggers.length, 1, JSON.stringify(triggers.map((t) => t.metadata.name)));
  const name = triggers[0]?.metadata.name ?? '';
  const tick = Number(/^backup-volume-demo-(\d+)$/.exec(name)?.[1]);
  assert.ok(Number.isInteger(tick), name);
  // `@every` ticks are counted from the Unix epoch: on the minute, after the Backup was created.
  assert.equal((tick * 1000) % 60_000, 0, `${name} is named for an @every 1m tick`);
  assert.ok(tick * 1000 > scheduledCreated, `${name}: a tick after the creation`);

  // Nothing but mtping called the sweep so far: the run came from a real tick of its PingSource.
  const sweeps = stack.log('sweep').split('\n').filter((l) => l.includes('"msg":"sweep done"')).map((l) => JSON.parse(l) as { pingSource?: string; created: number; now: string });
  assert.ok(sweeps.length > 0 && sweeps.every((l) => l.pingSource === pingSource), JSON.stringify(sweeps));
  assert.ok(sweeps.some((l) => l.created >= 1 && Date.parse(l.now) >= tick * 1000), JSON.stringify(sweeps));

  // The OpenFaaS cron-connector call for the same minute starts nothing more.
  const cron = await fetch(`${stack.urls.sweep}/`, { method: 'POST', headers: { 'x-connector': 'cron-connector' } });
  assert.equal(cron.status, 202);
  assert.equal((await triggersOf(namespace)).length, 1);
});

test('convergence: a Backup created while the adapters were down is repaired by a ping resync; deleting it restores the template exactly', { timeout: 180_000 }, async () => {
  const namespace = ns.convergence;
  await volumeSample(namespace, 'convergence');
  // Let the Deployment controller settle first: its status updates are events that would reach
  // inject-sidecar (rightly: it is level-triggered) after the adapters restart.
  await eventually('the Deployment to settle', async () => {
    const d = await deployment(namespace);
    return d.status?.observedGeneration === d.metadata?.generation && d.status?.replicas === 1 ? d : undefined;
  });
  await quiet('inject-sidecar', namespace);
  const original = await deployment(namespace);
  await clearOfTick();
  await stack.stopEventAdapters();
  await applyYaml(cluster, volumeBackup(namespace));
  await stack.startEventAdapters();
  // A new ApiServerSource sends nothing for objects that exist: no sidecar comes from the events.
  await sleep(3_000);
  assert.ok(!hasSidecar((await deployment(namespace)).spec?.template), 'no event reached inject-sidecar for the existing Backup');

  // The per-minute resync (here its OpenFaaS cron-connector call, which mtping's tick also does) repairs it.
  const resync = await fetch(`${stack.urls['inject-sidecar']}/`, { method: 'POST', headers: { 'x-connector': 'cron-connector' } });
  assert.equal(resync.status, 202);
  const injected = await deployment(namespace);
  assert.ok(hasSidecar(injected.spec?.template));
  assert.deepEqual(canonicalJson(injected.spec?.template), canonicalJson(await plannedTemplate(namespace, 'backup-volume-demo', original)));

  // Deleting the Backup (its delete event goes through the restarted adapter) removes exactly what was added.
  await custom().deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backups', namespace, name: 'backup-volume-demo' });
  await eventually('the Backup to be released and gone', async () => ((await getCustom('backups', namespace, 'backup-volume-demo')) === undefined ? true : undefined), 30_000);
  const restored = await deployment(namespace);
  assert.deepEqual(restored.spec?.template, original.spec?.template);
});

test('bad input through the adapters: missing workload, AgentTemplate, Repository, AppBinding and an unsupported kind give a condition and a Warning Event; nothing is patched or created', { timeout: 120_000 }, async () => {
  const namespace = ns.bad;
  await volumeSample(namespace, 'bad');
  const before = await deployment(namespace);
  const cases: { name: string; missing: RegExp; edit: (spec: Record<string, unknown>) => void; file?: string }[] = [
    { name: 'no-workload', missing: /Deployment .*nowhere/, edit: (s) => { s.targetRef = { apiVersion: 'apps/v1', kind: 'Deployment', name: 'nowhere' }; } },
    { name: 'no-agent', missing: /AgentTemplate no-such-agent/, edit: (s) => { s.backupAgent = { name: 'no-such-agent' }; } },
    { name: 'no-repository', missing: /Repository .*no-such-repo/, edit: (s) => { s.repository = { name: 'no-such-repo' }; } },
    { name: 'no-appbinding', missing: /AppBinding .*no-such-db/, file: '06-backup-database.yaml', edit: (s) => { s.backupAgent = { name: 'pg-backup' }; s.targetRef = { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'no-such-db' }; } },
    { name: 'unsupported-kind', missing: /CronJob/, edit: (s) => { s.targetRef = { apiVersion: 'batch/v1', kind: 'CronJob', name: 'stash-demo' }; } },
  ];
  for (const c of cases) {
    const backup = sample(c.file ?? '02-backup-volume.yaml', namespace);
    backup.metadata.name = c.name;
    c.edit(backup.spec);
    await applyYaml(cluster, stringify(backup));
  }
  for (const c of cases) {
    const refused = await eventually(`a False condition on Backup ${c.name} naming what is missing`, async () => {
      const b = await getCustom<BackupObject>('backups', namespace, c.name);
      return b?.status?.conditions?.find((x) => x.status === 'False' && c.missing.test(x.message));
    });
    assert.ok(refused.reason.length > 0);
    const events = await eventually(`a Warning Event for Backup ${c.name}`, async () => {
      const list = await warningEvents(namespace, c.name);
      return list.some((e) => c.missing.test(e.note)) ? list : undefined;
    });
    assert.ok(events.some((e) => e.reason === refused.reason), `${c.name}: ${JSON.stringify(events)} / ${refused.reason}`);
  }
  const after = await deployment(namespace);
  assert.equal(after.metadata?.generation, before.metadata?.generation, 'the Deployment was not patched');
  assert.deepEqual(after.spec?.template, before.spec?.template);
  assert.equal((await cluster.kc.makeApiClient(BatchV1Api).listNamespacedJob({ namespace })).items.length, 0, 'no Job');
  assert.equal((await triggersOf(namespace)).length, 0, 'no run');
});
