/**
 * Standalone mode: every command against a repository named on the command line
 * (`--repo`, `--password-file`); no cluster involved. The password reaches restic only as
 * RESTIC_PASSWORD_FILE (a path), never as an argument.
 */
import { access, constants } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { createRestic } from '../restic/restic.ts';
import type { ResticDriver } from '../restic/restic.ts';
import type { ResticTarget } from '../restic/target.ts';
import { forgetArgs } from '../retention/retention.ts';
import type { RetentionPolicy } from '../../shared/api/common.ts';
import { backupDirectories, recoverDirectories } from '../volume/volume.ts';
import { backupDatabase, connectionFromFlags, recoverDatabase } from '../db/index.ts';
import type { DatabaseFlags } from '../db/index.ts';
import { UsageError, bool, count, list, required, str } from './args.ts';
import type { Command, Parsed } from './args.ts';
import type { CliIo, Output } from './output.ts';

export interface StandaloneContext {
  readonly io: CliIo;
  readonly out: Output;
  readonly logger: Logger;
  readonly signal: AbortSignal;
}

async function driverFor(p: Parsed, ctx: StandaloneContext): Promise<ResticDriver> {
  const repo = required(p, 'repo', 'the restic repository (a path, or s3:/rest:/sftp:... as restic takes it)');
  const passwordFile = path.resolve(required(p, 'password-file', 'a file holding the repository password'));
  try {
    await access(passwordFile, constants.R_OK);
  } catch {
    throw new UsageError(`--password-file ${passwordFile} cannot be read; give a readable file holding the repository password`);
  }
  const target: ResticTarget = { repository: repo, env: { RESTIC_PASSWORD_FILE: passwordFile }, args: [], files: [] };
  const cacheDir = str(p, 'cache-dir');
  return createRestic(target, { logger: ctx.logger, ...(cacheDir ? { cacheDir } : {}) });
}

/** --db-* flags as agent/db takes them; the password from --db-password-file or the env named by --db-password-env (default DB_PASSWORD). */
function databaseFlags(p: Parsed): DatabaseFlags {
  const portText = str(p, 'db-port');
  if (portText !== undefined && !/^\d+$/.test(portText)) throw new UsageError(`--db-port must be a TCP port number, got "${portText}"`);
  const user = str(p, 'db-user');
  const passwordFile = str(p, 'db-password-file');
  const passwordEnv = str(p, 'db-password-env');
  if (passwordFile && passwordEnv) throw new UsageError('give --db-password-file or --db-password-env, not both');
  return {
    type: required(p, 'db-type', 'postgres, mariadb, mysql or redis (or an AppBinding type such as kubedb.com/postgres)'),
    host: required(p, 'db-host', 'the database server\'s host name or IP'),
    ...(portText !== undefined ? { port: Number(portText) } : {}),
    ...(user ? { user } : {}),
    ...(passwordFile ? { passwordFile } : {}),
    ...(passwordEnv ? { passwordEnv } : {}),
    databases: list(p, 'database'),
  };
}

const keepFlagKeys = [
  ['keep-last', 'keepLast'], ['keep-hourly', 'keepHourly'], ['keep-daily', 'keepDaily'],
  ['keep-weekly', 'keepWeekly'], ['keep-monthly', 'keepMonthly'], ['keep-yearly', 'keepYearly'],
] as const;

function filterOf(p: Parsed): { host?: string; tags?: string[] } {
  const host = str(p, 'host');
  const tags = list(p, 'tag');
  return { ...(host ? { host } : {}), ...(tags.length > 0 ? { tags } : {}) };
}

export async function runStandalone(command: Command, p: Parsed, ctx: StandaloneContext): Promise<void> {
  const { out } = ctx;
  switch (command) {
    case 'init': {
      const restic = await driverFor(p, ctx);
      const existed = await restic.exists();
      if (!existed) await restic.init();
      out.info(existed ? `repository ${restic.repository} already exists` : `created repository ${restic.repository}`);
      out.result('init', { repository: restic.repository, created: !existed });
      return;
    }
    case 'backup': {
      if (str(p, 'db-type') !== undefined) {
        if (p.positionals.length > 0) throw new UsageError(`a database backup takes no PATH ("${p.positionals[0]}"); name databases with --database`);
        const conn = connectionFromFlags(databaseFlags(p), ctx.io.env);
        const restic = await driverFor(p, ctx);
        const result = await backupDatabase(restic, conn, { host: str(p, 'host') ?? 'host-0', tags: list(p, 'tag'), signal: ctx.signal });
        const snapshots = result.snapshots.map((s) => ({ snapshotId: s.summary.snapshotId, database: s.database, databases: s.databases, dataAdded: s.summary.dataAdded }));
        for (const s of snapshots) out.info(`snapshot ${s.snapshotId.slice(0, 8)} saved for ${s.database ? `database ${s.database}` : `the ${result.engine} server`}: ${s.dataAdded} bytes added`);
        out.result('backup', { engine: result.engine, snapshotId: snapshots.at(-1)?.snapshotId, snapshots });
        return;
      }
      if (p.positionals.length === 0) throw new UsageError('give at least one PATH to back up');
      const restic = await driverFor(p, ctx);
      const summary = await backupDirectories(restic, {
        paths: p.positionals,
        host: str(p, 'host') ?? 'host-0',
        tags: list(p, 'tag'),
        excludes: list(p, 'exclude'),
        onProgress: (pr) => out.progress(pr),
        signal: ctx.signal,
      });
      out.endProgress();
      out.info(`snapshot ${summary.snapshotId.slice(0, 8)} saved: ${summary.filesNew} new, ${summary.filesChanged} changed, ${summary.filesUnmodified} unmodified files; ${summary.dataAdded} bytes added in ${summary.durationSeconds.toFixed(1)} s`);
      out.result('backup', { snapshotId: summary.snapshotId, summary });
      return;
    }
    case 'recover': {
      if (str(p, 'db-type') !== undefined) {
        const conn = connectionFromFlags(databaseFlags(p), ctx.io.env);
        const restic = await driverFor(p, ctx);
        const snapshot = str(p, 'snapshot');
        const host = str(p, 'host');
        const tags = list(p, 'tag');
        const result = await recoverDatabase(restic, conn, {
          ...(snapshot && snapshot !== 'latest' ? { snapshot } : {}), ...(host ? { host } : {}), ...(tags.length > 0 ? { tags } : {}),
        });
        out.info(`restored ${result.restored.map((r) => `${r.snapshotId.slice(0, 8)}${r.database ? ` (${r.database})` : ''}`).join(', ')} into the ${result.engine} server at ${conn.host}:${conn.port}`);
        out.result('recover', { engine: result.engine, restored: result.restored, verified: result.verified });
        return;
      }
      const restic = await driverFor(p, ctx);
      const targetDir = required(p, 'target', 'the directory to restore into');
      const from = str(p, 'from');
      const result = await recoverDirectories(restic, {
        snapshot: required(p, 'snapshot', '"latest" or a snapshot ID'),
        ...filterOf(p),
        target: targetDir,
        paths: list(p, 'include'),
        ...(from ? { from } : {}),
        mode: bool(p, 'delete') ? 'rollback' : 'merge',
        onProgress: (pr) => out.progress(pr),
        signal: ctx.signal,
      });
      out.endProgress();
      const s = result.summary;
      out.info(`restored snapshot ${result.snapshot.shortId} into ${path.resolve(targetDir)}: ${s.filesRestored} restored, ${s.filesSkipped} unchanged, ${s.filesDeleted} deleted (${s.bytesRestored} bytes)`);
      out.result('recover', { snapshotId: result.snapshot.id, target: path.resolve(targetDir), summary: s });
      return;
    }
    case 'snapshots': {
      const restic = await driverFor(p, ctx);
      const snaps = await restic.snapshots(filterOf(p));
      for (const s of snaps) out.info(`${s.shortId}  ${s.time}  ${s.hostname}  ${s.paths.join(',')}  ${s.tags.join(',')}`);
      out.info(`${snaps.length} snapshot(s)`);
      out.result('snapshots', { snapshots: snaps });
      return;
    }
    case 'forget': {
      const policy: RetentionPolicy = {};
      for (const [flag, key] of keepFlagKeys) {
        const n = count(p, flag);
        if (n !== undefined) policy[key] = n;
      }
      const keepTags = list(p, 'keep-tag');
      if (keepTags.length > 0) policy.keepTags = keepTags;
      if (bool(p, 'prune')) policy.prune = true;
      if (bool(p, 'dry-run')) policy.dryRun = true;
      const tags = list(p, 'tag');
      if (tags.length === 0) throw new UsageError('--tag is required (at least one): forget only touches snapshots carrying all the given tags');
      const host = str(p, 'host');
      const args = forgetArgs(policy, { tags, ...(host ? { host } : {}) });
      if (!args) throw new UsageError('give at least one keep rule: --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly or --keep-tag (a count of 0 means "not set")');
      const restic = await driverFor(p, ctx);
      const groups = await restic.forget(args, { signal: ctx.signal });
      const kept = groups.flatMap((g) => g.keep.map((s) => s.id));
      const removed = groups.flatMap((g) => g.remove.map((s) => s.id));
      out.info(`${policy.dryRun ? 'would keep' : 'kept'} ${kept.length}, ${policy.dryRun ? 'would remove' : 'removed'} ${removed.length} snapshot(s)${policy.prune && !policy.dryRun ? '; pruned' : ''}`);
      out.result('forget', { dryRun: policy.dryRun === true, kept, removed, groups });
      return;
    }
    case 'check': {
      const restic = await driverFor(p, ctx);
      const summary = await restic.check({ readData: bool(p, 'read-data'), signal: ctx.signal });
      out.info('no errors were found');
      out.result('check', { summary });
      return;
    }
    case 'unlock': {
      const restic = await driverFor(p, ctx);
      const removed = await restic.unlockStale();
      out.info(`removed ${removed} stale lock(s)`);
      out.result('unlock', { removed });
      return;
    }
    case 'update-repo-status':
    case 'update-recovery-status':
      throw new UsageError(`this command works only in a cluster: give --${command === 'update-repo-status' ? 'backup' : 'recovery'}-name`);
  }
}
