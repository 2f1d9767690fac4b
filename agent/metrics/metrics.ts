/**
 * Backup and recovery metrics: a prom-client registry per run, written to `--metrics-dir` in the
 * Prometheus text exposition format (atomically: temp file + rename, for node_exporter's textfile
 * collector) and pushed to a Prometheus Pushgateway under the grouping key job/namespace/<backup
 * or recovery>.
 *
 * Each run builds a fresh registry holding only the metrics it has values for, and pushes with
 * POST (prom-client's pushAdd): the Pushgateway replaces only the metric names pushed, so a
 * failed run, which carries no `..._last_success_timestamp_seconds`, keeps the last success's.
 */
import { mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Gauge, Pushgateway, Registry } from 'prom-client';
import type { BackupSummary } from '../restic/types.ts';

export class MetricsError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

export interface BackupRunMetrics {
  readonly namespace: string;
  readonly backup: string;
  /** What was backed up, e.g. `deployment/web`, `appbinding/quick-postgres`. */
  readonly target: string;
  readonly success: boolean;
  readonly durationSeconds: number;
  /** restic's summary (absent when the backup failed before restic finished). */
  readonly summary?: BackupSummary;
  readonly snapshotCount?: number;
  readonly repositorySizeBytes?: number;
  /** When the run ended (default now). */
  readonly finishedAt?: Date;
}

export interface RecoveryRunMetrics {
  readonly namespace: string;
  readonly recovery: string;
  readonly target: string;
  readonly success: boolean;
  readonly durationSeconds: number;
  readonly bytesRestored?: number;
  readonly filesRestored?: number;
  readonly finishedAt?: Date;
}

const BACKUP_LABELS = ['namespace', 'backup', 'target'] as const;
const RECOVERY_LABELS = ['namespace', 'recovery', 'target'] as const;

function gauge<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[], labels: Record<L, string>, value: number): void {
  new Gauge<L>({ name, help, labelNames, registers: [registry] }).set(labels, value);
}

/** The registry for one backup run. */
export function backupRegistry(run: BackupRunMetrics): Registry {
  const registry = new Registry();
  const labels = { namespace: run.namespace, backup: run.backup, target: run.target };
  const g = (name: string, help: string, value: number | undefined) => {
    if (value !== undefined && Number.isFinite(value)) gauge(registry, name, help, BACKUP_LABELS, labels, value);
  };
  g('stash_backup_success', '1 if the last backup run succeeded, 0 if it failed', run.success ? 1 : 0);
  g('stash_backup_duration_seconds', 'Duration of the last backup run', run.durationSeconds);
  g('stash_backup_files_new', 'Files new in the last snapshot', run.summary?.filesNew);
  g('stash_backup_files_changed', 'Files changed since the parent snapshot', run.summary?.filesChanged);
  g('stash_backup_files_total', 'Files processed by the last backup', run.summary?.totalFilesProcessed);
  g('stash_backup_bytes_new', 'Bytes added to the repository by the last backup', run.summary?.dataAdded);
  g('stash_backup_bytes_total', 'Bytes processed by the last backup', run.summary?.totalBytesProcessed);
  g('stash_repository_snapshot_count', 'Snapshots in the repository for this backup', run.snapshotCount);
  g('stash_repository_size_bytes', 'Size of the repository (restic stats raw-data)', run.repositorySizeBytes);
  if (run.success) g('stash_backup_last_success_timestamp_seconds', 'Unix time the last successful backup finished', (run.finishedAt ?? new Date()).getTime() / 1000);
  return registry;
}

/** The registry for one recovery run. */
export function recoveryRegistry(run: RecoveryRunMetrics): Registry {
  const registry = new Registry();
  const labels = { namespace: run.namespace, recovery: run.recovery, target: run.target };
  const g = (name: string, help: string, value: number | undefined) => {
    if (value !== undefined && Number.isFinite(value)) gauge(registry, name, help, RECOVERY_LABELS, labels, value);
  };
  g('stash_recovery_success', '1 if the last recovery succeeded, 0 if it failed', run.success ? 1 : 0);
  g('stash_recovery_duration_seconds', 'Duration of the last recovery', run.durationSeconds);
  g('stash_recovery_bytes_total', 'Bytes restored by the last recovery', run.bytesRestored);
  g('stash_recovery_files_total', 'Files restored by the last recovery', run.filesRestored);
  if (run.success) g('stash_recovery_last_success_timestamp_seconds', 'Unix time the last successful recovery finished', (run.finishedAt ?? new Date()).getTime() / 1000);
  return registry;
}

/** A file name safe for any label value: `stash_<kind>_<namespace>_<name>.prom`. */
export function metricsFileName(kind: 'backup' | 'recovery', namespace: string, name: string): string {
  const safe = (s: string) => s.replace(/[^A-Za-z0-9.-]/g, '_');
  return `stash_${kind}_${safe(namespace)}_${safe(name)}.prom`;
}

/**
 * Writes the registry's exposition text to `dir/fileName` atomically (temp file in the same
 * directory, fsync, rename), so a collector never reads half a file. Returns the file's path.
 */
export async function writeMetricsFile(registry: Registry, dir: string, fileName: string): Promise<string> {
  const text = await registry.metrics();
  const file = path.join(dir, fileName);
  const tmp = path.join(dir, `.${fileName}.${process.pid}.tmp`);
  try {
    await mkdir(dir, { recursive: true });
    const handle = await open(tmp, 'w', 0o644);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw new MetricsError(`writing metrics to ${file} failed (${(err as NodeJS.ErrnoException).code ?? String(err)}); make --metrics-dir a writable directory`, { cause: err });
  }
  return file;
}

export interface PushTarget {
  /** Pushgateway base URL, e.g. http://pushgateway.monitoring:9091 (--pushgateway-url). */
  readonly url: string;
  /** Grouping key: job (default `stash`), namespace and the backup or recovery name. */
  readonly job?: string;
  readonly namespace: string;
  readonly name: string;
  readonly kind: 'backup' | 'recovery';
  readonly timeoutMs?: number;
}

/** Pushes the registry (POST: replaces only the metric names it holds) under job/namespace/<kind>. */
export async function pushMetrics(registry: Registry, target: PushTarget): Promise<void> {
  for (const [what, value] of [['namespace', target.namespace], [target.kind, target.name]] as const) {
    if (!value) throw new MetricsError(`pushing metrics needs a non-empty ${what} for the Pushgateway grouping key`);
  }
  const gateway = new Pushgateway(target.url, { timeout: target.timeoutMs ?? 10_000 }, registry);
  try {
    await gateway.pushAdd({ jobName: target.job ?? 'stash', groupings: { namespace: target.namespace, [target.kind]: target.name } });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new MetricsError(`pushing metrics to the Pushgateway at ${target.url} failed: ${message}; check --pushgateway-url and that the Pushgateway is reachable`, { cause: err });
  }
}

/**
 * Pushes exposition text as it is (e.g. the metrics file a backup step wrote) under the same
 * grouping key as pushMetrics, with POST (only the metric names in the text are replaced).
 */
export async function pushMetricsText(text: string, target: PushTarget): Promise<void> {
  for (const [what, value] of [['namespace', target.namespace], [target.kind, target.name]] as const) {
    if (!value) throw new MetricsError(`pushing metrics needs a non-empty ${what} for the Pushgateway grouping key`);
  }
  const base = target.url.replace(/\/+$/, '');
  const url = `${base}/metrics/job/${encodeURIComponent(target.job ?? 'stash')}/namespace/${encodeURIComponent(target.namespace)}/${target.kind}/${encodeURIComponent(target.name)}`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'text/plain; version=0.0.4' },
      body: text.endsWith('\n') ? text : `${text}\n`,
      signal: AbortSignal.timeout(target.timeoutMs ?? 10_000),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err instanceof Error ? err.message : String(err));
    throw new MetricsError(`pushing metrics to the Pushgateway at ${target.url} failed (${cause}); check --pushgateway-url and that the Pushgateway is reachable`, { cause: err });
  }
  if (!response.ok) {
    const body = (await response.text()).slice(0, 300);
    throw new MetricsError(`the Pushgateway at ${target.url} refused the metrics (HTTP ${response.status}: ${body}); check --pushgateway-url and the metrics file`);
  }
}

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Parses Prometheus text exposition format (what the file and the Pushgateway serve) into samples. */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$/.exec(line);
    if (!m?.[1] || m[4] === undefined) throw new MetricsError(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    const body = m[3] ?? '';
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g;
    let consumed = 0;
    for (let l = re.exec(body); l; l = re.exec(body)) {
      labels[l[1] ?? ''] = (l[2] ?? '').replace(/\\(.)/g, (_s, c: string) => (c === 'n' ? '\n' : c));
      consumed = re.lastIndex;
    }
    if (body.slice(consumed).trim() !== '') throw new MetricsError(`malformed labels in: ${line}`);
    const value = m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : Number(m[4]);
    if (Number.isNaN(value) && m[4] !== 'NaN') throw new MetricsError(`malformed value in: ${line}`);
    samples.push({ name: m[1], labels, value });
  }
  return samples;
}
