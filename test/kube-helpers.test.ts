// shared/kube against the real kube-apiserver (scripts/control-plane.sh): reads, server-side
// apply with field managers, merge patches, status patches on a test CRD, typed errors, Events.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventsV1Api, KubeConfig } from '@kubernetes/client-node';
import type { KubernetesObject, V1ConfigMap } from '@kubernetes/client-node';
import {
  AlreadyExistsError, applyObject, ConflictError, createObject, deleteObject, emitEvent, getObject, getObjectOnce, InvalidError, kubeRequest, listObjects, loadKubeConfig,
  mergePatch, NotFoundError, patchStatus, replaceObject, resourcePath, setCondition,
} from '../shared/kube/index.ts';
import type { Condition, ReadCache } from '../shared/kube/index.ts';
import { applyYaml, deleteNamespace, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';

let cluster: Cluster;
let ns: string;

const widgetCrd = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.kube-helpers.stash.test}
spec:
  group: kube-helpers.stash.test
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
          status:
            type: object
            properties:
              phase: {type: string}
              conditions:
                type: array
                items:
                  type: object
                  required: [type, status, reason, message, lastTransitionTime]
                  properties:
                    type: {type: string}
                    status: {type: string, enum: ["True", "False", "Unknown"]}
                    reason: {type: string}
                    message: {type: string}
                    observedGeneration: {type: integer}
                    lastTransitionTime: {type: string, format: date-time}
`;

before(async () => {
  cluster = await useCluster();
  ns = await freshNamespace(cluster, 'kube-helpers');
});

after(async () => {
  if (ns) await deleteNamespace(cluster, ns);
});

function configMap(name: string, data: Record<string, string>): V1ConfigMap {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: ns }, data };
}

test('loadKubeConfig honours $KUBECONFIG and talks to the cluster', async () => {
  const saved = process.env.KUBECONFIG;
  process.env.KUBECONFIG = cluster.kubeconfigPath;
  try {
    const kc = loadKubeConfig();
    const namespace = await getObject(kc, { apiVersion: 'v1', kind: 'Namespace', name: ns });
    assert.equal(namespace?.metadata?.name, ns);
  } finally {
    if (saved === undefined) delete process.env.KUBECONFIG;
    else process.env.KUBECONFIG = saved;
  }
});

test('getObject returns undefined for a missing object and for a missing namespace', async () => {
  assert.equal(await getObject(cluster.kc, { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'absent' }), undefined);
  assert.equal(await getObject(cluster.kc, { apiVersion: 'v1', kind: 'ConfigMap', namespace: `${ns}-nope`, name: 'absent' }), undefined);
});

test('server-side apply: create, take over with force, conflict without force, prune owned fields', async () => {
  const created = await applyObject(cluster.kc, configMap('applied', { a: '1', b: '2' }), { fieldManager: 'fn-one' });
  assert.deepEqual(created.data, { a: '1', b: '2' });

  // Another manager changing a field fn-one owns: a conflict unless forced.
  await assert.rejects(applyObject(cluster.kc, configMap('applied', { a: 'other' }), { fieldManager: 'fn-two', force: false }),
    (error: unknown) => error instanceof ConflictError && error.message.startsWith(`apply ConfigMap ${ns}/applied as fn-two failed:`) &&
      error.message.includes('conflict'));
  const forced = await applyObject(cluster.kc, configMap('applied', { a: 'other' }), { fieldManager: 'fn-two' });
  assert.equal(forced.data?.a, 'other');
  const managers = (forced.metadata?.managedFields ?? []).map((m) => m.manager);
  assert.ok(managers.includes('fn-one') && managers.includes('fn-two'));

  // fn-one now owns only b; applying without b removes it.
  const pruned = await applyObject(cluster.kc, configMap('applied', {}), { fieldManager: 'fn-one' });
  assert.deepEqual(pruned.data, { a: 'other' });

  const read = await getObject<V1ConfigMap>(cluster.kc, { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'applied' });
  assert.deepEqual(read?.data, { a: 'other' });
});

test('an invalid object gives InvalidError naming the object', async () => {
  await assert.rejects(applyObject(cluster.kc, configMap('invalid', { 'not a valid key!': '1' }), { fieldManager: 'fn-one' }),
    (error: unknown) => error instanceof InvalidError && error.message.startsWith(`apply ConfigMap ${ns}/invalid as fn-one failed:`) &&
      error.message.includes('not a valid key!') && error.code === 422);
});

test('mergePatch merges, deletes with null, and detects a stale resourceVersion', async () => {
  const created = await applyObject(cluster.kc, configMap('merged', { keep: 'k', drop: 'd' }), { fieldManager: 'fn-one' });
  const patched = await mergePatch<V1ConfigMap>(cluster.kc, { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'merged' },
    { metadata: { labels: { 'stash.test/x': 'y' } }, data: { drop: null, added: 'a' } }, { fieldManager: 'fn-merge' });
  assert.deepEqual(patched.data, { keep: 'k', added: 'a' });
  assert.equal(patched.metadata?.labels?.['stash.test/x'], 'y');
  await assert.rejects(
    mergePatch(cluster.kc, { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'merged' }, { data: { late: '1' } },
      { fieldManager: 'fn-merge', resourceVersion: created.metadata?.resourceVersion ?? '1' }),
    (error: unknown) => error instanceof ConflictError && error.message.includes(`merge-patch ConfigMap ${ns}/merged failed`));
  await assert.rejects(
    mergePatch(cluster.kc, { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'absent' }, { data: {} }, { fieldManager: 'fn-merge' }),
    NotFoundError);
});

test('patchStatus writes the status subresource of a custom resource, keeping the spec', async () => {
  await applyYaml(cluster, widgetCrd);
  const ref = { apiVersion: 'kube-helpers.stash.test/v1', kind: 'Widget', namespace: ns, name: 'w' };
  const widget = { ...ref, metadata: { name: 'w', namespace: ns }, spec: { size: 3 }, status: { phase: 'ignored' } };
  delete (widget as Partial<typeof ref>).name;
  delete (widget as Partial<typeof ref>).namespace;
  let stored: KubernetesObject & { spec?: unknown; status?: { phase?: string; conditions?: Condition[] } } | undefined;
  for (let attempt = 0; ; attempt++) {
    try {
      stored = await applyObject(cluster.kc, widget as KubernetesObject, { fieldManager: 'fn-one' });
      break;
    } catch (error) {
      if (attempt > 40) throw error;
      await new Promise((resolve) => setTimeout(resolve, 250)); // the new CRD reaching discovery
    }
  }
  assert.equal(stored.status, undefined, 'apply to the main resource ignores status');
  const conditions = setCondition(undefined, { type: 'Ready', status: 'True', reason: 'Sized', message: 'size 3', observedGeneration: 1 },
    new Date('2026-11-25T21:00:00Z'));
  const updated = await patchStatus<typeof stored>(cluster.kc, ref, { phase: 'Ready', conditions }, { fieldManager: 'fn-status' });
  assert.equal(updated.status?.phase, 'Ready');
  assert.deepEqual(updated.status?.conditions, conditions);
  assert.deepEqual(updated.spec, { size: 3 });

  const read = await getObject<typeof stored>(cluster.kc, ref);
  assert.equal(read?.status?.conditions?.[0]?.lastTransitionTime, '2026-11-25T21:00:00Z');
  await assert.rejects(
    patchStatus(cluster.kc, ref, { phase: 'Stale' }, { fieldManager: 'fn-status', resourceVersion: stored.metadata?.resourceVersion ?? '1' }),
    (error: unknown) => error instanceof ConflictError && error.message.includes(`patch status of Widget ${ns}/w failed`));
  await assert.rejects(patchStatus(cluster.kc, { ...ref, name: 'absent' }, { phase: 'x' }, { fieldManager: 'fn-status' }), NotFoundError);
});

test('emitEvent aggregates the same Event into a series and keeps different ones apart', async () => {
  const cm = await applyObject(cluster.kc, configMap('evented', { a: '1' }), { fieldManager: 'fn-one' });
  const event = { type: 'Warning' as const, reason: 'RepositoryLocked', message: 'repository is locked by another backup', action: 'Backup' };
  const first = await emitEvent(cluster.kc, cm, event, 'stash.appscode.com/handle-trigger', new Date('2026-11-25T21:00:00.100Z'));
  assert.equal(first.series, undefined);
  assert.equal(first.regarding?.uid, cm.metadata?.uid);
  const second = await emitEvent(cluster.kc, cm, event, 'stash.appscode.com/handle-trigger', new Date('2026-11-25T21:01:00Z'));
  assert.equal(second.metadata?.name, first.metadata?.name);
  assert.equal(second.series?.count, 2);
  const third = await emitEvent(cluster.kc, cm, event, 'stash.appscode.com/handle-trigger', new Date('2026-11-25T21:02:00Z'));
  assert.equal(third.series?.count, 3);
  await emitEvent(cluster.kc, cm, { ...event, type: 'Normal', reason: 'BackupSucceeded', message: 'snapshot 1a2b' }, 'stash.appscode.com/handle-trigger');

  const list = await cluster.kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns });
  const about = list.items.filter((e) => e.regarding?.name === 'evented');
  assert.equal(about.length, 2);
  const locked = about.find((e) => e.reason === 'RepositoryLocked');
  assert.equal(locked?.series?.count, 3);
  assert.equal(locked?.note, 'repository is locked by another backup');
  assert.equal(locked?.reportingController, 'stash.appscode.com/handle-trigger');
  assert.equal(locked?.action, 'Backup');
});

test('listObjects follows continue tokens and selects by label; createObject, replaceObject and deleteObject give typed outcomes', async () => {
  const configMap = (name: string, labels: Record<string, string>): KubernetesObject => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: ns, labels } });
  for (let i = 0; i < 7; i++) await createObject(cluster.kc, configMap(`page-${i}`, { 'stash.test/page': i % 2 === 0 ? 'even' : 'odd' }));
  await assert.rejects(createObject(cluster.kc, configMap('page-0', {})), AlreadyExistsError);

  const all = await listObjects(cluster.kc, { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, labelSelector: 'stash.test/page', limit: 2 });
  assert.deepEqual(all.map((c) => c.metadata?.name).sort(), ['page-0', 'page-1', 'page-2', 'page-3', 'page-4', 'page-5', 'page-6'], 'four pages of 2 followed to the end');
  assert.ok(all.every((c) => c.apiVersion === 'v1' && c.kind === 'ConfigMap'), 'list items carry apiVersion and kind');
  const odd = await listObjects(cluster.kc, { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, labelSelector: 'stash.test/page=odd' });
  assert.deepEqual(odd.map((c) => c.metadata?.name).sort(), ['page-1', 'page-3', 'page-5']);
  assert.deepEqual(await listObjects(cluster.kc, { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, labelSelector: '!stash.test/page,stash.test/none' }), []);

  const current = await getObject<V1ConfigMap & KubernetesObject>(cluster.kc, { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'page-1' });
  assert.ok(current);
  const replaced = await replaceObject(cluster.kc, { ...current, data: { k: 'v' } });
  assert.notEqual(replaced.metadata?.resourceVersion, current.metadata?.resourceVersion);
  await assert.rejects(replaceObject(cluster.kc, { ...current, data: { k: 'stale' } }), (error: unknown) => {
    assert.ok(error instanceof ConflictError);
    assert.match(error.message, new RegExp(`^replace ConfigMap ${ns}/page-1 failed: .*\\(409 Conflict\\)`));
    return true;
  });

  const ref = { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'page-2' };
  await assert.rejects(deleteObject(cluster.kc, ref, { preconditions: { uid: '00000000-0000-0000-0000-000000000000' } }), ConflictError, 'a uid precondition that does not hold');
  assert.equal(await deleteObject(cluster.kc, ref), true);
  assert.equal(await deleteObject(cluster.kc, ref), false, 'already gone');
});

test('kubeRequest: a status of 400 or more is a typed error naming the action; an unreachable apiserver is an error naming its address', async () => {
  await assert.rejects(kubeRequest(cluster.kc, 'get the nothing', 'GET', resourcePath('v1', 'configmaps', { namespace: ns, name: 'nothing' })), (error: unknown) => {
    assert.ok(error instanceof NotFoundError);
    assert.match(error.message, /^get the nothing failed: configmaps "nothing" not found \(404 NotFound\)/);
    return true;
  });
  const meta = await kubeRequest<{ kind?: string; data?: unknown }>(cluster.kc, 'get metadata', 'GET', resourcePath('v1', 'configmaps', { namespace: ns, name: 'page-3' }),
    { accept: 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1' });
  assert.equal(meta.kind, 'PartialObjectMetadata', 'the Accept header reaches the apiserver');
  assert.equal(meta.data, undefined);

  const gone = new KubeConfig();
  gone.loadFromClusterAndUser({ name: 'gone', server: 'https://127.0.0.1:1', skipTLSVerify: true }, { name: 'nobody', token: 'x' });
  await assert.rejects(getObject(gone, { apiVersion: 'v1', kind: 'ConfigMap', namespace: 'default', name: 'x' }),
    /^Error: get ConfigMap default\/x failed: connect ECONNREFUSED 127\.0\.0\.1:1; check that the apiserver at https:\/\/127\.0\.0\.1:1 is reachable/);
});

test('getObjectOnce: one read per object and cache (the stored object, even after it changes); a failed read is not remembered', async () => {
  const ref = { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'read-once' };
  await createObject(cluster.kc, { ...ref, metadata: { name: ref.name, namespace: ns }, data: { v: '1' } } as KubernetesObject);
  const cache: ReadCache = new Map();
  const first = await getObjectOnce<V1ConfigMap & KubernetesObject>(cluster.kc, ref, cache);
  await mergePatch(cluster.kc, ref, { data: { v: '2' } }, { fieldManager: 'fn-once' });
  const second = await getObjectOnce<V1ConfigMap & KubernetesObject>(cluster.kc, ref, cache);
  assert.equal(first?.data?.v, '1');
  assert.equal(second, first, 'the cache answers the second read with the first');
  assert.equal((await getObjectOnce<V1ConfigMap & KubernetesObject>(cluster.kc, ref, undefined))?.data?.v, '2', 'no cache: a fresh read');
  assert.equal((await getObjectOnce<V1ConfigMap & KubernetesObject>(cluster.kc, ref, new Map()))?.data?.v, '2', 'a new cache: a fresh read');

  const gone = new KubeConfig();
  gone.loadFromClusterAndUser({ name: 'gone', server: 'https://127.0.0.1:1', skipTLSVerify: true }, { name: 'nobody', token: 'x' });
  const failing: ReadCache = new Map();
  await assert.rejects(getObjectOnce(gone, ref, failing), /ECONNREFUSED/);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(failing.size, 0, 'the failed read left the cache');
});
