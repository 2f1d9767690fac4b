/**
 * Volume backup and recovery on top of the restic driver.
 *
 * Backup: the target directories (made absolute, each checked to exist first, so a missing mount
 * fails with SourcePathMissingError before restic runs and never yields a partial snapshot),
 * restic excludes, and the Backup's host and identity tags.
 *
 * Recovery: snapshot `latest` is first resolved to a concrete ID among the snapshots matching the
 * host/tags (so the report names exactly what was restored); restic restores ownership, modes,
 * times, symlinks. Layout is restic's: a snapshot of /data/app restores to <target>/data/app,
 * unless `from` names a directory of the snapshot, whose content then lands directly in target.
 * `mode: 'rollback'` passes `--delete` (files the snapshot lacks are removed, within `paths` when
 * given); `merge` keeps them.
 */
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { BackupSummary, ResticProgress, SnapshotInfo } from '../restic/types.ts';
import type { ResticDriver, RestoreSummary } from '../restic/restic.ts';
import { SnapshotNotFoundError, SourcePathMissingError } from '../restic/errors.ts';

export interface VolumeBackupRequest {
  readonly paths: readonly string[];
  readonly host: string;
  readonly tags: readonly string[];
  readonly excludes?: readonly string[];
  readonly onProgress?: (p: ResticProgress) => void;
  readonly signal?: AbortSignal;
}

export async function backupDirectories(restic: ResticDriver, req: VolumeBackupRequest): Promise<BackupSummary> {
  if (req.paths.length === 0) throw new SourcePathMissingError('nothing to back up: give at least one directory', undefined, '');
  const paths = req.paths.map((p) => path.resolve(p));
  for (const p of paths) {
    try {
      await stat(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new SourcePathMissingError(
        `backup path ${p} cannot be read (${code}); check that the volume is mounted there and the agent may read it`, undefined, String(err));
    }
  }
  return restic.backupPaths(paths, {
    host: req.host,
    tags: req.tags,
    ...(req.excludes ? { excludes: req.excludes } : {}),
    ...(req.onProgress ? { onProgress: req.onProgress } : {}),
    ...(req.signal ? { signal: req.signal } : {}),
  });
}

export interface SnapshotSelector {
  /** `latest` or a snapshot ID (short or full). */
  readonly snapshot: string;
  readonly host?: string;
  readonly tags?: readonly string[];
}

/** Resolves `latest` (within host/tags) or checks that an ID exists; returns the snapshot. */
export async function selectSnapshot(restic: ResticDriver, sel: SnapshotSelector): Promise<SnapshotInfo> {
  const filter = { ...(sel.host ? { host: sel.host } : {}), ...(sel.tags && sel.tags.length > 0 ? { tags: sel.tags } : {}) };
  const all = await restic.snapshots(filter);
  const scope = [sel.host ? `host ${sel.host}` : '', sel.tags && sel.tags.length > 0 ? `tags ${sel.tags.join(',')}` : ''].filter(Boolean).join(' and ');
  if (sel.snapshot === 'latest') {
    const latest = all.at(-1);
    if (!latest) {
      throw new SnapshotNotFoundError(`no snapshot${scope ? ` for ${scope}` : ''} in repository ${restic.repository}; run a backup first or check the Backup name`, undefined, '');
    }
    return latest;
  }
  const id = sel.snapshot.toLowerCase();
  const found = all.filter((s) => s.id.startsWith(id));
  if (found.length !== 1 || !found[0]) {
    throw new SnapshotNotFoundError(
      found.length === 0
        ? `snapshot ${sel.snapshot} not found${scope ? ` among snapshots of ${scope}` : ''} in repository ${restic.repository}; list them with \`stash snapshots\``
        : `snapshot ID ${sel.snapshot} is ambiguous (${found.length} matches); give more digits`,
      undefined, '');
  }
  return found[0];
}

export interface VolumeRecoverRequest extends SnapshotSelector {
  readonly target: string;
  /** Only these paths of the snapshot (absolute, as backed up; relative to `from` when it is set). */
  readonly paths?: readonly string[];
  /** A directory of the snapshot whose content is restored directly into target. */
  readonly from?: string;
  /** `merge` keeps files the snapshot lacks; `rollback` deletes them (restic restore --delete). */
  readonly mode: 'merge' | 'rollback';
  readonly onProgress?: (p: ResticProgress) => void;
  readonly signal?: AbortSignal;
}

export interface VolumeRecoverResult {
  readonly snapshot: SnapshotInfo;
  readonly summary: RestoreSummary;
}

export async function recoverDirectories(restic: ResticDriver, req: VolumeRecoverRequest): Promise<VolumeRecoverResult> {
  const snapshot = await selectSnapshot(restic, req);
  const target = path.resolve(req.target);
  if (req.mode === 'rollback' && target === '/' && (req.paths?.length ?? 0) === 0) {
    throw new SourcePathMissingError('a rollback into / needs the paths to roll back; without them restic --delete would remove every other file on the system', undefined, '');
  }
  await mkdir(target, { recursive: true });
  const ref = req.from ? `${snapshot.id}:${req.from}` : snapshot.id;
  const summary = await restic.restore(ref, {
    target,
    ...(req.paths && req.paths.length > 0 ? { include: req.paths } : {}),
    delete: req.mode === 'rollback',
    ...(req.onProgress ? { onProgress: req.onProgress } : {}),
    ...(req.signal ? { signal: req.signal } : {}),
  });
  return { snapshot, summary };
}
