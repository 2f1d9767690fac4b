// handle-trigger's recovery protocol (POST /agent/v1/recovery/claim and /report) against the real
// kube-apiserver and kube-controller-manager: Recoveries, Jobs they own (the Job controller makes
// the Pods), a StatefulSet's Pods; the REAL agent client (agent/cluster) talks to the REAL
// handle-trigger server on a loopback port with Pod-bound ServiceAccount tokens from TokenRequest
// (audience stash).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CoreV1Api, CustomObjectsApi, EventsV1Api } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { pino } from 'pino';
import { createFunctionsClient, FunctionsCallError, RecoveryChangedError } from '../agent/cluster/index.ts';
import type { FunctionsClient } from '../agent/cluster/index.ts';
import { createHandleTriggerServer } from '../functions/handle-trigger/index.ts';
import { AGENT_PATHS } from '../shared/agent-protocol.ts';
import { applyYaml, deleteNamespace, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { defaultServiceAccount } from './support/node.ts';
import { waitFor } from './support/wait.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';

type Server = Awaited<ReturnType<ReturnType<typeof createHandleTriggerServer>['listen']>>;
let cluster: Cluster;
let ns: string;
let dir: string;
let server: Server;
let otherServer: Server;


type HostEntry = { host: string; phase: string; generation?: number; pod?: string; snapshotId?: string; files?: number; bytes?: number; error?: string; completionTime?: string };
type RecoveryObject = {
  metadata: { name: string; uid: string; generation: number };
  status?: {
    phase?: string; recoveredHosts?: HostEntry[]; startTime?: string; completionTime?: string; snapshotId?: string; observedGeneration?: number; error?: string;
    stats?: { files?: number; bytes?: number; durationSeconds?: number }; conditions?: { type: string; status: string; reason?: string; observedGeneration?: number }[];
  };
};

async function getRecovery(name: string): Promise<RecoveryObject> {
  return await cluster.kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'recoveries', name }) as RecoveryObject;
}

async function podsOf(label: string, count: number): Promise<V1Pod[]> {
  return waitFor(`${count} pod(s) with app=${label}`, async () => {
    const pods = await cluster.kc.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: ns, labelSelector: `app=${label}` });
    return pods.items.length >= count ? pods.items.slice(0, count) : undefined;
  });
}

async function clientFor(pod: V1Pod, url = server.url): Promise<FunctionsClient> {
  const answer = await cluster.kc.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({
    namespace: ns, name: 'default',
    body: { spec: { audiences: ['stash'], expirationSeconds: 3600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata?.name ?? '', uid: pod.metadata?.uid ?? '' } } },
  });
  const tokenFile = path.join(dir, `${pod.metadata?.name ?? 'pod'}-${url.length}.token`);
  await writeFile(tokenFile, answer.status?.token ?? '');
  return createFunctionsClient({ baseUrl: url, tokenFile });
}

/** A Recovery into a volume (the run-recovery Job's case), and the Job it owns (its controller makes the Pod). */
async function recoveryWithJob(name: string, policy: 'IfNotRecovered' | 'Always'): Promise<{ pod: V1Pod; client: FunctionsClient }> {
  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: Recovery
metadata: {name: ${name}}
spec:
  repository: {name: repo}
  recoveryAgent: stash-volume-recovery
  paths: [/data]
  recoveryPolicy: ${policy}
  recoverTo:
    volume: {mountPath: /restore, subPath: x, persistentVolumeClaim: {claimName: data}}
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
    spec: {restartPolicy: Never, containers: [{name: stash, image: registry.k8s.io/pause:3.10}]}
`, ns);
  const [pod] = await podsOf(`${name}-recovery`, 1) as [V1Pod];
  return { pod, client: await clientFor(pod) };
}

async function eventsOn(name: string, reason: string) {
  const list = await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns });
  return list.items.filter((e) => e.regarding?.name === name && e.reason === reason);
}

async function status(res: Promise<unknown>): Promise<number | undefined> {
  try {
    await res;
    return 200;
  } catch (error) {
    if (error instanceof RecoveryChangedError) return 409;
    if (error instanceof FunctionsCallError) return error.status;
    throw error;
  }
}

before(async () => {
  cluster = await useCluster();
  ns = await freshNamespace(cluster, 'ht-recovery');
  dir = await mkdtemp(path.join(tmpdir(), 'ht-recovery-'));
  const logger = pino({ level: process.env.LOG_LEVEL ?? 'warn' });
  server = await createHandleTriggerServer({ kc: cluster.kc, logger, namespaces: [ns] }).listen(0, { host: '127.0.0.1' });
  otherServer = await createHandleTriggerServer({ kc: cluster.kc, logger, namespaces: ['some-other-namespace'] }).listen(0, { host: '127.0.0.1' });
  await defaultServiceAccount(cluster, ns);
  await applyYaml(cluster, `
apiVersion: stash.appscode.com/v1alpha2
kind: Repository
metadata: {name: repo}
spec: {backend: {rest: {url: "http://rest-server.example:8000/app"}, storageSecretName: repo-secret}}
`, ns);
});

after(async () => {
  await server?.close();
  await otherServer?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  if (ns) await deleteNamespace(cluster, ns);
});

test('a recovery Job\'s pod claims its Recovery, reports Succeeded; IfNotRecovered answers 204 after; a new generation is claimed again; a stale report is 409', { timeout: 120_000 }, async () => {
  const { pod, client } = await recoveryWithJob('rec', 'IfNotRecovered');
  const before = await getRecovery('rec');
  const claimed = await client.claimRecovery({ namespace: ns, recovery: 'rec', host: 'host-0' });
  assert.deepEqual(claimed, {
    namespace: ns, recovery: 'rec', generation: before.metadata.generation, host: 'host-0', policy: 'IfNotRecovered',
    repository: { namespace: ns, name: 'repo', backend: { rest: { url: 'http://rest-server.example:8000/app' }, storageSecretName: 'repo-secret' }, storageSecretName: 'repo-secret' },
    snapshot: 'latest', paths: ['/data'], target: { type: 'volume', directory: '/restore/x' }, args: [],
  });
  const running = await getRecovery('rec');
  assert.equal(running.status?.phase, 'Running');
  assert.deepEqual(running.status?.recoveredHosts, [{ host: 'host-0', phase: 'Running', generation: before.metadata.generation, pod: pod.metadata?.name }]);
  assert.ok(running.status?.startTime !== undefined && !Number.isNaN(Date.parse(running.status.startTime)));

  const answer = await client.reportRecovery({
    namespace: ns, recovery: 'rec', host: 'host-0', generation: before.metadata.generation,
    outcome: { phase: 'Succeeded', snapshotId: 'a'.repeat(64), files: 12, bytes: 3456, durationSeconds: 2.5 },
  });
  assert.deepEqual(answer, { recovery: 'rec', host: 'host-0', phase: 'Succeeded' });
  const done = await getRecovery('rec');
  assert.equal(done.status?.phase, 'Succeeded');
  assert.equal(done.status?.snapshotId, 'a'.repeat(64));
  assert.deepEqual(done.status?.stats, { files: 12, bytes: 3456, durationSeconds: 2.5 });
  assert.ok(done.status?.completionTime);
  const entry = done.status?.recoveredHosts?.[0];
  assert.deepEqual([entry?.host, entry?.phase, entry?.snapshotId, entry?.files, entry?.bytes, entry?.generation], ['host-0', 'Succeeded', 'a'.repeat(64), 12, 3456, before.metadata.generation]);
  const recovered = done.status?.conditions?.find((c) => c.type === 'Recovered');
  assert.deepEqual([recovered?.status, recovered?.reason, recovered?.observedGeneration], ['True', 'RecoverySucceeded', before.metadata.generation]);
  const events = await eventsOn('rec', 'RecoverySucceeded');
  assert.equal(events.length, 1);
  assert.equal(events[0]?.type, 'Normal');
  assert.match(events[0]?.note ?? '', /host host-0: restored snapshot aaaaaaaa \(12 files, 3456 bytes\)/);

  // IfNotRecovered: the host is recovered at this generation; a restarted pod gets 204.
  assert.equal(await client.claimRecovery({ namespace: ns, recovery: 'rec', host: 'host-0' }), undefined);
  assert.equal((await getRecovery('rec')).status?.phase, 'Succeeded', 'a 204 changes nothing');

  // A new snapshot: the generation rises, the host is claimed again.
  await cluster.kc.makeApiClient(CustomObjectsApi).patchNamespacedCustomObject({
    group: GROUP, version: VERSION, namespace: ns, plural: 'recoveries', name: 'rec', body: [{ op: 'replace', path: '/spec/snapshot', value: 'abcdef12' }],
  });
  const changed = await getRecovery('rec');
  assert.ok(changed.metadata.generation > before.metadata.generation);
  const again = await client.claimRecovery({ namespace: ns, recovery: 'rec', host: 'host-0' });
  assert.equal(again?.generation, changed.metadata.generation);
  assert.equal(again?.snapshot, 'abcdef12');
  const rerunning = await getRecovery('rec');
  assert.equal(rerunning.status?.phase, 'Running');
  assert.equal(rerunning.status?.completionTime, undefined, 'a new round has no completionTime yet');

  // A report for the old generation is refused: the Recovery changed under the agent.
  await assert.rejects(client.reportRecovery({ namespace: ns, recovery: 'rec', host: 'host-0', generation: before.metadata.generation, outcome: { phase: 'Succeeded', snapshotId: 'b'.repeat(64) } }),
    (error: unknown) => error instanceof RecoveryChangedError && /changed while recovering/.test(error.message));
  assert.equal((await getRecovery('rec')).status?.recoveredHosts?.[0]?.phase, 'Running', 'the stale result is dropped');

  // A failure of the current generation: Failed, the condition False, a Warning Event.
  const failed = await client.reportRecovery({ namespace: ns, recovery: 'rec', host: 'host-0', generation: changed.metadata.generation, outcome: { phase: 'Failed', error: 'restic: no snapshot abcdef12' } });
  assert.equal(failed.phase, 'Failed');
  const f = await getRecovery('rec');
  assert.equal(f.status?.phase, 'Failed');
  assert.match(f.status?.error ?? '', /host host-0: restic: no snapshot abcdef12/);
  assert.deepEqual(f.status?.conditions?.filter((c) => c.type === 'Recovered').map((c) => [c.status, c.reason]), [['False', 'RecoveryFailed']]);
  const warnings = await eventsOn('rec', 'RecoveryFailed');
  assert.deepEqual(warnings.map((e) => e.type), ['Warning']);
  // The same report again (its answer lost) is answered without a second Event.
  assert.equal((await client.reportRecovery({ namespace: ns, recovery: 'rec', host: 'host-0', generation: changed.metadata.generation, outcome: { phase: 'Failed', error: 'restic: no snapshot abcdef12' } })).phase, 'Failed');
  assert.equal((await eventsOn('rec', 'RecoveryFailed')).length, 1);
  // IfNotRecovered after a failure: the host is claimed again (the Job retries).
  assert.equal((await client.claimRecovery({ namespace: ns, recovery: 'rec' }))?.host, 'host-0', 'without a host, the pod\'s own host is claimed');
});

test('Always: every claim recovers again, also after a success', { timeout: 120_000 }, async () => {
  const { client } = await recoveryWithJob('always', 'Always');
  const first = await client.claimRecovery({ namespace: ns, recovery: 'always', host: 'host-0' });
  assert.equal(first?.policy, 'Always');
  assert.equal((await client.reportRecovery({ namespace: ns, recovery: 'always', host: 'host-0', generation: first?.generation ?? -1, outcome: { phase: 'Succeeded', snapshotId: 'c'.repeat(64) } })).phase, 'Succeeded');
  const second = await client.claimRecovery({ namespace: ns, recovery: 'always', host: 'host-0' });
  assert.equal(second?.generation, first?.generation);
  assert.equal((await getRecovery('always')).status?.phase, 'Running');
});

test('refusals: another Recovery\'s Job pod 403, another host 403, no token 401, a missing Recovery 404, an unserved namespace 404, a bad body 400, a Recovery being deleted 409', { timeout: 120_000 }, async () => {
  const { client } = await recoveryWithJob('mine', 'IfNotRecovered');
  const { pod: otherPod, client: other } = await recoveryWithJob('theirs', 'IfNotRecovered');
  await assert.rejects(other.claimRecovery({ namespace: ns, recovery: 'mine', host: 'host-0' }),
    (e: unknown) => e instanceof FunctionsCallError && e.status === 403 && /belongs neither to Recovery mine/.test(e.message));
  assert.equal(await status(other.reportRecovery({ namespace: ns, recovery: 'mine', host: 'host-0', generation: 1, outcome: { phase: 'Succeeded' } })), 403);
  await assert.rejects(client.claimRecovery({ namespace: ns, recovery: 'mine', host: 'host-1' }),
    (e: unknown) => e instanceof FunctionsCallError && e.status === 403 && /recovers as host-0, not host-1/.test(e.message));
  assert.equal((await getRecovery('mine')).status, undefined, 'nothing was recorded by refused claims');

  const res = await fetch(`${server.url}${AGENT_PATHS.recoveryClaim}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ namespace: ns, recovery: 'mine', host: 'host-0' }) });
  assert.equal(res.status, 401);
  assert.match((await res.json() as { error: string }).error, /no bearer token/);

  assert.equal(await status(client.claimRecovery({ namespace: ns, recovery: 'nope', host: 'host-0' })), 404);
  const unserved = await clientFor(otherPod, otherServer.url);
  await assert.rejects(unserved.claimRecovery({ namespace: ns, recovery: 'theirs', host: 'host-0' }),
    (e: unknown) => e instanceof FunctionsCallError && e.status === 404 && /does not serve/.test(e.message));
  await assert.rejects(client.claimRecovery({ namespace: ns, recovery: 'Not_A_Name', host: 'host-0' }),
    (e: unknown) => e instanceof FunctionsCallError && e.status === 400 && /recovery/.test(e.message));

  // A Recovery being deleted (a finalizer holds it): 409.
  const custom = cluster.kc.makeApiClient(CustomObjectsApi);
  await custom.patchNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'recoveries', name: 'mine', body: [{ op: 'add', path: '/metadata/finalizers', value: ['stash.test/hold'] }] });
  await custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'recoveries', name: 'mine' });
  try {
    await assert.rejects(client.claimRecovery({ namespace: ns, recovery: 'mine', host: 'host-0' }),
      (e: unknown) => e instanceof RecoveryChangedError && /is being deleted/.test(e.message));
  } finally {
    await custom.patchNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'recoveries', name: 'mine', body: [{ op: 'remove', path: '/metadata/finalizers' }] });
  }
});

test('a StatefulSet pod recovers host-<ordinal>; the Recovery is Succeeded only when every replica has', { timeout: 120_000 }, async () => {
  await applyYaml(cluster, `
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  podManagementPolicy: Parallel
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Recovery
metadata: {name: sts}
spec:
  repository: {name: repo}
  recoveryAgent: stash-volume-recovery
  paths: [/var/lib/db]
  recoverTo: {workload: {apiVersion: apps/v1, kind: StatefulSet, name: db}}
`, ns);
  const pods = (await podsOf('db', 2)).sort((a, b) => (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''));
  const [c0, c1] = await Promise.all(pods.map((p) => clientFor(p))) as [FunctionsClient, FunctionsClient];
  // db-1 does not say its host: handle-trigger claims its own, host-1.
  const one = await c1.claimRecovery({ namespace: ns, recovery: 'sts' });
  assert.equal(one?.host, 'host-1');
  assert.deepEqual(one?.target, { type: 'volume', directory: '/' }, 'in a workload the paths are restored in place');
  await assert.rejects(c1.claimRecovery({ namespace: ns, recovery: 'sts', host: 'host-0' }), (e: unknown) => e instanceof FunctionsCallError && e.status === 403);
  const generation = one?.generation ?? -1;
  assert.equal((await c1.reportRecovery({ namespace: ns, recovery: 'sts', host: 'host-1', generation, outcome: { phase: 'Succeeded', snapshotId: 'd'.repeat(64), files: 1, bytes: 10 } })).phase, 'Running',
    'host-0 has not recovered yet');
  const zero = await c0.claimRecovery({ namespace: ns, recovery: 'sts', host: 'host-0' });
  assert.equal(zero?.host, 'host-0');
  assert.equal((await c0.reportRecovery({ namespace: ns, recovery: 'sts', host: 'host-0', generation, outcome: { phase: 'Succeeded', snapshotId: 'e'.repeat(64), files: 2, bytes: 20 } })).phase, 'Succeeded');
  const r = await getRecovery('sts');
  assert.equal(r.status?.phase, 'Succeeded');
  assert.deepEqual(r.status?.recoveredHosts?.map((h) => [h.host, h.phase, h.pod]).sort(), [['host-0', 'Succeeded', pods[0]?.metadata?.name], ['host-1', 'Succeeded', pods[1]?.metadata?.name]]);
  assert.deepEqual([r.status?.stats?.files, r.status?.stats?.bytes], [3, 30]);
  // A pod of the StatefulSet may not recover a volume Recovery it has nothing to do with.
  assert.equal(await status(c0.claimRecovery({ namespace: ns, recovery: 'rec-none', host: 'host-0' })), 404);
});
