/**
 * The database side of the agent: a connection (from an AppBinding + Secret or from flags), the
 * pure per-engine plans built from it, and what a backup or a recovery reports.
 */
import type { BackupSummary } from '../restic/types.ts';

export type Engine = 'postgres' | 'mariadb' | 'redis';

export interface DatabaseConnection {
  readonly engine: Engine;
  readonly host: string;
  readonly port: number;
  /** Login user; Redis without ACL users leaves it unset. */
  readonly user?: string | undefined;
  /** Never logged, never on a command line: the plans put it into the tools' environment. */
  readonly password?: string | undefined;
  /** Databases to back up or recover (the Backup's `args`); empty means all of them. */
  readonly databases: readonly string[];
}

/** One program to run: argv (no secrets in it) plus the environment it needs (secrets allowed). */
export interface ToolCommand {
  readonly command: readonly string[];
  readonly env: Readonly<Record<string, string>>;
}

/** Which binary each role uses; defaults per engine, overridable (e.g. `mysqldump` for MySQL 8). */
export interface ToolNames {
  readonly dump: string;
  readonly restore: string;
  readonly client: string;
}

/** One snapshot a backup will create. */
export interface DumpStep {
  /** The database this snapshot holds, or undefined when it holds them all. */
  readonly database: string | undefined;
  /** restic `--stdin-filename`: `<engine>.sql` or `redis.rdb`. */
  readonly filename: string;
  /** Tags added to the caller's: `stash.engine=<engine>` and `stash.database=<name>`... */
  readonly tags: readonly string[];
  readonly dump: ToolCommand;
}

export interface DatabaseBackupResult {
  readonly engine: Engine;
  /** One entry per snapshot: a single one for "all databases", one per named database otherwise. */
  readonly snapshots: readonly { readonly database: string | undefined; readonly databases: readonly string[]; readonly summary: BackupSummary }[];
}

export interface DatabaseRecoveryResult {
  readonly engine: Engine;
  readonly restored: readonly { readonly snapshotId: string; readonly database: string | undefined }[];
  /** What the server holds afterwards: databases with their table counts, or Redis keys per db. */
  readonly verified: Readonly<Record<string, number>>;
}
