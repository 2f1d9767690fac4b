import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { backup as backupSchema, recovery as recoverySchema } from '../../shared/api/index.ts';
import type { Backup, Recovery } from '../../shared/api/index.ts';
import { agentNamespace, backupPlan, ClusterConfigError, decodeSecret, recoveryPlan } from './cluster-plan.ts';

function backupOf(spec: Record<string, unknown>): Backup {
  return backupSchema.parse({ apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Backup', metadata: { name: 'b1', namespace: 'demo' }, spec });
}
function recoveryOf(spec: Record<string, unknown>): Recovery {
  return recoverySchema.parse({ apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Recovery', metadata: { name: 'r1', namespace: 'demo' }, spec });
}
const tags = (kind: string, workload: string): string[] => [
  'stash.appscode.com/namespace=demo', 'stash.appscode.com/backup=b1', `stash.appscode.com/kind=${kind}`, `stash.appscode.com/workload=${workload}`,
];

describe('agentNamespace', () => {
  it('prefers $NAMESPACE, then the service account file', () => {
    assert.equal(agentNamespace({ NAMESPACE: 'a' }, 'b\n'), 'a');
    assert.equal(agentNamespace({}, 'b\n'), 'b');
    assert.throws(() => agentNamespace({}, undefined), ClusterConfigError);
  });
});

describe('backupPlan', () => {
  it('volume backup of a Deployment: paths, excludes, host-0, identity tags, scoped retention', () => {
    const plan = backupPlan(backupOf({
      schedule: '@hourly', backupAgent: { name: 'stash-volume-backup' }, repository: { name: 'repo' },
      targetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'web' }, targetDirectories: ['/source/data'], excludes: ['*.tmp'],
      retentionPolicy: { keepLast: 5, prune: true },
    }), {}, 'web-7d9c-abcde');
    assert.deepEqual(plan, {
      type: 'volume', repository: { namespace: 'demo', name: 'repo' }, paths: ['/source/data'], excludes: ['*.tmp'], host: 'host-0',
      tags: tags('Deployment', 'web'),
      forget: ['--tag', tags('Deployment', 'web').join(','), '--host', 'host-0', '--group-by', 'host', '--keep-last', '5', '--prune'],
    });
  });
  it('StatefulSet replica host from POD_NAME; no retention when none is set', () => {
    const plan = backupPlan(backupOf({
      schedule: '@hourly', backupAgent: 'stash-volume-backup', repository: { name: 'repo', namespace: 'storage' },
      targetRef: { apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'db' }, targetDirectories: ['/var/lib/data'],
    }), { POD_NAME: 'db-2' }, 'ignored');
    assert.equal(plan.host, 'host-2');
    assert.deepEqual(plan.repository, { namespace: 'storage', name: 'repo' });
    assert.equal(plan.forget, undefined);
  });
  it('AppBinding targets become database plans with the Backup args as databases', () => {
    const plan = backupPlan(backupOf({
      schedule: '@hourly', backupAgent: 'pg-backup', repository: { name: 'repo' },
      targetRef: { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'quick-postgres' }, containerAttributes: { args: ['mydb'] },
    }), {}, 'job-pod');
    assert.equal(plan.type, 'database');
    assert.ok(plan.type === 'database' && plan.databases[0] === 'mydb' && plan.appBinding.name === 'quick-postgres');
    assert.deepEqual(plan.tags, tags('AppBinding', 'quick-postgres'));
  });
});

describe('recoveryPlan', () => {
  const base = { repository: { name: 'repo' }, recoveryAgent: 'stash-volume-recovery' };
  it('into a workload: in place under /, limited to the paths', () => {
    const plan = recoveryPlan(recoveryOf({ ...base, paths: ['/source/data'], recoverTo: { workload: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'web' } } }), {}, 'web-1');
    assert.deepEqual(plan, { type: 'volume', repository: { namespace: 'demo', name: 'repo' }, snapshot: 'latest', host: 'host-0', target: '/', from: undefined, include: ['/source/data'] });
  });
  it('into a volume: one path lands in the mount; several keep their layout', () => {
    const vol = { mountPath: '/restore', subPath: 'x', persistentVolumeClaim: { claimName: 'pvc' } };
    const one = recoveryPlan(recoveryOf({ ...base, snapshot: 'abcdef12', paths: ['/source/data'], recoverTo: { volume: vol } }), {}, 'job');
    assert.deepEqual(one, { type: 'volume', repository: { namespace: 'demo', name: 'repo' }, snapshot: 'abcdef12', host: 'host-0', target: '/restore/x', from: '/source/data', include: [] });
    const two = recoveryPlan(recoveryOf({ ...base, paths: ['/a', '/b'], recoverTo: { volume: vol } }), { STASH_SNAPSHOT_HOST: 'host-3' }, 'job');
    assert.ok(two.type === 'volume' && two.from === undefined && two.include.length === 2 && two.host === 'host-3');
  });
  it('a workload recovery without paths is refused with the field named', () => {
    assert.throws(() => recoveryPlan(recoveryOf({ ...base, recoverTo: { workload: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'web' } } }), {}, 'h'), /spec.paths is empty/);
  });
});

describe('helpers', () => {
  it('decodes Secret data', () => {
    assert.deepEqual(decodeSecret({ data: { RESTIC_PASSWORD: Buffer.from('pw').toString('base64') }, stringData: { X: 'y' } }), { RESTIC_PASSWORD: 'pw', X: 'y' });
  });
});
