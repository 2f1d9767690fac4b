// Unit tests of the metrics registries and the exposition parser (no Pushgateway needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backupRegistry, metricsFileName, MetricsError, parseExposition, pushMetrics, recoveryRegistry } from './metrics.ts';

const labels = { namespace: 'demo', backup: 'nightly', target: 'deployment/web' };

test('a failed backup reports success 0 and no last-success timestamp', async () => {
  const samples = parseExposition(await backupRegistry({ ...labels, success: false, durationSeconds: 4 }).metrics());
  assert.deepEqual(samples.map((s) => [s.name, s.value]).sort(), [['stash_backup_duration_seconds', 4], ['stash_backup_success', 0]]);
  assert.deepEqual(samples[0]?.labels, labels);
});

test('a successful recovery reports its timestamp in seconds', async () => {
  const at = new Date('2026-01-02T03:04:05Z');
  const samples = parseExposition(await recoveryRegistry({ namespace: 'n', recovery: 'r', target: 't', success: true, durationSeconds: 1, finishedAt: at }).metrics());
  assert.equal(samples.find((s) => s.name === 'stash_recovery_last_success_timestamp_seconds')?.value, at.getTime() / 1000);
  assert.deepEqual(samples.find((s) => s.name === 'stash_recovery_success')?.labels, { namespace: 'n', recovery: 'r', target: 't' });
});

test('parseExposition reads escapes, special values and timestamps; rejects garbage', () => {
  const samples = parseExposition('# HELP x y\n# TYPE x gauge\nx{a="q\\"uote",b="new\\nline",c="back\\\\slash"} +Inf 1700000000000\ny NaN\nz -1.5e3\n');
  assert.deepEqual(samples[0], { name: 'x', labels: { a: 'q"uote', b: 'new\nline', c: 'back\\slash' }, value: Infinity });
  assert.ok(Number.isNaN(samples[1]?.value));
  assert.equal(samples[2]?.value, -1500);
  assert.throws(() => parseExposition('not a sample line at all\n'), MetricsError);
  assert.throws(() => parseExposition('x{a=unquoted} 1\n'), MetricsError);
});

test('file names are safe whatever the names hold', () => {
  assert.equal(metricsFileName('recovery', 'ns', 'a/b c'), 'stash_recovery_ns_a_b_c.prom');
});

test('pushing needs a grouping key', async () => {
  await assert.rejects(pushMetrics(backupRegistry({ ...labels, success: true, durationSeconds: 1 }), { url: 'http://127.0.0.1:1', namespace: '', name: 'x', kind: 'backup' }),
    (err: Error) => err instanceof MetricsError && /namespace/.test(err.message));
});
