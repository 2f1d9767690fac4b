/**
 * What the CLI prints: with --json, progress as JSON lines and one final
 * `{"type":"result", "command", "ok", ...}` object on stdout; otherwise human text, progress on
 * stderr. Exit codes mirror restic's where they mean the same thing.
 */
import type { ResticProgress } from '../restic/types.ts';
import {
  IncompleteBackupError, RepositoryLockedError, RepositoryNotFoundError, ResticCancelledError, ResticError, WrongPasswordError,
} from '../restic/errors.ts';
import { UsageError } from './args.ts';
import { progressPrinter } from './progress.ts';

export interface CliIo {
  readonly stdout: { write(text: string): unknown };
  readonly stderr: { write(text: string): unknown; readonly isTTY?: boolean };
  readonly env: Readonly<Record<string, string | undefined>>;
}

export interface Output {
  readonly json: boolean;
  progress(p: ResticProgress): void;
  /** A human line (stdout); ignored in JSON mode. */
  info(text: string): void;
  result(command: string, data: Record<string, unknown>): void;
  /** Something that happened in a long-running command (a sidecar's run): a JSON line, or a human line. */
  event(type: string, data: Record<string, unknown>): void;
  endProgress(): void;
}

export function createOutput(io: CliIo, json: boolean): Output {
  const printer = progressPrinter(io.stderr, io.stderr.isTTY === true);
  return {
    json,
    progress(p) {
      if (json) io.stdout.write(`${JSON.stringify({ type: 'progress', ...p })}\n`);
      else printer.update(p);
    },
    info(text) {
      if (!json) io.stdout.write(`${text}\n`);
    },
    result(command, data) {
      printer.done();
      if (json) io.stdout.write(`${JSON.stringify({ type: 'result', command, ok: true, ...data })}\n`);
    },
    event(type, data) {
      printer.done();
      if (json) io.stdout.write(`${JSON.stringify({ type, ...data })}\n`);
      else io.stdout.write(`${type}: ${Object.entries(data).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ')}\n`);
    },
    endProgress() {
      printer.done();
    },
  };
}

/** Exit code for a failure: 2 usage, 3 incomplete backup, 10 no repository, 11 locked, 12 wrong password, 130 cancelled, else 1. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return 2;
  if (err instanceof IncompleteBackupError) return 3;
  if (err instanceof RepositoryNotFoundError) return 10;
  if (err instanceof RepositoryLockedError) return 11;
  if (err instanceof WrongPasswordError) return 12;
  if (err instanceof ResticCancelledError) return 130;
  return 1;
}

export function reportError(io: CliIo, json: boolean, command: string, err: unknown): number {
  const code = exitCodeFor(err);
  const e = err instanceof Error ? err : new Error(String(err));
  const kind = e.name || 'Error';
  if (json) {
    const extra: Record<string, unknown> = {};
    if (e instanceof ResticError && e.exitCode !== undefined) extra.resticExitCode = e.exitCode;
    if (e instanceof RepositoryLockedError) extra.lockHolder = e.holder;
    if (e instanceof IncompleteBackupError && e.snapshotId) extra.snapshotId = e.snapshotId;
    io.stdout.write(`${JSON.stringify({ type: 'result', command, ok: false, exitCode: code, error: { kind, message: e.message, ...extra } })}\n`);
  }
  io.stderr.write(`stash ${command}: ${e.message}\n`);
  return code;
}
