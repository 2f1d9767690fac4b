// readDefaultBackupRequest, checkTemplate and planDefaultBackup: a table of cases, no cluster.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { KubernetesObject } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { backupTemplate as backupTemplateSchema } from '../../shared/api/index.ts';
import type { BackupTemplate } from '../../shared/api/index.ts';
import {
  checkTemplate, fitName, GENERATED_FOR_LABEL, generatedForValue, generatedName, generatedTarget, isGeneratedFor, MAX_GENERATED_NAME,
  parseTargetDirectories, planDefaultBackup, readDefaultBackupRequest, TEMPLATE_LABEL,
} from './plan.ts';
import type { BackupApply, Plan, PlanInput, RepositoryApply, Target } from './plan.ts';

const root = path.resolve(import.meta.dirname, '../..');
const samples = path.join(root, 'test/fixtures/design-samples');
const readYaml = (file: string): unknown => parse(readFileSync(path.join(samples, file), 'utf8'));

const volumeTemplate: BackupTemplate = backupTemplateSchema.parse(readYaml('09-backup-template-volume.yaml'));
const databaseTemplate: BackupTemplate = backupTemplateSchema.parse(readYaml('10-backup-template-database.yaml'));
const UID = '0b6f3c58-7a52-4c1e-9d54-1f3f8a0c2e11';

/** A design sample (11 or 12) as the apiserver returns it: with a uid. */
function sampleTarget(file: string): Target {
  const object = readYaml(file) as Target;
  object.metadata.uid = UID;
  return object;
}
const deployment = sampleTarget('11-deployment-default-backup.yaml');
const appBinding = sampleTarget('12-appbinding-default-backup.yaml');

function withAnnotations(target: Target, annotations: Record<string, string | undefined>, extra: Partial<Target['metadata']> = {}): Target {
  const t = structuredClone(target);
  const merged: Record<string, string> = { ...t.metadata.annotations };
  for (const [k, v] of Object.entries(annotations)) {
    if (v === undefined) delete merged[k];
    else merged[k] = v;
  }
  t.metadata = { ...t.metadata, ...extra, annotations: merged };
  return t;
}

function templateWith(base: BackupTemplate, change: (t: BackupTemplate) => void): BackupTemplate {
  const t = structuredClone(base);
  change(t);
  return t;
}

function plan(target: Target, template: BackupTemplate, over: Partial<PlanInput> = {}): Plan {
  const request = readDefaultBackupRequest(target);
  assert.equal(request.state, 'on', `expected the annotations to opt in, got ${JSON.stringify(request)}`);
  return planDefaultBackup({
    target, template, targetDirectories: request.state === 'on' ? request.targetDirectories : undefined,
    storageSecret: 'present', existing: {}, backups: [], ...over,
  });
}

function applied(p: Plan): { repository: RepositoryApply; backup: BackupApply } {
  assert.equal(p.action, 'apply', `expected an apply plan, got ${JSON.stringify(p)}`);
  return p;
}

function refused(p: Plan, reason: string): string {
  assert.equal(p.action, 'refuse', `expected a refusal, got ${JSON.stringify(p).slice(0, 400)}`);
  const { refusal } = p as { refusal: { reason: string; message: string } };
  assert.equal(refusal.reason, reason, refusal.message);
  return refusal.message;
}

test('the design samples: volume template 09 + Deployment 11 give exactly this Repository and Backup', () => {
  const { repository, backup } = applied(plan(deployment, volumeTemplate));
  const metadata = {
    name: 'deployment-stash-demo',
    namespace: 'demo',
    labels: { [TEMPLATE_LABEL]: 'volume-backup-template', [GENERATED_FOR_LABEL]: 'Deployment.stash-demo' },
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: 'stash-demo', uid: UID }],
  };
  assert.deepEqual(repository, {
    apiVersion: 'stash.appscode.com/v1alpha2',
    kind: 'Repository',
    metadata,
    spec: { backend: { gcs: { bucket: 'stash-backup-repo', prefix: 'demo/stash-demo' }, storageSecretName: 'gcs-secret' } },
  });
  assert.deepEqual(backup, {
    apiVersion: 'stash.appscode.com/v1alpha2',
    kind: 'Backup',
    metadata,
    spec: {
      schedule: '@every 1h',
      backupAgent: { name: 'stash-volume-backup' },
      repository: { name: 'deployment-stash-demo' },
      targetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'stash-demo' },
      targetDirectories: ['/source/data'],
      retentionPolicy: { name: 'keep-last-5', keepLast: 5, prune: true },
    },
  });
  // The template itself is not changed by expanding it.
  assert.equal(volumeTemplate.spec.backend.gcs?.prefix, '${metadata.namespace}/${metadata.name}');
});

test('the design samples: database template 10 + AppBinding 12 give a database Backup without targetDirectories', () => {
  const { repository, backup } = applied(plan(appBinding, databaseTemplate));
  const metadata = {
    name: 'appbinding-quick-postgres',
    namespace: 'demo',
    labels: { [TEMPLATE_LABEL]: 'database-backup-template', [GENERATED_FOR_LABEL]: 'AppBinding.quick-postgres' },
    ownerReferences: [{ apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'quick-postgres', uid: UID }],
  };
  assert.deepEqual(repository, {
    apiVersion: 'stash.appscode.com/v1alpha2',
    kind: 'Repository',
    metadata,
    spec: { backend: { gcs: { bucket: 'stash-backup-repo', prefix: 'demo/quick-postgres' }, storageSecretName: 'gcs-secret' } },
  });
  assert.deepEqual(backup, {
    apiVersion: 'stash.appscode.com/v1alpha2',
    kind: 'Backup',
    metadata,
    spec: {
      schedule: '@every 1h',
      backupAgent: { name: 'pg-backup' },
      repository: { name: 'appbinding-quick-postgres' },
      targetRef: { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'quick-postgres' },
      retentionPolicy: { name: 'keep-last-5', keepLast: 5, prune: true },
    },
  });
  assert.equal('targetDirectories' in backup.spec, false);
});

test('every template field reaches the Backup: timezone, containerAttributes, podAttributes; agent in either shape', () => {
  const template = templateWith(volumeTemplate, (t) => {
    t.spec.schedule = '0 3 * * *';
    t.spec.timezone = 'Europe/Berlin';
    t.spec.backupAgent = { name: 'my-agent' };
    t.spec.containerAttributes = { resources: { limits: { memory: '128Mi' } }, env: [{ name: 'X', value: '1' }] };
    t.spec.podAttributes = { nodeSelector: { disk: 'ssd' }, priorityClassName: 'backup' };
    delete t.spec.retentionPolicy;
  });
  const { backup } = applied(plan(deployment, template));
  assert.deepEqual(backup.spec, {
    schedule: '0 3 * * *',
    timezone: 'Europe/Berlin',
    backupAgent: { name: 'my-agent' },
    repository: { name: 'deployment-stash-demo' },
    targetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'stash-demo' },
    targetDirectories: ['/source/data'],
    containerAttributes: { resources: { limits: { memory: '128Mi' } }, env: [{ name: 'X', value: '1' }] },
    podAttributes: { nodeSelector: { disk: 'ssd' }, priorityClassName: 'backup' },
  });
});

test('prefix placeholders: each occurrence, every object-store backend; other fields and other backends untouched', () => {
  const cases: { backend: BackupTemplate['spec']['backend']; expected: unknown }[] = [
    { backend: { s3: { endpoint: 's3.amazonaws.com', bucket: 'b', prefix: 'k8s/${metadata.namespace}/${metadata.name}/${metadata.name}' }, storageSecretName: 's' },
      expected: { s3: { endpoint: 's3.amazonaws.com', bucket: 'b', prefix: 'k8s/demo/stash-demo/stash-demo' }, storageSecretName: 's' } },
    { backend: { azure: { container: 'c', prefix: '${metadata.name}' }, storageSecretName: 's' }, expected: { azure: { container: 'c', prefix: 'stash-demo' }, storageSecretName: 's' } },
    { backend: { b2: { bucket: 'b', prefix: 'fixed/path' }, storageSecretName: 's' }, expected: { b2: { bucket: 'b', prefix: 'fixed/path' }, storageSecretName: 's' } },
    { backend: { swift: { container: 'c', prefix: '${metadata.namespace}' }, storageSecretName: 's' }, expected: { swift: { container: 'c', prefix: 'demo' }, storageSecretName: 's' } },
    { backend: { gcs: { bucket: 'b' }, storageSecretName: 's' }, expected: { gcs: { bucket: 'b' }, storageSecretName: 's' } },
    { backend: { rest: { url: 'http://rest:8000/' }, storageSecretName: 's' }, expected: { rest: { url: 'http://rest:8000/' }, storageSecretName: 's' } },
    { backend: { local: { mountPath: '/repo', subPath: 'all', persistentVolumeClaim: { claimName: 'repo' } }, storageSecretName: 's' },
      expected: { local: { mountPath: '/repo', subPath: 'all', persistentVolumeClaim: { claimName: 'repo' } }, storageSecretName: 's' } },
  ];
  for (const c of cases) {
    const { repository } = applied(plan(deployment, templateWith(volumeTemplate, (t) => { t.spec.backend = c.backend; })));
    assert.deepEqual(repository.spec.backend, c.expected);
  }
});

test('a template whose expansion is invalid is refused with the field and the fix', () => {
  // A placeholder outside a prefix is not expanded: said, not written as a literal directory.
  const local = templateWith(volumeTemplate, (t) => {
    t.spec.backend = { local: { mountPath: '/repo', subPath: '${metadata.namespace}', hostPath: { path: '/srv' } }, storageSecretName: 's' };
  });
  const message = refused(plan(deployment, local), 'InvalidBackupTemplate');
  assert.match(message, /spec\.backend\.local\.subPath holds a placeholder/);
  assert.match(message, /only in the prefix of s3, gcs, azure, b2, swift/);

  // The prefix fits 1024 characters in the template, not once a long name is expanded into it.
  const longName = 'a'.repeat(250);
  const long = templateWith(volumeTemplate, (t) => { t.spec.backend.gcs = { bucket: 'b', prefix: `${'p'.repeat(900)}/\${metadata.name}` }; });
  const target = structuredClone(deployment);
  target.metadata.name = longName;
  const tooLong = refused(plan(target, long), 'InvalidExpandedBackup');
  assert.match(tooLong, /spec\.backend\.gcs\.prefix/);
  assert.match(tooLong, /shorten the prefix/);
});

test('names: <kind>-<name>; past 63 characters cut and hashed, distinct, valid; labels likewise', () => {
  assert.equal(generatedName('Deployment', 'stash-demo'), 'deployment-stash-demo');
  assert.equal(generatedName('ReplicationController', 'web'), 'replicationcontroller-web');
  assert.equal(generatedName('AppBinding', 'quick-postgres'), 'appbinding-quick-postgres');
  assert.notEqual(generatedName('StatefulSet', 'web'), generatedName('Deployment', 'web'));

  const a = `${'x'.repeat(60)}-a`;
  const b = `${'x'.repeat(60)}-b`;
  const dotted = `${'y'.repeat(40)}.${'z'.repeat(40)}`;
  for (const name of [a, b, dotted, 'n'.repeat(253)]) {
    const generated = generatedName('StatefulSet', name);
    assert.ok(generated.length <= MAX_GENERATED_NAME, generated);
    assert.match(generated, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
    assert.match(generated, /-[0-9a-f]{8}$/);
    const label = generatedForValue('StatefulSet', name);
    assert.ok(label.length <= 63);
    assert.match(label, /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/);
  }
  assert.notEqual(generatedName('StatefulSet', a), generatedName('StatefulSet', b));
  assert.equal(generatedName('StatefulSet', a), generatedName('StatefulSet', a), 'deterministic');
  assert.equal(fitName('short', 63), 'short');

  // A long workload name, planned end to end: the Backup names the Repository by the cut name.
  const target = structuredClone(deployment);
  target.metadata.name = a;
  const { repository, backup } = applied(plan(target, volumeTemplate));
  assert.equal(repository.metadata.name, generatedName('Deployment', a));
  assert.equal(backup.spec.repository.name, repository.metadata.name);
  assert.equal(backup.spec.targetRef.name, a, 'the target is named in full');
  assert.equal(repository.spec.backend.gcs?.prefix, `demo/${a}`);

  const longTemplate = templateWith(volumeTemplate, (t) => { t.metadata.name = `t${'e'.repeat(100)}`; });
  const labelled = applied(plan(deployment, longTemplate));
  assert.equal(labelled.backup.metadata.labels[TEMPLATE_LABEL]?.length, 63);
});

test('annotations that do not opt in: absent, "false", a ReplicaSet copying its Deployment\'s annotations (owned or orphaned)', () => {
  assert.equal(readDefaultBackupRequest(withAnnotations(deployment, { 'stash.appscode.com/backup': undefined })).state, 'off');
  // "false" turns it off even without the other annotations.
  const off = withAnnotations(deployment, { 'stash.appscode.com/backup': 'false', 'stash.appscode.com/backupTemplate': undefined, 'stash.appscode.com/targetDirectories': undefined });
  assert.deepEqual(readDefaultBackupRequest(off), { state: 'off', reason: 'stash.appscode.com/backup is "false"' });
  const replicaSet = { ...withAnnotations(deployment, {}, { ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: 'stash-demo', controller: true }] }), kind: 'ReplicaSet' };
  const rs = readDefaultBackupRequest(replicaSet);
  assert.equal(rs.state, 'off');
  assert.match((rs as { reason: string }).reason, /controlled by Deployment stash-demo/);
  // Orphaned (kubectl delete --cascade=orphan): no owner any more, but still the Deployment's annotations.
  const orphan = { ...withAnnotations(deployment, { 'deployment.kubernetes.io/revision': '1' }), kind: 'ReplicaSet' };
  assert.match((readDefaultBackupRequest(orphan) as { reason: string }).reason, /made by a Deployment/);
  // A ReplicaSet a person made and annotated is backed up.
  assert.equal(readDefaultBackupRequest({ ...deployment, kind: 'ReplicaSet' }).state, 'on');
});

test('bad annotations: each says what is wrong and how to write it', () => {
  const cases: { annotations: Record<string, string | undefined>; target?: Target; match: RegExp[] }[] = [
    { annotations: { 'stash.appscode.com/backup': 'True' }, match: [/is "True" \(a boolean written another way\)/, /write stash\.appscode\.com\/backup: "true" \(quoted in YAML\)/] },
    { annotations: { 'stash.appscode.com/backup': 'yes' }, match: [/"yes" \(a boolean written another way\)/] },
    { annotations: { 'stash.appscode.com/backup': 'enabled' }, match: [/is "enabled"; Stash reads only the lowercase strings "true" and "false"/] },
    { annotations: { 'stash.appscode.com/backupTemplate': undefined }, match: [/backupTemplate is missing: set it to the name of a BackupTemplate/] },
    { annotations: { 'stash.appscode.com/backupTemplate': 'Volume_Template' }, match: [/not a valid Kubernetes name/, /use "volume-template"/] },
    { annotations: { 'stash.appscode.com/targetDirectories': undefined }, match: [/needs annotation stash\.appscode\.com\/targetDirectories/, /"\[\/source\/data\]"/] },
    { annotations: { 'stash.appscode.com/targetDirectories': undefined, 'stash.appscode.com/target-directories': '[/data]' },
      match: [/\(found "stash\.appscode\.com\/target-directories": the key is spelt exactly stash\.appscode\.com\/targetDirectories\)/] },
    { annotations: { 'stash.appscode.com/backupTemplate': undefined, 'stash.appscode.com/backuptemplate': 'x' }, match: [/found "stash\.appscode\.com\/backuptemplate"/] },
    { annotations: { 'stash.appscode.com/targetDirectories': '[/source/data' }, match: [/has no closing "\]"/] },
    { annotations: { 'stash.appscode.com/targetDirectories': '/source/data]' }, match: [/has no opening "\["/] },
    { annotations: { 'stash.appscode.com/targetDirectories': '[source/data]' }, match: [/"source\/data" is not an absolute path: start it with "\/"/] },
    { annotations: { 'stash.appscode.com/targetDirectories': '[]' }, match: [/lists no directory/] },
    { annotations: { 'stash.appscode.com/targetDirectories': '[/a,,/b]' }, match: [/has an empty entry/] },
    { annotations: { 'stash.appscode.com/targetDirectories': '[/a, /a]' }, match: [/lists "\/a" twice/] },
    { annotations: { 'stash.appscode.com/targetDirectories': "['/a']" }, match: [/holds a quote or bracket/] },
    { annotations: { 'stash.appscode.com/targetDirectories': '["/a", 3]' }, match: [/neither a list of paths nor a JSON array of strings/] },
    { annotations: { 'stash.appscode.com/targetDirectories': '[/data]' }, target: appBinding, match: [/AppBinding's database is dumped whole/, /remove that annotation/] },
  ];
  for (const c of cases) {
    const request = readDefaultBackupRequest(withAnnotations(c.target ?? deployment, c.annotations));
    assert.equal(request.state, 'invalid', `${JSON.stringify(c.annotations)} -> ${JSON.stringify(request)}`);
    const { message } = request as { message: string };
    assert.match(message, c.target === appBinding ? /^AppBinding demo\/quick-postgres: / : /^Deployment demo\/stash-demo: /);
    for (const m of c.match) assert.match(message, m, `${JSON.stringify(c.annotations)}: ${message}`);
  }
});

test('targetDirectories: the design\'s form, without brackets, a JSON array; spaces trimmed', () => {
  assert.deepEqual(parseTargetDirectories('[/source/data]'), { ok: true, directories: ['/source/data'] });
  assert.deepEqual(parseTargetDirectories(' [ /a , /b/c ] '), { ok: true, directories: ['/a', '/b/c'] });
  assert.deepEqual(parseTargetDirectories('/a,/b'), { ok: true, directories: ['/a', '/b'] });
  assert.deepEqual(parseTargetDirectories('["/a","/with space"]'), { ok: true, directories: ['/a', '/with space'] });
  const request = readDefaultBackupRequest(withAnnotations(deployment, { 'stash.appscode.com/targetDirectories': '[/a,/b]' }));
  assert.deepEqual(request, { state: 'on', template: 'volume-backup-template', targetDirectories: ['/a', '/b'] });
});

test('templates: missing and invalid ones are refused with the fix', () => {
  const missing = checkTemplate('nope', undefined);
  assert.equal(missing.ok, false);
  assert.equal((missing as { refusal: { reason: string } }).refusal.reason, 'BackupTemplateNotFound');
  assert.match((missing as { refusal: { message: string } }).refusal.message, /BackupTemplate nope \(cluster-scoped\) named by annotation stash\.appscode\.com\/backupTemplate does not exist: create it/);

  const raw = structuredClone(readYaml('09-backup-template-volume.yaml')) as { spec: Record<string, unknown> };
  raw.spec.schedule = '@every 30s';
  raw.spec.backupAgent = 'stashVolumeBackup';
  const invalid = checkTemplate('volume-backup-template', raw);
  assert.equal(invalid.ok, false);
  const { reason, message } = (invalid as { refusal: { reason: string; message: string } }).refusal;
  assert.equal(reason, 'InvalidBackupTemplate');
  assert.match(message, /spec\.schedule: /);
  assert.match(message, /use "stash-volume-backup"/);

  const ok = checkTemplate('volume-backup-template', readYaml('09-backup-template-volume.yaml'));
  assert.equal(ok.ok, true);
});

test('refusals before anything is written: missing Secret, hand-written Backup, a name taken by another object', () => {
  const noSecret = refused(plan(deployment, volumeTemplate, { storageSecret: 'absent' }), 'StorageSecretNotFound');
  assert.match(noSecret, /Secret demo\/gcs-secret, the storageSecretName of BackupTemplate volume-backup-template, does not exist in the namespace of Deployment demo\/stash-demo/);
  assert.match(noSecret, /never copies Secrets between namespaces: create Secret gcs-secret in namespace demo/);
  // The function may not read Secrets (deployment RBAC): the Secret is not checked.
  assert.equal(plan(deployment, volumeTemplate, { storageSecret: 'unknown' }).action, 'apply');

  const handWritten = readYaml('02-backup-volume.yaml') as KubernetesObject;
  const conflict = refused(plan(deployment, volumeTemplate, { backups: [handWritten] }), 'TargetHasAnotherBackup');
  assert.match(conflict, /also the target of Backup demo\/backup-volume-demo/);
  assert.match(conflict, /remove annotation stash\.appscode\.com\/backup .* or delete that Backup/);

  const ours = applied(plan(deployment, volumeTemplate));
  // Our own generated Backup, and Backups of other targets, are no conflict.
  const other = structuredClone(handWritten) as KubernetesObject & { spec: { targetRef: { name: string } } };
  other.spec.targetRef.name = 'another';
  const again = applied(plan(deployment, volumeTemplate, {
    backups: [ours.backup, other], existing: { repository: ours.repository as unknown as KubernetesObject, backup: ours.backup as unknown as KubernetesObject },
  }));
  assert.deepEqual(again, ours);

  // A Backup a person named deployment-stash-demo is never taken over.
  const theirs = { apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Backup', metadata: { name: 'deployment-stash-demo', namespace: 'demo', labels: { team: 'a' } } };
  const taken = refused(plan(deployment, volumeTemplate, { existing: { backup: theirs } }), 'GeneratedNameTaken');
  assert.match(taken, /Backup demo\/deployment-stash-demo, the name Stash generates for Deployment demo\/stash-demo, already exists and was not generated for it/);
  assert.match(taken, /rename or delete that Backup/);
});

test('ownership: only objects labelled for that target count as generated; their target is read back from the ownerReference', () => {
  const { backup } = applied(plan(deployment, volumeTemplate));
  const object = backup as unknown as KubernetesObject;
  assert.equal(isGeneratedFor(object, 'Deployment', 'stash-demo'), true);
  assert.equal(isGeneratedFor(object, 'StatefulSet', 'stash-demo'), false);
  assert.equal(isGeneratedFor({ metadata: { labels: { [GENERATED_FOR_LABEL]: 'Deployment.stash-demo' } } }, 'Deployment', 'stash-demo'), false, 'both labels are needed');
  assert.equal(isGeneratedFor(undefined, 'Deployment', 'stash-demo'), false);
  assert.deepEqual(generatedTarget(object), { kind: 'Deployment', namespace: 'demo', name: 'stash-demo' });
  assert.equal(generatedTarget(readYaml('02-backup-volume.yaml') as KubernetesObject), undefined);
});
