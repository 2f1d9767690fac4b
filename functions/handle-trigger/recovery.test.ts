import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { recoverySpec } from '../../shared/api/index.ts';
import { aggregatePhase, recoveryTarget } from './recovery.ts';

describe('aggregatePhase', () => {
  it('Failed when a host of this generation failed; entries of an older generation do not count', () => {
    assert.equal(aggregatePhase([{ host: 'host-0', phase: 'Failed', generation: 2 }, { host: 'host-1', phase: 'Succeeded', generation: 2 }], 2, ['host-0', 'host-1']), 'Failed');
    assert.equal(aggregatePhase([{ host: 'host-0', phase: 'Failed', generation: 1 }, { host: 'host-1', phase: 'Running', generation: 2 }], 2, ['host-0', 'host-1']), 'Running');
  });
  it('Succeeded only when every expected host succeeded at this generation', () => {
    assert.equal(aggregatePhase([{ host: 'host-0', phase: 'Succeeded', generation: 3 }], 3, ['host-0', 'host-1']), 'Running');
    assert.equal(aggregatePhase([{ host: 'host-0', phase: 'Succeeded', generation: 3 }, { host: 'host-1', phase: 'Succeeded', generation: 2 }], 3, ['host-0', 'host-1']), 'Running');
    assert.equal(aggregatePhase([{ host: 'host-0', phase: 'Succeeded', generation: 3 }, { host: 'host-1', phase: 'Succeeded', generation: 3 }], 3, ['host-0', 'host-1']), 'Succeeded');
  });
  it('a DaemonSet (no expected list): the hosts seen so far; nothing seen is Pending', () => {
    assert.equal(aggregatePhase([{ host: 'node-a', phase: 'Succeeded', generation: 1 }, { host: 'node-b', phase: 'Running', generation: 1 }], 1, undefined), 'Running');
    assert.equal(aggregatePhase([{ host: 'node-a', phase: 'Succeeded', generation: 1 }], 1, undefined), 'Succeeded');
    assert.equal(aggregatePhase([], 1, undefined), 'Pending');
  });
});

describe('recoveryTarget', () => {
  const base = { repository: { name: 'repo' }, recoveryAgent: 'a' };
  it('a volume: mountPath joined with subPath; a workload: "/"; an AppBinding: the database', () => {
    assert.deepEqual(recoveryTarget(recoverySpec.parse({ ...base, recoverTo: { volume: { mountPath: '/restore', subPath: 'x/y', emptyDir: {} } } })), { type: 'volume', directory: '/restore/x/y' });
    assert.deepEqual(recoveryTarget(recoverySpec.parse({ ...base, recoverTo: { volume: { mountPath: '/restore', emptyDir: {} } } })), { type: 'volume', directory: '/restore' });
    assert.deepEqual(recoveryTarget(recoverySpec.parse({ ...base, paths: ['/d'], recoverTo: { workload: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'web' } } })), { type: 'volume', directory: '/' });
    assert.deepEqual(recoveryTarget(recoverySpec.parse({ ...base, recoverTo: { workload: { apiVersion: 'appcatalog.appscode.com/v1alpha1', kind: 'AppBinding', name: 'pg' } } })), { type: 'database', appBinding: 'pg' });
  });
});
