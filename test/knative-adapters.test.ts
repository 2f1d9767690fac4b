/**
 * Knative Eventing's real adapters (knative.dev/eventing, KNATIVE_EVENTING_VERSION) against the real
 * control plane: exactly what they send to a sink, and that Stash's runtime reads it.
 *
 * - ApiServerSource receive adapter: Reference and Resource mode, a namespaced core kind, a Stash
 *   CRD, a cluster-scoped Stash CRD behind a label selector, and nothing for objects that already
 *   existed when it started.
 * - mtping (the PingSource adapter): the ping event, without and with data.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { pino } from 'pino';
import { createFunctionServer, parseEventRequest, type Invocation } from '../shared/runtime/index.ts';
import { applyYaml, deleteNamespace, freshNamespace, useCluster, type Cluster } from './support/cluster.ts';
import {
  deliveredAfter,
  markPingSourceReady,
  startApiServerSourceAdapter,
  startEventSink,
  startPingAdapter,
  type EventSink,
  type ReceivedRequest,
  type RunningAdapter,
} from './support/knative.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const STASH = 'stash.appscode.com/v1alpha2';

let cluster: Cluster;
let namespace: string;
let apiServerUrl: string;
const cleanups: (() => Promise<unknown>)[] = [];

before(async () => {
  cluster = await useCluster();
  namespace = await freshNamespace(cluster, 'knative-adapters');
  cleanups.push(() => deleteNamespace(cluster, namespace));
  const server = cluster.kc.getCurrentCluster()?.server;
  assert.ok(server, 'the kubeconfig names no current cluster server');
  apiServerUrl = server;
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

/** The CloudEvent attributes and extensions an ApiServerSource event carries (binary mode). */
function ceHeaders(request: ReceivedRequest): Record<string, string | undefined> {
  const picked: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    if (name.startsWith('ce-') && name !== 'ce-id' && name !== 'ce-time') picked[name] = Array.isArray(value) ? value.join(',') : value;
  }
  return picked;
}

const ofObject = (type: string, kind: string, name: string) => (r: ReceivedRequest): boolean =>
  r.headers['ce-type'] === type && r.headers['ce-kind'] === kind && r.headers['ce-name'] === name;

function assertIdAndTime(request: ReceivedRequest): void {
  assert.match(String(request.headers['ce-id']), UUID, 'ce-id is a UUID (the adapter sets one per event)');
  const time = Date.parse(String(request.headers['ce-time']));
  assert.ok(Number.isFinite(time) && Math.abs(time - request.receivedAt) < 60_000, `ce-time ${String(request.headers['ce-time'])} is the send time`);
}

describe('ApiServerSource receive adapter, Reference mode', () => {
  let sink: EventSink;
  let adapter: RunningAdapter;
  const selectorValue = randomBytes(4).toString('hex');
  const core = (): CoreV1Api => cluster.kc.makeApiClient(CoreV1Api);

  before(async () => {
    sink = await startEventSink();
    cleanups.push(() => sink.close());
    // Exists before the adapter starts: it must never produce an event.
    await core().createNamespacedConfigMap({ namespace, body: { metadata: { name: 'preexisting' }, data: { a: '1' } } });
    adapter = await startApiServerSourceAdapter({
      kubeconfigPath: cluster.kubeconfigPath,
      sinkUrl: sink.url,
      mode: 'Reference',
      namespaces: [namespace],
      name: 'stash-events',
      namespace,
      resources: [
        { apiVersion: 'v1', kind: 'ConfigMap' },
        { apiVersion: STASH, kind: 'Backup' },
        { apiVersion: STASH, kind: 'AgentTemplate', selector: `stash.test/run=${selectorValue}` },
      ],
    });
    cleanups.push(() => adapter.stop());
    // The watch is live once a fresh object's add event arrives.
    await deliveredAfter(
      sink, 'add of a canary ConfigMap',
      (attempt) => core().createNamespacedConfigMap({ namespace, body: { metadata: { name: `canary-${attempt}` } } }).then(() => undefined),
      (r) => r.headers['ce-type'] === 'dev.knative.apiserver.ref.add' && String(r.headers['ce-name']).startsWith('canary-'),
    );
  });

  test('a ConfigMap created, updated and deleted gives add, update and delete, exactly as Knative sends them', async () => {
    const name = 'app-config';
    await core().createNamespacedConfigMap({ namespace, body: { metadata: { name }, data: { k: 'v1' } } });
    const added = await sink.waitFor('ref.add app-config', ofObject('dev.knative.apiserver.ref.add', 'ConfigMap', name));
    await core().patchNamespacedConfigMap({ namespace, name, body: [{ op: 'replace', path: '/data/k', value: 'v2' }] });
    const updated = await sink.waitFor('ref.update app-config', ofObject('dev.knative.apiserver.ref.update', 'ConfigMap', name));
    await core().deleteNamespacedConfigMap({ namespace, name });
    const deleted = await sink.waitFor('ref.delete app-config', ofObject('dev.knative.apiserver.ref.delete', 'ConfigMap', name));

    for (const [request, action] of [[added, 'add'], [updated, 'update'], [deleted, 'delete']] as const) {
      assert.equal(request.method, 'POST');
      assert.equal(request.path, '/');
      assert.deepEqual(ceHeaders(request), {
        'ce-specversion': '1.0',
        'ce-type': `dev.knative.apiserver.ref.${action}`,
        'ce-source': apiServerUrl,
        'ce-subject': `/apis/v1/namespaces/${namespace}/configmaps/${name}`,
        'ce-kind': 'ConfigMap',
        'ce-apiversion': 'v1',
        'ce-name': name,
        'ce-namespace': namespace,
      });
      assert.equal(request.headers['content-type'], 'application/json');
      assert.equal(request.headers['kn-namespace'], namespace);
      assertIdAndTime(request);
      // corev1.ObjectReference marshalled by Go: this field order, empty fields omitted.
      assert.equal(request.body.toString('utf8'), JSON.stringify({ kind: 'ConfigMap', namespace, name, apiVersion: 'v1' }));

      const invocation = parseEventRequest({ headers: request.headers, body: request.body });
      assert.equal(invocation.source, 'apiserver');
      assert.ok(invocation.source === 'apiserver');
      assert.equal(invocation.mode, 'ref');
      assert.equal(invocation.action, action);
      assert.deepEqual(invocation.ref, { apiVersion: 'v1', kind: 'ConfigMap', namespace, name });
      assert.equal(invocation.eventSource, apiServerUrl);
    }
    const forName = sink.received.filter((r) => r.headers['ce-name'] === name).map((r) => r.headers['ce-type']);
    assert.deepEqual(forName, ['dev.knative.apiserver.ref.add', 'dev.knative.apiserver.ref.update', 'dev.knative.apiserver.ref.delete']);
  });

  test('objects that existed when the adapter started produce no event (handlers need the sweep)', () => {
    assert.ok(sink.received.length > 0, 'the sink received the canary events');
    assert.equal(sink.received.filter((r) => r.headers['ce-name'] === 'preexisting').length, 0);
  });

  test('a Stash Backup gives an event whose subject and extensions name the CRD', async () => {
    const name = 'nightly';
    await applyYaml(cluster, `
apiVersion: ${STASH}
kind: Backup
metadata: {name: ${name}}
spec:
  schedule: '0 3 * * *'
  backupAgent: {name: stash-volume-backup}
  repository: {name: repo}
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  targetDirectories: [/data]
`, namespace);
    const added = await sink.waitFor('ref.add Backup', ofObject('dev.knative.apiserver.ref.add', 'Backup', name));
    assert.deepEqual(ceHeaders(added), {
      'ce-specversion': '1.0',
      'ce-type': 'dev.knative.apiserver.ref.add',
      'ce-source': apiServerUrl,
      'ce-subject': `/apis/${STASH}/namespaces/${namespace}/backups/${name}`,
      'ce-kind': 'Backup',
      'ce-apiversion': STASH,
      'ce-name': name,
      'ce-namespace': namespace,
    });
    assert.deepEqual(added.json, { kind: 'Backup', namespace, name, apiVersion: STASH });
    const invocation = parseEventRequest({ headers: added.headers, body: added.body });
    assert.ok(invocation.source === 'apiserver');
    assert.deepEqual(invocation.ref, { apiVersion: STASH, kind: 'Backup', namespace, name });
  });

  test('a cluster-scoped AgentTemplate matching the selector gives an event without a namespace; one not matching gives none', async () => {
    const objects = cluster.kc.makeApiClient(CustomObjectsApi);
    const matching = `knative-test-${selectorValue}`;
    const other = `knative-test-other-${selectorValue}`;
    const template = (name: string, labels: Record<string, string>) => ({
      apiVersion: STASH, kind: 'AgentTemplate',
      metadata: { name, labels },
      spec: { containers: [{ name: 'agent', image: 'stash-agent:0.1.0' }] },
    });
    const remove = (name: string) => () => objects.deleteClusterCustomObject({ group: 'stash.appscode.com', version: 'v1alpha2', plural: 'agenttemplates', name });
    await objects.createClusterCustomObject({ group: 'stash.appscode.com', version: 'v1alpha2', plural: 'agenttemplates', body: template(other, { 'stash.test/run': 'other' }) });
    cleanups.push(remove(other));
    await objects.createClusterCustomObject({ group: 'stash.appscode.com', version: 'v1alpha2', plural: 'agenttemplates', body: template(matching, { 'stash.test/run': selectorValue }) });
    cleanups.push(remove(matching));

    const added = await sink.waitFor('ref.add AgentTemplate', ofObject('dev.knative.apiserver.ref.add', 'AgentTemplate', matching));
    // The namespace extension is set to "" by events.go, and an empty header may be dropped on the wire.
    assert.ok(!added.headers['ce-namespace'], `ce-namespace is empty or absent, got ${String(added.headers['ce-namespace'])}`);
    assert.equal(added.headers['ce-subject'], `/apis/${STASH}/namespaces//agenttemplates/${matching}`);
    assert.deepEqual(added.json, { kind: 'AgentTemplate', name: matching, apiVersion: STASH });
    const invocation = parseEventRequest({ headers: added.headers, body: added.body });
    assert.ok(invocation.source === 'apiserver');
    assert.deepEqual(invocation.ref, { apiVersion: STASH, kind: 'AgentTemplate', name: matching });

    await remove(matching)();
    await sink.waitFor('ref.delete AgentTemplate', ofObject('dev.knative.apiserver.ref.delete', 'AgentTemplate', matching));
    assert.equal(sink.received.filter((r) => r.headers['ce-name'] === other).length, 0, 'the selector keeps the other AgentTemplate out');
  });
});

describe('ApiServerSource receive adapter, Resource mode', () => {
  test('data is the whole object and the type is dev.knative.apiserver.resource.*', async () => {
    const sink = await startEventSink();
    cleanups.push(() => sink.close());
    const adapter = await startApiServerSourceAdapter({
      kubeconfigPath: cluster.kubeconfigPath, sinkUrl: sink.url, mode: 'Resource', namespaces: [namespace],
      name: 'stash-resources', namespace, resources: [{ apiVersion: 'v1', kind: 'Secret', selector: 'stash.test/resource-mode=yes' }],
    });
    cleanups.push(() => adapter.stop());
    const core = cluster.kc.makeApiClient(CoreV1Api);
    const added = await deliveredAfter(
      sink, 'resource.add of a Secret',
      (attempt) => core.createNamespacedSecret({
        namespace, body: { metadata: { name: `whole-${attempt}`, labels: { 'stash.test/resource-mode': 'yes' } }, stringData: { key: 'value' } },
      }).then(() => undefined),
      (r) => r.headers['ce-type'] === 'dev.knative.apiserver.resource.add',
    );
    const name = String(added.headers['ce-name']);
    assert.deepEqual(ceHeaders(added), {
      'ce-specversion': '1.0',
      'ce-type': 'dev.knative.apiserver.resource.add',
      'ce-source': apiServerUrl,
      'ce-subject': `/apis/v1/namespaces/${namespace}/secrets/${name}`,
      'ce-kind': 'Secret',
      'ce-apiversion': 'v1',
      'ce-name': name,
      'ce-namespace': namespace,
    });
    const object = added.json as { kind: string; apiVersion: string; metadata: { name: string; namespace: string; uid: string }; data: Record<string, string> };
    assert.equal(object.kind, 'Secret');
    assert.equal(object.apiVersion, 'v1');
    assert.equal(object.metadata.name, name);
    assert.equal(object.metadata.namespace, namespace);
    assert.match(object.metadata.uid, UUID);
    // Resource mode carries the Secret's data to whatever the sink is: Stash uses Reference mode.
    assert.equal(object.data.key, Buffer.from('value').toString('base64'));
    const invocation = parseEventRequest({ headers: added.headers, body: added.body });
    assert.ok(invocation.source === 'apiserver');
    assert.equal(invocation.mode, 'resource');
    assert.equal(invocation.object?.kind, 'Secret');
  });
});

describe("ApiServerSource receive adapter into Stash's function server", () => {
  test('the server takes each event (202, empty body) and hands the handler the object reference', async () => {
    const invocations: Invocation[] = [];
    const server = await createFunctionServer({
      name: 'knative-adapter-probe', logger: pino({ level: 'silent' }), handle: (invocation) => { invocations.push(invocation); },
    })
      .listen(0, { host: '127.0.0.1', handleSignals: false });
    cleanups.push(() => server.close());
    const adapter = await startApiServerSourceAdapter({
      kubeconfigPath: cluster.kubeconfigPath, sinkUrl: `${server.url}/`, mode: 'Reference', namespaces: [namespace],
      name: 'stash-runtime', namespace, resources: [{ apiVersion: 'v1', kind: 'ConfigMap', selector: 'stash.test/runtime=yes' }],
    });
    cleanups.push(() => adapter.stop());
    const core = cluster.kc.makeApiClient(CoreV1Api);
    const deadline = Date.now() + 30_000;
    let created = 0;
    while (invocations.length === 0 && Date.now() < deadline) {
      await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: `runtime-${created}`, labels: { 'stash.test/runtime': 'yes' } } } });
      created += 1;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const [first] = invocations;
    assert.ok(first, `the function server got no invocation within 30 s; adapter output:\n${adapter.output().slice(-3000)}`);
    assert.ok(first.source === 'apiserver');
    assert.equal(first.mode, 'ref');
    assert.equal(first.action, 'add');
    assert.equal(first.ref.kind, 'ConfigMap');
    assert.equal(first.ref.namespace, namespace);
    assert.match(first.ref.name, /^runtime-\d+$/);
    // A non-2xx answer would make the adapter log "failed to send cloudevent" (delegate.go sendCloudEvent).
    assert.doesNotMatch(adapter.output(), /failed to send cloudevent/);
  });
});

describe('PingSource adapter (mtping)', () => {
  let sink: EventSink;
  let adapter: RunningAdapter;

  before(async () => {
    sink = await startEventSink();
    cleanups.push(() => sink.close());
    const systemNamespace = await freshNamespace(cluster, 'knative-system');
    cleanups.push(() => deleteNamespace(cluster, systemNamespace));
    // Seconds-resolution schedules (robfig cron SecondOptional, as mtping parses them) keep the test short;
    // Stash's own PingSource uses "* * * * *".
    await applyYaml(cluster, `
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: tick}
spec:
  schedule: '*/2 * * * * *'
  sink: {uri: '${sink.url}'}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: tick-with-data}
spec:
  schedule: '*/2 * * * * *'
  contentType: application/json
  data: '{"reason":"sweep"}'
  sink: {uri: '${sink.url}'}
`, namespace);
    await markPingSourceReady(cluster.kc, namespace, 'tick', sink.url);
    await markPingSourceReady(cluster.kc, namespace, 'tick-with-data', sink.url);
    adapter = await startPingAdapter({ kubeconfigPath: cluster.kubeconfigPath, systemNamespace });
    cleanups.push(() => adapter.stop());
  });

  test('a Ready PingSource without data sends dev.knative.sources.ping with an empty body', async () => {
    const source = `/apis/v1/namespaces/${namespace}/pingsources/tick`;
    const ping = await sink.waitFor('ping from tick', (r) => r.headers['ce-source'] === source, 30_000);
    assert.equal(ping.method, 'POST');
    assert.deepEqual(ceHeaders(ping), { 'ce-specversion': '1.0', 'ce-type': 'dev.knative.sources.ping', 'ce-source': source });
    assert.equal(ping.headers['kn-namespace'], namespace);
    assert.equal(ping.headers['content-type'], undefined);
    assert.equal(ping.body.length, 0);
    assertIdAndTime(ping);
    const invocation = parseEventRequest({ headers: ping.headers, body: ping.body });
    assert.ok(invocation.source === 'ping');
    assert.deepEqual(invocation.pingSource, { namespace, name: 'tick' });
  });

  test('a PingSource with data sends it as the body with its contentType', async () => {
    const source = `/apis/v1/namespaces/${namespace}/pingsources/tick-with-data`;
    const ping = await sink.waitFor('ping from tick-with-data', (r) => r.headers['ce-source'] === source, 30_000);
    assert.deepEqual(ceHeaders(ping), { 'ce-specversion': '1.0', 'ce-type': 'dev.knative.sources.ping', 'ce-source': source });
    assert.equal(ping.headers['content-type'], 'application/json');
    assert.equal(ping.body.toString('utf8'), '{"reason":"sweep"}');
    const invocation = parseEventRequest({ headers: ping.headers, body: ping.body });
    assert.ok(invocation.source === 'ping');
    assert.deepEqual(invocation.data, { reason: 'sweep' });
  });

  test('each tick is a new event: ids differ and ticks follow the schedule', async () => {
    const source = `/apis/v1/namespaces/${namespace}/pingsources/tick`;
    // mtping watches PingSources in every namespace: on the shared test control plane another test
    // file's mtping may deliver the same tick here too (with its own jitter). Ticks are therefore
    // told apart by time: deliveries less than 1 s apart are the same tick.
    const distinctTicks = (): number[] => sink.received
      .filter((r) => r.headers['ce-source'] === source)
      .map((r) => Date.parse(String(r.headers['ce-time'])))
      .sort((a, b) => a - b)
      .filter((t, i, all) => i === 0 || t - (all[i - 1] ?? 0) >= 1_000);
    await sink.waitFor('a second tick from tick', () => distinctTicks().length >= 2, 30_000);
    const ticks = sink.received.filter((r) => r.headers['ce-source'] === source);
    const ids = new Set(ticks.map((r) => r.headers['ce-id']));
    assert.equal(ids.size, ticks.length, 'every delivery has its own id');
    const [first, second] = distinctTicks();
    assert.ok(first !== undefined && second !== undefined);
    const gap = second - first;
    assert.ok(gap > 1_000 && gap < 3_500, `two ticks of */2 seconds are about 2 s apart (got ${gap} ms; mtping adds up to 0.5 s of jitter)`);
  });
});
