/**
 * Pure parsing of restic 0.19's `--json` output (doc/075_scripting.rst): JSON lines on stdout
 * (`status`, `summary`, ...), an `exit_error` / `error` lines on stderr, single JSON documents for
 * `snapshots`, `forget`, `stats`.
 */
import type { BackupSummary, ResticProgress, SnapshotInfo } from './types.ts';

type Json = Record<string, unknown>;

function obj(value: unknown): Json | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : undefined;
}
function num(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}
function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}
function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

/** Parses one line; undefined when it is not a JSON object (restic still prints some text). */
export function parseLine(line: string): Json | undefined {
  const t = line.trim();
  if (!t.startsWith('{')) return undefined;
  try {
    return obj(JSON.parse(t));
  } catch {
    return undefined;
  }
}

/** A `status` line of backup or restore as progress (restore reports bytes_restored / files_restored). */
export function toProgress(m: Json): ResticProgress | undefined {
  if (m.message_type !== 'status') return undefined;
  const percentDone = num(m.percent_done) ?? 0;
  const p: { -readonly [K in keyof ResticProgress]: ResticProgress[K] } = { percentDone };
  const totalFiles = num(m.total_files);
  const filesDone = num(m.files_done) ?? num(m.files_restored);
  const totalBytes = num(m.total_bytes);
  const bytesDone = num(m.bytes_done) ?? num(m.bytes_restored);
  const secondsElapsed = num(m.seconds_elapsed);
  const secondsRemaining = num(m.seconds_remaining);
  if (totalFiles !== undefined) p.totalFiles = totalFiles;
  if (filesDone !== undefined) p.filesDone = filesDone;
  if (totalBytes !== undefined) p.totalBytes = totalBytes;
  if (bytesDone !== undefined) p.bytesDone = bytesDone;
  if (secondsElapsed !== undefined) p.secondsElapsed = secondsElapsed;
  if (secondsRemaining !== undefined) p.secondsRemaining = secondsRemaining;
  return p;
}

/** The backup `summary` line; undefined for other lines. snapshotId is '' when restic skipped the snapshot. */
export function toBackupSummary(m: Json): BackupSummary | undefined {
  if (m.message_type !== 'summary') return undefined;
  return {
    snapshotId: str(m.snapshot_id) ?? '',
    filesNew: num(m.files_new) ?? 0,
    filesChanged: num(m.files_changed) ?? 0,
    filesUnmodified: num(m.files_unmodified) ?? 0,
    dataAdded: num(m.data_added) ?? 0,
    totalFilesProcessed: num(m.total_files_processed) ?? 0,
    totalBytesProcessed: num(m.total_bytes_processed) ?? 0,
    durationSeconds: num(m.total_duration) ?? 0,
  };
}

export interface RestoreSummary {
  readonly totalFiles: number;
  readonly filesRestored: number;
  readonly filesSkipped: number;
  readonly filesDeleted: number;
  readonly totalBytes: number;
  readonly bytesRestored: number;
  readonly secondsElapsed: number;
}

export function toRestoreSummary(m: Json): RestoreSummary | undefined {
  if (m.message_type !== 'summary') return undefined;
  return {
    totalFiles: num(m.total_files) ?? 0,
    filesRestored: num(m.files_restored) ?? 0,
    filesSkipped: num(m.files_skipped) ?? 0,
    filesDeleted: num(m.files_deleted) ?? 0,
    totalBytes: num(m.total_bytes) ?? 0,
    bytesRestored: num(m.bytes_restored) ?? 0,
    secondsElapsed: num(m.seconds_elapsed) ?? 0,
  };
}

/** One snapshot object (snapshots / forget output). */
export function toSnapshot(value: unknown): SnapshotInfo | undefined {
  const m = obj(value);
  const id = str(m?.id);
  if (!m || !id) return undefined;
  return {
    id,
    shortId: str(m.short_id) ?? id.slice(0, 8),
    time: str(m.time) ?? '',
    hostname: str(m.hostname) ?? '',
    paths: strings(m.paths),
    tags: strings(m.tags),
  };
}

/** `restic snapshots --json`: one JSON array (or, with --group-by, an array of groups). */
export function parseSnapshots(stdout: string): SnapshotInfo[] {
  const doc: unknown = JSON.parse(stdout.trim() || '[]');
  if (!Array.isArray(doc)) throw new Error('restic snapshots --json did not print an array');
  return doc.map(toSnapshot).filter((s): s is SnapshotInfo => s !== undefined);
}

export interface ForgetGroup {
  readonly host: string;
  readonly tags: readonly string[];
  readonly paths: readonly string[];
  readonly keep: readonly SnapshotInfo[];
  readonly remove: readonly SnapshotInfo[];
}

/**
 * `restic forget --json`: a JSON array of groups on one line. With `--prune`, prune's text output
 * follows, so the first line that parses as an array is the document.
 */
export function parseForget(stdout: string): ForgetGroup[] {
  for (const line of stdout.split('\n')) {
    const t = line.trim();
    if (!t.startsWith('[')) continue;
    let doc: unknown;
    try {
      doc = JSON.parse(t);
    } catch {
      continue;
    }
    if (!Array.isArray(doc)) continue;
    return doc.map((g) => {
      const o = obj(g) ?? {};
      const list = (v: unknown): SnapshotInfo[] =>
        Array.isArray(v) ? v.map(toSnapshot).filter((s): s is SnapshotInfo => s !== undefined) : [];
      return { host: str(o.host) ?? '', tags: strings(o.tags), paths: strings(o.paths), keep: list(o.keep), remove: list(o.remove) };
    });
  }
  return [];
}

export interface CheckSummary {
  readonly numErrors: number;
  readonly brokenPacks: readonly string[];
  readonly suggestRepairIndex: boolean;
  readonly suggestPrune: boolean;
}

export function toCheckSummary(m: Json): CheckSummary | undefined {
  if (m.message_type !== 'summary') return undefined;
  return {
    numErrors: num(m.num_errors) ?? 0,
    brokenPacks: strings(m.broken_packs),
    suggestRepairIndex: m.suggest_repair_index === true,
    suggestPrune: m.suggest_prune === true,
  };
}

export interface RepositoryStats {
  readonly totalSize: number;
  readonly totalUncompressedSize?: number;
  readonly totalFileCount?: number;
  readonly totalBlobCount?: number;
  readonly snapshotsCount: number;
  readonly compressionRatio?: number;
}

export function parseStats(stdout: string): RepositoryStats {
  const m = obj(JSON.parse(stdout.trim()));
  if (!m) throw new Error('restic stats --json did not print an object');
  const out: { -readonly [K in keyof RepositoryStats]: RepositoryStats[K] } = {
    totalSize: num(m.total_size) ?? 0,
    snapshotsCount: num(m.snapshots_count) ?? 0,
  };
  const u = num(m.total_uncompressed_size);
  const f = num(m.total_file_count);
  const b = num(m.total_blob_count);
  const c = num(m.compression_ratio);
  if (u !== undefined) out.totalUncompressedSize = u;
  if (f !== undefined) out.totalFileCount = f;
  if (b !== undefined) out.totalBlobCount = b;
  if (c !== undefined) out.compressionRatio = c;
  return out;
}

/** Splits stderr into restic's exit_error message and the rest (error messages and text lines). */
export function splitStderr(stderr: string): { exitMessage: string | undefined; exitCode: number | undefined; other: string } {
  let exitMessage: string | undefined;
  let exitCode: number | undefined;
  const other: string[] = [];
  for (const line of stderr.split('\n')) {
    if (line.trim() === '') continue;
    const m = parseLine(line);
    if (m?.message_type === 'exit_error') {
      exitMessage = str(m.message);
      exitCode = num(m.code);
    } else if (m?.message_type === 'error') {
      const e = obj(m.error);
      const msg = str(e?.message) ?? str(m.message) ?? '';
      const item = str(m.item);
      other.push(item ? `${item}: ${msg}` : msg);
    } else {
      other.push(line);
    }
  }
  return { exitMessage, exitCode, other: other.join('\n') };
}
