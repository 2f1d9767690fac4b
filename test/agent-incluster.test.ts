// The agent's in-cluster mode end to end on the real control plane: a Deployment (its Pods made by
// the real controllers), a Backup with a local (hostPath) Repository, inject-sidecar's reconcile
// puts the sidecar in the pod template, and the real handle-trigger server runs on a loopback
// port. The sidecar container of a real Pod runs through the kubelet stand-in (env, Secret and
// token volumes as the pod spec gives them; only STASH_FUNCTIONS_URL points at the loopback
// server), claims the BackupTriggers, backs up with real restic and reports; the snapshot is then
// restored with the standalone CLI and compared byte for byte. The agent has no API rights.
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
import { applyYaml, deleteNamespace, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { startPostgres } from './support/databases.ts';
import { runContainer } from './support/kubelet.ts';
import type { ContainerRun } from './support/kubelet.ts';
import { repoRoot, toolPath } from './support/tools.ts';
import { fileContents } from './support/files.ts';
import { runCaptured } from './support/run.ts';
import type { Captured } from './support/run.ts';
import { waitFor } from './support/wait.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const PASSWORD = `incluster-${randomBytes(6).toString('hex')}`;
const log = pino({ level: process.env.LOG_LEVEL ?? 'warn' });

let cluster: Cluster;
let ns: string;
let dir: string;
/** The kubelet stand-in's state (emptyDirs, Secret files): not under /tmp, which the pod's emptyDir covers. */
let kubeletDir: string;
let dataDir: string;
let repoDir: string;
let templateName: string;
let server: Awaited<ReturnType<ReturnType<typeof createHandleTriggerServer>['listen']>> | undefined;

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
  }, 120_000);
}

function cli(args: readonly string[]): Promise<Captured> {
  return runCaptured(process.execPath, [path.join(repoRoot, 'agent/bin/stash.js'), ...args], { ...process.env, STASH_RESTIC: toolPath('restic') });
}


before(async () => {
  cluster = await useCluster();
  ns = await freshNamespace(cluster, 'agent-incluster');
  dir = await mkdtemp(path.join(os.tmpdir(), 'stash-incluster-'));
  kubeletDir = await mkdtemp('/var/tmp/stash-incluster-kubelet-');
  dataDir = path.join(dir, 'app-data');
  repoDir = path.join(dir, 'repository');
  await mkdir(path.join(dataDir, 'sub'), { recursive: true });
  await mkdir(repoDir, { recursive: true });
  await writeFile(path.join(dataDir, 'a.txt'), 'first file\n');
  await writeFile(path.join(dataDir, 'sub/b.bin'), randomBytes(300_000));
  await writeFile(path.join(dataDir, 'skip.tmp'), 'excluded');

  server = await createHandleTriggerServer({
    kc: cluster.kc, timing: { leaseDurationSeconds: 6, pendingTimeoutSeconds: 600 }, logger: log,
  }).listen(0, { host: '127.0.0.1' });

  await waitFor('ServiceAccount default', async () => {
    const sas = await core().listNamespacedServiceAccount({ namespace: ns });
    return sas.items.some((s) => s.metadata?.name === 'default') ? true : undefined;
  });
  templateName = `${ns}-volume-backup`;
  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: AgentTemplate
metadata: {name: ${templateName}}
spec:
  containers:
  - image: appscode/stash:0.8.2
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
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      # No API token in the pod: the agent works with the Secret files and its audience-stash token only.
      automountServiceAccountToken: false
      containers:
      - name: web
        image: registry.k8s.io/pause:3.10
        volumeMounts: [{name: data, mountPath: /srv/app-data}]
      volumes: [{name: data, hostPath: {path: ${dataDir}}}]
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
  if (cluster) {
    await custom().deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name: templateName }).catch(() => undefined);
    await deleteNamespace(cluster, ns);
  }
  await rm(dir, { recursive: true, force: true });
  await rm(kubeletDir, { recursive: true, force: true });
});

test('the sidecar of a real Pod claims runs through handle-trigger, backs up, applies retention and reports; the snapshot restores byte for byte', { timeout: 300_000 }, async () => {
  const outcome = await reconcileBackup(cluster.kc, { namespace: ns, name: 'app' }, log, { functionsUrl: server?.url ?? '', namespaces: [ns] });
  assert.equal(outcome, 'injected');
  const pod = await waitFor('a Pod of Deployment web with the sidecar', async () => {
    const pods = await core().listNamespacedPod({ namespace: ns, labelSelector: 'app=web' });
    return pods.items.find((p) => p.spec?.containers.some((c) => c.name === 'stash-backup'));
  });
  const sidecarSpec = pod.spec?.containers.find((c) => c.name === 'stash-backup');
  assert.ok(sidecarSpec?.env?.some((e) => e.name === 'STASH_FUNCTIONS_URL'), 'the sidecar is told where handle-trigger is');

  // The kubelet stand-in creates missing mount points on the host and removes them when its
  // container ends; removing a mount point detaches it in every mount namespace, so a parallel
  // test's container ending would unmount ours (seen: the token vanished mid-run). Mount points
  // that exist beforehand are left alone by every run.
  for (const m of sidecarSpec?.volumeMounts ?? []) await mkdir(m.mountPath, { recursive: true });

  await createTrigger('app-run-1');
  const abort = new AbortController();
  let exited: ContainerRun | undefined;
  const sidecar = runContainer({
    cluster, pod: plain<V1Pod>(pod), containerName: 'stash-backup', stateDir: path.join(kubeletDir, 'sidecar'),
    envOverrides: { STASH_FUNCTIONS_URL: server?.url ?? '' }, signal: abort.signal, timeoutMs: 280_000,
  });
  void sidecar.then((r) => { exited = r; });
  let first: Trigger | undefined;
  let second: Trigger | undefined;
  try {
    first = await finishedRun('app-run-1');
    assert.equal(first.status?.phase, 'Succeeded', JSON.stringify(first.status));
    // A second run after a change: the sidecar keeps claiming; retention (keepLast 1) forgets the first snapshot.
    await writeFile(path.join(dataDir, 'a.txt'), 'first file, changed\n');
    await createTrigger('app-run-2');
    second = await finishedRun('app-run-2');
    assert.equal(second.status?.phase, 'Succeeded', JSON.stringify(second.status));
    assert.equal(exited, undefined, `the sidecar keeps running between runs: ${exited?.stderr.slice(-2000) ?? ''}`);
  } catch (error) {
    abort.abort();
    const r = await sidecar;
    throw new Error(`${(error as Error).message}\nsidecar exit ${r.exitCode}, its log:\n${r.stderr.slice(-6000)}\n${r.stdout.slice(-2000)}`, { cause: error });
  }
  abort.abort();
  const result = await sidecar;
  assert.equal(result.exitCode, 0, `SIGTERM stops the sidecar cleanly:\n${result.stderr.slice(-3000)}`);
  const runs = result.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { type: string; phase?: string; trigger?: string });
  assert.deepEqual(runs.filter((r) => r.type === 'run').map((r) => [r.trigger, r.phase]), [['app-run-1', 'Succeeded'], ['app-run-2', 'Succeeded']]);

  assert.ok(first && second);
  const snapshotOf = (t: Trigger): string => t.status?.hosts?.find((h) => h.host === 'host-0')?.snapshotId ?? t.status?.snapshotId ?? '';
  const snapshotId = snapshotOf(second);
  assert.match(snapshotId, /^[0-9a-f]{64}$/, JSON.stringify(second.status));
  const repo = await getCustom<{ status?: { snapshotCount?: number; totalSize?: number; integrity?: string; lastCheckTime?: string } }>('repositories', 'repo');
  assert.equal(repo?.status?.snapshotCount, 1, `retention kept one snapshot: ${JSON.stringify(repo?.status)}`);
  // The first run found the repository never checked: its agent ran `restic check` and reported it clean.
  assert.equal(repo?.status?.integrity, 'True', `integrity after the daily check: ${JSON.stringify(repo?.status)}`);
  assert.ok(repo?.status?.lastCheckTime !== undefined && !Number.isNaN(Date.parse(repo.status.lastCheckTime)));
  assert.ok((repo?.status?.totalSize ?? 0) > 0);
  const backup = await getCustom<{ status?: { lastSnapshotId?: string } }>('backups', 'app');
  assert.equal(backup?.status?.lastSnapshotId, snapshotId);

  // Restore with the standalone CLI and compare bytes with the source.
  const passwordFile = path.join(dir, 'password');
  await writeFile(passwordFile, PASSWORD, { mode: 0o600 });
  const listed = await cli(['snapshots', '--repo', path.join(repoDir, 'app'), '--password-file', passwordFile, '--json']);
  assert.equal(listed.code, 0, listed.stderr);
  const snaps = (JSON.parse(listed.stdout.trim().split('\n').at(-1) ?? '{}') as { snapshots: { id: string; hostname: string; tags: string[] }[] }).snapshots;
  assert.deepEqual(snaps.map((s) => s.id), [snapshotId]);
  assert.equal(snaps[0]?.hostname, 'host-0');
  assert.ok(snaps[0]?.tags.includes(`stash.appscode.com/backup=app`));
  const target = path.join(dir, 'restored');
  const restored = await cli(['recover', '--repo', path.join(repoDir, 'app'), '--password-file', passwordFile, '--snapshot', snapshotId, '--target', target]);
  assert.equal(restored.code, 0, restored.stderr);
  const want = await fileContents(dataDir);
  want.delete('skip.tmp');
  assert.deepEqual(await fileContents(path.join(target, 'srv/app-data')), want);
});

test('init checks the Secret files and token without API rights; update-repo-status without a Pushgateway says the status was reported', { timeout: 120_000 }, async () => {
  const pod = await waitFor('the Pod with the sidecar', async () => {
    const pods = await core().listNamespacedPod({ namespace: ns, labelSelector: 'app=web' });
    return pods.items.find((p) => p.spec?.containers.some((c) => c.name === 'stash-backup'));
  });
  // The same container, with the init and update-repo-status commands (as the database template runs them).
  const asCommand = (args: string[]): V1Pod => {
    const copy = plain<V1Pod>(pod);
    const c = copy.spec?.containers.find((x) => x.name === 'stash-backup');
    if (c) c.args = args;
    return copy;
  };
  const init = await runContainer({ cluster, pod: asCommand(['init', '--backup-name=$(BACKUP_NAME)', '--json']), containerName: 'stash-backup', stateDir: path.join(kubeletDir, 'init') });
  assert.equal(init.exitCode, 0, init.stderr);
  const initResult = JSON.parse(init.stdout.trim().split('\n').at(-1) ?? '{}') as { ok: boolean; secretKeys: string[] };
  assert.deepEqual([initResult.ok, initResult.secretKeys], [true, ['RESTIC_PASSWORD']]);
  assert.ok(!init.stdout.includes(PASSWORD) && !init.stderr.includes(PASSWORD), 'the password is never printed');

  const status = await runContainer({ cluster, pod: asCommand(['update-repo-status', '--backup-name=$(BACKUP_NAME)', '--pushgateway-url=$(PUSH_GATEWAY_URL)', '--metrics-dir=/tmp/metrics.txt']), containerName: 'stash-backup', stateDir: path.join(kubeletDir, 'status') });
  assert.equal(status.exitCode, 0, status.stderr);
  assert.match(status.stdout, /reported to handle-trigger by the backup step/);
});

test('a database Job from launch-db-job: init, backup (one claim, connection from env) and update-repo-status exit 0; the dump restores with the standalone CLI', { timeout: 300_000 }, async () => {
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
  - {image: appscode/stash:0.8.2, name: stash-init, args: [init, --backup-name=$(BACKUP_NAME)]}
  - {image: appscode/stash:0.8.2, name: dump, args: [backup, --backup-name=$(BACKUP_NAME), --json]}
  containers:
  - image: appscode/stash:0.8.2
    name: stash-update-status
    args: [update-repo-status, --backup-name=$(BACKUP_NAME), --pushgateway-url=$(PUSH_GATEWAY_URL), --metrics-dir=/tmp/metrics.txt]
`);
    try {
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
  clientConfig: {service: {name: pg, port: ${pg.port}, scheme: postgresql}}
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
      const launcher = createLaunchDbJob(cluster.kc, { functionsUrl: server?.url ?? '', namespace: ns });
      const launched = await waitFor('launch-db-job to create the Job', async () => {
        const r = await launcher.reconcileTrigger(ns, 'db-run-1', log);
        return r === 'created' || r === 'job-exists' || r === 'already-created' ? r : undefined;
      });
      assert.ok(launched);
      const pod = plain<V1Pod>(await waitFor('the Job\'s Pod', async () => {
        const pods = await core().listNamespacedPod({ namespace: ns, labelSelector: 'batch.kubernetes.io/job-name' });
        return pods.items.find((p) => p.metadata?.ownerReferences?.some((o) => o.kind === 'Job'));
      }));
      const containers = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
      for (const c of containers) for (const m of c.volumeMounts ?? []) await mkdir(m.mountPath, { recursive: true });
      const outputs: Record<string, ContainerRun> = {};
      for (const c of containers) {
        const r = await runContainer({
          cluster, pod, containerName: c.name, stateDir: path.join(kubeletDir, 'job'),
          envOverrides: { DB_HOST: '127.0.0.1', STASH_FUNCTIONS_URL: server?.url ?? '' }, timeoutMs: 240_000,
        });
        outputs[c.name] = r;
        assert.equal(r.exitCode, 0, `container ${c.name} failed:\n${r.stderr.slice(-4000)}`);
        assert.ok(!r.stdout.includes(pg.password) && !r.stderr.includes(pg.password), `container ${c.name} printed the database password`);
      }
      assert.match(outputs['stash-update-status']?.stdout ?? '', /reported to handle-trigger by the backup step/);
      const run = await finishedRun('db-run-1');
      assert.equal(run.status?.phase, 'Succeeded', JSON.stringify(run.status));

      // Drop the table, recover with the standalone database flags, compare.
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
