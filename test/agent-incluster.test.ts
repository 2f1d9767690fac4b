// The agent's in-cluster mode end to end on the real control plane and the test node: a Deployment
// (its Pods made by the real controllers, run by the real kubelet with containerd and runc), a
// Backup with a local (hostPath) Repository; inject-sidecar's reconcile puts the sidecar in the pod
// template, the rollout's new Pod runs it from the locally built stash-agent image, and the real
// handle-trigger server (in this process, on every address) is reached by the pod at the node's
// bridge gateway. The sidecar claims the BackupTriggers, backs up with real restic and reports; the
// snapshot is then restored with the standalone CLI on the host and compared byte for byte. The
// agent has no API rights (no API token in the pod; only its audience-stash token and the Secret
// files the kubelet mounts). The init and update-repo-status commands run in real Pods whose spec
// is the sidecar Pod's with that container's args changed; the database Job launch-db-job makes
// runs on the node against the host's PostgreSQL, reached through the AppBinding's url at the
// gateway. Outcomes come from pod status (exit codes) and pods/log.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { pino } from 'pino';
import { createHandleTriggerServer } from '../functions/handle-trigger/index.ts';
import { reconcileBackup } from '../functions/inject-sidecar/handler.ts';
import { createLaunchDbJob } from '../functions/launch-db-job/handler.ts';
import { mergePatch } from '../shared/kube/index.ts';
import { applyYaml, deleteNamespacesReleasing, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { startPostgres } from './support/databases.ts';
import { containerStatus, createPodWhenReady, defaultServiceAccount, nodeNamespace, podEnded, podGateway, podInPhase, podLog, podLogs, runningPod } from './support/node.ts';
import { jsonLines } from './support/agent-output.ts';
import { repoRoot, toolPath } from './support/tools.ts';
import { fileContents } from './support/files.ts';
import { runCaptured } from './support/run.ts';
import type { Captured } from './support/run.ts';
import { waitFor } from './support/wait.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const PASSWORD = `incluster-${randomBytes(6).toString('hex')}`;
const AGENT_IMAGE = 'stash-agent:0.1.0';
const KEEP_FINALIZER = 'stash.test/keep-for-status';
const log = pino({ level: process.env.LOG_LEVEL ?? 'warn' });

let cluster: Cluster;
let ns: string;
let dir: string;
let dataDir: string;
let repoDir: string;
let templateName: string;
let server: Awaited<ReturnType<ReturnType<typeof createHandleTriggerServer>['listen']>> | undefined;
/** handle-trigger as pods reach it: its port at the node's bridge gateway. */
let agentUrl: string;
/** The Deployment's Pod with the sidecar, as the controllers made it (the first test). */
let sidecarPod: V1Pod | undefined;

const core = (): CoreV1Api => cluster.kc.makeApiClient(CoreV1Api);
const custom = (): CustomObjectsApi => cluster.kc.makeApiClient(CustomObjectsApi);
const plain = <T>(value: T): T => JSON.parse(JSON.stringify(value ?? null)) as T;

type Trigger = { status?: { phase?: string; error?: string; snapshotId?: string; hosts?: { host: string; phase: string; snapshotId?: string; error?: string }[] } };

async function getCustom<T>(plural: string, name: string): Promise<T | undefined> {
  try {
    return await custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, name }) as T;
  } catch (error) {
    if ((error as { code?: number }).code === 404) return undefined;
    throw error;
  }
}

async function createTrigger(name: string): Promise<void> {
  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: BackupTrigger
metadata: {name: ${name}}
spec: {targetBackup: {name: app}, origin: Manual}
`, ns);
  // What the BackupTrigger's ApiServerSource event does.
  const res = await fetch(`${server?.url ?? ''}/invoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'BackupTrigger', namespace: ns, name }) });
  assert.equal(res.status, 202, await res.text());
}

async function finishedRun(name: string): Promise<Trigger> {
  return waitFor(`run ${name} to finish`, async () => {
    const t = await getCustom<Trigger>('backuptriggers', name);
    return t?.status?.phase === 'Succeeded' || t?.status?.phase === 'Failed' ? t : undefined;
  }, 180_000);
}

function cli(args: readonly string[]): Promise<Captured> {
  return runCaptured(process.execPath, [path.join(repoRoot, 'agent/bin/stash.js'), ...args], { ...process.env, STASH_RESTIC: toolPath('restic') });
}

function deploymentYaml(replicas: number): string {
  return `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: ${replicas}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      # No API token in the pod: the agent works with the Secret files and its audience-stash token only.
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 30
      containers:
      - name: web
        image: stash-pause:0.1.0
        imagePullPolicy: IfNotPresent
        volumeMounts: [{name: data, mountPath: /srv/app-data}]
      volumes: [{name: data, hostPath: {path: ${dataDir}, type: Directory}}]
`;
}

/**
 * A Pod that runs one container of `source` once, with `args` instead of its own: the source pod's
 * spec (volumes, env, ServiceAccount, tolerations) with only that container, restartPolicy Never.
 * It carries no labels, so no controller adopts it.
 */
function oneShot(source: V1Pod, name: string, container: string, args: string[]): V1Pod {
  const spec = plain(source.spec);
  assert.ok(spec, `pod ${source.metadata?.name ?? ''} has no spec`);
  const c = spec.containers.find((x) => x.name === container);
  assert.ok(c, `pod ${source.metadata?.name ?? ''} has no container ${container}`);
  delete spec.nodeName; // the scheduler places it
  delete spec.priority; // admission computes it again
  return { metadata: { name }, spec: { ...spec, restartPolicy: 'Never', initContainers: undefined, containers: [{ ...c, args }] } };
}

/** Creates `pod`, waits until it ends; its status and its container's log. */
async function runToEnd(pod: V1Pod, container: string): Promise<{ pod: V1Pod; exitCode: number | undefined; log: string }> {
  const name = pod.metadata?.name ?? '';
  await createPodWhenReady(cluster, ns, pod);
  const ended = await podEnded(cluster, ns, name, 180_000);
  return { pod: ended, exitCode: containerStatus(ended, container)?.state?.terminated?.exitCode, log: await podLog(cluster, ns, name, container) };
}

before(async () => {
  cluster = await useCluster();
  ns = await nodeNamespace(cluster, 'agent-incluster');
  dir = await mkdtemp(path.join(os.tmpdir(), 'stash-incluster-'));
  dataDir = path.join(dir, 'app-data');
  repoDir = path.join(dir, 'repository');
  await mkdir(path.join(dataDir, 'sub'), { recursive: true });
  await mkdir(repoDir, { recursive: true });
  await writeFile(path.join(dataDir, 'a.txt'), 'first file\n');
  await writeFile(path.join(dataDir, 'sub/b.bin'), randomBytes(300_000));
  await writeFile(path.join(dataDir, 'skip.tmp'), 'excluded');

  // On every address (the runtime's default): the host calls it at 127.0.0.1, pods at the gateway.
  server = await createHandleTriggerServer({
    kc: cluster.kc, timing: { leaseDurationSeconds: 6, pendingTimeoutSeconds: 600 }, logger: log,
  }).listen(0);
  agentUrl = `http://${podGateway}:${server.port}`;

  await defaultServiceAccount(cluster, ns);
  templateName = `${ns}-volume-backup`;
  // The design's volume-backup AgentTemplate, with the image the node has (never pulled).
  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: AgentTemplate
metadata: {name: ${templateName}}
spec:
  containers:
  - image: ${AGENT_IMAGE}
    imagePullPolicy: IfNotPresent
    name: stash-backup
    args:
    - backup
    - --backup-name=$(BACKUP_NAME)
    - --pushgateway-url=$(PUSH_GATEWAY_URL)
    - --enable-status-subresource=$(ENABLE_STATUS_SUB_RESOURCE)
    - --enable-analytics=$(ENABLE_ANALYSTICS)
    - --metrics-dir=/tmp/metrics.txt
    - --json
`);
  await applyYaml(cluster, `
apiVersion: v1
kind: Secret
metadata: {name: repo-secret}
stringData: {RESTIC_PASSWORD: ${PASSWORD}}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Repository
metadata: {name: repo}
spec:
  backend:
    storageSecretName: repo-secret
    local: {mountPath: /stash-repo, subPath: app, hostPath: {path: ${repoDir}}}
---
${deploymentYaml(1)}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Backup
metadata: {name: app}
spec:
  schedule: "@hourly"
  backupAgent: ${templateName}
  repository: {name: repo}
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  targetDirectories: [/srv/app-data]
  excludes: ["*.tmp"]
  retentionPolicy: {keepLast: 1, prune: true}
`, ns);
});

after(async () => {
  await server?.close();
  if (cluster && ns) {
    // Release any pod the first test kept for its status, so the namespace can go.
    const pods = await core().listNamespacedPod({ namespace: ns }).catch(() => ({ items: [] as V1Pod[] }));
    for (const p of pods.items.filter((x) => x.metadata?.finalizers?.includes(KEEP_FINALIZER))) {
      await mergePatch(cluster.kc, { apiVersion: 'v1', kind: 'Pod', namespace: ns, name: p.metadata?.name ?? '' }, { metadata: { finalizers: null } }, { fieldManager: 'stash-test' }).catch(() => undefined);
    }
    await custom().deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name: templateName }).catch(() => undefined);
    // The Backup keeps inject-sidecar's finalizer, and no inject-sidecar is left to release it.
    await deleteNamespacesReleasing(cluster, [ns], 'backups');
  }
  await rm(dir, { recursive: true, force: true });
});

test('the sidecar of a real Deployment Pod claims runs through handle-trigger, backs up, applies retention and reports; the snapshot restores byte for byte', { timeout: 420_000 }, async () => {
  const outcome = await reconcileBackup(cluster.kc, { namespace: ns, name: 'app' }, log, { functionsUrl: agentUrl, namespaces: [ns] });
  assert.equal(outcome, 'injected');
  // The rollout's new Pod, running on the node with the app and the sidecar.
  const pod = await runningPod(cluster, ns, 'app=web', (p) => p.spec?.containers.some((c) => c.name === 'stash-backup') === true
    && (p.status?.containerStatuses ?? []).length === 2 && (p.status?.containerStatuses ?? []).every((s) => s.state?.running !== undefined), 180_000);
  sidecarPod = pod;
  const podName = pod.metadata?.name ?? '';
  const sidecarSpec = pod.spec?.containers.find((c) => c.name === 'stash-backup');
  assert.equal(sidecarSpec?.env?.find((e) => e.name === 'STASH_FUNCTIONS_URL')?.value, agentUrl, 'the sidecar is told where handle-trigger is');
  assert.equal(sidecarSpec?.image, AGENT_IMAGE);
  assert.ok(!pod.spec?.volumes?.some((v) => v.name.startsWith('kube-api-access')), 'the pod has no API token');

  const sidecarLog = (): Promise<string> => podLog(cluster, ns, podName, 'stash-backup');
  const withLog = async (error: unknown): Promise<Error> => {
    const now = await core().readNamespacedPod({ namespace: ns, name: podName }).catch(() => pod);
    return new Error(`${(error as Error).message}\nsidecar status: ${JSON.stringify(containerStatus(now, 'stash-backup'))}\nits log:\n${(await sidecarLog()).slice(-6000)}`, { cause: error });
  };
  let first: Trigger;
  let second: Trigger;
  try {
    await createTrigger('app-run-1');
    first = await finishedRun('app-run-1');
    assert.equal(first.status?.phase, 'Succeeded', JSON.stringify(first.status));
    // A second run after a change: the sidecar keeps claiming; retention (keepLast 1) forgets the first snapshot.
    await writeFile(path.join(dataDir, 'a.txt'), 'first file, changed\n');
    await createTrigger('app-run-2');
    second = await finishedRun('app-run-2');
    assert.equal(second.status?.phase, 'Succeeded', JSON.stringify(second.status));
    // The agent prints each run as a JSON line once it has reported it.
    const runs = await waitFor('the sidecar to log both runs', async () => {
      const lines = jsonLines(await sidecarLog()).filter((l) => l.type === 'run');
      return lines.length >= 2 ? lines : undefined;
    }, 30_000);
    assert.deepEqual(runs.map((r) => [r.trigger, r.phase]), [['app-run-1', 'Succeeded'], ['app-run-2', 'Succeeded']]);
  } catch (error) {
    throw await withLog(error);
  }
  const between = containerStatus(await core().readNamespacedPod({ namespace: ns, name: podName }), 'stash-backup');
  assert.ok(between?.state?.running !== undefined && between.restartCount === 0, `the sidecar keeps running between runs: ${JSON.stringify(between)}`);

  // Scale the Deployment to 0: the kubelet stops the pod with SIGTERM. A finalizer keeps the Pod
  // object (and the kubelet's last status of it) until the exit code has been read.
  await mergePatch(cluster.kc, { apiVersion: 'v1', kind: 'Pod', namespace: ns, name: podName }, { metadata: { finalizers: [KEEP_FINALIZER] } }, { fieldManager: 'stash-test' });
  await applyYaml(cluster, deploymentYaml(0), ns);
  const stopped = await waitFor('the kubelet to stop the sidecar', async () => {
    const p = await core().readNamespacedPod({ namespace: ns, name: podName });
    return containerStatus(p, 'stash-backup')?.state?.terminated;
  }, 120_000).catch(async (error: unknown) => { throw await withLog(error); });
  assert.equal(stopped.exitCode, 0, `SIGTERM stops the sidecar cleanly: ${JSON.stringify(stopped)}`);
  await mergePatch(cluster.kc, { apiVersion: 'v1', kind: 'Pod', namespace: ns, name: podName }, { metadata: { finalizers: null } }, { fieldManager: 'stash-test' });

  const snapshotOf = (t: Trigger): string => t.status?.hosts?.find((h) => h.host === 'host-0')?.snapshotId ?? t.status?.snapshotId ?? '';
  const snapshotId = snapshotOf(second);
  assert.match(snapshotId, /^[0-9a-f]{64}$/, JSON.stringify(second.status));
  assert.notEqual(snapshotOf(first), snapshotId);
  const repo = await getCustom<{ status?: { snapshotCount?: number; totalSize?: number; integrity?: string; lastCheckTime?: string } }>('repositories', 'repo');
  assert.equal(repo?.status?.snapshotCount, 1, `retention kept one snapshot: ${JSON.stringify(repo?.status)}`);
  // The first run found the repository never checked: its agent ran `restic check` and reported it clean.
  assert.equal(repo?.status?.integrity, 'True', `integrity after the daily check: ${JSON.stringify(repo?.status)}`);
  assert.ok(repo?.status?.lastCheckTime !== undefined && !Number.isNaN(Date.parse(repo.status.lastCheckTime)));
  assert.ok((repo?.status?.totalSize ?? 0) > 0);
  const backup = await getCustom<{ status?: { lastSnapshotId?: string } }>('backups', 'app');
  assert.equal(backup?.status?.lastSnapshotId, snapshotId);

  // Restore with the standalone CLI on the host and compare bytes with the source.
  const passwordFile = path.join(dir, 'password');
  await writeFile(passwordFile, PASSWORD, { mode: 0o600 });
  const listed = await cli(['snapshots', '--repo', path.join(repoDir, 'app'), '--password-file', passwordFile, '--json']);
  assert.equal(listed.code, 0, listed.stderr);
  const snaps = (JSON.parse(listed.stdout.trim().split('\n').at(-1) ?? '{}') as { snapshots: { id: string; hostname: string; paths: string[]; tags: string[] }[] }).snapshots;
  assert.deepEqual(snaps.map((s) => s.id), [snapshotId]);
  assert.equal(snaps[0]?.hostname, 'host-0');
  // The container's path: the pod backed up its own mount of the data.
  assert.deepEqual(snaps[0]?.paths, ['/srv/app-data']);
  assert.ok(snaps[0]?.tags.includes(`stash.appscode.com/backup=app`));
  const target = path.join(dir, 'restored');
  const restored = await cli(['recover', '--repo', path.join(repoDir, 'app'), '--password-file', passwordFile, '--snapshot', snapshotId, '--target', target]);
  assert.equal(restored.code, 0, restored.stderr);
  const want = await fileContents(dataDir);
  want.delete('skip.tmp');
  assert.deepEqual(await fileContents(path.join(target, 'srv/app-data')), want);
});

test('init checks the Secret files and token without API rights; update-repo-status without a Pushgateway says the status was reported (real Pods with the sidecar\'s spec)', { timeout: 300_000 }, async () => {
  const source = sidecarPod;
  assert.ok(source, 'the first test made the Deployment\'s Pod with the sidecar');
  // The sidecar container of the rendered Pod, with the init and update-repo-status commands (as the database template runs them).
  const init = await runToEnd(oneShot(source, 'sidecar-init', 'stash-backup', ['init', '--backup-name=$(BACKUP_NAME)', '--json']), 'stash-backup');
  assert.equal(init.exitCode, 0, `${JSON.stringify(init.pod.status)}\n${init.log}`);
  assert.equal(init.pod.status?.phase, 'Succeeded');
  const initResult = jsonLines(init.log).filter((l) => l.type === 'result').at(-1) as { ok?: boolean; command?: string; secretKeys?: string[] } | undefined;
  assert.deepEqual([initResult?.command, initResult?.ok, initResult?.secretKeys], ['init', true, ['RESTIC_PASSWORD']], init.log);
  assert.ok(!init.log.includes(PASSWORD), 'the password is never printed');

  const status = await runToEnd(oneShot(source, 'sidecar-update-status', 'stash-backup',
    ['update-repo-status', '--backup-name=$(BACKUP_NAME)', '--pushgateway-url=$(PUSH_GATEWAY_URL)', '--metrics-dir=/tmp/metrics.txt']), 'stash-backup');
  assert.equal(status.exitCode, 0, `${JSON.stringify(status.pod.status)}\n${status.log}`);
  assert.equal(status.pod.status?.phase, 'Succeeded');
  assert.match(status.log, /reported to handle-trigger by the backup step/);
});

test('a database Job from launch-db-job runs on the node: init, backup (one claim, connection from the AppBinding url at the gateway) and update-repo-status exit 0 in order; the dump restores with the standalone CLI', { timeout: 420_000 }, async () => {
  const pg = await startPostgres();
  try {
    await pg.psql('CREATE DATABASE shop;');
    await pg.psql("CREATE TABLE items (id int primary key, name text); INSERT INTO items SELECT g, 'item-' || g FROM generate_series(1, 500) g;", 'shop');
    const dbRepoDir = path.join(dir, 'db-repository');
    await mkdir(dbRepoDir, { recursive: true });
    const dbTemplate = `${ns}-pg-backup`;
    await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: AgentTemplate
metadata: {name: ${dbTemplate}}
spec:
  initContainers:
  - {image: ${AGENT_IMAGE}, imagePullPolicy: IfNotPresent, name: stash-init, args: [init, --backup-name=$(BACKUP_NAME)]}
  - {image: ${AGENT_IMAGE}, imagePullPolicy: IfNotPresent, name: dump, args: [backup, --backup-name=$(BACKUP_NAME), --json]}
  containers:
  - image: ${AGENT_IMAGE}
    imagePullPolicy: IfNotPresent
    name: stash-update-status
    args: [update-repo-status, --backup-name=$(BACKUP_NAME), --pushgateway-url=$(PUSH_GATEWAY_URL), --metrics-dir=/tmp/metrics.txt]
`);
    try {
      // No cluster DNS or Service routing on the node: the AppBinding gives the database's address
      // as a url, the host's PostgreSQL at the pod network's gateway.
      await applyYaml(cluster, `
apiVersion: v1
kind: Secret
metadata: {name: pg-auth}
stringData: {POSTGRES_USER: ${pg.user}, POSTGRES_PASSWORD: ${pg.password}}
---
apiVersion: appcatalog.appscode.com/v1alpha1
kind: AppBinding
metadata: {name: pg}
spec:
  type: kubedb.com/postgres
  clientConfig: {url: "postgres://${podGateway}:${pg.port}"}
  secret: {name: pg-auth}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Repository
metadata: {name: db-repo}
spec:
  backend:
    storageSecretName: repo-secret
    local: {mountPath: /stash-repo, subPath: db, hostPath: {path: ${dbRepoDir}}}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Backup
metadata: {name: db}
spec:
  schedule: "@hourly"
  backupAgent: ${dbTemplate}
  repository: {name: db-repo}
  targetRef: {apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: pg}
  containerAttributes: {args: [shop]}
`, ns);
      await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: BackupTrigger
metadata: {name: db-run-1}
spec: {targetBackup: {name: db}, origin: Manual}
`, ns);
      const res = await fetch(`${server?.url ?? ''}/invoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'BackupTrigger', namespace: ns, name: 'db-run-1' }) });
      assert.equal(res.status, 202, await res.text());
      const launcher = createLaunchDbJob(cluster.kc, { functionsUrl: agentUrl, namespace: ns });
      const launched = await waitFor('launch-db-job to create the Job', async () => {
        const r = await launcher.reconcileTrigger(ns, 'db-run-1', log);
        return r === 'created' || r === 'job-exists' || r === 'already-created' ? r : undefined;
      });
      assert.ok(launched);
      const created = await waitFor('the Job\'s Pod', async () => {
        const pods = await core().listNamespacedPod({ namespace: ns, labelSelector: 'batch.kubernetes.io/job-name' });
        return pods.items.find((p) => p.metadata?.ownerReferences?.some((o) => o.kind === 'Job'));
      });
      const podName = created.metadata?.name ?? '';
      const main = created.spec?.initContainers?.find((c) => c.name === 'dump');
      assert.equal(main?.env?.find((e) => e.name === 'DB_HOST')?.value, podGateway, 'the agent is given the AppBinding url\'s host');
      assert.equal(main?.env?.find((e) => e.name === 'DB_PORT')?.value, String(pg.port));
      let pod: V1Pod;
      try {
        pod = await podInPhase(cluster, ns, podName, ['Succeeded', 'Failed'], 300_000);
      } catch (error) {
        const now = await core().readNamespacedPod({ namespace: ns, name: podName });
        throw new Error(`${(error as Error).message}\nstatus: ${JSON.stringify(now.status)}\n${await podLogs(cluster, now)}`, { cause: error });
      }
      const logs = await podLogs(cluster, pod);
      assert.equal(pod.status?.phase, 'Succeeded', `${JSON.stringify(pod.status)}\n${logs}`);
      const order = ['stash-init', 'dump', 'stash-update-status'];
      const terminated = order.map((c) => containerStatus(pod, c)?.state?.terminated);
      assert.deepEqual(terminated.map((t) => t?.exitCode), [0, 0, 0], logs);
      // In order: each started after the one before it finished.
      for (let i = 1; i < order.length; i++) {
        const prevEnd = Date.parse(String(terminated[i - 1]?.finishedAt));
        const start = Date.parse(String(terminated[i]?.startedAt));
        assert.ok(prevEnd <= start, `${order[i] ?? ''} started (${String(terminated[i]?.startedAt)}) before ${order[i - 1] ?? ''} finished (${String(terminated[i - 1]?.finishedAt)})`);
      }
      assert.ok(!logs.includes(pg.password), 'a container printed the database password');
      assert.ok(!logs.includes(PASSWORD), 'a container printed the repository password');
      const dumped = jsonLines(await podLog(cluster, ns, podName, 'dump')).filter((l) => l.type === 'result').at(-1);
      assert.equal(dumped?.ok, true, logs);
      assert.match(await podLog(cluster, ns, podName, 'stash-update-status'), /reported to handle-trigger by the backup step/);
      const run = await finishedRun('db-run-1');
      assert.equal(run.status?.phase, 'Succeeded', JSON.stringify(run.status));

      // Drop the table, recover with the standalone database flags on the host, compare.
      const before = await pg.psql("SELECT count(*), string_agg(name, ',' ORDER BY id) FROM items;", 'shop');
      await pg.psql('DROP TABLE items;', 'shop');
      const passwordFile = path.join(dir, 'password');
      await writeFile(passwordFile, PASSWORD, { mode: 0o600 });
      const dbPasswordFile = path.join(dir, 'db-password');
      await writeFile(dbPasswordFile, pg.password, { mode: 0o600 });
      const recovered = await cli(['recover', '--repo', path.join(dbRepoDir, 'db'), '--password-file', passwordFile, '--db-type', 'postgres',
        '--db-host', '127.0.0.1', '--db-port', String(pg.port), '--db-user', pg.user, '--db-password-file', dbPasswordFile, '--database', 'shop', '--json']);
      assert.equal(recovered.code, 0, recovered.stderr);
      assert.equal(await pg.psql("SELECT count(*), string_agg(name, ',' ORDER BY id) FROM items;", 'shop'), before);
    } finally {
      await custom().deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name: dbTemplate }).catch(() => undefined);
    }
  } finally {
    await pg.stop();
  }
});
