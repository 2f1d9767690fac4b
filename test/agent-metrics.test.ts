/**
 * Backup/recovery metrics against a real Prometheus Pushgateway (built from the Go module proxy by
 * scripts/tools.sh) and a real restic backup: push, scrape the gateway, compare values and labels;
 * the metrics file is written atomically and parses back.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createRestic } from '../agent/restic/restic.ts';
import type { BackupSummary } from '../agent/restic/types.ts';
import {
  backupRegistry, metricsFileName, MetricsError, parseExposition, pushMetrics, recoveryRegistry, writeMetricsFile, type Sample,
} from '../agent/metrics/metrics.ts';
import { toolPath } from './support/tools.ts';
import { freePort } from './support/databases.ts';

let gateway: ChildProcess;
let url: string;
let dir: string;
let summary: BackupSummary;

async function scrape(): Promise<Sample[]> {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 200);
  return parseExposition(await res.text());
}

function find(samples: readonly Sample[], name: string, labels: Record<string, string>): Sample | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'stash-metrics-'));
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  gateway = spawn(toolPath('pushgateway'), [`--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: 'ignore' });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ready = await fetch(`${url}/-/ready`).then((r) => r.ok, () => false);
    if (ready) break;
    if (gateway.exitCode !== null || Date.now() > deadline) throw new Error(`pushgateway did not become ready on ${url}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // A real restic backup provides the summary the metrics report.
  const data = path.join(dir, 'data');
  await mkdir(data);
  for (let i = 0; i < 5; i++) await writeFile(path.join(data, `file-${i}.txt`), `content ${i} `.repeat(1000 * (i + 1)));
  const restic = createRestic({ repository: path.join(dir, 'repo'), env: { RESTIC_PASSWORD: 'pw' }, args: [], files: [] },
    { binary: toolPath('restic'), cacheDir: path.join(dir, 'cache') });
  await restic.init();
  summary = await restic.backupPaths([data], { host: 'host-0', tags: ['namespace=demo'] });
});

after(async () => {
  if (gateway && gateway.exitCode === null) {
    const exited = new Promise((r) => gateway.once('exit', r));
    gateway.kill('SIGTERM');
    await exited;
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('metrics', () => {
  const labels = { namespace: 'demo', backup: 'nightly', target: 'deployment/web' };
  const group = { job: 'stash', namespace: 'demo', backup: 'nightly' };
  const firstSuccess = new Date('2026-11-25T20:00:00Z');

  test('a successful backup pushes every value under job/namespace/backup', async () => {
    assert.equal(summary.filesNew, 5);
    const registry = backupRegistry({ ...labels, success: true, durationSeconds: 12.5, summary, snapshotCount: 3, repositorySizeBytes: 123456, finishedAt: firstSuccess });
    await pushMetrics(registry, { url, namespace: 'demo', name: 'nightly', kind: 'backup' });
    const samples = await scrape();
    const expect = (name: string, value: number) => {
      const sample = find(samples, name, { ...group, ...labels });
      assert.ok(sample, `${name} with labels ${JSON.stringify({ ...group, ...labels })} is missing from the Pushgateway`);
      assert.equal(sample.value, value, name);
    };
    expect('stash_backup_success', 1);
    expect('stash_backup_duration_seconds', 12.5);
    expect('stash_backup_files_new', 5);
    expect('stash_backup_files_total', summary.totalFilesProcessed);
    expect('stash_backup_bytes_new', summary.dataAdded);
    expect('stash_backup_bytes_total', summary.totalBytesProcessed);
    expect('stash_repository_snapshot_count', 3);
    expect('stash_repository_size_bytes', 123456);
    expect('stash_backup_last_success_timestamp_seconds', firstSuccess.getTime() / 1000);
    assert.ok(find(samples, 'push_time_seconds', group), 'the Pushgateway records the push under the grouping key');
  });

  test('a failed backup sets success 0 and keeps the last success timestamp', async () => {
    const registry = backupRegistry({ ...labels, success: false, durationSeconds: 3 });
    await pushMetrics(registry, { url, namespace: 'demo', name: 'nightly', kind: 'backup' });
    const samples = await scrape();
    assert.equal(find(samples, 'stash_backup_success', { ...group, ...labels })?.value, 0);
    assert.equal(find(samples, 'stash_backup_duration_seconds', { ...group, ...labels })?.value, 3);
    assert.equal(find(samples, 'stash_backup_last_success_timestamp_seconds', { ...group, ...labels })?.value, firstSuccess.getTime() / 1000);
  });

  test('recovery metrics go to their own group', async () => {
    const registry = recoveryRegistry({ namespace: 'demo', recovery: 'restore-1', target: 'appbinding/pg', success: true, durationSeconds: 7, bytesRestored: 4096, filesRestored: 1 });
    await pushMetrics(registry, { url, namespace: 'demo', name: 'restore-1', kind: 'recovery' });
    const samples = await scrape();
    const rl = { job: 'stash', namespace: 'demo', recovery: 'restore-1', target: 'appbinding/pg' };
    assert.equal(find(samples, 'stash_recovery_success', rl)?.value, 1);
    assert.equal(find(samples, 'stash_recovery_duration_seconds', rl)?.value, 7);
    assert.equal(find(samples, 'stash_recovery_bytes_total', rl)?.value, 4096);
    assert.ok((find(samples, 'stash_recovery_last_success_timestamp_seconds', rl)?.value ?? 0) > 1.7e9);
    // The backup group is untouched.
    assert.equal(find(samples, 'stash_backup_success', { ...group, ...labels })?.value, 0);
  });

  test('the metrics file is written atomically and parses back to the registry values', async () => {
    const metricsDir = path.join(dir, 'metrics');
    const registry = backupRegistry({ ...labels, success: true, durationSeconds: 1.25, summary, snapshotCount: 1, finishedAt: firstSuccess });
    const file = await writeMetricsFile(registry, metricsDir, metricsFileName('backup', 'demo', 'nightly'));
    assert.equal(path.basename(file), 'stash_backup_demo_nightly.prom');
    assert.deepEqual(await readdir(metricsDir), ['stash_backup_demo_nightly.prom'], 'no temporary file is left behind');
    const samples = parseExposition(await readFile(file, 'utf8'));
    assert.equal(find(samples, 'stash_backup_duration_seconds', labels)?.value, 1.25);
    assert.equal(find(samples, 'stash_backup_files_new', labels)?.value, summary.filesNew);
    assert.equal(find(samples, 'stash_backup_last_success_timestamp_seconds', labels)?.value, firstSuccess.getTime() / 1000);
    assert.equal(find(samples, 'stash_repository_size_bytes', labels), undefined, 'unknown values are left out, not reported as 0');
    // Overwriting replaces the content in one step.
    await writeMetricsFile(backupRegistry({ ...labels, success: false, durationSeconds: 2 }), metricsDir, 'stash_backup_demo_nightly.prom');
    const again = parseExposition(await readFile(file, 'utf8'));
    assert.equal(find(again, 'stash_backup_success', labels)?.value, 0);
    assert.equal(find(again, 'stash_backup_files_new', labels), undefined);
  });

  test('label values with quotes and newlines survive the round trip', async () => {
    const odd = { namespace: 'demo', backup: 'odd', target: 'pvc/"data"\nline2' };
    const registry = backupRegistry({ ...odd, success: true, durationSeconds: 1 });
    const samples = parseExposition(await registry.metrics());
    assert.equal(find(samples, 'stash_backup_success', odd)?.value, 1);
  });

  test('an unreachable Pushgateway or a bad directory fails naming it', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    await assert.rejects(pushMetrics(backupRegistry({ ...labels, success: true, durationSeconds: 1 }), { url: dead, namespace: 'demo', name: 'nightly', kind: 'backup' }),
      (err: Error) => err instanceof MetricsError && err.message.includes(dead) && /--pushgateway-url/.test(err.message));
    const notADir = path.join(dir, 'plain-file');
    await writeFile(notADir, 'x');
    await assert.rejects(writeMetricsFile(backupRegistry({ ...labels, success: true, durationSeconds: 1 }), notADir, 'x.prom'),
      (err: Error) => err instanceof MetricsError && err.message.includes(notADir) && /--metrics-dir/.test(err.message));
  });
});
