import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { identityFromTags, identityTags, IdentityError, replicaHost } from './identity.ts';

describe('identity', () => {
  const id = { namespace: 'demo', backup: 'b1', kind: 'Deployment', workload: 'web' };
  it('tags round-trip', () => {
    const tags = identityTags(id);
    assert.deepEqual(tags, [
      'stash.appscode.com/namespace=demo', 'stash.appscode.com/backup=b1', 'stash.appscode.com/kind=Deployment', 'stash.appscode.com/workload=web',
    ]);
    assert.deepEqual(identityFromTags([...tags, 'other']), id);
    assert.equal(identityFromTags(tags.slice(1)), undefined);
  });
  it('rejects values restic would split', () => {
    assert.throws(() => identityTags({ ...id, backup: 'a,b' }), IdentityError);
  });
  it('hosts per kind', () => {
    assert.equal(replicaHost('Deployment', 'web-5d8f-abcde'), 'host-0');
    assert.equal(replicaHost('StatefulSet', 'db-12'), 'host-12');
    assert.equal(replicaHost('DaemonSet', 'agent-x', 'node-a'), 'node-a');
    assert.equal(replicaHost('AppBinding'), 'host-0');
    assert.throws(() => replicaHost('StatefulSet', 'db'), /ordinal/);
    assert.throws(() => replicaHost('DaemonSet', 'x'), /NODE_NAME/);
  });
});
