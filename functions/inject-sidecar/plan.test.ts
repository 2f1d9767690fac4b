// planSidecar, removalConfig and the up-to-date comparison: a table of cases, no cluster.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { agentTemplate as agentTemplateSchema, backup as backupSchema, repository as repositorySchema } from '../../shared/api/index.ts';
import type { Backup, Repository } from '../../shared/api/index.ts';
import { appliedFieldPaths, containsValues, isApplied, ownedFieldPaths, PATH_SEPARATOR, quantityValue } from '../../shared/apply-compare.ts';
import { expectedSampleContainer, expectedSampleVolumes } from './fixtures/design-sample.ts';
import { FIELD_MANAGER, FINALIZER, otherClaimant, planSidecar, removalConfig, sidecarVerified, TARGET_ANNOTATION, TARGET_LABEL, targetLabelValue, workloadUnchangedSince } from './plan.ts';
import type { BackupState } from './plan.ts';
import type { ApplyConfig, Plan, PlanInput, Workload } from './plan.ts';

const root = path.resolve(import.meta.dirname, '../..');
const samples = path.join(root, 'test/fixtures/design-samples');
const readYaml = (file: string): unknown => parse(readFileSync(path.join(samples, file), 'utf8'));

const defaultTemplates = parseAllDocuments(readFileSync(path.join(root, 'shared/api/defaults/agent-templates.yaml'), 'utf8'))
  .map((d) => agentTemplateSchema.parse(d.toJS()));
const volumeBackupTemplate = defaultTemplates.find((t) => t.metadata.name === 'stash-volume-backup')!;
const pgBackupTemplate = defaultTemplates.find((t) => t.metadata.name === 'pg-backup')!;
const sampleRepository: Repository = repositorySchema.parse(readYaml('01-repository.yaml'));
const sampleBackup: Backup = backupSchema.parse(readYaml('02-backup-volume.yaml'));
const sampleDeployment = readYaml('11-deployment-default-backup.yaml') as Workload;

function clone<T>(value: T): T {
  return structuredClone(value);
}

function backupWith(change: (b: Backup) => void): Backup {
  const b = clone(sampleBackup);
  change(b);
  return backupSchema.parse(b);
}

/** A workload of `kind` whose one app container mounts `data` at /source/data. */
function workload(kind: string, extra: { apiVersion?: string; metadata?: Record<string, unknown>; podSecurity?: Record<string, unknown>; containerSecurity?: Record<string, unknown>; mounts?: { name: string; mountPath: string; subPath?: string }[] } = {}): Workload {
  return {
    apiVersion: extra.apiVersion ?? (kind === 'ReplicationController' ? 'v1' : 'apps/v1'),
    kind,
    metadata: { name: 'stash-demo', namespace: 'demo', ...(extra.metadata ?? {}) },
    spec: {
      template: {
        metadata: { labels: { app: 'stash-demo' } },
        spec: {
          ...(extra.podSecurity ? { securityContext: extra.podSecurity } : {}),
          containers: [{
            name: 'app',
            image: 'busybox',
            ...(extra.containerSecurity ? { securityContext: extra.containerSecurity } : {}),
            volumeMounts: extra.mounts ?? [{ name: 'data', mountPath: '/source/data' }],
          }],
          volumes: [{ name: 'data', emptyDir: {} }],
        },
      },
    },
  };
}

function targeting(kind: string, apiVersion = kind === 'ReplicationController' ? 'v1' : 'apps/v1'): Backup {
  return backupWith((b) => { b.spec.targetRef = { apiVersion, kind, name: 'stash-demo' }; });
}

function plan(input: Partial<PlanInput> & { workload: Workload }): Plan {
  return planSidecar({ backup: sampleBackup, agentTemplate: volumeBackupTemplate, repository: sampleRepository, ...input });
}

function applied(p: Plan): ApplyConfig {
  assert.equal(p.action, 'apply', `expected an apply plan, got ${JSON.stringify(p)}`);
  return (p as { applyConfig: ApplyConfig }).applyConfig;
}

function refused(p: Plan, reason: string): string {
  assert.equal(p.action, 'refuse', `expected a refusal, got ${JSON.stringify(p).slice(0, 300)}`);
  const condition = (p as { condition: { type: string; status: string; reason: string; message: string } }).condition;
  assert.equal(condition.type, 'Ready');
  assert.equal(condition.status, 'False');
  assert.equal(condition.reason, reason);
  return condition.message;
}

function sidecarEnv(config: ApplyConfig): Record<string, unknown> {
  const container = config.spec?.template.spec.containers[0];
  return Object.fromEntries((container?.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom]));
}

test('the design volume sample gives exactly the expected sidecar container and volumes', () => {
  const config = applied(plan({ workload: sampleDeployment }));
  assert.deepEqual(config, {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'stash-demo', namespace: 'demo' },
    spec: { template: { spec: { containers: [expectedSampleContainer('demo')], volumes: expectedSampleVolumes } } },
  });
});

const identityCases: { kind: string; env: Record<string, unknown> }[] = [
  { kind: 'Deployment', env: { STASH_HOST: 'host-0' } },
  { kind: 'ReplicaSet', env: { STASH_HOST: 'host-0' } },
  { kind: 'ReplicationController', env: { STASH_HOST: 'host-0' } },
  {
    kind: 'StatefulSet',
    env: { POD_INDEX: { fieldRef: { fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']" } }, STASH_HOST: 'host-$(POD_INDEX)' },
  },
  { kind: 'DaemonSet', env: { NODE_NAME: { fieldRef: { fieldPath: 'spec.nodeName' } }, STASH_HOST: '$(NODE_NAME)' } },
];

for (const { kind, env } of identityCases) {
  test(`${kind}: sidecar with its replica identity, applied at the workload's apiVersion`, () => {
    const config = applied(plan({ backup: targeting(kind), workload: workload(kind) }));
    assert.equal(config.kind, kind);
    assert.equal(config.apiVersion, kind === 'ReplicationController' ? 'v1' : 'apps/v1');
    const vars = sidecarEnv(config);
    for (const [name, value] of Object.entries(env)) assert.deepEqual(vars[name], value, `${name} of a ${kind}`);
    assert.deepEqual(vars.POD_NAME, { fieldRef: { fieldPath: 'metadata.name' } });
    if (kind !== 'StatefulSet') assert.equal(vars.POD_INDEX, undefined);
    if (kind !== 'DaemonSet') assert.equal(vars.NODE_NAME, undefined);
    // $(VAR) references only earlier variables: the identity source comes before STASH_HOST.
    const names = (config.spec?.template.spec.containers[0]?.env ?? []).map((e) => e.name);
    if (kind === 'StatefulSet') assert.ok(names.indexOf('POD_INDEX') < names.indexOf('STASH_HOST'));
    if (kind === 'DaemonSet') assert.ok(names.indexOf('NODE_NAME') < names.indexOf('STASH_HOST'));
    assert.deepEqual(config.spec?.template.spec.containers[0]?.volumeMounts?.[0], { name: 'data', mountPath: '/source/data', readOnly: true });
    // Nothing but containers and volumes: no strategy, replicas, selector or annotations.
    assert.deepEqual(Object.keys(config.spec ?? {}), ['template']);
    assert.deepEqual(Object.keys(config.spec?.template ?? {}), ['spec']);
    assert.deepEqual(Object.keys(config.spec?.template.spec ?? {}), ['containers', 'volumes']);
  });
}

test('both agent reference shapes give the same configuration', () => {
  const asObject = backupWith((b) => { b.spec.backupAgent = { name: 'stash-volume-backup' }; });
  const asString = backupWith((b) => { b.spec.backupAgent = 'stash-volume-backup'; });
  assert.deepEqual(applied(plan({ backup: asString, workload: sampleDeployment })), applied(plan({ backup: asObject, workload: sampleDeployment })));
});

test('the design AgentTemplate (ENABLE_ANALYSTICS spelling) gets that variable too', () => {
  const designTemplate = agentTemplateSchema.parse(readYaml('14-agent-template-volume-backup.yaml'));
  const config = applied(plan({ agentTemplate: designTemplate, workload: sampleDeployment }));
  assert.equal(sidecarEnv(config).ENABLE_ANALYSTICS, 'false');
  assert.equal(sidecarEnv(applied(plan({ workload: sampleDeployment }))).ENABLE_ANALYSTICS, undefined);
});

test('containerAttributes: resources, securityContext, env and imagePullPolicy reach the sidecar', () => {
  const backup = backupWith((b) => {
    b.spec.containerAttributes = {
      resources: { limits: { memory: '256Mi' } },
      securityContext: { readOnlyRootFilesystem: true, runAsUser: 1000 },
      env: [{ name: 'GOMAXPROCS', value: '1' }, { name: 'PUSH_GATEWAY_URL', value: 'http://pushgateway:9091' }],
      imagePullPolicy: 'Always',
    };
  });
  const container = applied(plan({ backup, workload: sampleDeployment })).spec?.template.spec.containers[0];
  assert.deepEqual(container?.resources, { limits: { memory: '256Mi' } });
  assert.deepEqual(container?.securityContext, { readOnlyRootFilesystem: true, runAsUser: 1000 });
  assert.equal(container?.imagePullPolicy, 'Always');
  const env = Object.fromEntries((container?.env ?? []).map((e) => [e.name, e.value]));
  assert.equal(env.GOMAXPROCS, '1');
  assert.equal(env.PUSH_GATEWAY_URL, 'http://pushgateway:9091');
  const names = (container?.env ?? []).map((e) => e.name);
  assert.equal(names.indexOf('PUSH_GATEWAY_URL'), 4, 'an override keeps the variable in place');
  assert.equal(names.at(-1), 'GOMAXPROCS');
});

test('options set the functions URL and the Pushgateway URL', () => {
  const config = applied(plan({ workload: sampleDeployment, options: { functionsUrl: 'http://127.0.0.1:9999', pushGatewayUrl: 'http://pg:9091' } }));
  assert.equal(sidecarEnv(config).STASH_FUNCTIONS_URL, 'http://127.0.0.1:9999');
  assert.equal(sidecarEnv(config).PUSH_GATEWAY_URL, 'http://pg:9091');
});

test('a variable Stash sets itself cannot be overridden', () => {
  const backup = backupWith((b) => { b.spec.containerAttributes = { env: [{ name: 'BACKUP_NAME', value: 'other' }] }; });
  assert.match(refused(plan({ backup, workload: sampleDeployment }), 'ReservedEnvironmentVariable'), /containerAttributes\.env of the Backup sets BACKUP_NAME/);
});

test('schedule, retention, excludes and paused never reach the pod', () => {
  const base = applied(plan({ workload: sampleDeployment }));
  const changed = backupWith((b) => {
    b.spec.schedule = '*/5 * * * *';
    b.spec.retentionPolicy = { keepDaily: 7 };
    b.spec.excludes = ['*.log'];
    b.spec.paused = true;
    b.spec.backupHistoryLimit = 2;
  });
  assert.equal(JSON.stringify(applied(plan({ backup: changed, workload: sampleDeployment }))), JSON.stringify(base));
});

test('unchanged inputs give an identical configuration, whatever the key order of the inputs', () => {
  const first = JSON.stringify(applied(plan({ workload: sampleDeployment })));
  assert.equal(JSON.stringify(applied(plan({ workload: clone(sampleDeployment) }))), first);
  const reordered = JSON.parse(JSON.stringify(sampleBackup, Object.keys(sampleBackup).reverse())) as Backup;
  const reorderedSpec = Object.fromEntries(Object.entries(sampleBackup.spec).reverse()) as Backup['spec'];
  assert.equal(JSON.stringify(applied(plan({ backup: { ...reordered, ...sampleBackup, spec: reorderedSpec }, workload: sampleDeployment }))), first);
});

test('a target directory below an app mount uses that mount (deepest wins, subPath kept)', () => {
  const w = workload('Deployment', {
    mounts: [{ name: 'root', mountPath: '/source' }, { name: 'data', mountPath: '/source/data', subPath: 'd1' }, { name: 'logs', mountPath: '/var/log' }],
  });
  const backup = backupWith((b) => { b.spec.targetDirectories = ['/source/data/db', '/source/other', '/source/data']; });
  const mounts = applied(plan({ backup, workload: w })).spec?.template.spec.containers[0]?.volumeMounts ?? [];
  assert.deepEqual(mounts.slice(0, 2), [
    { name: 'data', mountPath: '/source/data', subPath: 'd1', readOnly: true },
    { name: 'root', mountPath: '/source', readOnly: true },
  ]);
  assert.equal(mounts.filter((m) => m.name === 'logs').length, 0);
});

test('a target directory no container mounts is refused, naming it', () => {
  const backup = backupWith((b) => { b.spec.targetDirectories = ['/source/data', '/var/lib/app']; });
  const message = refused(plan({ backup, workload: sampleDeployment }), 'TargetDirectoryNotMounted');
  assert.match(message, /\/var\/lib\/app/);
  assert.match(message, /\/source\/data \(busybox\)/);
});

for (const [kind, apiVersion] of [['CronJob', 'batch/v1'], ['Pod', 'v1'], ['Job', 'batch/v1'], ['Rollout', 'argoproj.io/v1alpha1']] as const) {
  test(`${kind} is refused as an unsupported target`, () => {
    const backup = backupWith((b) => { b.spec.targetRef = { apiVersion, kind, name: 'stash-demo' }; });
    const message = refused(plan({ backup, workload: workload(kind, { apiVersion }) }), 'UnsupportedTarget');
    assert.match(message, new RegExp(`${kind} stash-demo`));
    assert.match(message, /Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController/);
  });
}

test('a Deployment under an old apiVersion is refused with the one to use', () => {
  const message = refused(plan({ backup: targeting('Deployment', 'extensions/v1beta1'), workload: sampleDeployment }), 'UnsupportedTarget');
  assert.match(message, /set targetRef\.apiVersion to apps\/v1/);
});

test("an operator's StatefulSet (controller ownerReference) is refused rather than fought over", () => {
  const w = workload('StatefulSet', {
    metadata: { ownerReferences: [{ apiVersion: 'kubedb.com/v1', kind: 'Postgres', name: 'quick-postgres', uid: 'u1', controller: true }] },
  });
  const message = refused(plan({ backup: targeting('StatefulSet'), workload: w }), 'TargetManagedByController');
  assert.match(message, /controlled by Postgres quick-postgres/);
  assert.match(message, /stashed\/stash#1308/);
  assert.match(message, /AppBinding/);
});

test("a Deployment's ReplicaSet is refused, pointing at the Deployment", () => {
  const w = workload('ReplicaSet', {
    metadata: { ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: 'stash-demo', uid: 'u2', controller: true }] },
  });
  const message = refused(plan({ backup: targeting('ReplicaSet'), workload: w }), 'TargetManagedByController');
  assert.match(message, /set targetRef to Deployment stash-demo/);
});

test('a non-controller ownerReference does not block injection', () => {
  const w = workload('Deployment', { metadata: { ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'x', uid: 'u3' }] } });
  assert.equal(plan({ backup: targeting('Deployment'), workload: w }).action, 'apply');
});

test('the sidecar runs as the app container that mounts the target; pod-level settings are inherited', () => {
  const w = workload('Deployment', { podSecurity: { fsGroup: 2000, supplementalGroups: [3000] }, containerSecurity: { runAsUser: 999, runAsGroup: 999, runAsNonRoot: true } });
  const container = applied(plan({ workload: w, backup: targeting('Deployment') })).spec?.template.spec.containers[0];
  assert.deepEqual(container?.securityContext, { runAsGroup: 999, runAsNonRoot: true, runAsUser: 999 });
  const podOnly = workload('Deployment', { podSecurity: { runAsUser: 1001, fsGroup: 2000 } });
  assert.equal(applied(plan({ workload: podOnly, backup: targeting('Deployment') })).spec?.template.spec.containers[0]?.securityContext, undefined);
});

test('root is never forced into a runAsNonRoot pod', () => {
  const w = workload('Deployment', { podSecurity: { runAsNonRoot: true } });
  const backup = backupWith((b) => { b.spec.containerAttributes = { securityContext: { runAsUser: 0 } }; });
  assert.match(refused(plan({ backup, workload: w }), 'SecurityContextConflict'), /runAsNonRoot/);
});

test('a local (PVC) repository is mounted into the sidecar', () => {
  const repository = repositorySchema.parse({
    apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Repository', metadata: { name: 'stash-backup-repo', namespace: 'demo' },
    spec: { backend: { local: { mountPath: '/repo', persistentVolumeClaim: { claimName: 'backups' } }, storageSecretName: 'local-secret' } },
  });
  const config = applied(plan({ repository, workload: sampleDeployment }));
  assert.deepEqual(config.spec?.template.spec.volumes.find((v) => v.name === 'stash-local-repository'),
    { name: 'stash-local-repository', persistentVolumeClaim: { claimName: 'backups' } });
  assert.deepEqual(config.spec?.template.spec.containers[0]?.volumeMounts?.find((m) => m.name === 'stash-local-repository'),
    { name: 'stash-local-repository', mountPath: '/repo' });
  assert.deepEqual(config.spec?.template.spec.volumes.find((v) => v.name === 'stash-repository'), { name: 'stash-repository', secret: { secretName: 'local-secret', optional: true } });
});

test('a Repository in another namespace cannot be mounted', () => {
  const backup = backupWith((b) => { b.spec.repository = { name: 'stash-backup-repo', namespace: 'backups' }; });
  assert.match(refused(plan({ backup, workload: sampleDeployment }), 'RepositoryNotMountable'), /namespace demo/);
});

test('a template with initContainers (a database Job template) is refused for a workload', () => {
  assert.match(refused(plan({ agentTemplate: pgBackupTemplate, workload: sampleDeployment }), 'InvalidAgentTemplate'), /initContainers/);
});

test('a target mounted where the sidecar mounts its scratch space is refused', () => {
  const w = workload('Deployment', { mounts: [{ name: 'data', mountPath: '/tmp' }] });
  const backup = backupWith((b) => { b.spec.targetDirectories = ['/tmp/app']; });
  assert.match(refused(plan({ backup, workload: w }), 'MountPathConflict'), /\/tmp/);
});

test('an AppBinding Backup needs no sidecar', () => {
  const backup = backupWith((b) => { b.spec.targetRef = { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'quick-postgres' }; });
  assert.equal(plan({ backup, workload: sampleDeployment }).action, 'none');
});

test('removalConfig is the bare object: the manager then owns nothing', () => {
  assert.deepEqual(removalConfig(sampleDeployment), { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'stash-demo', namespace: 'demo' } });
  assert.equal(appliedFieldPaths(removalConfig(sampleDeployment) as unknown as Record<string, unknown>).size, 0);
});

test('the older of two Backups of one workload owns its sidecar', () => {
  const older = backupWith((b) => { b.metadata.name = 'b-older'; b.metadata.creationTimestamp = '2026-01-01T00:00:00Z'; });
  const newer = backupWith((b) => { b.metadata.name = 'a-newer'; b.metadata.creationTimestamp = '2026-02-01T00:00:00Z'; });
  assert.equal(otherClaimant(older, [older, newer]), undefined);
  assert.equal(otherClaimant(newer, [older, newer])?.metadata.name, 'b-older');
  const elsewhere = backupWith((b) => { b.metadata.name = 'c'; b.spec.targetRef = { apiVersion: 'apps/v1', kind: 'Deployment', name: 'other' }; });
  assert.equal(otherClaimant(elsewhere, [older, newer, elsewhere]), undefined);
});

// ---------------------------------------------------------------------------------------------
// The up-to-date comparison

/** managedFields as the apiserver wrote them after applying the sample configuration. */
function managedFieldsFor(config: ApplyConfig): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const p of appliedFieldPaths(config as unknown as Record<string, unknown>)) {
    let node = fields;
    for (const part of p.split(PATH_SEPARATOR)) node = (node[part] ??= {}) as Record<string, unknown>;
  }
  return fields;
}

function liveWorkload(config: ApplyConfig, fieldsV1: unknown): Record<string, unknown> {
  const live = clone(sampleDeployment) as unknown as { metadata: Record<string, unknown>; spec: { template: { spec: { containers: unknown[]; volumes: unknown[] } } } };
  live.metadata.managedFields = [{ manager: FIELD_MANAGER, operation: 'Apply', apiVersion: 'apps/v1', fieldsType: 'FieldsV1', fieldsV1 }];
  const defaulted = clone(config.spec?.template.spec) as unknown as { containers: Record<string, unknown>[]; volumes: Record<string, unknown>[] };
  for (const c of defaulted.containers) Object.assign(c, { terminationMessagePath: '/dev/termination-log', terminationMessagePolicy: 'File' });
  for (const v of defaulted.volumes) if (v.secret) (v.secret as Record<string, unknown>).defaultMode = 420;
  live.spec.template.spec.containers.push(...defaulted.containers);
  live.spec.template.spec.volumes.push(...defaulted.volumes);
  return live;
}

test('the fields a configuration sets are named as managedFields names them', () => {
  const config = applied(plan({ workload: sampleDeployment }));
  const paths = appliedFieldPaths(config as unknown as Record<string, unknown>);
  const p = (...parts: string[]): string => parts.join(PATH_SEPARATOR);
  const c = p('f:spec', 'f:template', 'f:spec', 'f:containers', 'k:{"name":"stash-backup"}');
  assert.ok(paths.has(p(c, 'f:env', 'k:{"name":"POD_NAME"}', 'f:valueFrom', 'f:fieldRef')));
  assert.ok(!paths.has(p(c, 'f:env', 'k:{"name":"POD_NAME"}', 'f:valueFrom', 'f:fieldRef', 'f:fieldPath')), 'fieldRef is an atomic struct');
  assert.ok(paths.has(p(c, 'f:volumeMounts', 'k:{"mountPath":"/tmp"}', 'f:name')));
  assert.ok(paths.has(p(c, 'f:args')));
  assert.ok(!paths.has('f:metadata') && !paths.has('f:apiVersion'));
  // The apiserver's FieldsV1 (with "." markers, keys in its own order) reads back to the same set.
  const fieldsV1 = { 'f:spec': { 'f:template': { 'f:spec': { 'f:volumes': { 'k:{"name":"stash-tmp"}': { '.': {}, 'f:emptyDir': {}, 'f:name': {} } } } } } };
  const v = p('f:spec', 'f:template', 'f:spec', 'f:volumes');
  assert.deepEqual([...ownedFieldPaths(fieldsV1)].sort(), [
    'f:spec', p('f:spec', 'f:template'), p('f:spec', 'f:template', 'f:spec'), v,
    p(v, 'k:{"name":"stash-tmp"}'), p(v, 'k:{"name":"stash-tmp"}', 'f:emptyDir'), p(v, 'k:{"name":"stash-tmp"}', 'f:name'),
  ]);
  assert.deepEqual([...ownedFieldPaths({ 'k:{"protocol":"TCP","containerPort":80}': {} })], ['k:{"containerPort":80,"protocol":"TCP"}']);
});

test('isApplied: true for the applied configuration with defaults beside it, false for any difference', () => {
  const config = applied(plan({ workload: sampleDeployment }));
  const live = liveWorkload(config, managedFieldsFor(config));
  assert.equal(isApplied(live, config as unknown as Record<string, unknown>, FIELD_MANAGER), true);

  // A value changed by someone else.
  const edited = clone(live) as { spec: { template: { spec: { containers: { name: string; image: string }[] } } } };
  edited.spec.template.spec.containers[1]!.image = 'stash-agent:0.0.9';
  assert.equal(isApplied(edited as unknown as Record<string, unknown>, config as unknown as Record<string, unknown>, FIELD_MANAGER), false);

  // A field Stash owns but no longer wants (containerAttributes dropped the limits).
  const fewer = applied(plan({ backup: backupWith((b) => { delete b.spec.containerAttributes; }), workload: sampleDeployment }));
  assert.equal(isApplied(live, fewer as unknown as Record<string, unknown>, FIELD_MANAGER), false);

  // No entry for the manager (never applied, or managedFields reset).
  const bare = { ...live, metadata: { ...(live.metadata as Record<string, unknown>), managedFields: [] } };
  assert.equal(isApplied(bare, config as unknown as Record<string, unknown>, FIELD_MANAGER), false);
});

test('quantities compare by value', () => {
  assert.equal(quantityValue('500m'), 0.5);
  assert.equal(quantityValue('64Mi'), 64 * 2 ** 20);
  assert.equal(quantityValue('1e3'), 1000);
  assert.equal(quantityValue('lots'), undefined);
  assert.equal(containsValues({ limits: { cpu: '0.5' } }, { limits: { cpu: '500m' } }, 'resources'), true);
  assert.equal(containsValues({ limits: { cpu: '0.5' } }, { limits: { cpu: '600m' } }, 'resources'), false);
  assert.equal(containsValues({ args: ['a', 'b'] }, { args: ['a'] }), false);
});

test('the sidecar already in the template is not taken for an app container; a foreign container of that name is a conflict', () => {
  const first = applied(plan({ workload: sampleDeployment }));
  const live = liveWorkload(first, managedFieldsFor(first)) as unknown as Workload;
  // Stash's own mounts (e.g. /tmp) do not count as app mounts on the next plan.
  const tmpBackup = backupWith((b) => { b.spec.targetDirectories = ['/tmp/x']; });
  assert.match(refused(plan({ backup: tmpBackup, workload: live }), 'TargetDirectoryNotMounted'), /\(they mount \/source\/data \(busybox\)\)/);
  assert.equal(JSON.stringify(applied(plan({ workload: live }))), JSON.stringify(first));
  // The same container name, not applied by Stash.
  const foreign = clone(live);
  foreign.metadata.managedFields = [];
  assert.match(refused(plan({ workload: foreign }), 'NameConflict'), /already has a volume named stash-tmp/);
  const spec = foreign.spec?.template?.spec;
  if (spec) spec.volumes = spec.volumes?.filter((v) => !v.name.startsWith('stash-'));
  assert.match(refused(plan({ workload: foreign }), 'NameConflict'), /already has a container named stash-backup/);
});

test('the target label value: <Kind>.<name> when it fits, else a hash that still starts with the kind; always a valid label value', () => {
  assert.equal(targetLabelValue('Deployment', 'stash-demo'), 'Deployment.stash-demo');
  const long = `app-${'x'.repeat(240)}.example`;
  const hashed = targetLabelValue('StatefulSet', long);
  assert.equal(hashed.length, 63);
  assert.match(hashed, /^StatefulSet\.[0-9a-f]+$/);
  assert.equal(targetLabelValue('StatefulSet', long), hashed, 'the same workload gives the same value');
  assert.notEqual(targetLabelValue('StatefulSet', `${long}2`), hashed);
  const label = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
  for (const value of [targetLabelValue('Deployment', 'a'), targetLabelValue('ReplicationController', 'db.v2.prod'), hashed]) assert.match(value, label);
});

test('sidecarVerified: only a Backup Ready by injection at its current generation, labelled, finalized and annotated for its target', () => {
  const verified: BackupState = {
    metadata: {
      generation: 3, finalizers: [FINALIZER], labels: { [TARGET_LABEL]: 'Deployment.app' }, annotations: { [TARGET_ANNOTATION]: 'Deployment/app' },
    },
    spec: { targetRef: { kind: 'Deployment', name: 'app' } },
    status: { conditions: [{ type: 'Ready', status: 'True', reason: 'SidecarInjected', observedGeneration: 3 }], sidecar: { target: 'Deployment/app', targetGeneration: 7 } },
  };
  assert.equal(sidecarVerified(verified), true);
  const variants: [string, BackupState][] = [
    ['spec changed since', { ...verified, metadata: { ...verified.metadata, generation: 4 } }],
    ['being deleted', { ...verified, metadata: { ...verified.metadata, deletionTimestamp: '2026-11-25T00:00:00Z' } }],
    ['finalizer removed', { ...verified, metadata: { ...verified.metadata, finalizers: [] } }],
    ['label removed', { ...verified, metadata: { ...verified.metadata, labels: {} } }],
    ['annotation for another workload', { ...verified, metadata: { ...verified.metadata, annotations: { [TARGET_ANNOTATION]: 'Deployment/old' } } }],
    ['status for another workload', { ...verified, status: { ...verified.status, sidecar: { target: 'Deployment/old', targetGeneration: 7 } } }],
    ['refused', { ...verified, status: { ...verified.status, conditions: [{ type: 'Ready', status: 'False', reason: 'TargetNotFound', observedGeneration: 3 }] } }],
    ['no status yet', { ...verified, status: {} }],
  ];
  for (const [why, state] of variants) assert.equal(sidecarVerified(state), false, why);

  assert.equal(workloadUnchangedSince(verified, { metadata: { generation: 7 } }), true, 'a status update of the workload');
  assert.equal(workloadUnchangedSince(verified, { metadata: { generation: 8 } }), false, 'the workload spec changed');
  assert.equal(workloadUnchangedSince(verified, undefined), false, 'the workload is gone');
  assert.equal(workloadUnchangedSince({ ...verified, metadata: { ...verified.metadata, generation: 4 } }, { metadata: { generation: 7 } }), false);
});
