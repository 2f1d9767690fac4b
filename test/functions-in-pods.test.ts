// The functions' image on the test node, as deployed: each of the six functions runs in a pod of
// stash-functions:0.1.0 (scripts/images.ts) built from its container in knative/20-services.yaml
// (env, NODE_OPTIONS, probes, resources, securityContext: non-root, read-only root filesystem),
// under its own ServiceAccount with the RBAC of knative/10-rbac.yaml (really applied), with the
// in-cluster configuration (the `kubernetes` Service, which the node's kube-proxy routes to the
// apiserver). Knative Serving itself cannot run here (README): the pod is what its
// revision would run, without the queue-proxy.
//
// What it shows: every pod becomes Ready by the kubelet's readiness probe; each function's
// per-minute resync (here its OpenFaaS cron-connector call) does its real work in a namespace of
// objects under its own rights (inject-sidecar injects, launch-db-job accepts a database Backup,
// run-recovery creates a recovery Job, handle-trigger opens a run) and no log line says an access
// was refused; handle-trigger's HTTP endpoint authenticates a caller (TokenReview,
// SubjectAccessReview) as its own ServiceAccount.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { AppsV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { FIELD_MANAGER as SIDECAR_FIELD_MANAGER } from '../functions/inject-sidecar/plan.ts';
import { FUNCTIONS } from './support/stack.ts';
import type { StackFunction } from './support/stack.ts';
import { applyYaml, deleteNamespacesReleasing, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { createPodWhenReady, nodeNamespace, podLog } from './support/node.ts';
import { applyFunctionRbac, triggerCaller } from './support/rbac.ts';
import type { AppliedRbac } from './support/rbac.ts';
import { repoRoot } from './support/tools.ts';
import { designSample } from './support/samples.ts';
import type { Sample } from './support/samples.ts';
import { waitFor } from './support/wait.ts';

const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';

let cluster: Cluster;
let system: string; // stands for stash-system: the functions' pods and ServiceAccounts
let served: string; // the namespace the functions serve (STASH_NAMESPACES)
let rbac: AppliedRbac | undefined;
const podIps = {} as Record<StackFunction, string>;

const core = (): CoreV1Api => cluster.kc.makeApiClient(CoreV1Api);
const custom = (): CustomObjectsApi => cluster.kc.makeApiClient(CustomObjectsApi);

interface KnativeService {
  kind: string;
  metadata: { name: string };
  spec: { template: { spec: { serviceAccountName: string; containers: V1Container[] } } };
}

/** A function's pod: the Knative Service's container as its revision would run it (PORT 8080, as Knative sets). */
function functionPod(service: KnativeService): V1Pod {
  const [container] = service.spec.template.spec.containers;
  assert.ok(container, `knative/20-services.yaml: ${service.metadata.name} has a container`);
  const probe = (p: V1Container['readinessProbe']) => (p?.httpGet ? { ...p, httpGet: { ...p.httpGet, port: 8080 } } : p);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: service.metadata.name, labels: { 'app.kubernetes.io/component': service.metadata.name } },
    spec: {
      serviceAccountName: service.spec.template.spec.serviceAccountName,
      restartPolicy: 'Always',
      containers: [{
        ...container,
        imagePullPolicy: 'IfNotPresent',
        ports: [{ containerPort: 8080, name: 'http1' }],
        env: [...(container.env ?? []), { name: 'PORT', value: '8080' }, { name: 'STASH_NAMESPACES', value: served }],
        readinessProbe: probe(container.readinessProbe),
        livenessProbe: probe(container.livenessProbe),
      }],
    },
  };
}

const sample = (file: string): Sample => designSample(file, served);

/** The objects each function's resync acts on: the design's volume and database backups and a volume Recovery. */
async function applyServedObjects(): Promise<void> {
  const repository = sample('01-repository.yaml');
  repository.spec.backend = { local: { mountPath: '/repository', hostPath: { path: '/tmp/stash-functions-in-pods' } }, storageSecretName: 'local-secret' };
  const demo = sample('11-deployment-default-backup.yaml');
  delete demo.metadata.annotations; // the default-backup annotations belong to expand-template's sample
  (demo.spec.template as { spec: { volumes: unknown[] } }).spec.volumes = [{ name: 'source-data', emptyDir: {} }];
  const appBinding = sample('05-appbinding.yaml');
  const database = sample('06-backup-database.yaml');
  database.spec.backupAgent = { name: 'pg-backup' };
  const recovery = sample('03-recovery-volume.yaml');
  recovery.spec.repository = { name: 'stash-backup-repo', namespace: served };
  recovery.spec.recoverTo = { volume: { mountPath: '/source/data', hostPath: { path: '/tmp/stash-functions-in-pods-recovered' } } };
  await applyYaml(cluster, readFileSync(path.join(repoRoot, 'shared/api/defaults/agent-templates.yaml'), 'utf8'));
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'local-secret' }, stringData: { RESTIC_PASSWORD: randomBytes(8).toString('hex') } }), served);
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'quick-postgres-auth' }, stringData: { POSTGRES_USER: 'postgres', POSTGRES_PASSWORD: 'unused' } }), served);
  for (const object of [repository, demo, appBinding, sample('02-backup-volume.yaml'), database, recovery]) await applyYaml(cluster, stringify(object), served);
  await custom().createNamespacedCustomObject({
    group: GROUP, version: VERSION, plural: 'backuptriggers', namespace: served,
    body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'BackupTrigger', metadata: { name: 'run-now' }, spec: { targetBackup: { name: 'backup-volume-demo' } } },
  });
}

before(async () => {
  cluster = await useCluster();
  system = await nodeNamespace(cluster, 'fn-pods-system');
  served = await freshNamespace(cluster, 'fn-pods-served');
  rbac = await applyFunctionRbac(cluster, system, randomBytes(3).toString('hex'));
  await applyServedObjects();
  const services = parseAllDocuments(readFileSync(path.join(repoRoot, 'knative/20-services.yaml'), 'utf8'))
    .map((d) => d.toJS() as KnativeService | null).filter((s): s is KnativeService => s?.kind === 'Service');
  assert.deepEqual(services.map((s) => s.metadata.name).sort(), [...FUNCTIONS].sort());
  for (const service of services) await createPodWhenReady(cluster, system, functionPod(service));
});

after(async () => {
  await rbac?.remove();
  await deleteNamespacesReleasing(cluster, [system, served], 'backups');
  await deleteNamespacesReleasing(cluster, [served], 'recoveries');
});

test('each function\'s pod runs the image as the Knative Service describes it and becomes Ready by the kubelet\'s probe', { timeout: 240_000 }, async () => {
  for (const fn of FUNCTIONS) {
    const pod = await waitFor(`the ${fn} pod to be Ready`, async () => {
      const p = await core().readNamespacedPod({ namespace: system, name: fn });
      const failed = p.status?.containerStatuses?.find((c) => (c.restartCount ?? 0) > 0 || c.state?.waiting?.reason === 'CreateContainerConfigError');
      if (failed) assert.fail(`${fn}: ${JSON.stringify(failed.state ?? failed.lastState)}\n${await podLog(cluster, system, fn, 'function', (failed.restartCount ?? 0) > 0)}`);
      return p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? p : undefined;
    }, 180_000, 500);
    assert.equal(pod.spec?.nodeName, 'stash-node');
    const container = pod.spec?.containers[0];
    assert.equal(container?.securityContext?.runAsNonRoot, true, `${fn} runs as non-root (the image's user)`);
    assert.equal(container?.securityContext?.readOnlyRootFilesystem, true);
    podIps[fn] = pod.status?.podIP ?? '';
    assert.match(podIps[fn], /^10\.88\./);
  }
});

async function resync(fn: StackFunction): Promise<void> {
  const res = await fetch(`http://${podIps[fn]}:8080/`, { method: 'POST', headers: { 'x-connector': 'cron-connector' } });
  assert.equal(res.status, 202, `${fn}'s resync: ${res.status} ${await res.text()}`);
}

async function refusals(fn: StackFunction): Promise<string[]> {
  // The apiserver's refusal names the ServiceAccount ("User \"system:serviceaccount:...\" cannot list ...").
  return (await podLog(cluster, system, fn, 'function')).split('\n').filter((l) => /is forbidden|cannot (get|list|watch|create|update|patch|delete)|\b403\b/i.test(l));
}

test('each function\'s resync does its work under its own ServiceAccount and RBAC; no access is refused', { timeout: 240_000 }, async () => {
  assert.ok(podIps['inject-sidecar'], 'the pods are Ready (the test above)');
  for (const fn of FUNCTIONS) await resync(fn);

  const deployment = await waitFor('inject-sidecar to put the sidecar into the Deployment', async () => {
    const d = await cluster.kc.makeApiClient(AppsV1Api).readNamespacedDeployment({ namespace: served, name: 'stash-demo' });
    return d.spec?.template.spec?.containers.some((c) => c.name === 'stash-backup') ? d : undefined;
  }, 30_000, 500);
  assert.ok(deployment.metadata?.managedFields?.some((m) => m.manager === SIDECAR_FIELD_MANAGER), 'applied under inject-sidecar\'s field manager');

  type Conditioned = { status?: { conditions?: { type: string; status: string }[]; phase?: string } };
  await waitFor('launch-db-job to accept the database Backup', async () => {
    const b = await custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backups', namespace: served, name: 'backup-database-demo' }) as Conditioned;
    return b.status?.conditions?.find((c) => c.type === 'DatabaseJobReady' && c.status === 'True');
  }, 30_000, 500);
  await waitFor('run-recovery to create the recovery Job', async () => {
    const jobs = await cluster.kc.makeApiClient(BatchV1Api).listNamespacedJob({ namespace: served, labelSelector: 'stash.appscode.com/recovery=recovery-volume-demo' });
    return jobs.items[0];
  }, 30_000, 500);
  await waitFor('handle-trigger to open the run', async () => {
    const t = await custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backuptriggers', namespace: served, name: 'run-now' }) as Conditioned;
    return t.status?.phase;
  }, 30_000, 500);
  // Once more, now that there is more to do (the run, the Job): still nothing refused.
  for (const fn of FUNCTIONS) await resync(fn);
  for (const fn of FUNCTIONS) {
    const log = await podLog(cluster, system, fn, 'function');
    assert.match(log, /"trigger":"cron-connector".*"msg":"handled"/, `${fn} handled its resync:\n${log.slice(-2000)}`);
    assert.deepEqual(await refusals(fn), [], `${fn} was refused an access`);
  }
});

test('handle-trigger\'s HTTP endpoint, served by the pod, authenticates a caller as its own ServiceAccount', { timeout: 120_000 }, async () => {
  assert.ok(podIps['handle-trigger'], 'the pods are Ready (the first test)');
  const token = await triggerCaller(cluster, served);
  const url = `http://${podIps['handle-trigger']}:8080/v1/namespaces/${served}/backups/backup-volume-demo/trigger`;
  const denied = await fetch(url, { method: 'POST', headers: { authorization: 'Bearer not-a-token' } });
  assert.equal(denied.status, 401);
  const created = await waitFor('the endpoint to accept the ServiceAccount (RBAC takes effect)', async () => {
    const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    return res.status === 201 ? await res.json() as { name: string } : undefined;
  }, 20_000, 500);
  const run = await custom().getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backuptriggers', namespace: served, name: created.name }) as { spec: { targetBackup: { name: string } } };
  assert.equal(run.spec.targetBackup.name, 'backup-volume-demo');
  assert.deepEqual(await refusals('handle-trigger'), []);
});
