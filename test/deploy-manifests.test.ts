/**
 * The deployment manifests, checked by the real things that will read them:
 * - knative/: the real kube-apiserver (server-side dry-run, after installing Knative Serving's and
 *   Eventing's own CRDs), Knative's own webhook code and Broker filter code (knative-validate, built
 *   from knative.dev/eventing and knative.dev/serving), kubectl's kustomize, SubjectAccessReviews
 *   for the RBAC, and discovery for the plurals the ApiServerSource will guess;
 * - stack.yml: OpenFaaS's stack-file rules. OpenFaaS's Go modules (github.com/openfaas/faas-cli,
 *   github.com/openfaas/go-sdk) are refused by the Go module proxy here (403), so its parser cannot
 *   be built: parseOpenFaasStack() below re-implements ParseYAMLData of github.com/openfaas/go-sdk
 *   stack/stack.go and the types of stack/schema.go (commit 3de544f, v0.3.0) and is cited line by line.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import {
  ApiException,
  AuthorizationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObjectApi,
  PatchStrategy,
  type KubernetesObject,
  type V1ClusterRole,
  type V1ClusterRoleBinding,
} from '@kubernetes/client-node';
import { CronExpressionParser } from 'cron-parser';
import { isMap, isScalar, isSeq, parseAllDocuments, parseDocument, type Node as YamlNode } from 'yaml';
import { deleteNamespace, freshNamespace, useCluster, type Cluster } from './support/cluster.ts';
import { guessResource } from './support/knative.ts';
import { repoRoot, toolPath } from './support/tools.ts';
import { applyFunctionRbac } from './support/rbac.ts';
import { isFunctionName } from '../functions/main.ts';
import { API_ACCESS as EXPAND_TEMPLATE_ACCESS, HANDLED_KINDS as EXPAND_TEMPLATE_KINDS } from '../functions/expand-template/handler.ts';
import { HANDLED_KINDS as INJECT_SIDECAR_KINDS } from '../functions/inject-sidecar/handler.ts';
import { DEFAULT_FUNCTIONS_URL as SIDECAR_FUNCTIONS_URL } from '../functions/inject-sidecar/plan.ts';
import { HANDLED_KINDS as LAUNCH_DB_JOB_KINDS } from '../functions/launch-db-job/index.ts';
import { COMPONENT, COMPONENT_LABEL, DEFAULT_FUNCTIONS_URL as DB_JOB_FUNCTIONS_URL, MANAGED_BY_LABEL } from '../functions/launch-db-job/plan.ts';
import { HANDLED_KINDS as RUN_RECOVERY_KINDS } from '../functions/run-recovery/index.ts';
import { COMPONENT as RECOVERY_COMPONENT, COMPONENT_LABEL as RECOVERY_COMPONENT_LABEL, MANAGED_BY_LABEL as RECOVERY_MANAGED_BY_LABEL } from '../functions/run-recovery/plan.ts';
import { DEFAULT_FUNCTIONS_URL as AGENT_FUNCTIONS_URL } from '../shared/agent-pod.ts';

const run = promisify(execFile);
const knativeDir = path.join(repoRoot, 'knative');
/** The functions deployed: they exist (functions/<name>/index.ts, started by functions/main.ts). */
const FUNCTIONS = ['inject-sidecar', 'launch-db-job', 'run-recovery', 'expand-template', 'handle-trigger', 'sweep'] as const;
/** The functions that start agents (and tell them where handle-trigger answers). */
const STARTS_AGENTS: readonly string[] = ['inject-sidecar', 'launch-db-job', 'run-recovery'];
type FunctionName = (typeof FUNCTIONS)[number];
/**
 * The kinds of ApiServerSource events each function's dispatch handles (functions/<name>/index.ts).
 * handle-trigger's dispatch names BackupTrigger and Backup inline and ignores other kinds; sweep
 * runs a sweep on any call, so it must get the tick only.
 */
const HANDLED: Record<FunctionName, readonly string[]> = {
  'inject-sidecar': INJECT_SIDECAR_KINDS,
  'launch-db-job': LAUNCH_DB_JOB_KINDS,
  'run-recovery': RUN_RECOVERY_KINDS,
  'expand-template': EXPAND_TEMPLATE_KINDS,
  'handle-trigger': ['BackupTrigger', 'Backup'],
  sweep: [],
};
const SYSTEM_NAMESPACE = 'stash-system';
const STASH = 'stash.appscode.com/v1alpha2';
/** handle-trigger inside the cluster: the Knative Service handle-trigger of stash-system. */
const HANDLE_TRIGGER_URL = `http://handle-trigger.${SYSTEM_NAMESPACE}.svc.cluster.local`;
/** handle-trigger inside the cluster on OpenFaaS: through the gateway (Service gateway of namespace openfaas). */
const OPENFAAS_HANDLE_TRIGGER_URL = 'http://gateway.openfaas:8080/function/handle-trigger';
const PING_TYPE = 'dev.knative.sources.ping';
const RESYNC = (fn: string): string => `${fn}-resync`;

interface Manifest {
  file: string;
  object: KubernetesObject & Record<string, unknown>;
}

function manifestFiles(): string[] {
  return readdirSync(knativeDir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
}

function loadManifests(): Manifest[] {
  const manifests: Manifest[] = [];
  for (const file of manifestFiles()) {
    for (const document of parseAllDocuments(readFileSync(path.join(knativeDir, file), 'utf8'))) {
      assert.deepEqual(document.errors, [], `knative/${file} parses as YAML`);
      const value: unknown = document.toJS();
      if (value === null || value === undefined) continue;
      manifests.push({ file, object: value as Manifest['object'] });
    }
  }
  return manifests;
}

const manifests = loadManifests();
const ofKind = (kind: string): Manifest['object'][] => manifests.filter((m) => m.object.kind === kind).map((m) => m.object);
function only(kind: string): Manifest['object'] {
  const [object, ...more] = ofKind(kind);
  assert.ok(object && more.length === 0, `knative/ has exactly one ${kind}`);
  return object;
}
const key = (o: KubernetesObject): string => `${o.kind ?? ''} ${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

/** Loose typed access to the parts of Knative objects the tests read. */
interface TriggerSpec {
  broker: string;
  filters?: unknown[];
  subscriber: { ref: { apiVersion: string; kind: string; name: string } };
}
interface KnativeServiceSpec {
  template: { spec: { serviceAccountName?: string; containers: { image: string; env?: { name: string; value?: string }[] }[] } };
}
interface TriggerDelivery {
  delivery?: { retry?: number };
}
interface SourceSpec {
  sink: { ref: { apiVersion: string; kind: string; name: string } };
  resources?: { apiVersion: string; kind: string; selector?: { matchLabels?: Record<string, string> } }[];
  serviceAccountName?: string;
  schedule?: string;
  mode?: string;
}
const specOf = <T>(o: Manifest['object']): T => o.spec as T;

describe('knative/ on its own', () => {
  test('every deployed function exists, and every function that exists is deployed', () => {
    const built = readdirSync(path.join(repoRoot, 'functions'), { withFileTypes: true })
      .filter((e) => e.isDirectory() && readdirSync(path.join(repoRoot, 'functions', e.name)).includes('index.ts'))
      .map((e) => e.name);
    for (const fn of FUNCTIONS) {
      assert.ok(built.includes(fn), `functions/${fn}/index.ts exists`);
      assert.ok(isFunctionName(fn), `functions/main.ts starts ${fn}`);
    }
    assert.deepEqual(built.filter((f) => !(FUNCTIONS as readonly string[]).includes(f)), [], 'every built function is deployed by knative/ and stack.yml');
  });

  test('the kustomization lists every manifest file, in apply order, and kubectl kustomize renders all objects', async () => {
    const kustomization = parseDocument(readFileSync(path.join(knativeDir, 'kustomization.yaml'), 'utf8')).toJS() as { resources: string[] };
    assert.deepEqual(kustomization.resources, manifestFiles());
    const { stdout } = await run(toolPath('kubectl'), ['kustomize', knativeDir], { maxBuffer: 16 * 1024 * 1024 });
    const rendered = parseAllDocuments(stdout).map((d) => d.toJS() as KubernetesObject).filter(Boolean);
    assert.deepEqual(rendered.map(key).sort(), manifests.map((m) => key(m.object)).sort());
  });

  test('the objects the design asks for are all there', () => {
    assert.deepEqual(ofKind('Namespace').map((o) => o.metadata?.name), [SYSTEM_NAMESPACE]);
    assert.deepEqual(ofKind('Service').filter((o) => o.apiVersion === 'serving.knative.dev/v1').map((o) => o.metadata?.name).sort(), [...FUNCTIONS].sort());
    assert.deepEqual(ofKind('Broker').map((o) => o.metadata?.name), ['stash']);
    // One Trigger per function for its ApiServerSource events (none for sweep), one per function for the tick.
    const triggers = [...FUNCTIONS.filter((f) => HANDLED[f].length > 0), ...FUNCTIONS.map(RESYNC)];
    assert.deepEqual(ofKind('Trigger').map((o) => o.metadata?.name).sort(), triggers.sort());
    assert.equal(ofKind('ApiServerSource').length, 1);
    assert.equal(ofKind('PingSource').length, 1);
    for (const m of manifests) {
      if (m.object.kind === 'Namespace' || m.object.kind?.startsWith('ClusterRole')) continue;
      assert.equal(m.object.metadata?.namespace, SYSTEM_NAMESPACE, `${key(m.object)} (knative/${m.file}) is in ${SYSTEM_NAMESPACE}`);
    }
  });

  test('every function runs stash-functions:0.1.0 with STASH_FUNCTION set to its name, as its own ServiceAccount', () => {
    const serviceAccounts = new Set(ofKind('ServiceAccount').map((o) => o.metadata?.name));
    const bindings = ofKind('ClusterRoleBinding') as unknown as V1ClusterRoleBinding[];
    const roles = new Set(ofKind('ClusterRole').map((o) => o.metadata?.name));
    for (const service of ofKind('Service').filter((o) => o.apiVersion === 'serving.knative.dev/v1')) {
      const name = service.metadata?.name ?? '';
      const pod = specOf<KnativeServiceSpec>(service).template.spec;
      assert.equal(pod.containers.length, 1, `${name} has one container`);
      const [container] = pod.containers;
      assert.equal(container?.image, 'stash-functions:0.1.0');
      assert.deepEqual(container?.env?.find((e) => e.name === 'STASH_FUNCTION'), { name: 'STASH_FUNCTION', value: name });
      assert.ok(container?.env?.every((e) => e.value !== undefined), `${name}: env holds plain values only (no Secret references)`);
      const account = pod.serviceAccountName;
      assert.equal(account, `stash-${name}`);
      assert.ok(serviceAccounts.has(account), `ServiceAccount ${account} exists`);
      const binding = bindings.find((b) => b.subjects?.some((s) => s.kind === 'ServiceAccount' && s.name === account && s.namespace === SYSTEM_NAMESPACE));
      assert.ok(binding, `a ClusterRoleBinding binds ${account}`);
      assert.ok(roles.has(binding.roleRef.name), `the ClusterRole ${binding.roleRef.name} exists`);
    }
  });

  test('the functions that start agents give them the URL at which handle-trigger answers inside the cluster', () => {
    const services = ofKind('Service').filter((o) => o.apiVersion === 'serving.knative.dev/v1');
    // Knative makes a Service reachable inside the cluster at http://<name>.<namespace>.svc.cluster.local.
    const handleTrigger = services.find((s) => s.metadata?.name === 'handle-trigger');
    assert.ok(handleTrigger);
    assert.equal(`http://${handleTrigger.metadata?.name ?? ''}.${handleTrigger.metadata?.namespace ?? ''}.svc.cluster.local`, HANDLE_TRIGGER_URL);
    // ... and both functions' built-in default is that URL, so the explicit setting and the default agree.
    assert.equal(SIDECAR_FUNCTIONS_URL, HANDLE_TRIGGER_URL, 'functions/inject-sidecar/plan.ts DEFAULT_FUNCTIONS_URL');
    assert.equal(DB_JOB_FUNCTIONS_URL, HANDLE_TRIGGER_URL, 'functions/launch-db-job/plan.ts DEFAULT_FUNCTIONS_URL');
    assert.equal(AGENT_FUNCTIONS_URL, HANDLE_TRIGGER_URL, 'shared/agent-pod.ts DEFAULT_FUNCTIONS_URL (run-recovery\'s agents)');
    const envOf = (name: string): Map<string, string | undefined> => {
      const service = services.find((s) => s.metadata?.name === name);
      assert.ok(service, `Service ${name} exists`);
      return new Map((specOf<KnativeServiceSpec>(service).template.spec.containers[0]?.env ?? []).map((e) => [e.name, e.value]));
    };
    for (const name of STARTS_AGENTS) {
      assert.equal(envOf(name).get('STASH_FUNCTIONS_URL'), HANDLE_TRIGGER_URL, `${name}: STASH_FUNCTIONS_URL`);
    }
    for (const name of FUNCTIONS) assert.equal(envOf(name).get('NODE_OPTIONS'), '--max-semi-space-size=4', `${name}: NODE_OPTIONS bounds the young generation`);
    for (const name of ['expand-template', 'handle-trigger', 'sweep']) assert.equal(envOf(name).has('STASH_FUNCTIONS_URL'), false, `${name} starts no agent`);
    // handle-trigger is the only Service not limited to the cluster (people and CI call it).
    assert.deepEqual(services.filter((s) => s.metadata?.labels?.['networking.knative.dev/visibility'] !== 'cluster-local').map((s) => s.metadata?.name), ['handle-trigger']);
  });

  test('Triggers, sources and sinks point at objects that exist', () => {
    const brokers = new Set(ofKind('Broker').map((o) => o.metadata?.name));
    const services = new Set(ofKind('Service').filter((o) => o.apiVersion === 'serving.knative.dev/v1').map((o) => o.metadata?.name));
    for (const trigger of ofKind('Trigger')) {
      const spec = specOf<TriggerSpec>(trigger);
      assert.ok(brokers.has(spec.broker), `Trigger ${trigger.metadata?.name}: broker ${spec.broker} exists`);
      assert.equal(spec.subscriber.ref.apiVersion, 'serving.knative.dev/v1');
      assert.equal(spec.subscriber.ref.kind, 'Service');
      assert.ok(services.has(spec.subscriber.ref.name), `Trigger ${trigger.metadata?.name}: subscriber ${spec.subscriber.ref.name} exists`);
      const name = trigger.metadata?.name ?? '';
      assert.ok(name === spec.subscriber.ref.name || name === RESYNC(spec.subscriber.ref.name), `Trigger ${name} is named after its function ${spec.subscriber.ref.name}`);
    }
    for (const source of [...ofKind('ApiServerSource'), ...ofKind('PingSource')]) {
      const sink = specOf<SourceSpec>(source).sink.ref;
      assert.deepEqual([sink.apiVersion, sink.kind], ['eventing.knative.dev/v1', 'Broker']);
      assert.ok(brokers.has(sink.name), `${source.kind} ${source.metadata?.name}: sink Broker ${sink.name} exists`);
    }
    const apiSource = specOf<SourceSpec>(only('ApiServerSource'));
    assert.equal(apiSource.mode, 'Reference', 'Reference mode: no object body (and no Secret) travels through the Broker');
    assert.deepEqual(apiSource.resources?.map((r) => r.kind), [
      'Backup', 'BackupTrigger', 'Repository', 'AgentTemplate', 'BackupTemplate', 'Recovery', 'AppBinding',
      'Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'ReplicationController', 'Job',
    ]);
    // Every watched kind is handled by some function, and every kind a function handles is watched.
    const handled = new Set(Object.values(HANDLED).flat());
    assert.deepEqual([...new Set(apiSource.resources?.map((r) => r.kind))].sort(), [...handled].sort());
    // Only Stash's Jobs: the labels launch-db-job and run-recovery put on every Job they create.
    const jobs = apiSource.resources?.find((r) => r.kind === 'Job');
    assert.ok(jobs);
    assert.equal(jobs.apiVersion, 'batch/v1');
    assert.equal(RECOVERY_MANAGED_BY_LABEL, MANAGED_BY_LABEL);
    assert.equal(RECOVERY_COMPONENT_LABEL, COMPONENT_LABEL);
    assert.deepEqual(jobs.selector, {
      matchLabels: { [MANAGED_BY_LABEL]: 'stash' },
      matchExpressions: [{ key: COMPONENT_LABEL, operator: 'In', values: [COMPONENT, RECOVERY_COMPONENT] }],
    });
    for (const r of apiSource.resources ?? []) if (r.kind !== 'Job') assert.equal(r.selector, undefined, `${r.kind}: every object is watched`);
  });

  test('every function gets the per-minute tick through its own resync Trigger, never retried', () => {
    const ping = only('PingSource');
    const pingSource = `/apis/v1/namespaces/${ping.metadata?.namespace ?? ''}/pingsources/${ping.metadata?.name ?? ''}`;
    for (const fn of FUNCTIONS) {
      const trigger = ofKind('Trigger').find((o) => o.metadata?.name === RESYNC(fn));
      assert.ok(trigger, `Trigger ${RESYNC(fn)} exists`);
      const spec = specOf<TriggerSpec & TriggerDelivery>(trigger);
      assert.equal(spec.subscriber.ref.name, fn);
      assert.deepEqual(spec.filters, [{ exact: { type: PING_TYPE, source: pingSource } }], `${RESYNC(fn)}: the tick of ${ping.metadata?.name ?? ''} only`);
      assert.equal(spec.delivery?.retry, 0, `${RESYNC(fn)}: the next tick is the retry`);
    }
  });

  test('the PingSource ticks every minute, in a form Knative accepts (no @every)', () => {
    const schedule = specOf<SourceSpec>(only('PingSource')).schedule ?? '';
    assert.equal(schedule, '* * * * *');
    assert.doesNotMatch(schedule, /@every/);
    const ticks = CronExpressionParser.parse(schedule, { currentDate: new Date('2026-01-01T00:00:30Z'), tz: 'UTC' });
    const first = ticks.next().getTime();
    assert.equal(first, Date.parse('2026-01-01T00:01:00Z'));
    assert.equal(ticks.next().getTime() - first, 60_000);
  });

  test("stash-expand-template's ClusterRole is exactly its handler's API_ACCESS: delete on its generated kinds, no Secrets", () => {
    type Rule = { apiGroups?: string[]; resources?: string[]; verbs: string[] };
    const flatten = (rules: readonly Rule[]): string[] => [...new Set(rules.flatMap((r) =>
      (r.apiGroups ?? []).flatMap((g) => (r.resources ?? []).flatMap((res) => r.verbs.map((v) => `${v} ${res}${g ? `.${g}` : ''}`)))))].sort();
    const role = (ofKind('ClusterRole') as unknown as V1ClusterRole[]).find((r) => r.metadata?.name === 'stash-expand-template');
    assert.ok(role, 'ClusterRole stash-expand-template exists');
    const granted = flatten(role.rules ?? []);
    assert.deepEqual(granted, flatten(EXPAND_TEMPLATE_ACCESS), 'functions/expand-template/handler.ts API_ACCESS');
    // The decisions: it deletes the Backups and Repositories it generated (only those carrying its
    // labels), and it does not read Secrets (the storage Secret check is then skipped; the agent
    // reports a missing Secret in the run).
    for (const kind of ['backups', 'repositories']) assert.ok(granted.includes(`delete ${kind}.stash.appscode.com`), `delete ${kind}`);
    assert.deepEqual(granted.filter((g) => / secrets$/.test(g)), []);
  });

  test('no ClusterRole grants Secrets, wildcards or escalation verbs', () => {
    for (const role of ofKind('ClusterRole') as unknown as V1ClusterRole[]) {
      for (const rule of role.rules ?? []) {
        const where = `ClusterRole ${role.metadata?.name ?? ''} rule ${JSON.stringify(rule)}`;
        assert.ok(!rule.resources?.includes('secrets'), `${where} names secrets`);
        for (const field of [rule.apiGroups, rule.resources, rule.verbs]) assert.ok(!field?.includes('*'), `${where} has a wildcard`);
        for (const verb of ['escalate', 'bind', 'impersonate']) assert.ok(!rule.verbs.includes(verb), `${where} has ${verb}`);
      }
    }
  });
});

describe("Knative's own code on knative/ (knative-validate: webhook admission and Broker filters)", () => {
  const validate = (args: string[], input?: string): { code: number; lines: Record<string, unknown>[]; stderr: string } => {
    try {
      const stdout = execFileSync(toolPath('knative-validate'), args, { input: input ?? '', encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
      return { code: 0, lines: stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>), stderr: '' };
    } catch (error) {
      const e = error as { status: number; stdout: string; stderr: string };
      return { code: e.status, lines: e.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>), stderr: e.stderr };
    }
  };
  const files = (): string[] => manifestFiles().map((f) => path.join(knativeDir, f));

  test('the webhooks would admit every Knative object, without warnings', () => {
    const result = validate(['check', ...files()]);
    const knativeKinds = manifests.filter((m) => /knative\.dev\//.test(m.object.apiVersion ?? ''));
    assert.equal(result.lines.length, knativeKinds.length, `every Knative object was checked (${result.stderr})`);
    for (const line of result.lines) {
      assert.equal(line.ok, true, `${String(line.kind)} ${String(line.name)}: ${String(line.errors)}`);
      assert.equal(line.warnings, undefined, `${String(line.kind)} ${String(line.name)} warns: ${String(line.warnings)}`);
    }
    assert.equal(result.code, 0);
  });

  test('and rejects what the webhooks reject, so the check above has teeth', () => {
    const broken = `
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: every, namespace: ${SYSTEM_NAMESPACE}}
spec:
  schedule: '@every 1m'
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: stash}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: two-dialects, namespace: ${SYSTEM_NAMESPACE}}
spec:
  broker: stash
  filters:
    - exact: {type: dev.knative.sources.ping}
      prefix: {kind: Back}
  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: sweep}}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: field-ref, namespace: ${SYSTEM_NAMESPACE}}
spec:
  template:
    spec:
      containers:
        - image: stash-functions:0.1.0
          env: [{name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}]
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: typo, namespace: ${SYSTEM_NAMESPACE}}
spec:
  delivery: {retries: 5}
`;
    const result = validate(['check', '-'], broken);
    assert.equal(result.code, 1);
    const byName = new Map(result.lines.map((l) => [l.name, l]));
    assert.match(String(byName.get('every')?.errors), /unsupported descriptor @every: spec\.schedule/);
    assert.match(String(byName.get('two-dialects')?.errors), /multiple dialects found/);
    assert.match(String(byName.get('field-ref')?.errors), /must not set the field\(s\): spec\.template\.spec\.containers\[0\]\.env\[0\]\.valueFrom\.fieldRef/);
    assert.match(String(byName.get('typo')?.errors), /unknown field "retries"/);
  });

  test("the Broker's filters route each event the sources send to exactly the functions that handle it", () => {
    const apiServer = 'https://kubernetes.default.svc:443';
    // Cluster-scoped kinds: no namespace extension and none in the data, an empty namespace in the subject.
    const clusterScoped = new Set(['AgentTemplate', 'BackupTemplate']);
    const refEvent = (id: string, action: string, apiVersion: string, kind: string, namespace: string, name: string): Record<string, unknown> => {
      const ns = clusterScoped.has(kind) ? '' : namespace;
      // As pkg/adapter/apiserver/events/events.go makeEvent builds it (binary mode on the wire).
      return {
        specversion: '1.0', id, type: `dev.knative.apiserver.ref.${action}`, source: apiServer,
        subject: `/apis/${apiVersion}/namespaces/${ns}/${guessResource(apiVersion, kind).resource}/${name}`,
        kind, apiversion: apiVersion, name, ...(ns ? { namespace: ns } : {}), datacontenttype: 'application/json',
        data: { kind, ...(ns ? { namespace: ns } : {}), name, apiVersion },
      };
    };
    // The Triggers (named after their functions) each kind's events reach; the same table as docs/knative.md.
    const expected: Record<string, string[]> = {
      Backup: ['handle-trigger', 'inject-sidecar', 'launch-db-job'],
      BackupTrigger: ['handle-trigger', 'launch-db-job'],
      Repository: ['inject-sidecar', 'launch-db-job', 'run-recovery'],
      AgentTemplate: ['inject-sidecar', 'launch-db-job', 'run-recovery'],
      BackupTemplate: ['expand-template'],
      Recovery: ['run-recovery'],
      AppBinding: ['expand-template', 'launch-db-job', 'run-recovery'],
      Deployment: ['expand-template', 'inject-sidecar', 'run-recovery'],
      StatefulSet: ['expand-template', 'inject-sidecar', 'run-recovery'],
      DaemonSet: ['expand-template', 'inject-sidecar', 'run-recovery'],
      ReplicaSet: ['expand-template', 'inject-sidecar', 'run-recovery'],
      ReplicationController: ['expand-template', 'inject-sidecar', 'run-recovery'],
      Job: ['launch-db-job', 'run-recovery'],
    };
    // ... which is what each function's dispatch handles.
    for (const [kind, functions] of Object.entries(expected)) {
      assert.deepEqual(functions, FUNCTIONS.filter((f) => HANDLED[f].includes(kind)).sort(), `the functions that handle ${kind} events`);
    }
    const resources = specOf<SourceSpec>(only('ApiServerSource')).resources ?? [];
    const events: Record<string, unknown>[] = [];
    const want = new Map<string, string[]>();
    for (const { apiVersion, kind } of resources) {
      for (const action of ['add', 'update', 'delete']) {
        const id = `${kind}-${action}`;
        events.push(refEvent(id, action, apiVersion, kind, 'demo', 'x'));
        want.set(id, (expected[kind] ?? ['<missing from the expected table>']).map((f) => `${SYSTEM_NAMESPACE}/${f}`));
      }
    }
    const ping = only('PingSource');
    // As mtping sends it: no data, source the PingSource's path.
    events.push({ specversion: '1.0', id: 'ping', type: PING_TYPE, source: `/apis/v1/namespaces/${SYSTEM_NAMESPACE}/pingsources/${ping.metadata?.name ?? ''}` });
    want.set('ping', FUNCTIONS.map((f) => `${SYSTEM_NAMESPACE}/${RESYNC(f)}`).sort());
    events.push({ specversion: '1.0', id: 'foreign-ping', type: PING_TYPE, source: '/apis/v1/namespaces/other/pingsources/nightly' });
    want.set('foreign-ping', []);
    events.push({ ...refEvent('resource-mode', 'add', STASH, 'Backup', 'demo', 'x'), type: 'dev.knative.apiserver.resource.add' });
    want.set('resource-mode', []);
    events.push(refEvent('secret', 'update', 'v1', 'Secret', 'demo', 'x'));
    want.set('secret', []);

    const result = validate(['route', path.join(knativeDir, '40-triggers.yaml')], events.map((e) => JSON.stringify(e)).join('\n'));
    assert.equal(result.code, 0, result.stderr);
    const got = new Map(result.lines.map((l) => [String(l.id), l.triggers as string[]]));
    assert.deepEqual(got, want);
    const reached = new Set([...got.values()].flat());
    assert.deepEqual([...reached].sort(), ofKind('Trigger').map((o) => `${SYSTEM_NAMESPACE}/${o.metadata?.name ?? ''}`).sort(), 'every Trigger is reached by some event');
  });
});

describe('knative/ on the real control plane', () => {
  let cluster: Cluster;
  let namespace: string;
  const cleanups: (() => Promise<unknown>)[] = [];

  before(async () => {
    cluster = await useCluster();
    // Knative Serving's and Eventing's own CRDs (idempotent server-side apply; the control plane
    // already has Eventing's).
    await run(path.join(repoRoot, 'scripts/knative-crds.sh'), ['apply', 'all'], {
      env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
      maxBuffer: 16 * 1024 * 1024,
    });
    namespace = await freshNamespace(cluster, 'deploy-manifests');
    cleanups.push(() => deleteNamespace(cluster, namespace));
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  test('the kube-apiserver accepts every object (server-side dry-run)', async () => {
    // Namespaced objects go to a fresh namespace (stash-system need not exist for a dry-run); the
    // Namespace, ClusterRoles and ClusterRoleBindings are dry-run as they are.
    const client = KubernetesObjectApi.makeApiClient(cluster.kc);
    const rejected: string[] = [];
    for (const { file, object } of manifests) {
      const copy = structuredClone(object);
      if (copy.metadata?.namespace === SYSTEM_NAMESPACE) copy.metadata.namespace = namespace;
      try {
        const accepted = await client.patch(copy, undefined, 'All', 'stash-deploy-test', true, PatchStrategy.ServerSideApply);
        assert.equal(accepted.metadata?.name, object.metadata?.name);
      } catch (error) {
        const detail = error instanceof ApiException ? `HTTP ${error.code}: ${String(error.body)}` : String(error);
        rejected.push(`knative/${file}: ${key(object)}: ${detail}`);
      }
    }
    assert.deepEqual(rejected, []);
  });

  test('and rejects a broken object, so the dry-run above has teeth', async () => {
    const client = KubernetesObjectApi.makeApiClient(cluster.kc);
    const service = structuredClone(ofKind('Service').find((o) => o.apiVersion === 'serving.knative.dev/v1'));
    assert.ok(service?.metadata);
    service.metadata.namespace = namespace;
    (service.spec as KnativeServiceSpec).template.spec.containers = 'not-a-list' as never;
    await assert.rejects(client.patch(service, undefined, 'All', 'stash-deploy-test', true, PatchStrategy.ServerSideApply), (error: unknown) => {
      assert.ok(error instanceof ApiException);
      // Server-side apply reports a schema type mismatch while building the typed patch: HTTP 500.
      assert.ok([422, 500].includes(error.code), `HTTP ${error.code}`);
      assert.match(String(error.body), /\.spec\.template\.spec\.containers: expected list/);
      return true;
    });
  });

  test('every kind the ApiServerSource watches is served under the plural Knative will guess', async () => {
    // Knative never asks discovery for the plural (receive_adapter.go makeEnv guesses it); the adapter
    // skips a resource that discovery does not list under that name.
    for (const { apiVersion, kind } of specOf<SourceSpec>(only('ApiServerSource')).resources ?? []) {
      const { group, version, resource } = guessResource(apiVersion, kind);
      const list = group === ''
        ? await cluster.kc.makeApiClient(CoreV1Api).getAPIResources()
        : await cluster.kc.makeApiClient(CustomObjectsApi).getAPIResources({ group, version });
      const served = list.resources.find((r) => r.kind === kind && !r.name.includes('/'));
      assert.ok(served, `${apiVersion} ${kind} is served (is its CRD installed?)`);
      assert.equal(served.name, resource, `${kind}: the served plural is the one Knative guesses`);
    }
  });

  describe('RBAC, asked of the apiserver with SubjectAccessReviews', () => {
    const suffix = randomBytes(3).toString('hex');
    let rbacNamespace: string;

    before(async () => {
      // The ClusterRoles and bindings, really applied under suffixed names, for ServiceAccounts of a
      // fresh namespace standing in for stash-system.
      rbacNamespace = await freshNamespace(cluster, 'deploy-rbac');
      cleanups.push(() => deleteNamespace(cluster, rbacNamespace));
      const applied = await applyFunctionRbac(cluster, rbacNamespace, suffix);
      cleanups.push(() => applied.remove());
    });

    type Access = [verb: string, resource: string, group?: string];
    /** Cluster-scoped resources are asked about without a namespace. */
    const CLUSTER_SCOPED = new Set(['agenttemplates', 'backuptemplates', 'tokenreviews', 'subjectaccessreviews', 'clusterroles', 'namespaces', 'nodes']);
    async function allowed(account: string, [verb, resource, group = '']: Access): Promise<boolean> {
      const [plain = '', subresource] = resource.split('/');
      const review = await cluster.kc.makeApiClient(AuthorizationV1Api).createSubjectAccessReview({
        body: {
          spec: {
            user: `system:serviceaccount:${rbacNamespace}:${account}`,
            groups: ['system:serviceaccounts', `system:serviceaccounts:${rbacNamespace}`, 'system:authenticated'],
            resourceAttributes: { verb, resource: plain, subresource, group, ...(CLUSTER_SCOPED.has(plain) ? {} : { namespace: 'demo' }) },
          },
        },
      });
      return review.status?.allowed ?? false;
    }
    async function eventually(account: string, access: Access): Promise<boolean> {
      // RBAC authorization is computed from the informer cache; new roles take a moment to count.
      for (let i = 0; i < 20; i += 1) {
        if (await allowed(account, access)) return true;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return false;
    }

    test("stash-events holds get, list and watch on every watched kind (Knative controller's access check)", async () => {
      // pkg/reconciler/apiserversource/apiserversource.go runAccessCheck: these SubjectAccessReviews.
      for (const { apiVersion, kind } of specOf<SourceSpec>(only('ApiServerSource')).resources ?? []) {
        const { group, resource } = guessResource(apiVersion, kind);
        for (const verb of ['get', 'list', 'watch']) {
          assert.ok(await eventually('stash-events', [verb, resource, group]), `stash-events may ${verb} ${resource}.${group}`);
        }
      }
    });

    // What each function's code calls, read from functions/<name>/handler.ts (and auth.ts) and the
    // shared/kube helpers they use: getObject = get, list* = list, applyObject and mergePatch = patch,
    // patchStatus = patch of <plural>/status, emitEvent = create, get and patch of events.k8s.io
    // events, replace = update. blockOwnerDeletion on an ownerReference the function writes needs
    // update on the owner's finalizers (OwnerReferencesPermissionEnforcement admission).
    const STASH_GROUP = 'stash.appscode.com';
    const grants = (verbs: string[], resources: string[], group = ''): Access[] => verbs.flatMap((v) => resources.map((r): Access => [v, r, group]));
    const WORKLOADS = ['deployments', 'statefulsets', 'daemonsets', 'replicasets'];
    const EVENTS = grants(['create', 'get', 'patch'], ['events'], 'events.k8s.io');
    const MAY: Record<FunctionName | 'events', Access[]> = {
      'inject-sidecar': [
        ...grants(['get', 'list', 'patch'], ['backups'], STASH_GROUP),
        ...grants(['patch'], ['backups/status'], STASH_GROUP),
        ...grants(['get'], ['agenttemplates', 'repositories'], STASH_GROUP),
        ...grants(['get', 'patch'], WORKLOADS, 'apps'),
        ...grants(['get', 'patch'], ['replicationcontrollers']),
        ...EVENTS,
      ],
      'run-recovery': [
        ...grants(['get', 'list', 'patch'], ['recoveries'], STASH_GROUP),
        ...grants(['patch'], ['recoveries/status'], STASH_GROUP),
        ...grants(['update'], ['recoveries/finalizers'], STASH_GROUP),
        ...grants(['get'], ['agenttemplates', 'repositories'], STASH_GROUP),
        ...grants(['get'], ['appbindings'], 'appcatalog.appscode.com'),
        ...grants(['get', 'create'], ['jobs'], 'batch'),
        ...grants(['get', 'patch'], WORKLOADS, 'apps'),
        ...grants(['get', 'patch'], ['replicationcontrollers']),
        ...EVENTS,
      ],
      'launch-db-job': [
        ...grants(['get', 'list'], ['backups', 'backuptriggers'], STASH_GROUP),
        ...grants(['patch'], ['backups/status', 'backuptriggers/status'], STASH_GROUP),
        ...grants(['update'], ['backuptriggers/finalizers'], STASH_GROUP),
        ...grants(['get'], ['agenttemplates', 'repositories'], STASH_GROUP),
        ...grants(['get'], ['appbindings'], 'appcatalog.appscode.com'),
        ...grants(['get', 'create'], ['jobs'], 'batch'),
        ...EVENTS,
      ],
      'handle-trigger': [
        ...grants(['get', 'list', 'create', 'patch', 'delete'], ['backuptriggers'], STASH_GROUP),
        ...grants(['get'], ['backups', 'repositories'], STASH_GROUP),
        ...grants(['patch'], ['backuptriggers/status', 'backups/status', 'repositories/status'], STASH_GROUP),
        ...grants(['get'], ['recoveries'], STASH_GROUP),
        ...grants(['patch'], ['recoveries/status'], STASH_GROUP),
        ...grants(['get'], ['appbindings'], 'appcatalog.appscode.com'),
        ...grants(['create'], ['tokenreviews'], 'authentication.k8s.io'),
        ...grants(['create'], ['subjectaccessreviews'], 'authorization.k8s.io'),
        ...grants(['get', 'list'], ['pods']),
        ...grants(['get'], ['replicationcontrollers']),
        ...grants(['get'], WORKLOADS, 'apps'),
        ...grants(['get'], ['jobs'], 'batch'),
        ...grants(['get', 'create', 'update'], ['leases'], 'coordination.k8s.io'),
        ...EVENTS,
      ],
      // functions/expand-template/handler.ts: getObject and listObjects/listStash on the targets, its
      // template, the generated objects and a namespace's Backups; applyObject (create + patch) and
      // delete (only its own, uid precondition) of the generated Repository and Backup. No `get
      // secrets`: the storage Secret check is then skipped (a decision, checked below).
      'expand-template': [
        ...grants(['get', 'list'], WORKLOADS, 'apps'),
        ...grants(['get', 'list'], ['replicationcontrollers']),
        ...grants(['get', 'list'], ['appbindings'], 'appcatalog.appscode.com'),
        ...grants(['get'], ['backuptemplates'], STASH_GROUP),
        ...grants(['get', 'list', 'create', 'patch', 'delete'], ['backups', 'repositories'], STASH_GROUP),
        ...EVENTS,
      ],
      sweep: [
        ...grants(['get', 'list'], ['backups'], STASH_GROUP),
        ...grants(['patch'], ['backups/status'], STASH_GROUP),
        ...grants(['update'], ['backups/finalizers'], STASH_GROUP),
        ...grants(['list', 'create'], ['backuptriggers'], STASH_GROUP),
        ...EVENTS,
      ],
      // The ApiServerSource's adapter: get, list and watch on the watched kinds, nothing else.
      events: [
        ...grants(['get', 'list', 'watch'], ['backups', 'backuptriggers', 'repositories', 'agenttemplates', 'backuptemplates', 'recoveries'], STASH_GROUP),
        ...grants(['get', 'list', 'watch'], ['appbindings'], 'appcatalog.appscode.com'),
        ...grants(['get', 'list', 'watch'], WORKLOADS, 'apps'),
        ...grants(['get', 'list', 'watch'], ['replicationcontrollers']),
        ...grants(['get', 'list', 'watch'], ['jobs'], 'batch'),
      ],
    };
    /** Every verb on every resource any role names, and the ones no function may touch. */
    const ALL_VERBS = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'];
    const UNIVERSE: Access[] = ([
        [STASH_GROUP, ['backups', 'backups/status', 'backups/finalizers', 'backuptriggers', 'backuptriggers/status', 'backuptriggers/finalizers',
          'repositories', 'repositories/status', 'agenttemplates', 'backuptemplates', 'recoveries', 'recoveries/status', 'recoveries/finalizers']],
        ['appcatalog.appscode.com', ['appbindings']],
        ['apps', [...WORKLOADS, 'deployments/scale']],
        ['', ['replicationcontrollers', 'pods', 'pods/exec', 'secrets', 'configmaps', 'persistentvolumeclaims', 'events', 'serviceaccounts', 'serviceaccounts/token', 'namespaces']],
        ['batch', ['jobs', 'cronjobs']],
        ['coordination.k8s.io', ['leases']],
        ['events.k8s.io', ['events']],
        ['authentication.k8s.io', ['tokenreviews']],
        ['authorization.k8s.io', ['subjectaccessreviews']],
        ['rbac.authorization.k8s.io', ['clusterroles', 'rolebindings']],
    ] as [string, string[]][]).flatMap(([group, resources]) => grants(ALL_VERBS, resources, group));
    const keyOf = ([verb, resource, group = '']: Access): string => `${verb} ${resource}${group ? `.${group}` : ''}`;

    test('the asked-about universe covers every grant', () => {
      const universe = new Set(UNIVERSE.map(keyOf));
      for (const [who, may] of Object.entries(MAY)) for (const access of may) assert.ok(universe.has(keyOf(access)), `${who}: ${keyOf(access)}`);
      assert.ok(universe.has(keyOf(['get', 'secrets'])));
    });

    for (const who of [...FUNCTIONS, 'events'] as const) {
      const account = `stash-${who}`;
      test(`${account} may do exactly what its code does, and nothing else`, async () => {
        const may = new Set(MAY[who].map(keyOf));
        const [first] = MAY[who];
        assert.ok(first && await eventually(account, first), `${account} may ${first ? keyOf(first) : '?'} (its binding counts)`);
        const wrong: string[] = [];
        // A few reviews at a time (the 2 cores are shared).
        for (let i = 0; i < UNIVERSE.length; i += 16) {
          const batch = UNIVERSE.slice(i, i + 16);
          const answers = await Promise.all(batch.map((access) => allowed(account, access)));
          batch.forEach((access, j) => {
            const expected = may.has(keyOf(access));
            if (answers[j] !== expected) wrong.push(`${expected ? 'may not but should' : 'may but should not'}: ${keyOf(access)}`);
          });
        }
        assert.deepEqual(wrong, [], `${account}'s rights differ from what its code calls`);
      });
    }

    test('no function reads Secrets (not even expand-template, whose storage Secret check is skipped), and only handle-trigger reviews tokens and access', async () => {
      for (const fn of FUNCTIONS) {
        const account = `stash-${fn}`;
        assert.ok(await eventually(account, MAY[fn][0] ?? ['get', 'none']), `${account}'s binding counts`);
        for (const verb of ['get', 'list', 'watch']) assert.equal(await allowed(account, [verb, 'secrets']), false, `${account} may not ${verb} secrets`);
        for (const review of [['create', 'tokenreviews', 'authentication.k8s.io'], ['create', 'subjectaccessreviews', 'authorization.k8s.io']] as Access[]) {
          assert.equal(await allowed(account, review), fn === 'handle-trigger', `${account} ${fn === 'handle-trigger' ? 'may' : 'may not'} ${keyOf(review)}`);
        }
      }
    });

    test('the rights come only through the bindings: an unbound ServiceAccount of the same namespace has none of them', async () => {
      assert.ok(await eventually('stash-sweep', ['list', 'backups', 'stash.appscode.com']));
      assert.equal(await allowed('default', ['list', 'backups', 'stash.appscode.com']), false);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// OpenFaaS: stack.yml

class StackParseError extends Error {
  override name = 'StackParseError';
}

interface OpenFaasFunction {
  lang: string; handler: string; image: string; fprocess: string; namespace: string; platforms: string;
  environment?: Record<string, string>; labels?: Record<string, string>; annotations?: Record<string, string>;
  build_args?: Record<string, string>; build_secrets?: Record<string, string>;
  secrets?: string[]; constraints?: string[]; environment_file?: string[]; build_options?: string[];
  skip_build: boolean; readonly_root_filesystem: boolean;
  limits?: { memory: string; cpu: string }; requests?: { memory: string; cpu: string };
}
interface OpenFaasStack {
  version: string;
  provider: { name: string; gateway: string };
  functions: Record<string, OpenFaasFunction>;
}

/**
 * OpenFaaS's stack-file parser, re-implemented: github.com/openfaas/go-sdk stack/stack.go
 * ParseYAMLData (envsubst off) = gopkg.in/yaml.v3 Unmarshal into stack/schema.go's Services, then
 * provider.name must be "openfaas" and version, when set, one of ValidSchemaVersions ["1.0"].
 * yaml.v3 (non-strict) ignores unknown fields, rejects duplicate keys, decodes any scalar into a
 * string field by its text (so `version: 1.0` is "1.0"), null into the zero value, y/yes/on and
 * true/... into bools, and fails on a mapping or sequence where a scalar is due and vice versa.
 * Not reproduced: anchors/merge keys and environment substitution (stack.yml uses neither).
 */
function parseOpenFaasStack(text: string): OpenFaasStack {
  const document = parseDocument(text, { schema: 'failsafe', uniqueKeys: true });
  if (document.errors.length > 0) throw new StackParseError(`yaml: ${document.errors.map((e) => e.message).join('; ')}`);
  const errors: string[] = [];
  const isNull = (node: unknown): boolean =>
    node === null || node === undefined || (isScalar(node) && node.type === 'PLAIN' && ['', '~', 'null', 'Null', 'NULL'].includes(String(node.value)));
  const where = (node: YamlNode): string => `line ${String(text.slice(0, node.range?.[0] ?? 0).split('\n').length)}`;
  const typeError = (node: YamlNode, want: string): void => {
    const tag = isMap(node) ? '!!map' : isSeq(node) ? '!!seq' : '!!str';
    errors.push(`${where(node)}: cannot unmarshal ${tag} into ${want}`);
  };
  const str = (node: unknown): string => {
    if (isNull(node)) return '';
    if (isScalar(node)) return String(node.value);
    typeError(node as YamlNode, 'string');
    return '';
  };
  const bool = (node: unknown): boolean => {
    if (isNull(node)) return false;
    if (!isScalar(node)) {
      typeError(node as YamlNode, 'bool');
      return false;
    }
    const value = String(node.value);
    if (node.type === 'PLAIN' && ['true', 'True', 'TRUE'].includes(value)) return true;
    if (node.type === 'PLAIN' && ['false', 'False', 'FALSE'].includes(value)) return false;
    if (['y', 'Y', 'yes', 'Yes', 'YES', 'on', 'On', 'ON'].includes(value)) return true;
    if (['n', 'N', 'no', 'No', 'NO', 'off', 'Off', 'OFF'].includes(value)) return false;
    errors.push(`${where(node)}: cannot unmarshal !!str \`${value}\` into bool`);
    return false;
  };
  const entries = (node: unknown, want: string): [string, unknown][] => {
    if (isNull(node)) return [];
    if (!isMap(node)) {
      typeError(node as YamlNode, want);
      return [];
    }
    return node.items.map((pair) => [str(pair.key), pair.value]);
  };
  const stringMap = (node: unknown): Record<string, string> | undefined =>
    isNull(node) ? undefined : Object.fromEntries(entries(node, 'map[string]string').map(([k, v]) => [k, str(v)]));
  const stringList = (node: unknown): string[] | undefined => {
    if (isNull(node)) return undefined;
    if (!isSeq(node)) {
      typeError(node as YamlNode, '[]string');
      return undefined;
    }
    return node.items.map(str);
  };
  const resources = (node: unknown): { memory: string; cpu: string } | undefined => {
    if (isNull(node)) return undefined;
    const fields = new Map(entries(node, 'stack.FunctionResources'));
    return { memory: str(fields.get('memory')), cpu: str(fields.get('cpu')) };
  };

  const root = new Map(entries(document.contents, 'stack.Services'));
  const provider = new Map(entries(root.get('provider'), 'stack.Provider'));
  const configuration = new Map(entries(root.get('configuration'), 'stack.StackConfiguration'));
  for (const template of isSeq(configuration.get('templates')) ? (configuration.get('templates') as { items: unknown[] }).items : []) {
    const t = new Map(entries(template, 'stack.TemplateSource'));
    str(t.get('name'));
    str(t.get('source'));
  }
  if (!isNull(configuration.get('templates')) && !isSeq(configuration.get('templates'))) typeError(configuration.get('templates') as YamlNode, '[]stack.TemplateSource');
  stringList(configuration.get('copy'));
  const functions: Record<string, OpenFaasFunction> = {};
  for (const [name, node] of entries(root.get('functions'), 'map[string]stack.Function')) {
    const f = new Map(entries(node, 'stack.Function'));
    functions[name] = {
      lang: str(f.get('lang')), handler: str(f.get('handler')), image: str(f.get('image')), fprocess: str(f.get('fprocess')),
      namespace: str(f.get('namespace')), platforms: str(f.get('platforms')),
      environment: stringMap(f.get('environment')), labels: stringMap(f.get('labels')), annotations: stringMap(f.get('annotations')),
      build_args: stringMap(f.get('build_args')), build_secrets: stringMap(f.get('build_secrets')),
      secrets: stringList(f.get('secrets')), constraints: stringList(f.get('constraints')),
      environment_file: stringList(f.get('environment_file')), build_options: stringList(f.get('build_options')),
      skip_build: bool(f.get('skip_build')), readonly_root_filesystem: bool(f.get('readonly_root_filesystem')),
      limits: resources(f.get('limits')), requests: resources(f.get('requests')),
    };
  }
  const stack: OpenFaasStack = {
    version: str(root.get('version')),
    provider: { name: str(provider.get('name')), gateway: str(provider.get('gateway')) },
    functions,
  };
  if (errors.length > 0) throw new StackParseError(`yaml: unmarshal errors:\n  ${errors.join('\n  ')}`);
  if (stack.provider.name !== 'openfaas') {
    throw new StackParseError(`['openfaas'] is the only valid "provider.name" for the OpenFaaS CLI, but you gave: ${stack.provider.name}`);
  }
  if (stack.version.length > 0 && stack.version !== '1.0') {
    throw new StackParseError(`[1.0] are the only valid versions for the stack file - found: ${stack.version}`);
  }
  return stack;
}

describe('stack.yml (OpenFaaS)', () => {
  const text = readFileSync(path.join(repoRoot, 'stack.yml'), 'utf8');

  test("OpenFaaS's stack parser accepts it, and it deploys the six functions from stash-functions:0.1.0", () => {
    const stack = parseOpenFaasStack(text);
    assert.equal(stack.version, '1.0');
    assert.equal(stack.provider.name, 'openfaas');
    assert.ok(URL.canParse(stack.provider.gateway), `provider.gateway ${stack.provider.gateway} is a URL`);
    assert.deepEqual(Object.keys(stack.functions).sort(), [...FUNCTIONS].sort());
    for (const [name, fn] of Object.entries(stack.functions)) {
      assert.equal(fn.image, 'stash-functions:0.1.0', `${name}: image`);
      // The functions that start agents tell them where handle-trigger answers inside the cluster.
      const agents = STARTS_AGENTS.includes(name);
      assert.deepEqual(fn.environment, {
        STASH_FUNCTION: name, NODE_OPTIONS: '--max-semi-space-size=4', ...(agents ? { STASH_FUNCTIONS_URL: OPENFAAS_HANDLE_TRIGGER_URL } : {}),
      }, `${name}: environment`);
      assert.equal(fn.skip_build, true, `${name}: the image is built by the project, not by faas-cli`);
      assert.equal(fn.lang, '', `${name}: no faas-cli template`);
    }
  });

  test('the cron-connector calls every function every minute (each re-derives what it owns: there are no events)', () => {
    const stack = parseOpenFaasStack(text);
    for (const [name, fn] of Object.entries(stack.functions)) {
      assert.deepEqual(fn.annotations, { topic: 'cron-function', schedule: '* * * * *' }, `${name}: cron-connector annotations`);
      const ticks = CronExpressionParser.parse(fn.annotations.schedule ?? '', { currentDate: new Date('2026-01-01T00:00:30Z'), tz: 'UTC' });
      const first = ticks.next().getTime();
      assert.equal(first, Date.parse('2026-01-01T00:01:00Z'));
      assert.equal(ticks.next().getTime() - first, 60_000);
    }
  });

  test('the agents reach handle-trigger through the gateway inside the cluster', () => {
    const stack = parseOpenFaasStack(text);
    const url = new URL(OPENFAAS_HANDLE_TRIGGER_URL);
    // The gateway's in-cluster Service (gateway in namespace openfaas, port 8080), not provider.gateway (the deployer's).
    assert.equal(url.hostname, 'gateway.openfaas');
    assert.notEqual(url.host, new URL(stack.provider.gateway).host);
    // /function/<name> of a function of this stack; the agents append /agent/v1/... to it.
    const [, route, fn] = url.pathname.split('/');
    assert.equal(route, 'function');
    assert.ok(fn !== undefined && fn in stack.functions && stack.functions[fn]?.environment?.STASH_FUNCTION === 'handle-trigger');
  });

  test('it stays within the OpenFaaS Community Edition limits', () => {
    const stack = parseOpenFaasStack(text);
    assert.ok(Object.keys(stack.functions).length <= 15, 'at most 15 functions');
    for (const [name, fn] of Object.entries(stack.functions)) {
      assert.ok(fn.namespace === '' || fn.namespace === 'openfaas-fn', `${name}: one function namespace (openfaas-fn)`);
      assert.equal(fn.annotations?.['com.openfaas.serviceaccount'], undefined, `${name}: no per-function ServiceAccount`);
    }
  });

  test('the parser rejects broken copies the way OpenFaaS does', () => {
    const cases: [string, string, RegExp][] = [
      ['legacy provider name', text.replace('name: openfaas', 'name: faas'), /\['openfaas'\] is the only valid "provider.name" for the OpenFaaS CLI, but you gave: faas/],
      ['unknown schema version', text.replace('version: 1.0', 'version: 2.0'), /\[1\.0\] are the only valid versions for the stack file - found: 2\.0/],
      ['environment as a list', text.replace('      STASH_FUNCTION: sweep\n      NODE_OPTIONS: --max-semi-space-size=4', '      - STASH_FUNCTION=sweep\n      - NODE_OPTIONS=--max-semi-space-size=4'), /cannot unmarshal !!seq into map\[string\]string/],
      ['annotations value as a mapping', text.replace('      topic: cron-function', '      topic: {name: cron-function}'), /cannot unmarshal !!map into string/],
      ['skip_build not a bool', text.replace('skip_build: true', 'skip_build: sometimes'), /cannot unmarshal !!str `sometimes` into bool/],
      ['duplicate function', `${text}\n  sweep:\n    image: x\n`, /Map keys must be unique/],
      ['no provider', text.replace(/^provider:\n(?: {2}.*\n)+/m, ''), /the only valid "provider.name".*you gave: $/],
    ];
    for (const [what, broken, message] of cases) {
      assert.notEqual(broken, text, `${what}: the broken copy differs`);
      assert.throws(() => parseOpenFaasStack(broken), (error: unknown) => {
        assert.ok(error instanceof StackParseError, `${what}: ${String(error)}`);
        assert.match(error.message, message, what);
        return true;
      });
    }
  });
});
