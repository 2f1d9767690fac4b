// In-cluster recovery end to end through handle-trigger's recovery protocol, on the real control
// plane and the test node, with real restic and a real local repository (a hostPath on the node):
// a snapshot taken with the standalone CLI on the host (as host-0, of the host directory the
// Recovery names in spec.paths), a Recovery into a hostPath volume, and the recovery Job that
// run-recovery's reconcile makes from an AgentTemplate (the stash-agent image). The Job controller
// makes the Pod and the real kubelet runs it: `stash recover --recovery-name` with the env, Secret
// files and projected (audience stash) token the pod spec gives it, no API token at all, and
// STASH_FUNCTIONS_URL at the real handle-trigger server (in this process, on every address),
// which the pod reaches at the node's bridge gateway. A second Pod of the Job's spec (owned by the
// Job) shows IfNotRecovered; a Recovery whose Repository's Secret holds a wrong password makes
// the Job's Pod fail. Outcomes come from pod status (exit codes), pods/log and the Recovery.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BatchV1Api, CoreV1Api, CustomObjectsApi, EventsV1Api } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { pino } from 'pino';
import { createHandleTriggerServer } from '../functions/handle-trigger/index.ts';
import { createRunRecovery } from '../functions/run-recovery/handler.ts';
import { applyYaml, deleteNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { containerStatus, createPodWhenReady, defaultServiceAccount, nodeNamespace, podEnded, podGateway, podLog, podLogs } from './support/node.ts';
import { resultLine } from './support/agent-output.ts';
import { repoRoot, toolPath } from './support/tools.ts';
import { fileContents } from './support/files.ts';
import { runCaptured } from './support/run.ts';
import type { Captured } from './support/run.ts';
import { waitFor } from './support/wait.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const PASSWORD = `recovery-${randomBytes(6).toString('hex')}`;
const WRONG_PASSWORD = `wrong-${randomBytes(6).toString('hex')}`;
const AGENT_IMAGE = 'stash-agent:0.1.0';
/** Where the recovery Job mounts the target volume (a hostPath on the node). */
const MOUNT_PATH = '/recovered';
const log = pino({ level: process.env.LOG_LEVEL ?? 'warn' });

let cluster: Cluster;
let ns: string;
let dir: string;
let dataDir: string;
let repoDir: string;
let snapshotId: string;
let templateName: string;
let server: Awaited<ReturnType<ReturnType<typeof createHandleTriggerServer>['listen']>> | undefined;
let recoverer: ReturnType<typeof createRunRecovery>;

const core = (): CoreV1Api => cluster.kc.makeApiClient(CoreV1Api);

type RecoveryObject = {
  metadata: { uid: string; generation: number };
  status?: { phase?: string; error?: string; snapshotId?: string; recoveredHosts?: { host: string; phase: string; snapshotId?: string; error?: string; files?: number; generation?: number }[] };
};

async function getRecovery(name: string): Promise<RecoveryObject> {
  return await cluster.kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'recoveries', name }) as RecoveryObject;
}

function cli(args: readonly string[]): Promise<Captured> {
  const base: Record<string, string | undefined> = { ...process.env, STASH_RESTIC: toolPath('restic'), STASH_CACHE_DIR: path.join(dir, 'cache') };
  delete base.KUBECONFIG;
  return runCaptured(process.execPath, [path.join(repoRoot, 'agent/bin/stash.js'), ...args], base);
}

/** The reasons of the Events about `name`, in the order they were recorded. */
async function eventsOf(name: string): Promise<[string, string][]> {
  const events = (await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns })).items.filter((e) => e.regarding?.name === name);
  const at = (e: (typeof events)[number]): number => Date.parse(String(e.eventTime ?? e.deprecatedFirstTimestamp ?? e.metadata?.creationTimestamp ?? 0));
  return events.sort((a, b) => at(a) - at(b)).map((e) => [e.type ?? '', e.reason ?? '']);
}

/**
 * A Recovery of spec.paths [dataDir] from `repository` into a hostPath volume at `target` (mounted
 * at MOUNT_PATH); run-recovery's reconcile makes its Job. Returns the Job's Pod as created.
 */
async function recoveryJobPod(name: string, repository: string, target: string): Promise<V1Pod> {
  await mkdir(target, { recursive: true });
  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: Recovery
metadata: {name: ${name}}
spec:
  repository: {name: ${repository}}
  recoveryAgent: ${templateName}
  paths: [${dataDir}]
  recoverTo:
    volume: {mountPath: ${MOUNT_PATH}, hostPath: {path: ${target}, type: Directory}}
`, ns);
  assert.equal(await recoverer.reconcileRecovery(ns, name, log), 'job-created');
  return waitFor(`the Pod of ${name}'s recovery Job`, async () => {
    const pods = await core().listNamespacedPod({ namespace: ns, labelSelector: 'batch.kubernetes.io/job-name' });
    return pods.items.find((p) => p.metadata?.ownerReferences?.some((o) => o.kind === 'Job' && o.name === `${name}-recovery`));
  }, 30_000);
}

before(async () => {
  cluster = await useCluster();
  ns = await nodeNamespace(cluster, 'agent-recovery');
  dir = await mkdtemp(path.join(os.tmpdir(), 'stash-recovery-'));
  dataDir = path.join(dir, 'app-data');
  repoDir = path.join(dir, 'repository');
  await mkdir(path.join(dataDir, 'sub/deeper'), { recursive: true });
  await mkdir(repoDir, { recursive: true });
  await writeFile(path.join(dataDir, 'a.txt'), 'first file\n');
  await writeFile(path.join(dataDir, 'sub/b.bin'), randomBytes(300_000));
  await writeFile(path.join(dataDir, 'sub/deeper/c.txt'), 'deeper\n');

  // On every address (the runtime's default): pods reach it at the node's gateway.
  server = await createHandleTriggerServer({ kc: cluster.kc, logger: log, namespaces: [ns] }).listen(0);
  recoverer = createRunRecovery(cluster.kc, { functionsUrl: `http://${podGateway}:${server.port}`, namespaces: [ns] });
  await defaultServiceAccount(cluster, ns);
  templateName = `${ns}-volume-recovery`;
  // The default volume-recovery AgentTemplate (shared/api/defaults/agent-templates.yaml), with --json.
  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: AgentTemplate
metadata: {name: ${templateName}}
spec:
  containers:
  - name: stash-recover
    image: ${AGENT_IMAGE}
    imagePullPolicy: IfNotPresent
    command: [stash]
    args:
    - recover
    - --recovery-name=$(RECOVERY_NAME)
    - --pushgateway-url=$(PUSH_GATEWAY_URL)
    - --enable-status-subresource=$(ENABLE_STATUS_SUB_RESOURCE)
    - --enable-analytics=$(ENABLE_ANALYTICS)
    - --json
`);
  await applyYaml(cluster, `
apiVersion: v1
kind: Secret
metadata: {name: repo-secret}
stringData: {RESTIC_PASSWORD: ${PASSWORD}}
---
apiVersion: v1
kind: Secret
metadata: {name: wrong-secret}
stringData: {RESTIC_PASSWORD: ${WRONG_PASSWORD}}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Repository
metadata: {name: repo}
spec:
  backend:
    storageSecretName: repo-secret
    local: {mountPath: /stash-repo, subPath: app, hostPath: {path: ${repoDir}}}
---
# The same repository with a Secret holding a wrong password.
apiVersion: stash.appscode.com/v1alpha2
kind: Repository
metadata: {name: repo-wrong-password}
spec:
  backend:
    storageSecretName: wrong-secret
    local: {mountPath: /stash-repo, subPath: app, hostPath: {path: ${repoDir}}}
`, ns);

  // The snapshot to recover: taken by the agent (standalone, on the host) as host-0, as a
  // Deployment's backup is; it records dataDir, the path the Recoveries name.
  const passwordFile = path.join(dir, 'password');
  await writeFile(passwordFile, PASSWORD, { mode: 0o600 });
  const standalone = ['--repo', path.join(repoDir, 'app'), '--password-file', passwordFile, '--json'];
  const init = await cli(['init', ...standalone]);
  assert.equal(init.code, 0, init.stderr);
  const backup = await cli(['backup', ...standalone, '--host', 'host-0', dataDir]);
  assert.equal(backup.code, 0, backup.stderr);
  snapshotId = (JSON.parse(backup.stdout.trim().split('\n').at(-1) ?? '{}') as { snapshotId: string }).snapshotId;
  assert.match(snapshotId, /^[0-9a-f]{64}$/);
  const listed = await cli(['snapshots', ...standalone]);
  const snaps = (JSON.parse(listed.stdout.trim().split('\n').at(-1) ?? '{}') as { snapshots: { id: string; paths: string[] }[] }).snapshots;
  assert.deepEqual(snaps.map((s) => [s.id, s.paths]), [[snapshotId, [dataDir]]]);
});

after(async () => {
  await server?.close();
  if (cluster && ns) {
    await cluster.kc.makeApiClient(CustomObjectsApi).deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: 'agenttemplates', name: templateName }).catch(() => undefined);
    await deleteNamespace(cluster, ns);
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('stash recover --recovery-name in a recovery Job\'s real Pod claims, restores identical bytes and reports; IfNotRecovered: a second Pod exits 0 without restoring', { timeout: 420_000 }, async () => {
  const target = path.join(dir, 'restored');
  const created = await recoveryJobPod('restore', 'repo', target);
  const podName = created.metadata?.name ?? '';
  const pod = await podEnded(cluster, ns, podName);
  const logs = await podLogs(cluster, pod);
  assert.equal(pod.status?.phase, 'Succeeded', `${JSON.stringify(pod.status)}\n${logs}`);
  assert.equal(containerStatus(pod, 'stash-recover')?.state?.terminated?.exitCode, 0, logs);
  const result = resultLine(await podLog(cluster, ns, podName, 'stash-recover')) as { ok?: boolean; status?: string; phase?: string; snapshotId?: string; host?: string } | undefined;
  assert.deepEqual([result?.ok, result?.status, result?.phase, result?.snapshotId, result?.host], [true, 'reported', 'Succeeded', snapshotId, 'host-0'], logs);
  assert.ok(!logs.includes(PASSWORD), 'the password is never printed');
  // The one path's content lands directly in the volume, byte for byte.
  assert.deepEqual(await fileContents(target), await fileContents(dataDir));

  const r = await getRecovery('restore');
  assert.equal(r.status?.phase, 'Succeeded', JSON.stringify(r.status));
  assert.equal(r.status?.snapshotId, snapshotId);
  const host = r.status?.recoveredHosts?.[0];
  assert.deepEqual([host?.host, host?.phase, host?.snapshotId, host?.generation], ['host-0', 'Succeeded', snapshotId, r.metadata.generation]);
  assert.ok((host?.files ?? 0) >= 3, JSON.stringify(host));
  assert.deepEqual(await eventsOf('restore'), [['Normal', 'RecoveryJobCreated'], ['Normal', 'RecoverySucceeded']]);
  // run-recovery sees the agent's report: nothing more to do.
  assert.equal(await recoverer.reconcileRecovery(ns, 'restore', log), 'finished');

  // The pod starts again (a second Pod of the Job's spec, owned by the Job): IfNotRecovered, nothing
  // is restored (a local change survives); then update-recovery-status, which has nothing to do:
  // the recover step reported (and it has no API access).
  await writeFile(path.join(target, 'a.txt'), 'changed after the recovery\n');
  const job = await cluster.kc.makeApiClient(BatchV1Api).readNamespacedJob({ namespace: ns, name: 'restore-recovery' });
  const spec = JSON.parse(JSON.stringify(created.spec)) as NonNullable<V1Pod['spec']>;
  const recover = spec.containers.find((c) => c.name === 'stash-recover');
  assert.ok(recover);
  delete spec.nodeName;
  delete spec.priority;
  await createPodWhenReady(cluster, ns, {
    metadata: {
      name: 'restore-again',
      // Not a controller reference and none of the Job's labels: the Job controller leaves it alone,
      // and handle-trigger finds the Recovery through Pod -> Job -> Recovery.
      ownerReferences: [{ apiVersion: 'batch/v1', kind: 'Job', name: job.metadata?.name ?? '', uid: job.metadata?.uid ?? '' }],
    },
    spec: {
      ...spec,
      initContainers: [recover],
      containers: [{ ...recover, name: 'stash-update-status', args: ['update-recovery-status', '--recovery-name=$(RECOVERY_NAME)'] }],
    },
  });
  const again = await podEnded(cluster, ns, 'restore-again');
  const againLogs = await podLogs(cluster, again);
  assert.equal(again.status?.phase, 'Succeeded', `${JSON.stringify(again.status)}\n${againLogs}`);
  assert.deepEqual(['stash-recover', 'stash-update-status'].map((c) => containerStatus(again, c)?.state?.terminated?.exitCode), [0, 0], againLogs);
  const againResult = resultLine(await podLog(cluster, ns, 'restore-again', 'stash-recover'));
  assert.deepEqual([againResult?.ok, againResult?.status, againResult?.host], [true, 'already-recovered', 'host-0'], againLogs);
  assert.equal(await readFile(path.join(target, 'a.txt'), 'utf8'), 'changed after the recovery\n');
  assert.equal((await getRecovery('restore')).status?.phase, 'Succeeded');
  assert.deepEqual(await eventsOf('restore'), [['Normal', 'RecoveryJobCreated'], ['Normal', 'RecoverySucceeded']], 'no second report');
  assert.match(await podLog(cluster, ns, 'restore-again', 'stash-update-status'), /recover step reported/);
});

test('a wrong repository password: the recovery Job\'s Pod fails, the Recovery is Failed with an error naming RESTIC_PASSWORD and no password', { timeout: 420_000 }, async () => {
  const target = path.join(dir, 'restored-bad');
  const created = await recoveryJobPod('bad', 'repo-wrong-password', target);
  const podName = created.metadata?.name ?? '';
  const pod = await podEnded(cluster, ns, podName);
  const logs = await podLog(cluster, ns, podName, 'stash-recover');
  assert.equal(pod.status?.phase, 'Failed', `${JSON.stringify(pod.status)}\n${logs}`);
  const exitCode = containerStatus(pod, 'stash-recover')?.state?.terminated?.exitCode;
  assert.ok(exitCode !== undefined && exitCode !== 0, `recover exits non-zero: ${JSON.stringify(pod.status)}`);
  assert.match(logs, /RESTIC_PASSWORD/);
  const r = await getRecovery('bad');
  assert.equal(r.status?.phase, 'Failed', JSON.stringify(r.status));
  const error = r.status?.recoveredHosts?.[0]?.error ?? '';
  assert.match(error, /wrong password/);
  assert.match(error, /RESTIC_PASSWORD/);
  for (const text of [error, r.status?.error ?? '', logs]) {
    assert.ok(!text.includes(WRONG_PASSWORD) && !text.includes(PASSWORD), `a password leaked: ${text}`);
  }
  // Nothing was restored.
  assert.deepEqual(await fileContents(target), new Map());
  // The Job fails (backoffLimit 0); run-recovery sees the agent's report and adds no JobFailed.
  await waitFor('the recovery Job to fail', async () => {
    const job = await cluster.kc.makeApiClient(BatchV1Api).readNamespacedJob({ namespace: ns, name: 'bad-recovery' });
    return job.status?.conditions?.some((c) => c.type === 'Failed' && c.status === 'True') === true ? true : undefined;
  }, 60_000);
  assert.equal(await recoverer.reconcileRecovery(ns, 'bad', log), 'finished');
  const warnings = await eventsOf('bad');
  assert.deepEqual(warnings, [['Normal', 'RecoveryJobCreated'], ['Warning', 'RecoveryFailed']]);
  const notes = (await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns })).items.filter((e) => e.regarding?.name === 'bad').map((e) => e.note ?? '');
  assert.ok(notes.every((n) => !n.includes(WRONG_PASSWORD)));
});
