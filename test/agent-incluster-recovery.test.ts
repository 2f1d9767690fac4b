// In-cluster recovery end to end through handle-trigger's recovery protocol, with real restic and a
// real local repository: a snapshot taken with the standalone CLI (host-0), a Recovery into a
// volume, the recovery Job it owns (the Job controller makes the Pod), and `stash recover
// --recovery-name` run as that Pod's agent: STASH_FUNCTIONS_URL at the real handle-trigger server,
// STASH_TOKEN_FILE with a projected (audience stash) token bound to the Pod, the storage Secret as
// files in STASH_REPOSITORY_SECRET_DIR, STASH_SNAPSHOT_HOST=host-0, RECOVERY_NAME, no KUBECONFIG:
// the agent has no API access at all.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CoreV1Api, CustomObjectsApi, EventsV1Api } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { pino } from 'pino';
import { createHandleTriggerServer } from '../functions/handle-trigger/index.ts';
import { applyYaml, deleteNamespace, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { repoRoot, toolPath } from './support/tools.ts';
import { fileContents } from './support/files.ts';
import { runCaptured } from './support/run.ts';
import type { Captured } from './support/run.ts';
import { waitFor } from './support/wait.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const PASSWORD = `recovery-${randomBytes(6).toString('hex')}`;
const WRONG_PASSWORD = `wrong-${randomBytes(6).toString('hex')}`;

let cluster: Cluster;
let ns: string;
let dir: string;
let dataDir: string;
let repoDir: string;
let snapshotId: string;
let server: Awaited<ReturnType<ReturnType<typeof createHandleTriggerServer>['listen']>> | undefined;

const core = (): CoreV1Api => cluster.kc.makeApiClient(CoreV1Api);

type RecoveryObject = {
  metadata: { uid: string; generation: number };
  status?: { phase?: string; error?: string; snapshotId?: string; recoveredHosts?: { host: string; phase: string; snapshotId?: string; error?: string; files?: number; generation?: number }[] };
};

async function getRecovery(name: string): Promise<RecoveryObject> {
  return await cluster.kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'recoveries', name }) as RecoveryObject;
}

function cli(args: readonly string[], env: Record<string, string>): Promise<Captured> {
  const base: Record<string, string | undefined> = { ...process.env, STASH_RESTIC: toolPath('restic'), STASH_CACHE_DIR: path.join(dir, 'cache') };
  delete base.KUBECONFIG;
  return runCaptured(process.execPath, [path.join(repoRoot, 'agent/bin/stash.js'), ...args], { ...base, ...env });
}


/**
 * A Recovery into a hostPath volume at `target` and its recovery Job's Pod; returns the env the
 * run-recovery Pod gives its agent (the Secret files hold `password`).
 */
async function recoveryPod(name: string, target: string, password: string): Promise<Record<string, string>> {
  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: Recovery
metadata: {name: ${name}}
spec:
  repository: {name: repo}
  recoveryAgent: stash-volume-recovery
  paths: [${dataDir}]
  recoverTo:
    volume: {mountPath: ${target}, hostPath: {path: ${target}}}
`, ns);
  const rec = await getRecovery(name);
  await applyYaml(cluster, `
apiVersion: batch/v1
kind: Job
metadata:
  name: ${name}-recovery
  ownerReferences: [{apiVersion: stash.appscode.com/v1alpha2, kind: Recovery, name: ${name}, uid: ${rec.metadata.uid}, controller: true}]
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {app: ${name}-recovery}}
    spec: {restartPolicy: Never, automountServiceAccountToken: false, containers: [{name: stash, image: registry.k8s.io/pause:3.10}]}
`, ns);
  const pod: V1Pod = await waitFor(`the Pod of Job ${name}-recovery`, async () => {
    const pods = await core().listNamespacedPod({ namespace: ns, labelSelector: `app=${name}-recovery` });
    return pods.items[0];
  });
  const token = await core().createNamespacedServiceAccountToken({
    namespace: ns, name: 'default',
    body: { spec: { audiences: ['stash'], expirationSeconds: 3600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata?.name ?? '', uid: pod.metadata?.uid ?? '' } } },
  });
  const podDir = path.join(dir, `pod-${name}`);
  await mkdir(path.join(podDir, 'secret'), { recursive: true });
  await writeFile(path.join(podDir, 'token'), token.status?.token ?? '');
  await writeFile(path.join(podDir, 'secret', 'RESTIC_PASSWORD'), password);
  return {
    NAMESPACE: ns, RECOVERY_NAME: name, POD_NAME: pod.metadata?.name ?? '', STASH_SNAPSHOT_HOST: 'host-0',
    STASH_FUNCTIONS_URL: server?.url ?? '', STASH_TOKEN_FILE: path.join(podDir, 'token'), STASH_REPOSITORY_SECRET_DIR: path.join(podDir, 'secret'),
  };
}

before(async () => {
  cluster = await useCluster();
  ns = await freshNamespace(cluster, 'agent-recovery');
  dir = await mkdtemp(path.join(os.tmpdir(), 'stash-recovery-'));
  dataDir = path.join(dir, 'app-data');
  repoDir = path.join(dir, 'repository');
  await mkdir(path.join(dataDir, 'sub/deeper'), { recursive: true });
  await mkdir(repoDir, { recursive: true });
  await writeFile(path.join(dataDir, 'a.txt'), 'first file\n');
  await writeFile(path.join(dataDir, 'sub/b.bin'), randomBytes(300_000));
  await writeFile(path.join(dataDir, 'sub/deeper/c.txt'), 'deeper\n');

  server = await createHandleTriggerServer({ kc: cluster.kc, logger: pino({ level: process.env.LOG_LEVEL ?? 'warn' }), namespaces: [ns] }).listen(0, { host: '127.0.0.1' });
  await waitFor('ServiceAccount default', async () => {
    const sas = await core().listNamespacedServiceAccount({ namespace: ns });
    return sas.items.some((s) => s.metadata?.name === 'default') ? true : undefined;
  });
  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: Repository
metadata: {name: repo}
spec:
  backend:
    storageSecretName: repo-secret
    local: {mountPath: ${repoDir}, subPath: app, hostPath: {path: ${repoDir}}}
`, ns);

  // The snapshot to recover: taken by the agent (standalone) as host-0, as a Deployment's backup is.
  const passwordFile = path.join(dir, 'password');
  await writeFile(passwordFile, PASSWORD, { mode: 0o600 });
  const standalone = ['--repo', path.join(repoDir, 'app'), '--password-file', passwordFile, '--json'];
  const init = await cli(['init', ...standalone], {});
  assert.equal(init.code, 0, init.stderr);
  const backup = await cli(['backup', ...standalone, '--host', 'host-0', dataDir], {});
  assert.equal(backup.code, 0, backup.stderr);
  snapshotId = (JSON.parse(backup.stdout.trim().split('\n').at(-1) ?? '{}') as { snapshotId: string }).snapshotId;
  assert.match(snapshotId, /^[0-9a-f]{64}$/);
});

after(async () => {
  await server?.close();
  if (cluster && ns) await deleteNamespace(cluster, ns);
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('stash recover --recovery-name in a recovery Job\'s pod claims, restores identical bytes and reports; IfNotRecovered then exits 0 without restoring', { timeout: 300_000 }, async () => {
  const target = path.join(dir, 'restored');
  const env = await recoveryPod('restore', target, PASSWORD);
  const run = await cli(['recover', '--recovery-name=restore', '--json'], env);
  assert.equal(run.code, 0, `${run.stderr}\n${run.stdout}`);
  const result = JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '{}') as { ok: boolean; status: string; phase: string; snapshotId: string; host: string };
  assert.deepEqual([result.ok, result.status, result.phase, result.snapshotId, result.host], [true, 'reported', 'Succeeded', snapshotId, 'host-0']);
  // The one path's content lands directly in the volume, byte for byte.
  assert.deepEqual(await fileContents(target), await fileContents(dataDir));

  const r = await getRecovery('restore');
  assert.equal(r.status?.phase, 'Succeeded', JSON.stringify(r.status));
  assert.equal(r.status?.snapshotId, snapshotId);
  const host = r.status?.recoveredHosts?.[0];
  assert.deepEqual([host?.host, host?.phase, host?.snapshotId, host?.generation], ['host-0', 'Succeeded', snapshotId, r.metadata.generation]);
  assert.ok((host?.files ?? 0) >= 3, JSON.stringify(host));
  const events = (await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns })).items.filter((e) => e.regarding?.name === 'restore');
  assert.deepEqual(events.map((e) => e.reason), ['RecoverySucceeded']);

  // The pod starts again: IfNotRecovered, nothing is restored (a local change survives).
  await writeFile(path.join(target, 'a.txt'), 'changed after the recovery\n');
  const again = await cli(['recover', '--recovery-name=restore'], env);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /already recovered/);
  assert.equal(await readFile(path.join(target, 'a.txt'), 'utf8'), 'changed after the recovery\n');
  assert.equal((await getRecovery('restore')).status?.phase, 'Succeeded');

  // update-recovery-status has nothing to do: the recover step reported (and it has no API access).
  const update = await cli(['update-recovery-status', '--recovery-name=restore'], env);
  assert.equal(update.code, 0, update.stderr);
  assert.match(update.stdout, /recover step reported/);
});

test('a wrong repository password: recover exits non-zero, the Recovery is Failed with an error naming RESTIC_PASSWORD and no password', { timeout: 300_000 }, async () => {
  const target = path.join(dir, 'restored-bad');
  const env = await recoveryPod('bad', target, WRONG_PASSWORD);
  const run = await cli(['recover', '--recovery-name=bad', '--json'], env);
  assert.notEqual(run.code, 0, run.stdout);
  assert.match(run.stderr, /RESTIC_PASSWORD/);
  const r = await getRecovery('bad');
  assert.equal(r.status?.phase, 'Failed', JSON.stringify(r.status));
  const error = r.status?.recoveredHosts?.[0]?.error ?? '';
  assert.match(error, /wrong password/);
  assert.match(error, /RESTIC_PASSWORD/);
  for (const text of [error, r.status?.error ?? '', run.stdout, run.stderr]) {
    assert.ok(!text.includes(WRONG_PASSWORD) && !text.includes(PASSWORD), `a password leaked: ${text}`);
  }
  const warnings = (await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns })).items.filter((e) => e.regarding?.name === 'bad');
  assert.deepEqual(warnings.map((e) => [e.type, e.reason]), [['Warning', 'RecoveryFailed']]);
  assert.ok(!(warnings[0]?.note ?? '').includes(WRONG_PASSWORD));
});
