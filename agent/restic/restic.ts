/**
 * The restic driver: runs restic with `--json`, parses its progress and results, classifies its
 * failures (errors.ts) and handles stale locks.
 *
 * Secrets: the repository password and backend keys reach restic only through its environment
 * (`target.env`) or through files written to a private 0700 directory (`target.files`); argv holds
 * only the repository string, flags and paths. Error messages are redacted of every secret value.
 *
 * Locks: when an operation fails because the repository is locked, the driver runs
 * `restic unlock` (without --remove-all, which removes only locks restic itself judges stale: the
 * owning process is gone from this host, or the lock was not refreshed for 30 minutes) and, if it
 * removed any, retries the operation once. A live lock is never removed; the second failure is
 * reported as RepositoryLockedError naming the holder.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { ResticTarget } from './target.ts';
import type { BackupOptions, BackupSummary, Restic, ResticProgress } from './types.ts';
import {
  classifyFailure, parseRetryLine, redact, retryCredentialsError, retryWindowError,
  IncompleteBackupError, RepositoryLockedError, RepositoryNotFoundError, ResticError, ResticNotFoundError,
} from './errors.ts';
import type { FailureInput } from './errors.ts';
import {
  parseForget, parseLine, parseSnapshots, parseStats, splitStderr, toBackupSummary, toCheckSummary, toProgress, toRestoreSummary,
} from './messages.ts';
import type { CheckSummary, ForgetGroup, RepositoryStats, RestoreSummary } from './messages.ts';
import { memoryCgroup } from './cgroup.ts';
import type { MemoryCgroup } from './cgroup.ts';

export type { CheckSummary, ForgetGroup, RepositoryStats, RestoreSummary } from './messages.ts';

export interface ResticOptions {
  /** restic binary; default `$STASH_RESTIC`, else `restic` on PATH. */
  readonly binary?: string;
  readonly logger?: Logger;
  /** restic's cache directory (`--cache-dir`); default restic's own (~/.cache/restic). */
  readonly cacheDir?: string;
  /** Progress lines per second restic prints (RESTIC_PROGRESS_FPS); default 2. */
  readonly progressFps?: number;
  /**
   * restic retries a failing backend for up to 15 minutes. When set, restic is stopped (and the
   * operation fails with RepositoryUnreachableError) once it has been retrying for this long.
   * Retries whose error says the credentials or access were refused stop restic at once
   * (BackendCredentialsError) whatever this is.
   */
  readonly backendRetryWindowMs?: number;
  /** Where OOM kills are counted (default: this process's memory cgroup). */
  readonly memoryCgroup?: MemoryCgroup;
}

export interface SnapshotFilter {
  readonly host?: string;
  readonly tags?: readonly string[];
}

export interface RestoreOptions extends SnapshotFilter {
  /** Directory to restore into (created if missing). */
  readonly target: string;
  /** Only these paths of the snapshot (restic `--include`). */
  readonly include?: readonly string[];
  readonly exclude?: readonly string[];
  /** True rollback: delete files in target that the snapshot lacks (restic `--delete`). */
  readonly delete?: boolean;
  readonly onProgress?: (progress: ResticProgress) => void;
  readonly signal?: AbortSignal;
}

/** The `Restic` contract plus the maintenance operations the agent needs. */
export interface ResticDriver extends Restic {
  readonly repository: string;
  /** True when the repository exists and opens with the password. */
  exists(): Promise<boolean>;
  /** `restic forget` with the given policy flags (agent/retention builds them). */
  forget(policyArgs: readonly string[], options?: { readonly signal?: AbortSignal }): Promise<ForgetGroup[]>;
  /** `restic check`; rejects with RepositoryDamagedError when it finds errors. */
  check(options?: { readonly readData?: boolean; readonly signal?: AbortSignal }): Promise<CheckSummary>;
  /** `restic unlock` without --remove-all: removes only stale locks; returns how many it removed. */
  unlockStale(): Promise<number>;
  /** Number of lock files in the repository (`restic list locks --no-lock`). */
  countLocks(): Promise<number>;
  /** `snapshot` is `latest` (narrowed by host/tags) or an ID. */
  restore(snapshot: string, options: RestoreOptions): Promise<RestoreSummary>;
  stats(mode?: 'restore-size' | 'raw-data'): Promise<RepositoryStats>;
  version(): Promise<string>;
}

export class RepositoryDamagedError extends ResticError {
  readonly summary: CheckSummary | undefined;
  constructor(message: string, exitCode: number | undefined, detail: string, summary: CheckSummary | undefined) {
    super(message, exitCode, detail);
    this.summary = summary;
  }
}

interface RunSpec {
  readonly operation: string;
  readonly args: readonly string[];
  /** Called with each JSON line on stdout. */
  readonly onMessage?: (m: Record<string, unknown>) => void;
  /** Keep the whole stdout (single-document commands). */
  readonly collect?: boolean;
  readonly signal?: AbortSignal | undefined;
  /** Exit codes that are not failures. */
  readonly okCodes?: readonly number[];
  /** Extra environment for restic's child command (backupCommand's `env`); redacted from errors. */
  readonly commandEnv?: Readonly<Record<string, string>> | undefined;
}

interface RunResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

const secretKey = /PASS|SECRET|KEY|TOKEN|CREDENTIAL|SAS|AUTH/i;
const validTag = /^[^,\s]+$/;

export function createRestic(target: ResticTarget, options: ResticOptions = {}): ResticDriver {
  const binary = options.binary ?? process.env.STASH_RESTIC ?? 'restic';
  const cgroup = options.memoryCgroup ?? memoryCgroup();
  /** An OOM kill counted by the container's cgroup since `before` (a restic killed for lack of memory). */
  const outOfMemorySince = (before: number | undefined): FailureInput['outOfMemory'] => {
    const now = cgroup.oomKills();
    return now !== undefined && now > (before ?? 0) ? { limitBytes: cgroup.limit() } : undefined;
  };
  const log = options.logger;
  const secrets = Object.entries(target.env).filter(([k]) => secretKey.test(k)).map(([, v]) => v);
  const clean = (text: string): string => redact(text, secrets);

  /**
   * Watches restic's stderr for backend retries: a retry refused for credentials stops restic at
   * once; retries lasting longer than backendRetryWindowMs stop it too. `stop` gets the error to
   * fail with (the caller kills restic). Returns the chunk handler and a dispose function.
   */
  function retryWatcher(operation: string, stop: (error: ResticError) => void): { onChunk: (chunk: string) => void; dispose: () => void } {
    let pending = '';
    let windowTimer: NodeJS.Timeout | undefined;
    let last: { error: string; fatal: boolean } | undefined;
    let stopped = false;
    const halt = (error: ResticError): void => {
      if (stopped) return;
      stopped = true;
      if (windowTimer) clearTimeout(windowTimer);
      log?.warn({ operation, error: error.name }, 'stopping restic: its backend retries cannot succeed');
      stop(error);
    };
    return {
      onChunk(chunk) {
        pending += chunk;
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = clean(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
          const retry = parseRetryLine(line);
          if (!retry) continue;
          last = retry;
          log?.info({ operation, error: retry.error.slice(0, 300) }, 'restic is retrying a backend error');
          if (retry.fatal) {
            halt(retryCredentialsError(operation, target.repository, retry));
          } else if (options.backendRetryWindowMs !== undefined && windowTimer === undefined) {
            const windowMs = options.backendRetryWindowMs;
            windowTimer = setTimeout(() => { if (last) halt(retryWindowError(operation, target.repository, windowMs, last)); }, windowMs);
          }
        }
        if (pending.length > 64_000) pending = pending.slice(-64_000);
      },
      dispose() {
        if (windowTimer) clearTimeout(windowTimer);
      },
    };
  }

  /** Writes target.files into a fresh 0700 directory; returns extra env/args and a cleanup. */
  async function prepare(): Promise<{ env: Record<string, string>; args: string[]; cleanup: () => Promise<void> }> {
    const env: Record<string, string> = {};
    const args: string[] = [];
    if (target.files.length === 0) return { env, args, cleanup: async () => {} };
    const dir = await mkdtemp(path.join(os.tmpdir(), 'stash-restic-'));
    await chmod(dir, 0o700);
    try {
      for (const f of target.files) {
        if (f.name.includes('/') || f.name === '..' || f.name === '.') throw new Error(`ResticTarget file name "${f.name}" must be a plain file name`);
        const p = path.join(dir, f.name);
        await writeFile(p, f.content, { mode: 0o600 });
        if (f.envVar) env[f.envVar] = p;
        if (f.flag) args.push(f.flag, p);
      }
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    return { env, args, cleanup: () => rm(dir, { recursive: true, force: true }) };
  }

  function childEnv(extra: Record<string, string>, commandEnv: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    // restic reads RESTIC_* from the environment: only the target decides those.
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RESTIC_')) env[k] = v;
    for (const [k, v] of Object.entries(commandEnv)) if (!k.startsWith('RESTIC_')) env[k] = v;
    Object.assign(env, target.env, extra);
    env.RESTIC_PROGRESS_FPS = String(options.progressFps ?? 2);
    return env;
  }

  function baseArgs(extraArgs: readonly string[]): string[] {
    const a = ['--json', '--repo', target.repository, ...target.args, ...extraArgs];
    if (options.cacheDir) a.push('--cache-dir', options.cacheDir);
    return a;
  }

  async function run(spec: RunSpec): Promise<RunResult> {
    if (spec.signal?.aborted) throw new ResticError(`restic ${spec.operation} was not started: the operation was cancelled`, undefined, '');
    const prep = await prepare();
    const argv = [...baseArgs(prep.args), ...spec.args];
    log?.debug({ operation: spec.operation, argv }, 'running restic');
    try {
      return await new Promise<RunResult>((resolve, reject) => {
        const oomKillsBefore = cgroup.oomKills();
        const child = spawn(binary, argv, { env: childEnv(prep.env, spec.commandEnv), stdio: ['ignore', 'pipe', 'pipe'] });
        const cleanRun = (text: string): string => redact(clean(text), Object.values(spec.commandEnv ?? {}));
        let stdout = '';
        let pending = '';
        let stderr = '';
        let killTimer: NodeJS.Timeout | undefined;
        let stoppedWith: ResticError | undefined;
        const terminate = (): void => {
          child.kill('SIGTERM');
          killTimer ??= setTimeout(() => child.kill('SIGKILL'), 10_000);
        };
        const onAbort = (): void => terminate();
        const watcher = retryWatcher(spec.operation, (error) => {
          stoppedWith = error;
          terminate();
        });
        spec.signal?.addEventListener('abort', onAbort, { once: true });
        child.stdout.setEncoding('utf8');
        child.stderr.setEncoding('utf8');
        child.stdout.on('data', (chunk: string) => {
          if (spec.collect) stdout += chunk;
          if (!spec.onMessage) return;
          pending += chunk;
          let nl: number;
          while ((nl = pending.indexOf('\n')) >= 0) {
            const line = pending.slice(0, nl);
            pending = pending.slice(nl + 1);
            const m = parseLine(line);
            if (m) spec.onMessage(m);
          }
        });
        child.stderr.on('data', (chunk: string) => {
          // Keep the tail only: a long-running dump command may write a lot.
          stderr = (stderr + chunk).slice(-64_000);
          watcher.onChunk(chunk);
        });
        child.on('error', (err: NodeJS.ErrnoException) => {
          watcher.dispose();
          spec.signal?.removeEventListener('abort', onAbort);
          if (err.code === 'ENOENT') {
            reject(new ResticNotFoundError(`restic binary "${binary}" was not found; install restic 0.19 or set $STASH_RESTIC to its path`, undefined, err.message));
          } else {
            reject(new ResticError(`could not start restic "${binary}": ${err.message}`, undefined, err.message));
          }
        });
        child.on('close', (code, signal) => {
          watcher.dispose();
          spec.signal?.removeEventListener('abort', onAbort);
          if (killTimer) clearTimeout(killTimer);
          if (stoppedWith && !spec.signal?.aborted) {
            reject(stoppedWith);
            return;
          }
          if (pending && spec.onMessage) {
            const m = parseLine(pending);
            if (m) spec.onMessage(m);
          }
          const exitCode = code ?? -1;
          if (signal === null && (exitCode === 0 || spec.okCodes?.includes(exitCode))) {
            resolve({ exitCode, stdout, stderr: cleanRun(stderr) });
            return;
          }
          const parts = splitStderr(cleanRun(stderr));
          const err = classifyFailure({
            operation: spec.operation,
            repository: target.repository,
            exitCode: code ?? undefined,
            signal: signal ?? (spec.signal?.aborted ? 'cancellation' : undefined),
            exitMessage: parts.exitMessage,
            stderr: parts.other,
            outOfMemory: signal === 'SIGKILL' ? outOfMemorySince(oomKillsBefore) : undefined,
          });
          log?.debug({ operation: spec.operation, exitCode: code, signal, error: err.name }, 'restic failed');
          reject(err);
        });
      });
    } finally {
      await prep.cleanup();
    }
  }

  async function countLocks(): Promise<number> {
    const r = await run({ operation: 'list locks', args: ['list', 'locks', '--no-lock'], collect: true });
    return r.stdout.split('\n').filter((l) => /^[0-9a-f]{64}$/.test(l.trim())).length;
  }

  async function unlockStale(): Promise<number> {
    const before = await countLocks();
    await run({ operation: 'unlock', args: ['unlock'] });
    const after = await countLocks();
    return Math.max(0, before - after);
  }

  /** Runs op; on a lock failure removes stale locks and, if any were removed, retries once. */
  async function withStaleLockRetry<T>(operation: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (!(err instanceof RepositoryLockedError)) throw err;
      const removed = await unlockStale();
      log?.info({ operation, removed, holder: err.holder }, removed > 0 ? 'removed stale restic locks; retrying once' : 'repository lock is live; not removing it');
      if (removed === 0) throw err;
      return await op();
    }
  }

  function filterArgs(filter: SnapshotFilter | undefined): string[] {
    const a: string[] = [];
    if (filter?.host) a.push('--host', filter.host);
    if (filter?.tags && filter.tags.length > 0) {
      for (const t of filter.tags) checkTag(t);
      a.push('--tag', filter.tags.join(','));
    }
    return a;
  }

  function backupArgs(o: BackupOptions): string[] {
    if (!o.host) throw new ResticError('backup needs a host (restic --host) to tell replicas apart; pass one', undefined, '');
    const a = ['backup', '--host', o.host];
    for (const t of o.tags) {
      checkTag(t);
      a.push('--tag', t);
    }
    for (const e of o.excludes ?? []) a.push('--exclude', e);
    return a;
  }

  async function backup(operation: string, args: string[], o: BackupOptions, commandEnv?: Readonly<Record<string, string>>): Promise<BackupSummary> {
    let summary: BackupSummary | undefined;
    const onMessage = (m: Record<string, unknown>): void => {
      const p = toProgress(m);
      if (p && o.onProgress) o.onProgress(p);
      summary = toBackupSummary(m) ?? summary;
    };
    const r = await withStaleLockRetry(operation, () => {
      summary = undefined;
      return run({ operation, args, onMessage, signal: o.signal, okCodes: [3], commandEnv });
    });
    if (r.exitCode === 3) {
      const parts = splitStderr(r.stderr);
      throw new IncompleteBackupError(
        `restic ${operation} on repository ${target.repository} saved snapshot ${summary?.snapshotId.slice(0, 8) ?? '?'} but could not read some files (${firstLines(parts.other)}); fix their permissions or exclude them`,
        3, parts.other, summary?.snapshotId);
    }
    if (!summary) throw new ResticError(`restic ${operation} on repository ${target.repository} exited 0 without a summary line; is this restic 0.19?`, 0, r.stderr);
    return summary;
  }

  const driver: ResticDriver = {
    repository: target.repository,

    async exists() {
      try {
        await run({ operation: 'cat config', args: ['cat', 'config'], collect: true });
        return true;
      } catch (err) {
        if (err instanceof RepositoryNotFoundError) return false;
        throw err;
      }
    },

    async init() {
      if (await driver.exists()) return;
      try {
        await run({ operation: 'init', args: ['init'], collect: true });
        log?.info({ repository: target.repository }, 'created restic repository');
      } catch (err) {
        // Another agent may have created it in between.
        if (err instanceof ResticError && /already exists|already initialized/i.test(err.detail)) return;
        throw err;
      }
    },

    async backupPaths(paths, o) {
      if (paths.length === 0) throw new ResticError('backup needs at least one path', undefined, '');
      return backup('backup', [...backupArgs(o), '--', ...paths], o);
    },

    async backupCommand(command, o) {
      if (command.length === 0) throw new ResticError('backupCommand needs a command', undefined, '');
      if (!o.filename || o.filename.includes('/')) throw new ResticError(`backupCommand filename "${o.filename}" must be a plain file name`, undefined, '');
      return backup('backup --stdin-from-command', [...backupArgs(o), '--stdin-filename', o.filename, '--stdin-from-command', '--', ...command], o, o.env);
    },

    dump(snapshot: string, file: string): { stdout: Readable; done: Promise<void> } {
      return dumpToStream(snapshot, file);
    },

    async snapshots(filter) {
      const r = await run({ operation: 'snapshots', args: ['snapshots', ...filterArgs(filter)], collect: true });
      return parseSnapshots(r.stdout).sort((a, b) => a.time.localeCompare(b.time));
    },

    async forget(policyArgs, o) {
      const r = await withStaleLockRetry('forget', () =>
        run({ operation: 'forget', args: ['forget', ...policyArgs], collect: true, signal: o?.signal }));
      return parseForget(r.stdout);
    },

    async check(o) {
      let summary: CheckSummary | undefined;
      const args = ['check', ...(o?.readData ? ['--read-data'] : [])];
      try {
        await withStaleLockRetry('check', () => {
          summary = undefined;
          return run({ operation: 'check', args, signal: o?.signal, onMessage: (m) => { summary = toCheckSummary(m) ?? summary; } });
        });
      } catch (err) {
        // restic also prints a summary (num_errors 1) when it cannot lock or open the repository: only
        // a plain failure (exit 1) with errors in its summary means damage.
        if (err instanceof ResticError && err.constructor === ResticError && err.exitCode === 1 && summary && summary.numErrors > 0) {
          throw new RepositoryDamagedError(
            `restic check on repository ${target.repository} found ${summary.numErrors} error(s)` +
              `${summary.suggestRepairIndex ? '; run `restic repair index`' : ''}` +
              `${summary.brokenPacks.length > 0 ? '; run `restic repair packs` and `restic repair snapshots --forget`' : ''}` +
              `${summary.suggestPrune ? '; run `restic prune`' : ''}`,
            err.exitCode, err.detail, summary);
        }
        throw err;
      }
      return summary ?? { numErrors: 0, brokenPacks: [], suggestRepairIndex: false, suggestPrune: false };
    },

    unlockStale,
    countLocks,

    async restore(snapshot, o) {
      const args = ['restore', '--target', o.target, ...filterArgs(o)];
      for (const i of o.include ?? []) args.push('--include', i);
      for (const e of o.exclude ?? []) args.push('--exclude', e);
      if (o.delete) args.push('--delete');
      args.push('--', snapshot);
      let summary: RestoreSummary | undefined;
      const onMessage = (m: Record<string, unknown>): void => {
        const p = toProgress(m);
        if (p && o.onProgress) o.onProgress(p);
        summary = toRestoreSummary(m) ?? summary;
      };
      await withStaleLockRetry('restore', () => run({ operation: `restore ${snapshot}`, args, onMessage, signal: o.signal }));
      if (!summary) throw new ResticError(`restic restore on repository ${target.repository} exited 0 without a summary line; is this restic 0.19?`, 0, '');
      return summary;
    },

    async stats(mode = 'raw-data') {
      const r = await run({ operation: 'stats', args: ['stats', '--mode', mode], collect: true });
      return parseStats(r.stdout);
    },

    async version() {
      const child = spawn(binary, ['version', '--json'], { env: childEnv({}), stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
      await finished(child, 'version', '', undefined);
      const m = parseLine(out);
      return typeof m?.version === 'string' ? m.version : out.trim();
    },
  };

  /**
   * `restic dump` into a stream; target.files are written before restic starts. When the caller
   * destroys the stream before its end, restic is killed and `done` resolves (the caller chose
   * to stop reading); any other failure of restic rejects `done` and destroys the stream.
   */
  function dumpToStream(snapshot: string, file: string): { stdout: Readable; done: Promise<void> } {
    const pass = new PassThrough();
    let child: ReturnType<typeof spawn> | undefined;
    let abandoned = false;
    pass.on('close', () => {
      // A normal end (restic closed its stdout) finishes the writable side first; anything else
      // is the consumer destroying the stream early.
      if (pass.writableFinished) return;
      if (child && child.exitCode === null && child.signalCode === null) {
        abandoned = true;
        child.kill('SIGTERM');
        setTimeout(() => { if (child?.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); }, 10_000).unref();
      } else if (!child) {
        abandoned = true;
      }
    });
    const done = (async () => {
      const prep = await prepare();
      try {
        if (abandoned) return;
        const argv = [...baseArgs(prep.args), 'dump', '--', snapshot, file];
        log?.debug({ operation: 'dump', argv }, 'running restic');
        const oomKillsBefore = cgroup.oomKills();
        const c = spawn(binary, argv, { env: childEnv(prep.env), stdio: ['ignore', 'pipe', 'pipe'] });
        child = c;
        c.stdout?.pipe(pass);
        await finished(c, 'dump', snapshot, oomKillsBefore);
      } catch (err) {
        if (abandoned) return;
        pass.destroy(err as Error);
        throw err;
      } finally {
        await prep.cleanup();
      }
    })();
    return { stdout: pass, done };
  }

  function finished(child: ReturnType<typeof spawn>, operation: string, snapshot: string, oomKillsBefore: number | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let stderr = '';
      let stoppedWith: ResticError | undefined;
      const watcher = retryWatcher(snapshot ? `${operation} ${snapshot}` : operation, (error) => {
        stoppedWith = error;
        child.kill('SIGTERM');
      });
      child.stderr?.setEncoding('utf8');
      child.stderr?.on('data', (c: string) => { stderr = (stderr + c).slice(-64_000); watcher.onChunk(c); });
      child.on('error', (err: NodeJS.ErrnoException) => {
        watcher.dispose();
        reject(err.code === 'ENOENT'
          ? new ResticNotFoundError(`restic binary "${binary}" was not found; install restic 0.19 or set $STASH_RESTIC to its path`, undefined, err.message)
          : new ResticError(`could not start restic "${binary}": ${err.message}`, undefined, err.message));
      });
      child.on('close', (code, signal) => {
        watcher.dispose();
        if (code === 0) return resolve();
        if (stoppedWith) return reject(stoppedWith);
        const parts = splitStderr(clean(stderr));
        reject(classifyFailure({
          operation: snapshot ? `${operation} ${snapshot}` : operation, repository: target.repository,
          exitCode: code ?? undefined, signal: signal ?? undefined, exitMessage: parts.exitMessage, stderr: parts.other,
          outOfMemory: signal === 'SIGKILL' ? outOfMemorySince(oomKillsBefore) : undefined,
        }));
      });
    });
  }

  return driver;
}

function checkTag(tag: string): void {
  if (!validTag.test(tag)) throw new ResticError(`snapshot tag "${tag}" must not be empty or contain commas or spaces`, undefined, '');
}

function firstLines(text: string): string {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  return lines.slice(0, 3).join('; ') + (lines.length > 3 ? `; and ${lines.length - 3} more` : '');
}
