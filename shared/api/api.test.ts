import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { backendKind, backend as backendSchema } from './backends.ts';
import { backup, backupSpec } from './backup.ts';
import { expandTemplatePrefix, parseDefaultBackupAnnotations } from './backup-template.ts';
import { agentName, agentRef, suggestDnsName } from './common.ts';
import { crdObject, generateCrds, toStructural } from './crd-gen.ts';
import { KINDS, kindInfo } from './kinds.ts';
import { recovery } from './recovery.ts';
import { formatPath, parseObject, validateObject } from './validate.ts';

const here = import.meta.dirname;
const baseBackup = {
  apiVersion: 'stash.appscode.com/v1alpha2',
  kind: 'Backup',
  metadata: { name: 'b', namespace: 'demo' },
  spec: {
    schedule: '@every 1h',
    backupAgent: { name: 'stash-volume-backup' },
    repository: { name: 'repo' },
    targetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'app' },
    targetDirectories: ['/data'],
  },
};
function issues(obj: unknown): { path: string; message: string }[] {
  const r = validateObject(obj);
  return r.ok ? [] : r.issues;
}
function withSpec(patch: Record<string, unknown>): unknown {
  return { ...baseBackup, spec: { ...baseBackup.spec, ...patch } };
}

describe('agent references', () => {
  it('accepts {name: x} and x, and agentName() reads both', () => {
    for (const ref of ['stash-volume-backup', { name: 'stash-volume-backup' }]) {
      const parsed = backup.parse(withSpec({ backupAgent: ref }));
      assert.equal(agentName(parsed.spec.backupAgent), 'stash-volume-backup');
    }
  });
  it('rejects a camelCase name and says which name to use, in both shapes', () => {
    for (const ref of ['stashVolumeBackup', { name: 'stashVolumeBackup' }]) {
      const found = issues(withSpec({ backupAgent: ref }));
      assert.ok(found.length > 0);
      assert.ok(found.every((i) => i.path.startsWith('spec.backupAgent')), JSON.stringify(found));
      assert.ok(found.some((i) => i.message.includes('use "stash-volume-backup"')), JSON.stringify(found));
    }
  });
  it('rejects other shapes', () => {
    assert.equal(agentRef('x').safeParse(42).success, false);
    assert.equal(agentRef('x').safeParse({ name: 'a', extra: 1 }).success, false);
  });
  it('suggests DNS names', () => {
    assert.equal(suggestDnsName('stashVolumeBackup'), 'stash-volume-backup');
    assert.equal(suggestDnsName('pgRecovery'), 'pg-recovery');
    assert.equal(suggestDnsName('HTTPServer_Backup'), 'http-server-backup');
  });
});

describe('zod verdicts', () => {
  it('accepts a minimal Backup and fills nothing it was not given', () => {
    assert.deepEqual(issues(baseBackup), []);
  });
  const bad: [string, Record<string, unknown>, string, RegExp][] = [
    ['a 30s interval', { schedule: '@every 30s' }, 'spec.schedule', /at least 1m/],
    ['an impossible minute', { schedule: '61 * * * *' }, 'spec.schedule', /not valid cron/],
    ['an unknown zone', { timezone: 'Mars/Base' }, 'spec.timezone', /not a known IANA time zone/],
    ['no keep rule', { retentionPolicy: { prune: true } }, 'spec.retentionPolicy', /at least one keep rule/],
    ['a typo', { retentionPolicy: { keepLst: 5 } }, 'spec.retentionPolicy', /keepLst/],
    ['workload without directories', { targetDirectories: [] }, 'spec.targetDirectories', /targetDirectories/],
  ];
  for (const [what, patch, p, message] of bad) {
    it(`rejects ${what} at ${p}`, () => {
      const found = issues(withSpec(patch));
      assert.ok(found.some((i) => i.path === p && message.test(i.message)), JSON.stringify(found));
    });
  }
  it('an AppBinding target needs no directories', () => {
    assert.deepEqual(issues(withSpec({ targetDirectories: undefined, targetRef: { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'db' } })), []);
  });
  it('Recovery defaults snapshot and recoveryPolicy', () => {
    const r = recovery.parse({
      apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Recovery', metadata: { name: 'r' },
      spec: { repository: { name: 'repo' }, recoveryAgent: 'pg-recovery', recoverTo: { workload: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'a' } } },
    });
    assert.equal(r.spec.snapshot, 'latest');
    assert.equal(r.spec.recoveryPolicy, 'IfNotRecovered');
  });
  it('boolean annotations and annotations under labels are rejected with a fix', () => {
    const found = issues({ ...baseBackup, metadata: { name: 'b', labels: { annotations: { x: 'y' } }, annotations: { 'stash.appscode.com/backup': true } } });
    assert.ok(found.some((i) => i.path === 'metadata.labels.annotations' && /label values must be strings/.test(i.message)), JSON.stringify(found));
    assert.ok(found.some((i) => i.path === 'metadata.annotations.stash.appscode.com/backup' && /quote/.test(i.message)), JSON.stringify(found));
  });
  it('parseObject throws an error naming kind, object and field', () => {
    assert.throws(() => parseObject(backup, 'Backup', withSpec({ schedule: 'hourly' })), (e: Error) =>
      e.name === 'InvalidObjectError' && /Backup b is invalid: spec\.schedule: /.test(e.message));
  });
  it('validateObject names an unknown kind', () => {
    assert.deepEqual(issues({ kind: 'Restore' }).map((i) => i.path), ['kind']);
  });
  it('backendKind picks the one backend', () => {
    const b = backendSchema.parse({ s3: { endpoint: 'e', bucket: 'b' }, storageSecretName: 's' });
    assert.equal(backendKind(b), 's3');
  });
  it('formats paths like the apiserver', () => {
    assert.equal(formatPath(['spec', 'containers', 0, 'env', 2, 'name']), 'spec.containers[0].env[2].name');
  });
});

describe('default backup', () => {
  it('reads the design annotations', () => {
    assert.deepEqual(parseDefaultBackupAnnotations({
      'stash.appscode.com/backup': 'true',
      'stash.appscode.com/targetDirectories': '[/source/data, /var/log]',
      'stash.appscode.com/backupTemplate': 'volume-backup-template',
    }), { enabled: true, template: 'volume-backup-template', targetDirectories: ['/source/data', '/var/log'] });
    assert.equal(parseDefaultBackupAnnotations({ other: 'x' }), undefined);
    assert.throws(() => parseDefaultBackupAnnotations({ 'stash.appscode.com/backup': 'yes', 'stash.appscode.com/backupTemplate': 't' }), /must be "true" or "false"/);
  });
  it('expands the prefix placeholders', () => {
    assert.equal(expandTemplatePrefix('${metadata.namespace}/${metadata.name}', { namespace: 'demo', name: 'db' }), 'demo/db');
  });
});

describe('CRDs', () => {
  it('the committed CRDs equal a fresh generation (run `npm run gen:crds` if this fails)', () => {
    const dir = path.join(here, 'crds');
    const fresh = generateCrds();
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort(), [...fresh.keys()].sort());
    for (const [file, text] of fresh) assert.equal(readFileSync(path.join(dir, file), 'utf8'), text, `${file} is stale`);
  });
  it('are structural: every node typed, no junctors, no additionalProperties beside properties', () => {
    const walk = (n: Record<string, unknown>, p: string): void => {
      const special = n['x-kubernetes-preserve-unknown-fields'] === true || n['x-kubernetes-int-or-string'] === true;
      assert.ok(n.type !== undefined || special, `${p} has no type`);
      for (const k of ['anyOf', 'oneOf', 'allOf', 'not', '$ref']) {
        if (k === 'anyOf' && n['x-kubernetes-int-or-string'] === true) continue;
        assert.equal(n[k], undefined, `${p} has ${k}`);
      }
      assert.ok(!(n.properties !== undefined && n.additionalProperties !== undefined), `${p} has additionalProperties beside properties`);
      for (const [k, v] of Object.entries((n.properties ?? {}) as Record<string, Record<string, unknown>>)) walk(v, `${p}.${k}`);
      if (n.items !== undefined) walk(n.items as Record<string, unknown>, `${p}[]`);
      if (typeof n.additionalProperties === 'object') walk(n.additionalProperties as Record<string, unknown>, `${p}{}`);
    };
    for (const k of KINDS) {
      const crd = parse(readFileSync(path.join(here, 'crds', `${k.plural}.${k.group}.yaml`), 'utf8')) as {
        spec: { scope: string; names: { categories: string[]; plural: string }; versions: { schema: { openAPIV3Schema: Record<string, unknown> }; subresources?: unknown }[] };
      };
      walk(crd.spec.versions[0]!.schema.openAPIV3Schema, k.kind);
      assert.deepEqual(crd.spec.names.categories, ['stash']);
      assert.equal(crd.spec.scope, k.scope);
      assert.equal(crd.spec.versions[0]!.subresources !== undefined, k.schema.shape.status !== undefined);
    }
  });
  it('plurals are regular (Recovery -> recoveries) and scopes as documented', () => {
    assert.equal(kindInfo('Recovery').plural, 'recoveries');
    assert.equal(kindInfo('Repository').plural, 'repositories');
    assert.deepEqual(KINDS.filter((k) => k.scope === 'Cluster').map((k) => k.kind), ['BackupTemplate', 'AgentTemplate']);
  });
  it('cross-field rules appear once as CEL and once as zod refinement', () => {
    const crd = JSON.stringify(crdObject(kindInfo('Backup')));
    assert.match(crd, /a workload backup needs targetDirectories/);
    assert.match(crd, /set at least one keep rule/);
    assert.match(crd, /set either value or valueFrom, not both/);
    const r = backupSpec.safeParse({ ...baseBackup.spec, targetDirectories: [] });
    assert.ok(!r.success && r.error.issues.some((i) => /a workload backup needs targetDirectories/.test(i.message)));
  });
  it('refuses zod shapes a structural schema cannot hold', () => {
    assert.throws(() => toStructural(z.toJSONSchema(z.union([z.string(), z.int()]), { target: 'openapi-3.0' }), 'x'), /anyOf cannot be expressed/);
  });
});

describe('default AgentTemplates', () => {
  it('are valid and cover volume, PostgreSQL, MariaDB and Redis', () => {
    const docs = parseAllDocuments(readFileSync(path.join(here, 'defaults', 'agent-templates.yaml'), 'utf8')).map((d) => d.toJS() as { metadata: { name: string } });
    for (const d of docs) assert.deepEqual(issues(d), [], d.metadata.name);
    assert.deepEqual(docs.map((d) => d.metadata.name), [
      'stash-volume-backup', 'stash-volume-recovery', 'pg-backup', 'pg-recovery', 'mariadb-backup', 'mariadb-recovery', 'redis-backup', 'redis-recovery',
    ]);
    const all = JSON.stringify(docs);
    for (const sub of ['"backup"', '"recover"', '"init"', '"update-repo-status"', '"update-recovery-status"']) assert.ok(all.includes(sub), sub);
    assert.ok(!all.includes('appscode/stash'), 'defaults use the locally built stash-agent image');
  });
});
