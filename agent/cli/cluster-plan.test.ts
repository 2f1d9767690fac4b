import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { recovery as recoverySchema } from '../../shared/api/index.ts';
import type { Recovery } from '../../shared/api/index.ts';
import { agentNamespace, ClusterConfigError, decodeSecret, recoveryHost, recoveryPlan, restoreLayout } from './cluster-plan.ts';
import { redact } from './recovery-protocol.ts';

function recoveryOf(spec: Record<string, unknown>): Recovery {
  return recoverySchema.parse({ apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Recovery', metadata: { name: 'r1', namespace: 'demo' }, spec });
}

describe('agentNamespace', () => {
  it('prefers $NAMESPACE, then the service account file', () => {
    assert.equal(agentNamespace({ NAMESPACE: 'a' }, 'b\n'), 'a');
    assert.equal(agentNamespace({}, 'b\n'), 'b');
    assert.throws(() => agentNamespace({}, undefined), ClusterConfigError);
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

describe('the protocol path', () => {
  it('restoreLayout: "/" restores the paths in place; a volume gets one path\'s content directly, several with their layout', () => {
    assert.deepEqual(restoreLayout('/', ['/srv/data']), { target: '/', from: undefined, include: ['/srv/data'] });
    assert.deepEqual(restoreLayout('/restore/x', ['/srv/data']), { target: '/restore/x', from: '/srv/data', include: [] });
    assert.deepEqual(restoreLayout('/restore', ['/a', '/b']), { target: '/restore', from: undefined, include: ['/a', '/b'] });
    assert.deepEqual(restoreLayout('/restore', []), { target: '/restore', from: undefined, include: [] });
  });
  it('recoveryHost: STASH_SNAPSHOT_HOST, then STASH_HOST, else left to handle-trigger', () => {
    assert.equal(recoveryHost({ STASH_SNAPSHOT_HOST: 'host-0', STASH_HOST: 'host-2' }), 'host-0');
    assert.equal(recoveryHost({ STASH_HOST: 'node-a' }), 'node-a');
    assert.equal(recoveryHost({ STASH_SNAPSHOT_HOST: ' ', POD_NAME: 'db-1' }), undefined);
  });
  it('redact removes secret values from failure messages', () => {
    assert.equal(redact('login as admin with s3cret-pw failed', ['s3cret-pw', undefined, 'ab']), 'login as admin with *** failed');
  });
});
