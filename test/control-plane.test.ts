/**
 * The test control plane (scripts/control-plane.sh, test/support/cluster.ts) does what the
 * functions rely on: version, namespaces, RBAC with TokenRequest/TokenReview/SubjectAccessReview,
 * the controller-manager's garbage collector, Job and namespace controllers, and the CRDs.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import {
  ApiException,
  ApiextensionsV1Api,
  AuthenticationV1Api,
  AuthorizationV1Api,
  BatchV1Api,
  CoreV1Api,
  KubeConfig,
  VersionApi,
} from '@kubernetes/client-node';
import { applyYaml, deleteNamespace, freshNamespace, useCluster, type Cluster } from './support/cluster.ts';
import { repoRoot } from './support/tools.ts';

let cluster: Cluster;
let ns: string;

before(async () => {
  cluster = await useCluster();
  ns = await freshNamespace(cluster, 'control-plane');
});
after(async () => {
  if (cluster && ns) await deleteNamespace(cluster, ns);
});

/** Polls `check` every 200 ms until it returns a value other than undefined, or fails after `ms`. */
async function eventually<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) assert.fail(`${what} did not happen within ${ms} ms${last instanceof Error ? ` (last error: ${last.message})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function httpStatus(call: () => Promise<unknown>): Promise<number> {
  try {
    await call();
    return 200;
  } catch (error) {
    if (error instanceof ApiException) return error.code;
    throw error;
  }
}

test('scripts/control-plane.sh status succeeds and env names the same kubeconfig', () => {
  const script = path.join(repoRoot, 'scripts/control-plane.sh');
  execFileSync(script, ['status'], { stdio: 'ignore' });
  const env = execFileSync(script, ['env'], { encoding: 'utf8' }).trim();
  assert.equal(env, `export KUBECONFIG=${cluster.kubeconfigPath}`);
});

test('/version reports the pinned KUBERNETES_VERSION', async () => {
  const pinned = /^KUBERNETES_VERSION=(\S+)$/m.exec(readFileSync(path.join(repoRoot, 'scripts/versions.env'), 'utf8'))?.[1];
  assert.equal(pinned, 'v1.34.5');
  const version = await cluster.kc.makeApiClient(VersionApi).getCode();
  assert.equal(version.gitVersion, pinned);
  assert.equal(version.major, '1');
  assert.equal(version.minor, '34');
});

test('freshNamespace creates a labelled, uniquely named namespace', async () => {
  const core = cluster.kc.makeApiClient(CoreV1Api);
  const other = await freshNamespace(cluster, 'Control_Plane!');
  try {
    assert.match(other, /^control-plane-[0-9a-f]{8}$/);
    assert.notEqual(other, ns);
    const read = await core.readNamespace({ name: other });
    assert.equal(read.metadata?.labels?.['stash.test/namespace'], 'true');
    assert.equal(read.status?.phase, 'Active');
  } finally {
    await deleteNamespace(cluster, other);
  }
  // The namespace controller empties and removes it.
  await eventually('namespace deletion', 60_000, async () =>
    (await httpStatus(() => core.readNamespace({ name: other }))) === 404 ? true : undefined,
  );
});

test('RBAC denies a ServiceAccount token from TokenRequest; TokenReview and SubjectAccessReview answer', async () => {
  const core = cluster.kc.makeApiClient(CoreV1Api);
  await applyYaml(cluster, 'apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: nobody\n', ns);
  const tokenRequest = await core.createNamespacedServiceAccountToken({
    name: 'nobody',
    namespace: ns,
    body: { spec: { audiences: [], expirationSeconds: 600 } },
  });
  const token = tokenRequest.status?.token;
  assert.ok(token, 'TokenRequest returned no token');

  const asNobody = new KubeConfig();
  const current = cluster.kc.getCurrentCluster();
  assert.ok(current);
  asNobody.loadFromClusterAndUser(current, { name: 'nobody', token });
  const nobodyCore = asNobody.makeApiClient(CoreV1Api);
  assert.equal(await httpStatus(() => nobodyCore.listNamespacedSecret({ namespace: ns })), 403);

  const review = await cluster.kc.makeApiClient(AuthenticationV1Api).createTokenReview({ body: { spec: { token } } });
  assert.equal(review.status?.authenticated, true);
  assert.equal(review.status?.user?.username, `system:serviceaccount:${ns}:nobody`);
  assert.ok(review.status?.user?.groups?.includes('system:serviceaccounts'));

  const forged = await cluster.kc.makeApiClient(AuthenticationV1Api).createTokenReview({ body: { spec: { token: `${token}x` } } });
  assert.notEqual(forged.status?.authenticated, true);

  const authz = cluster.kc.makeApiClient(AuthorizationV1Api);
  const user = `system:serviceaccount:${ns}:nobody`;
  const canGet = async (resource: string): Promise<boolean | undefined> =>
    (
      await authz.createSubjectAccessReview({
        body: { spec: { user, groups: ['system:serviceaccounts'], resourceAttributes: { namespace: ns, verb: 'get', resource } } },
      })
    ).status?.allowed;
  assert.equal(await canGet('secrets'), false);

  await applyYaml(
    cluster,
    `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: read-configmaps}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: nobody-reads-configmaps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-configmaps}
subjects:
- {kind: ServiceAccount, name: nobody, namespace: ${ns}}
`,
    ns,
  );
  await eventually('the RoleBinding to take effect', 10_000, async () => ((await canGet('configmaps')) ? true : undefined));
  assert.equal(await canGet('secrets'), false);
  assert.equal(await httpStatus(() => nobodyCore.listNamespacedConfigMap({ namespace: ns })), 200);
});

test('applyYaml creates, then updates, objects', async () => {
  const yaml = (value: string): string => `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  key: ${value}\n`;
  const [created] = await applyYaml(cluster, yaml('one'), ns);
  assert.equal(created?.metadata?.namespace, ns);
  const [updated] = await applyYaml(cluster, `---\n${yaml('two')}---\n`, ns);
  assert.equal(updated?.metadata?.uid, created?.metadata?.uid);
  const read = await cluster.kc.makeApiClient(CoreV1Api).readNamespacedConfigMap({ name: 'applied', namespace: ns });
  assert.deepEqual(read.data, { key: 'two' });
  await assert.rejects(applyYaml(cluster, 'kind: ConfigMap\nmetadata: {name: x}\n', ns), /lacks apiVersion, kind or metadata.name/);
});

test('the garbage collector deletes an object whose owner was deleted', async () => {
  const core = cluster.kc.makeApiClient(CoreV1Api);
  const owner = await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'owner' } } });
  assert.ok(owner.metadata?.uid);
  await core.createNamespacedConfigMap({
    namespace: ns,
    body: {
      metadata: {
        name: 'owned',
        ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.metadata.uid }],
      },
    },
  });
  await core.deleteNamespacedConfigMap({ name: 'owner', namespace: ns, propagationPolicy: 'Background' });
  await eventually('garbage collection of the owned ConfigMap', 60_000, async () =>
    (await httpStatus(() => core.readNamespacedConfigMap({ name: 'owned', namespace: ns }))) === 404 ? true : undefined,
  );
});

test('the Job controller creates a Pod for a Job (which stays Pending: no scheduler, no kubelet)', async () => {
  await cluster.kc.makeApiClient(BatchV1Api).createNamespacedJob({
    namespace: ns,
    body: {
      metadata: { name: 'once' },
      spec: {
        backoffLimit: 0,
        template: { spec: { restartPolicy: 'Never', containers: [{ name: 'main', image: 'example.invalid/none:1' }] } },
      },
    },
  });
  const core = cluster.kc.makeApiClient(CoreV1Api);
  const pod = await eventually('a Pod for Job once', 60_000, async () => {
    const pods = await core.listNamespacedPod({ namespace: ns, labelSelector: 'job-name=once' });
    return pods.items[0];
  });
  assert.equal(pod.status?.phase, 'Pending');
  assert.equal(pod.spec?.serviceAccountName, 'default');
});

test("Knative Eventing's CRDs are installed and Established; a PingSource can be applied", async () => {
  const ext = cluster.kc.makeApiClient(ApiextensionsV1Api);
  for (const name of [
    'apiserversources.sources.knative.dev',
    'pingsources.sources.knative.dev',
    'brokers.eventing.knative.dev',
    'triggers.eventing.knative.dev',
  ]) {
    const crd = await ext.readCustomResourceDefinition({ name });
    const established = crd.status?.conditions?.find((c) => c.type === 'Established');
    assert.equal(established?.status, 'True', `${name} is not Established`);
  }
  const [ping] = await applyYaml(
    cluster,
    `apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: every-minute}
spec:
  schedule: "* * * * *"
  sink: {uri: http://127.0.0.1:9/}
`,
    ns,
  );
  assert.equal(ping?.kind, 'PingSource');
  assert.equal(ping?.metadata?.namespace, ns);
});

test("every CRD in shared/api/crds/ is installed and Established", async () => {
  const dir = path.join(repoRoot, 'shared/api/crds');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length > 0, 'shared/api/crds/ holds no CRDs: run npm run gen:crds');
  const ext = cluster.kc.makeApiClient(ApiextensionsV1Api);
  for (const file of files) {
    const name = /^\s*name:\s*(\S+)\s*$/m.exec(readFileSync(path.join(dir, file), 'utf8'))?.[1];
    assert.ok(name, `${file} names no CRD`);
    const crd = await ext.readCustomResourceDefinition({ name });
    const established = crd.status?.conditions?.find((c) => c.type === 'Established');
    assert.equal(established?.status, 'True', `${name} (from ${file}) is not Established`);
  }
});
