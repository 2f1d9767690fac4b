/**
 * Runs the database plans through restic, streaming only:
 *  - backup: `restic backup --stdin-from-command --stdin-filename <engine>.sql -- <dump tool>`;
 *    restic reads the dump tool's stdout and records no snapshot when it exits non-zero.
 *  - recovery: `restic dump <snapshot> /<file>` piped into the restore tool's stdin; the tool
 *    sees end-of-input only after restic exited successfully (otherwise it is killed, so a
 *    truncated stream is never committed as complete), and either failure fails the recovery.
 * Neither direction stages the dump on disk or holds it in memory beyond the pipe buffers.
 */
import { spawn } from 'node:child_process';
import { finished } from 'node:stream/promises';
import type { Readable, Transform } from 'node:stream';
import type { BackupOptions, Restic, SnapshotInfo } from '../restic/types.ts';
import { DatabaseBackupError, DatabaseError, DatabaseQueryError, DatabaseRecoveryError } from './errors.ts';
import * as mariadb from './mariadb.ts';
import * as postgres from './postgres.ts';
import { address, checkReachable, findTool, redact, runQuery } from './process.ts';
import * as redis from './redis.ts';
import { ENGINES } from './registry.ts';
import type { DatabaseBackupResult, DatabaseConnection, DatabaseRecoveryResult, DumpStep, ToolCommand, ToolNames } from './types.ts';

export interface DatabaseToolOverrides {
  readonly dump?: string;
  /** PostgreSQL only: the tool that dumps every database (default pg_dumpall). */
  readonly dumpAll?: string;
  readonly restore?: string;
  readonly client?: string;
}

export interface DatabaseBackupOptions extends BackupOptions {
  readonly tools?: DatabaseToolOverrides;
  readonly connectTimeoutMs?: number;
}

export interface DatabaseRecoveryOptions {
  /** A snapshot ID; when absent, the latest matching snapshot(s) (per database for PostgreSQL). */
  readonly snapshot?: string;
  /** Tags the snapshots must carry (namespace/Backup tags the backup used). */
  readonly tags?: readonly string[];
  /** restic host the snapshots must come from. */
  readonly host?: string;
  readonly tools?: DatabaseToolOverrides;
  readonly connectTimeoutMs?: number;
  readonly redis?: redis.RedisRestoreOptions;
}

function toolsFor(conn: DatabaseConnection, overrides: DatabaseToolOverrides = {}): ToolNames & { dumpAll: string } {
  const base = ENGINES[conn.engine].tools;
  return {
    dump: overrides.dump ?? base.dump,
    dumpAll: overrides.dumpAll ?? (conn.engine === 'postgres' ? postgres.POSTGRES_TOOLS.dumpAll : base.dump),
    restore: overrides.restore ?? base.restore,
    client: overrides.client ?? base.client,
  };
}

function validateNames(conn: DatabaseConnection): void {
  for (const name of conn.databases) {
    if (name === '' || /[,\n\r\0]/.test(name)) {
      throw new DatabaseBackupError(`database name ${JSON.stringify(name)} cannot be backed up: names must be non-empty and hold no comma or newline (they become restic tags); fix the Backup's args`);
    }
  }
}

/** The databases the server holds (system schemas left out), through the engine's client. */
export async function listDatabases(conn: DatabaseConnection, tools: ToolNames): Promise<string[]> {
  if (conn.engine === 'redis') return [];
  const query = conn.engine === 'postgres' ? postgres.listDatabasesQuery(conn, tools) : mariadb.listDatabasesQuery(conn, tools);
  const out = await runQuery(query.cmd, `listing the databases of the ${conn.engine} server at ${address(conn)} as user "${conn.user ?? ''}"`, [conn.password], query.sql);
  return out.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !mariadb.SYSTEM_SCHEMAS.includes(l));
}

/** Preflight shared by backup and recovery: tools on PATH, server reachable, login works. */
async function preflight(conn: DatabaseConnection, tools: readonly string[], clientTools: ToolNames, timeoutMs: number | undefined): Promise<string[]> {
  for (const tool of tools) findTool(tool);
  await checkReachable(conn, timeoutMs);
  if (conn.engine === 'redis') {
    const pong = (await runQuery(redis.cli(conn, ['PING'], clientTools), `PING to the redis server at ${address(conn)}`, [conn.password])).trim();
    if (pong !== 'PONG') throw new DatabaseQueryError(`the redis server at ${address(conn)} answered PING with "${redact(pong, [conn.password])}"; check the password in the AppBinding's Secret (or the password env)`);
    return [];
  }
  return listDatabases(conn, clientTools);
}

/** Backs up the databases of `conn` into one snapshot, or one per named database (PostgreSQL). */
export async function backupDatabase(restic: Restic, conn: DatabaseConnection, options: DatabaseBackupOptions): Promise<DatabaseBackupResult> {
  validateNames(conn);
  const tools = toolsFor(conn, options.tools);
  const needed = conn.engine === 'postgres' ? [conn.databases.length === 0 ? tools.dumpAll : tools.dump, tools.client] : [tools.dump, tools.client];
  const existing = await preflight(conn, needed, tools, options.connectTimeoutMs);
  const missing = conn.databases.filter((d) => conn.engine !== 'redis' && !existing.includes(d));
  if (missing.length > 0) {
    throw new DatabaseBackupError(`database(s) ${missing.join(', ')} do not exist on the ${conn.engine} server at ${address(conn)} (it has ${existing.join(', ') || 'none'}); fix the Backup's args`);
  }
  let steps: DumpStep[];
  if (conn.engine === 'postgres') steps = postgres.planBackup(conn, existing, tools);
  else if (conn.engine === 'mariadb') steps = mariadb.planBackup(conn, existing, tools);
  else steps = redis.planBackup(conn, tools);

  const snapshots: { database: string | undefined; databases: string[]; summary: Awaited<ReturnType<Restic['backupCommand']>> }[] = [];
  for (const step of steps) {
    try {
      // The tool's environment (passwords) reaches it through restic's per-command env, never argv.
      const summary = await restic.backupCommand(step.dump.command, {
        ...options,
        tags: [...options.tags, ...step.tags],
        filename: step.filename,
        env: step.dump.env,
      });
      snapshots.push({ database: step.database, databases: step.tags.filter((t) => t.startsWith('stash.db=')).map((t) => t.slice(9)), summary });
    } catch (err) {
      if (err instanceof DatabaseError) throw err;
      const message = err instanceof Error ? err.message : String(err);
      throw new DatabaseBackupError(`backing up ${step.database ? `database "${step.database}" of ` : ''}the ${conn.engine} server at ${address(conn)} with ${step.dump.command[0] ?? ''} failed, so restic recorded no snapshot for it: ${redact(message, [conn.password])}`, { cause: err });
    }
  }
  return { engine: conn.engine, snapshots };
}

function tagValue(snapshot: SnapshotInfo, key: string): string[] {
  return snapshot.tags.filter((t) => t.startsWith(`${key}=`)).map((t) => t.slice(key.length + 1));
}

function latest(snapshots: readonly SnapshotInfo[]): SnapshotInfo | undefined {
  return [...snapshots].sort((a, b) => Date.parse(b.time) - Date.parse(a.time))[0];
}

/** Which snapshots a recovery restores, in order. */
export function chooseSnapshots(conn: DatabaseConnection, all: readonly SnapshotInfo[], snapshot?: string): SnapshotInfo[] {
  const ofEngine = all.filter((s) => s.tags.includes(`stash.engine=${conn.engine}`));
  if (snapshot && snapshot !== 'latest') {
    const found = all.find((s) => s.id === snapshot || s.shortId === snapshot || s.id.startsWith(snapshot));
    if (!found) throw new DatabaseRecoveryError(`snapshot ${snapshot} was not found in the repository (with the given tags/host); list them with \`restic snapshots\``);
    if (!found.tags.includes(`stash.engine=${conn.engine}`)) {
      throw new DatabaseRecoveryError(`snapshot ${snapshot} is not a ${conn.engine} backup (its tags: ${found.tags.join(', ')}); pick a snapshot tagged stash.engine=${conn.engine}`);
    }
    return [found];
  }
  const describe = () => ofEngine.map((s) => `${s.shortId} [${tagValue(s, 'stash.database').join(',')}]`).join(', ') || 'none';
  if (conn.databases.length === 0) {
    const found = latest(ofEngine.filter((s) => tagValue(s, 'stash.database').includes('all')));
    if (!found) throw new DatabaseRecoveryError(`no ${conn.engine} snapshot of all databases was found (snapshots: ${describe()}); name the databases to recover or a snapshot`);
    return [found];
  }
  const chosen: SnapshotInfo[] = [];
  for (const database of conn.databases) {
    const candidates = conn.engine === 'postgres'
      ? ofEngine.filter((s) => tagValue(s, 'stash.database').includes(database))
      : ofEngine.filter((s) => tagValue(s, 'stash.db').includes(database));
    const found = latest(candidates);
    if (!found) throw new DatabaseRecoveryError(`no ${conn.engine} snapshot holds database "${database}" (snapshots: ${describe()}); back it up first or name another database`);
    if (!chosen.some((s) => s.id === found.id)) chosen.push(found);
  }
  return chosen;
}

/**
 * Pipes `source` (restic dump) into `cmd`'s stdin. The tool gets end-of-input only after restic
 * succeeded; if restic fails the tool is killed, and if the tool fails restic's stream is closed.
 */
export async function pipeIntoTool(source: { readonly stdout: Readable; readonly done: Promise<void> }, cmd: ToolCommand, what: string, secrets: readonly (string | undefined)[], transform?: Transform): Promise<void> {
  const [bin, ...args] = cmd.command;
  if (!bin) throw new DatabaseRecoveryError(`${what}: empty restore command`);
  const child = spawn(bin, args, { env: { ...process.env, ...cmd.env }, stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString('utf8')).slice(-16_384); });
  let spawnError: Error | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (err) => { spawnError = err; resolve({ code: null, signal: null }); });
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  const readable: Readable = transform ? source.stdout.pipe(transform) : source.stdout;
  if (transform) source.stdout.on('error', (err) => transform.destroy(err));
  child.stdin.on('error', () => undefined); // EPIPE when the tool quits: reported through its exit code
  readable.pipe(child.stdin, { end: false });
  let toolGone = false;
  let discarded: Promise<void> | undefined;
  void exited.then(() => {
    toolGone = true;
    readable.unpipe(child.stdin);
    if (!source.stdout.readableEnded) {
      // The driver kills restic when its stream is destroyed early.
      source.stdout.on('error', () => undefined);
      source.stdout.destroy();
      discarded = source.done.catch(() => undefined);
    }
  });

  let resticError: unknown;
  source.done.catch((err: unknown) => { resticError = err; });
  let killed = false;
  let endedEarly = false;
  let dataDone = false;
  try {
    await Promise.race([
      finished(readable).then(() => { dataDone = true; }),
      exited.then(() => { if (!dataDone) endedEarly = true; }),
    ]);
    if (!endedEarly) {
      await source.done;
      child.stdin.end();
    }
  } catch (err) {
    resticError ??= err;
    if (!toolGone) {
      killed = true;
      child.kill('SIGKILL');
    }
  }
  const { code, signal } = await exited;
  await discarded;
  if (spawnError !== undefined || (!killed && (code !== 0 || signal !== null))) {
    const why = spawnError ? `could not start: ${spawnError.message}` : signal ? `was killed by ${signal}` : `exited with code ${code}`;
    throw new DatabaseRecoveryError(redact(`${what}: the restore tool ${bin} ${why}: ${stderr.trim() || 'no message'}`, secrets), { cause: resticError });
  }
  if (resticError !== undefined) {
    const message = resticError instanceof Error ? resticError.message : JSON.stringify(resticError);
    throw new DatabaseRecoveryError(redact(`${what}: reading the snapshot with restic dump failed, so the restore tool was stopped before the end of the data (the database may be partly restored; run the recovery again): ${message}`, secrets), { cause: resticError });
  }
  if (endedEarly) {
    throw new DatabaseRecoveryError(redact(`${what}: the restore tool ${bin} exited successfully before reading all of the snapshot; the database may be partly restored: ${stderr.trim() || 'no message'}`, secrets));
  }
}

/** Recovers `conn` from the chosen snapshot(s), then verifies what the server holds. */
export async function recoverDatabase(restic: Restic, conn: DatabaseConnection, options: DatabaseRecoveryOptions = {}): Promise<DatabaseRecoveryResult> {
  validateNames(conn);
  const tools = toolsFor(conn, options.tools);
  await preflight(conn, [tools.restore, tools.client], tools, options.connectTimeoutMs);
  const filter = { ...(options.host ? { host: options.host } : {}), ...(options.tags ? { tags: options.tags } : {}) };
  const chosen = chooseSnapshots(conn, await restic.snapshots(filter), options.snapshot);
  const restored: { snapshotId: string; database: string | undefined }[] = [];
  const expected = new Set<string>();
  let verified: Record<string, number> = {};
  for (const snapshot of chosen) {
    const file = snapshot.paths[0] ?? (conn.engine === 'redis' ? '/redis.rdb' : `/${conn.engine}.sql`);
    const database = tagValue(snapshot, 'stash.database').find((d) => d !== 'all');
    const what = `recovering snapshot ${snapshot.shortId} into the ${conn.engine} server at ${address(conn)}`;
    if (conn.engine === 'redis') {
      const { keys, keysLoaded } = await redis.restoreRdb(conn, restic.dump(snapshot.id, file), { ...options.redis, tools });
      const total = Object.values(keys).reduce((a, b) => a + b, 0);
      if (Number.isFinite(keysLoaded) && keysLoaded !== total) {
        throw new DatabaseRecoveryError(`${what}: the server loaded ${keysLoaded} keys from the RDB but holds ${total}; check the server log`);
      }
      verified = keys;
    } else {
      const transform = conn.engine === 'postgres' && tagValue(snapshot, 'stash.database').includes('all')
        ? postgres.currentRoleFilter(conn.user ?? 'postgres') : undefined;
      const cmd = conn.engine === 'postgres' ? postgres.planRestore(conn, tools) : mariadb.planRestore(conn, tools);
      await pipeIntoTool(restic.dump(snapshot.id, file), cmd, what, [conn.password], transform);
      for (const db of tagValue(snapshot, 'stash.db')) expected.add(db);
    }
    restored.push({ snapshotId: snapshot.id, database });
  }
  if (conn.engine !== 'redis') {
    const present = await listDatabases(conn, tools);
    const absent = [...expected].filter((d) => !present.includes(d));
    if (absent.length > 0) {
      throw new DatabaseRecoveryError(`after recovery the ${conn.engine} server at ${address(conn)} lacks database(s) ${absent.join(', ')} that the snapshot holds; check the restore tool's output and the server log`);
    }
    for (const db of [...expected].sort()) {
      const query = conn.engine === 'postgres' ? postgres.countTablesQuery(conn, db, tools) : mariadb.countTablesQuery(conn, db, tools);
      verified[db] = Number((await runQuery(query.cmd, `counting the tables of ${db}`, [conn.password], query.sql)).trim());
    }
  }
  return { engine: conn.engine, restored, verified };
}
