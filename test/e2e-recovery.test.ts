// Recovery end to end (docs/recovery.md): run-recovery and handle-trigger as processes fed by
// Knative's real adapters (test/support/stack.ts, as in test/e2e.test.ts), against the real control
// plane; the pods run-recovery renders run on the real test node (scripts/node.sh: kubelet,
// containerd, runc) from the locally built stash-agent and busybox images: the volume recovery
// Job's Pod, the Deployment's Pods with the recovery init container (the kubelet runs it at every
// start of a Pod; it recovers at the first start under IfNotRecovered and at every start under
// Always) and the PostgreSQL recovery Job's Pod. The agents claim from and report to handle-trigger at the pod network's
// gateway with their projected ServiceAccount token; the PostgreSQL test server on the host's
// loopback is reached at the gateway too (the AppBinding's clientConfig.url).
//
// The snapshots are taken by the agent's standalone CLI in a pod on the node (the stash-agent
// image): as host-0, the host a Deployment's or a database's backup writes, with the data
// hostPath-mounted at the container path (/source/data), so the snapshot records the paths the
// backup sidecar would; the repository is the same hostPath the Repository names.
// The design's samples are used with the changes a local run needs: the Repository's backend is a
// LOCAL hostPath directory instead of GCS, the recovered volume and the Deployment's data volume
// hostPath directories instead of a PVC and a ConfigMap, and the AppBinding addresses the server
// by url at the pod network's gateway (test/e2e.test.ts shows the design's clientConfig.service,
// by name through the node's CoreDNS).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { AppsV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi, EventsV1Api } from '@kubernetes/client-node';
import type { V1Container, V1Deployment, V1EnvVar, V1Job, V1Pod, V1PodTemplateSpec, V1Volume } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { agentTemplate as agentTemplateSchema, appBinding as appBindingSchema, recovery as recoverySchema, repository as repositorySchema } from '../shared/api/index.ts';
import { planInitContainer, planRecoveryJob } from '../functions/run-recovery/plan.ts';
import type { Workload } from '../functions/run-recovery/plan.ts';
import { applyYaml, deleteNamespacesReleasing, freshNamespace, getCustomObject, useCluster } from './support/cluster.ts';
import { createPodWhenReady, exitCodes, nodeNamespace, podEnded, podGateway, podLog, podLogs, runningPod } from './support/node.ts';
import type { Cluster } from './support/cluster.ts';
import { startPostgres } from './support/databases.ts';
import type { PostgresServer } from './support/databases.ts';
import { startStack } from './support/stack.ts';
import type { Stack } from './support/stack.ts';
import { designSample as sample } from './support/samples.ts';
import type { Sample } from './support/samples.ts';
import { repoRoot } from './support/tools.ts';
import { fileContents } from './support/files.ts';
import { waitFor as eventually } from './support/wait.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const PASSWORD = `e2e-recovery-${randomBytes(6).toString('hex')}`;

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


const getCustom = <T>(plural: string, namespace: string, name: string, group = GROUP, version = VERSION): Promise<T | undefined> =>
  getCustomObject<T>(cluster, plural, namespace, name, group, version);

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

const AGENT_IMAGE = 'stash-agent:0.1.0';
/** Where the snapshot pods mount the Repository's storage Secret (its RESTIC_PASSWORD is the repository password). */
const SECRET_DIR = '/etc/stash-repository';
const PASSWORD_FILE = `${SECRET_DIR}/RESTIC_PASSWORD`;

/** A directory on the host, hostPath-mounted at `mountPath` in a pod. */
interface HostMount { hostPath: string; mountPath: string }

/** Waits for the pod to finish; it must have Succeeded (the message carries its logs and events). */
async function succeededPod(namespace: string, name: string): Promise<V1Pod> {
  const pod = plain(await podEnded(cluster, namespace, name));
  assert.equal(pod.status?.phase, 'Succeeded', `pod ${namespace}/${name}: ${JSON.stringify(pod.status)}\n${await podLogs(cluster, pod)}`);
  const codes = exitCodes(pod);
  assert.ok(Object.keys(codes).length > 0 && Object.values(codes).every((c) => c === 0), `pod ${name} exit codes ${JSON.stringify(codes)}`);
  return pod;
}

/**
 * The agent's standalone CLI (`stash <step>...`) in a pod on the node, from the stash-agent image:
 * each step a container, run in order (all but the last as init containers); `mounts` are hostPath
 * volumes at their container paths, the storage Secret `local-secret` at SECRET_DIR. Waits for the
 * pod to Succeed and returns each step's `{"type":"result"}` line.
 */
async function standalonePod(namespace: string, name: string, steps: string[][], mounts: HostMount[], env: V1EnvVar[] = []): Promise<Record<string, unknown>[]> {
  const volumeMounts = [
    ...mounts.map((m, i) => ({ name: `host-${i}`, mountPath: m.mountPath })),
    { name: 'repository-secret', mountPath: SECRET_DIR, readOnly: true },
  ];
  const containers: V1Container[] = steps.map((args, i) => ({
    name: `step-${i}-${args[0] ?? ''}`, image: AGENT_IMAGE, imagePullPolicy: 'IfNotPresent', command: ['stash', ...args], env, volumeMounts,
  }));
  await createPodWhenReady(cluster, namespace, {
    metadata: { name },
    spec: {
      restartPolicy: 'Never',
      initContainers: containers.slice(0, -1),
      containers: containers.slice(-1),
      volumes: [
        ...mounts.map((m, i) => ({ name: `host-${i}`, hostPath: { path: m.hostPath, type: 'Directory' } })),
        { name: 'repository-secret', secret: { secretName: 'local-secret' } },
      ],
    },
  });
  const pod = await succeededPod(namespace, name);
  assert.equal(pod.spec?.nodeName, 'stash-node');
  return Promise.all(containers.map(async (c) => {
    const log = await podLog(cluster, namespace, name, c.name);
    const result = log.split('\n').filter((l) => l.startsWith('{"type":"result"')).at(-1);
    assert.ok(result, `${name}/${c.name} printed no result:\n${log}`);
    return JSON.parse(result) as Record<string, unknown>;
  }));
}

interface LocalRepository { repoDir: string; resticRepo: string }

/** The Repository sample with a LOCAL hostPath backend (a temp dir) and its storage Secret. */
async function localRepository(namespace: string): Promise<LocalRepository> {
  const repoDir = path.join(dir, namespace, 'repository');
  await mkdir(repoDir, { recursive: true });
  const repository = sample('01-repository.yaml', namespace);
  repository.spec.backend = { local: { mountPath: repoDir, subPath: 'repo', hostPath: { path: repoDir } }, storageSecretName: 'local-secret' };
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'local-secret', namespace }, stringData: { RESTIC_PASSWORD: PASSWORD } }));
  await applyYaml(cluster, stringify(repository));
  return { repoDir, resticRepo: path.join(repoDir, 'repo') };
}

/**
 * A snapshot of `dataDir` as the backup sidecar of a Deployment takes it: host-0, the directory at
 * `containerPath`. A pod on the node initialises the repository, backs up and lists the snapshots.
 */
async function volumeSnapshot(namespace: string, repo: LocalRepository, dataDir: string, containerPath: string): Promise<string> {
  const common = ['--repo', repo.resticRepo, '--password-file', PASSWORD_FILE, '--json'];
  const [init, backup, list] = await standalonePod(namespace, 'take-snapshot', [
    ['init', ...common],
    ['backup', ...common, '--host', 'host-0', containerPath],
    ['snapshots', ...common],
  ], [{ hostPath: repo.repoDir, mountPath: repo.repoDir }, { hostPath: dataDir, mountPath: containerPath }]);
  assert.equal(init?.ok, true, JSON.stringify(init));
  const snapshotId = String(backup?.snapshotId);
  assert.match(snapshotId, /^[0-9a-f]{64}$/);
  // The snapshot records the container path, as the sidecar's would.
  const snapshots = (list?.snapshots ?? []) as { id: string; hostname: string; paths: string[] }[];
  assert.deepEqual(snapshots.map((s) => [s.id, s.hostname, s.paths]), [[snapshotId, 'host-0', [containerPath]]]);
  return snapshotId;
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
  // The pods of these namespaces run on the test node; the system namespace only holds the PingSources.
  for (const key of ['volume', 'workload', 'database'] as const) ns[key] = await nodeNamespace(cluster, `e2e-rec-${key}`);
  ns.system = await freshNamespace(cluster, 'e2e-rec-system');
  await applyYaml(cluster, await readFile(path.join(repoRoot, 'shared/api/defaults/agent-templates.yaml'), 'utf8'));
  stack = await startStack({
    cluster,
    stateDir: path.join(dir, 'stack'),
    systemNamespace: ns.system,
    namespaces: [ns.volume, ns.workload, ns.database],
    agentHost: podGateway, // the agents in the node's pods reach handle-trigger at the gateway
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
  const snapshotId = await volumeSnapshot(namespace, repo, dataDir, '/source/data');

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

  const created = await podOfJob(namespace, job.metadata?.name ?? '');
  assert.equal(created.metadata?.ownerReferences?.[0]?.kind, 'Job');
  assert.equal(created.metadata?.ownerReferences?.[0]?.name, job.metadata?.name);
  // The kubelet runs the Job's Pod: its agent claims the Recovery from handle-trigger, restores and reports.
  const pod = await succeededPod(namespace, created.metadata?.name ?? '');
  assert.deepEqual(exitCodes(pod), { 'stash-recover': 0 });
  await eventually(`Job ${job.metadata?.name ?? ''} to complete`, async () => {
    const j = await cluster.kc.makeApiClient(BatchV1Api).readNamespacedJob({ namespace, name: job.metadata?.name ?? '' });
    return j.status?.conditions?.some((c) => c.type === 'Complete' && c.status === 'True') && j.status.succeeded === 1 ? true : undefined;
  }, 60_000);

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

test('workload: a Deployment Recovery puts the init container in the pod template; its Pod recovers once (IfNotRecovered), then on every start (Always); deleting the Recovery restores the template exactly', { timeout: 420_000 }, async () => {
  const namespace = ns.workload;
  const repo = await localRepository(namespace);
  const appDir = path.join(dir, namespace, 'app-data');
  await randomTree(appDir, 'workload');
  const snapshotId = await volumeSnapshot(namespace, repo, appDir, '/source/data');
  const snapshotTree = await fileContents(appDir);
  // The app's data is lost after the backup: a file changed, one deleted, one the snapshot lacks.
  await writeFile(path.join(appDir, 'index.html'), 'corrupted\n');
  await rm(path.join(appDir, 'nested/random.bin'));
  await writeFile(path.join(appDir, 'nested/junk.txt'), 'not in the snapshot\n');

  // The design's Deployment (without its default-backup annotations), its data volume at
  // /source/data a hostPath directory instead of the ConfigMap.
  const demo = sample('11-deployment-default-backup.yaml', namespace) as Sample & { spec: { template: { spec: { containers: V1Container[]; volumes: unknown[] } } } };
  delete demo.metadata.annotations;
  demo.spec.template.spec.volumes = [{ name: 'source-data', hostPath: { path: appDir, type: 'Directory' } }];
  assert.equal(demo.spec.template.spec.containers[0]?.volumeMounts?.[0]?.mountPath, '/source/data');
  await applyYaml(cluster, stringify(demo));
  await eventually('the Deployment to settle', async () => {
    const d = await deployment(namespace);
    return d.status?.observedGeneration === d.metadata?.generation && d.status?.replicas === 1 ? d : undefined;
  });
  const original = await deployment(namespace);
  const hasInit = (t: V1PodTemplateSpec | undefined): boolean => (t?.spec?.initContainers ?? []).some((c) => c.name === 'stash-recover');
  // The app runs on the node before any Recovery (busybox, no init container).
  const beforeRecovery = plain(await runningPod(cluster, namespace, 'app=stash-demo', (p) => !hasInit(p)));
  assert.equal(beforeRecovery.spec?.nodeName, 'stash-node');

  // The design's "Recover into same Workload" sample: the volume recovery agent (the sample names the
  // PostgreSQL one, which has no business in a busybox Deployment); its paths (/source/data) are what the app mounts.
  const recovery = sample('04-recovery-workload.yaml', namespace) as Sample & { spec: { repository: { namespace?: string }; recoveryAgent: string; paths: string[] } };
  const name = 'recovery-database-demo';
  recovery.spec.repository.namespace = namespace;
  recovery.spec.recoveryAgent = 'stash-volume-recovery';
  assert.deepEqual(recovery.spec.paths, ['/source/data']);
  await applyYaml(cluster, stringify(recovery));

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

  // Each start of the app is a new Pod the kubelet runs: the recovery init container first, then busybox.
  const seen = new Set<string>([beforeRecovery.metadata?.name ?? '']);
  const nextStart = async (what: string): Promise<{ pod: V1Pod; log: string }> => {
    const pod = plain(await runningPod(cluster, namespace, 'app=stash-demo', (p) => hasInit(p) && !seen.has(p.metadata?.name ?? ''), 180_000));
    const podName = pod.metadata?.name ?? '';
    seen.add(podName);
    const log = await podLog(cluster, namespace, podName, 'stash-recover');
    const init = pod.status?.initContainerStatuses?.find((s) => s.name === 'stash-recover');
    assert.equal(init?.state?.terminated?.exitCode, 0, `${what}: ${JSON.stringify(pod.status)}\n${log}`);
    assert.equal(init?.restartCount, 0, `${what}: the init container ran once`);
    assert.deepEqual(pod.spec?.initContainers?.map((c) => c.name), ['stash-recover']);
    assert.equal(pod.spec?.nodeName, 'stash-node');
    return { pod, log };
  };
  /** The app restarts: its Pod is deleted and the ReplicaSet makes a new one. */
  const restart = async (pod: V1Pod): Promise<void> => {
    await core().deleteNamespacedPod({ namespace, name: pod.metadata?.name ?? '', gracePeriodSeconds: 1 });
  };

  // First start (the rollout of the new template): the init container restores /source/data to the snapshot (the junk file removed).
  const first = await nextStart('first start');
  const rsName = first.pod.metadata?.ownerReferences?.find((o) => o.kind === 'ReplicaSet')?.name ?? '';
  const rs = await apps().readNamespacedReplicaSet({ namespace, name: rsName });
  assert.equal(rs.metadata?.ownerReferences?.[0]?.kind, 'Deployment');
  assert.equal(rs.metadata?.ownerReferences?.[0]?.name, 'stash-demo');
  assert.doesNotMatch(first.log, /already recovered/);
  assert.deepEqual(await fileContents(appDir), snapshotTree);
  const r1 = await recoveryFinished(namespace, name);
  assert.equal(r1.status?.phase, 'Succeeded', JSON.stringify(r1.status));
  assert.deepEqual(r1.status?.recoveredHosts?.map((h) => [h.host, h.phase, h.snapshotId, h.generation, h.pod]), [['host-0', 'Succeeded', snapshotId, r1.metadata.generation, first.pod.metadata?.name]]);
  await eventually('a RecoverySucceeded Event', async () => ((await eventsOf(namespace, name)).some((e) => e.reason === 'RecoverySucceeded') ? true : undefined));

  // Second start, IfNotRecovered: the claim answers 204, the agent exits 0 and restores nothing.
  await writeFile(path.join(appDir, 'index.html'), 'changed by the app after the recovery\n');
  await restart(first.pod);
  const second = await nextStart('second start');
  assert.match(second.log, /already recovered \(recoveryPolicy IfNotRecovered\): nothing to do/);
  assert.equal(await readFile(path.join(appDir, 'index.html'), 'utf8'), 'changed by the app after the recovery\n');
  const r2 = await getRecovery(namespace, name);
  assert.equal(r2?.status?.phase, 'Succeeded');
  // The host's entry is still the first start's: the second pod recovered nothing.
  assert.deepEqual(r2?.status?.recoveredHosts?.map((h) => [h.host, h.phase, h.generation, h.pod]), [['host-0', 'Succeeded', r1.metadata.generation, first.pod.metadata?.name]]);

  // recoveryPolicy Always (the design's "Auto Recovery"): every start recovers.
  await custom().patchNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'recoveries', namespace, name, body: [{ op: 'add', path: '/spec/recoveryPolicy', value: 'Always' }] });
  const generation = (await getRecovery(namespace, name))?.metadata.generation ?? 0;
  assert.ok(generation > r1.metadata.generation);
  let previous = second.pod;
  for (const start of ['third', 'fourth']) {
    await restart(previous);
    const run = await nextStart(`${start} start`);
    assert.doesNotMatch(run.log, /already recovered/);
    assert.deepEqual(await fileContents(appDir), snapshotTree, `${start} start restores the snapshot`);
    const r = await eventually(`the ${start} start's report`, async () => {
      const got = await getRecovery(namespace, name);
      return got?.status?.recoveredHosts?.some((h) => h.pod === run.pod.metadata?.name) ? got : undefined;
    }, 30_000);
    assert.equal(r.status?.phase, 'Succeeded', JSON.stringify(r.status));
    assert.deepEqual(r.status?.recoveredHosts?.map((h) => [h.host, h.phase, h.snapshotId, h.generation, h.pod]), [['host-0', 'Succeeded', snapshotId, generation, run.pod.metadata?.name]]);
    await writeFile(path.join(appDir, 'index.html'), `changed by the app after the ${start} start\n`);
    await rm(path.join(appDir, 'nested/deeper/notes.txt'));
    previous = run.pod;
  }

  // Deleting the Recovery removes exactly what was added (its delete event through the adapter).
  await custom().deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'recoveries', namespace, name });
  await eventually('the Recovery to be released and gone', async () => ((await getRecovery(namespace, name)) === undefined ? true : undefined), 30_000);
  const restored = await deployment(namespace);
  assert.ok(!hasInit(restored.spec?.template));
  assert.deepEqual(restored.spec?.template, original.spec?.template);
  // The app starts again without recovering: the data stays as the app left it.
  const released = plain(await runningPod(cluster, namespace, 'app=stash-demo', (p) => !hasInit(p) && !seen.has(p.metadata?.name ?? ''), 180_000));
  assert.deepEqual(released.spec?.initContainers ?? [], []);
  assert.equal(await readFile(path.join(appDir, 'index.html'), 'utf8'), 'changed by the app after the fourth start\n');
});

test('database: the design\'s PostgreSQL Recovery makes run-recovery create its Job; the Job\'s Pod restores the database through the pod network\'s gateway', { timeout: 300_000 }, async () => {
  const namespace = ns.database;
  postgres = await startPostgres();
  await postgres.psql('CREATE DATABASE mydb;');
  await postgres.psql(`CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);
    INSERT INTO items SELECT g, 'item-' || g, g * 1.5 FROM generate_series(1, 500) g;`, 'mydb');
  const rows = (): Promise<string> => postgres?.psql("SELECT count(*) || '/' || coalesce(string_agg(id || ':' || name || ':' || price, ',' ORDER BY id), '') FROM items;", 'mydb') ?? Promise.resolve('');
  const want = await rows();
  assert.match(want, /^500\/1:item-1:1\.5,/);

  const repo = await localRepository(namespace);
  // The AppBinding addresses the real server at the pod network's gateway (no Service routing on the node).
  const appBinding = sample('05-appbinding.yaml', namespace) as unknown as { spec: { clientConfig: { service?: unknown; url?: string } } };
  delete appBinding.spec.clientConfig.service;
  appBinding.spec.clientConfig.url = `postgres://${podGateway}:${postgres.port}`;
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'quick-postgres-auth', namespace }, stringData: { POSTGRES_USER: postgres.user, POSTGRES_PASSWORD: postgres.password } }));
  await applyYaml(cluster, stringify(appBinding));

  // The snapshot: the agent's database backup as host-0 (the host a database backup Job writes), of
  // all databases (the design's default; the Recovery sample names none, so it recovers such a snapshot).
  // A pod on the node dumps the server through the gateway, with the password from the AppBinding's Secret.
  const common = ['--repo', repo.resticRepo, '--password-file', PASSWORD_FILE, '--json'];
  const [init, backup] = await standalonePod(namespace, 'take-snapshot', [
    ['init', ...common],
    ['backup', ...common, '--host', 'host-0', '--db-type', 'postgres', '--db-host', podGateway, '--db-port', String(postgres.port), '--db-user', postgres.user],
  ], [{ hostPath: repo.repoDir, mountPath: repo.repoDir }], [{ name: 'DB_PASSWORD', valueFrom: { secretKeyRef: { name: 'quick-postgres-auth', key: 'POSTGRES_PASSWORD' } } }]);
  assert.equal(init?.ok, true, JSON.stringify(init));
  const snapshotIds = ((backup?.snapshots ?? []) as { snapshotId: string }[]).map((s) => s.snapshotId);
  assert.ok(snapshotIds.length > 0 && snapshotIds.every((id) => /^[0-9a-f]{64}$/.test(id)), JSON.stringify(backup));

  // The data is lost.
  await postgres.psql('DELETE FROM items WHERE id > 100; UPDATE items SET name = \'broken\';', 'mydb');
  assert.notEqual(await rows(), want);

  const recovery = sample('07-recovery-database.yaml', namespace) as Sample & { spec: { repository: { namespace?: string } } };
  recovery.spec.repository.namespace = namespace;
  await applyYaml(cluster, stringify(recovery));
  const name = 'recovery-database-demo';
  const job = await jobOf(namespace, `${name}-recovery`);
  await assertPlannedJob(namespace, name, 'pg-recovery', job, 'quick-postgres');
  const created = await podOfJob(namespace, job.metadata?.name ?? '');
  const containers = [...(created.spec?.initContainers ?? []), ...(created.spec?.containers ?? [])];
  assert.deepEqual(containers.map((c) => c.name), ['pg-recovery', 'stash-update-status']);
  // The recovering container's connection comes from the AppBinding's url: the gateway and the server's port.
  const env = (n: string): string | undefined => containers[0]?.env?.find((e) => e.name === n)?.value;
  assert.deepEqual([env('DB_HOST'), env('DB_PORT')], [podGateway, String(postgres.port)], 'pg-recovery: the AppBinding\'s url');
  // The kubelet runs the Pod: pg-recovery restores into the server through the gateway, then the status container.
  const pod = await succeededPod(namespace, created.metadata?.name ?? '');
  assert.deepEqual(exitCodes(pod), { 'pg-recovery': 0, 'stash-update-status': 0 });
  assert.equal(await rows(), want);

  const r = await recoveryFinished(namespace, name);
  assert.equal(r.status?.phase, 'Succeeded', JSON.stringify(r.status));
  assert.deepEqual(r.status?.recoveredHosts?.map((h) => [h.host, h.phase]), [['host-0', 'Succeeded']]);
  assert.ok(snapshotIds.includes(r.status?.recoveredHosts?.[0]?.snapshotId ?? ''), `${JSON.stringify(r.status)} recovers one of ${JSON.stringify(snapshotIds)}`);
  assert.deepEqual(r.status?.recoveredHosts?.map((h) => h.pod), [pod.metadata?.name]);
  await eventually('a RecoverySucceeded Event', async () => ((await eventsOf(namespace, name)).some((e) => e.reason === 'RecoverySucceeded') ? true : undefined));
});
