// Pure parts of shared/kube: error conversion, names, limits, config loading from a file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ApiException } from '@kubernetes/client-node';
import { loadKubeConfig } from './client.ts';
import { AlreadyExistsError, ConflictError, InvalidError, KubeConfigError, NotFoundError, toKubeError } from './errors.ts';
import { eventName, involvedReference, microTime, truncateBytes } from './events.ts';
import { pluralOf } from './objects.ts';

function apiException(code: number, status: Record<string, unknown>): ApiException<string> {
  // client-node 2.x: body is the response text; the message embeds headers, which must not leak.
  return new ApiException(code, `HTTP-Code: ${code}\nHeaders: {"authorization":"Bearer secret"}`, JSON.stringify(status), { authorization: 'Bearer secret' });
}

test('toKubeError maps Status reasons to typed errors with what was tried and a fix', () => {
  const notFound = toKubeError(apiException(404, { kind: 'Status', code: 404, reason: 'NotFound', message: 'configmaps "x" not found' }), 'get ConfigMap demo/x');
  assert.ok(notFound instanceof NotFoundError);
  assert.equal(notFound.message, 'get ConfigMap demo/x failed: configmaps "x" not found (404 NotFound); check that the object, its namespace and its CRD exist');
  assert.equal(notFound.code, 404);
  assert.ok(!notFound.message.includes('secret'));
  assert.ok(toKubeError(apiException(409, { code: 409, reason: 'AlreadyExists', message: 'exists' }), 'create') instanceof AlreadyExistsError);
  const conflict = toKubeError(apiException(409, { code: 409, reason: 'Conflict', message: 'the object has been modified' }), 'patch');
  assert.ok(conflict instanceof ConflictError);
  assert.match(conflict.message, /re-read the object and retry/);
  assert.ok(toKubeError(apiException(422, { code: 422, reason: 'Invalid', message: 'bad' }), 'apply') instanceof InvalidError);
  const notJson = toKubeError(new ApiException(502, 'x', '<html>bad gateway</html>', {}), 'get');
  assert.match((notJson as Error).message, /^get failed: HTTP 502 \(502 Unknown\)$/);
  const other = new TypeError('not an API error');
  assert.equal(toKubeError(other, 'get'), other);
});

test('pluralOf gives regular plurals', () => {
  assert.equal(pluralOf('Backup'), 'backups');
  assert.equal(pluralOf('Recovery'), 'recoveries');
  assert.equal(pluralOf('Repository'), 'repositories');
  assert.equal(pluralOf('Policy'), 'policies');
  assert.equal(pluralOf('Status'), 'statuses');
  assert.equal(pluralOf('Key'), 'keys');
});

test('eventName is stable for the same Event and differs when what it says differs', () => {
  const regarding = involvedReference({ apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Backup', namespace: 'demo', name: 'x', uid: 'u1' });
  const event = { type: 'Normal' as const, reason: 'BackupSucceeded', message: 'snapshot abc', action: 'Backup' };
  const name = eventName(regarding, event, 'stash.appscode.com/handle-trigger');
  assert.match(name, /^x\.[0-9a-f]{16}$/);
  assert.equal(eventName(regarding, { ...event }, 'stash.appscode.com/handle-trigger'), name);
  assert.notEqual(eventName(regarding, { ...event, message: 'snapshot def' }, 'stash.appscode.com/handle-trigger'), name);
  assert.notEqual(eventName({ ...regarding, uid: 'u2' }, event, 'stash.appscode.com/handle-trigger'), name);
  assert.ok(eventName({ ...regarding, name: 'a'.repeat(253) }, event, 'c').length <= 253);
});

test('involvedReference reads an object or a ref', () => {
  assert.deepEqual(involvedReference({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c', namespace: 'n', uid: 'u' } }),
    { apiVersion: 'v1', kind: 'ConfigMap', name: 'c', namespace: 'n', uid: 'u' });
  assert.deepEqual(involvedReference({ apiVersion: 'v1', kind: 'Namespace', name: 'n' }), { apiVersion: 'v1', kind: 'Namespace', name: 'n' });
});

test('truncateBytes keeps within the byte limit without splitting characters', () => {
  assert.equal(truncateBytes('short', 10), 'short');
  const cut = truncateBytes('é'.repeat(600), 1024);
  assert.ok(Buffer.byteLength(cut) <= 1024);
  assert.ok(cut.endsWith('…'));
  assert.ok(!cut.includes('\uFFFD'));
});

test('microTime has six fraction digits (apimachinery RFC3339Micro)', () => {
  assert.equal(microTime(new Date('2026-11-25T21:00:00.456Z')), '2026-11-25T21:00:00.456000Z');
});

test('loadKubeConfig reads $KUBECONFIG and fails with a fix when it has no cluster', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'stash-kc-'));
  const good = path.join(dir, 'good');
  writeFileSync(good, [
    'apiVersion: v1', 'kind: Config', 'current-context: c',
    'clusters: [{name: k, cluster: {server: "https://127.0.0.1:6443"}}]',
    'users: [{name: u, user: {token: t}}]',
    'contexts: [{name: c, context: {cluster: k, user: u}}]',
  ].join('\n'));
  const saved = process.env.KUBECONFIG;
  try {
    process.env.KUBECONFIG = good;
    assert.equal(loadKubeConfig().getCurrentCluster()?.server, 'https://127.0.0.1:6443');
    const empty = path.join(dir, 'empty');
    writeFileSync(empty, 'apiVersion: v1\nkind: Config\n');
    process.env.KUBECONFIG = empty;
    assert.throws(() => loadKubeConfig(), (error: unknown) =>
      error instanceof KubeConfigError && error.message.includes(`KUBECONFIG=${empty}`) && error.message.includes('set KUBECONFIG'));
  } finally {
    if (saved === undefined) delete process.env.KUBECONFIG;
    else process.env.KUBECONFIG = saved;
  }
});
