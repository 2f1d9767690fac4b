import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidNamespacesError, namespacesFromEnv, servesNamespace } from './index.ts';

test('namespacesFromEnv: unset or naming nothing serves every namespace', () => {
  assert.equal(namespacesFromEnv({}), undefined);
  assert.equal(namespacesFromEnv({ STASH_NAMESPACES: '' }), undefined);
  assert.equal(namespacesFromEnv({ STASH_NAMESPACES: ' , ,' }), undefined);
});

test('namespacesFromEnv: a comma-separated list, trimmed, without empty entries or duplicates', () => {
  assert.deepEqual(namespacesFromEnv({ STASH_NAMESPACES: 'demo' }), ['demo']);
  assert.deepEqual(namespacesFromEnv({ STASH_NAMESPACES: ' team-a ,team-b,,team-a, 0x1 ' }), ['team-a', 'team-b', '0x1']);
  assert.deepEqual(namespacesFromEnv({ STASH_NAMESPACES: `${'a'.repeat(63)},b` }), ['a'.repeat(63), 'b']);
});

test('namespacesFromEnv: a name that is no DNS label is refused, naming the variable, the names and the fix', () => {
  for (const bad of ['Demo', 'team_a', '-a', 'a-', 'a.b', 'a'.repeat(64), 'ns with space']) {
    assert.throws(() => namespacesFromEnv({ STASH_NAMESPACES: `ok,${bad}` }), (error: unknown) => {
      assert.ok(error instanceof InvalidNamespacesError);
      assert.match(error.message, /^STASH_NAMESPACES=/);
      assert.ok(error.message.includes(`${JSON.stringify(bad)} is not a namespace name`), error.message);
      assert.ok(!error.message.includes('"ok" is'), 'only the invalid names are named');
      assert.match(error.message, /DNS label/);
      assert.match(error.message, /unset it to serve all namespaces/);
      return true;
    });
  }
  assert.throws(() => namespacesFromEnv({ STASH_NAMESPACES: 'A,B' }), /"A", "B" are not namespace names/);
});

test('namespacesFromEnv: reads process.env by default', () => {
  const saved = process.env.STASH_NAMESPACES;
  try {
    process.env.STASH_NAMESPACES = 'from-process';
    assert.deepEqual(namespacesFromEnv(), ['from-process']);
  } finally {
    if (saved === undefined) delete process.env.STASH_NAMESPACES;
    else process.env.STASH_NAMESPACES = saved;
  }
});

test('servesNamespace: every namespace without a list, else only the listed ones', () => {
  assert.equal(servesNamespace(undefined, 'anything'), true);
  assert.equal(servesNamespace(['a', 'b'], 'b'), true);
  assert.equal(servesNamespace(['a', 'b'], 'c'), false);
  assert.equal(servesNamespace([], 'a'), false);
});
