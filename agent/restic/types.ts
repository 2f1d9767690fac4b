/**
 * The restic driver's contract (implemented in agent/restic/restic.ts): what the volume, database
 * and CLI code may ask of restic. Types only, so other modules can be written against it.
 */
import type { Readable } from 'node:stream';

/** One live progress report, from restic's `--json` status lines. */
export interface ResticProgress {
  readonly percentDone: number;
  readonly totalFiles?: number;
  readonly filesDone?: number;
  readonly totalBytes?: number;
  readonly bytesDone?: number;
  readonly secondsElapsed?: number;
  readonly secondsRemaining?: number;
}

/** What a finished backup reports (restic's JSON `summary` message). */
export interface BackupSummary {
  readonly snapshotId: string;
  readonly filesNew: number;
  readonly filesChanged: number;
  readonly filesUnmodified: number;
  readonly dataAdded: number;
  readonly totalFilesProcessed: number;
  readonly totalBytesProcessed: number;
  readonly durationSeconds: number;
}

export interface SnapshotInfo {
  readonly id: string;
  readonly shortId: string;
  readonly time: string;
  readonly hostname: string;
  readonly paths: readonly string[];
  readonly tags: readonly string[];
}

export interface BackupOptions {
  /** restic `--host`: identifies the workload replica (e.g. `host-0`). */
  readonly host: string;
  /** restic `--tag`s: identify namespace, workload and Backup so snapshots never mix. */
  readonly tags: readonly string[];
  readonly excludes?: readonly string[];
  readonly onProgress?: (progress: ResticProgress) => void;
  readonly signal?: AbortSignal;
}

export interface Restic {
  /** Creates the repository if it does not exist yet; harmless when it does. */
  init(): Promise<void>;
  backupPaths(paths: readonly string[], options: BackupOptions): Promise<BackupSummary>;
  /**
   * Streams a command's stdout into a snapshot (`--stdin-from-command`): when the command exits
   * non-zero, restic records no snapshot and this rejects.
   */
  backupCommand(command: readonly string[], options: BackupOptions & {
    readonly filename: string;
    /**
     * Environment for the command only (e.g. PGPASSWORD): restic passes its environment to the
     * command it starts, so these reach it without a file or an argument; they cannot override
     * restic's own RESTIC_* settings or the target's variables, and are redacted from errors.
     */
    readonly env?: Readonly<Record<string, string>>;
  }): Promise<BackupSummary>;
  /** Streams one file of a snapshot (`restic dump`); `done` rejects if restic fails. */
  dump(snapshot: string, file: string): { readonly stdout: Readable; readonly done: Promise<void> };
  snapshots(filter?: { readonly host?: string; readonly tags?: readonly string[] }): Promise<SnapshotInfo[]>;
}
