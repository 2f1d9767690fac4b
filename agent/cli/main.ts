/**
 * The `stash` command: picks the subcommand, parses its flags, runs it in standalone mode
 * (`--repo`) or in-cluster mode (`--backup-name` / `--recovery-name`), prints the result and
 * returns the exit code.
 */
import { pino } from 'pino';
import type { Logger } from 'pino';
import { UsageError, isCommand, parseCommand, usage } from './args.ts';
import type { Command, Parsed } from './args.ts';
import { createOutput, reportError } from './output.ts';
import type { CliIo } from './output.ts';

export interface MainOptions {
  readonly io?: CliIo;
  readonly signal?: AbortSignal;
  readonly logger?: Logger;
}

function defaultIo(): CliIo {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env };
}

/**
 * In-cluster when --backup-name / --recovery-name is given, or when a pod spec gave the agent its
 * Backup ($BACKUP_NAME with $STASH_FUNCTIONS_URL) and no --repo (a database template's
 * `command: [backup]` passes no flags), or, for recover / update-recovery-status, its Recovery
 * ($RECOVERY_NAME with $STASH_FUNCTIONS_URL).
 */
function inCluster(command: Command, p: Parsed, env: CliIo['env']): boolean {
  if (p.values['backup-name'] !== undefined || p.values['recovery-name'] !== undefined) return true;
  if (p.values.repo !== undefined || !env.STASH_FUNCTIONS_URL?.trim()) return false;
  const recovery = command === 'recover' || command === 'update-recovery-status';
  return recovery ? Boolean(env.RECOVERY_NAME?.trim()) : Boolean(env.BACKUP_NAME?.trim());
}

export async function main(argv: readonly string[], options: MainOptions = {}): Promise<number> {
  const io = options.io ?? defaultIo();
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    io.stdout.write(`${usage.stash}\n`);
    return name === undefined ? 2 : 0;
  }
  if (!isCommand(name)) {
    io.stderr.write(`stash: unknown command "${name}"; commands: init, backup, recover, snapshots, forget, check, unlock, update-repo-status, update-recovery-status (see stash --help)\n`);
    return 2;
  }
  const command: Command = name;
  const json = rest.includes('--json');
  try {
    const parsed = parseCommand(command, rest);
    if (parsed.values.help === true) {
      io.stdout.write(`${usage[command]}\n`);
      return 0;
    }
    // Logs go to stderr (stdout carries results); quiet for people unless STASH_LOG_LEVEL says otherwise.
    const logger = options.logger ?? pino({ level: io.env.STASH_LOG_LEVEL ?? (inCluster(command, parsed, io.env) ? 'info' : 'warn') }, pino.destination(2));
    const out = createOutput(io, json);
    const signal = options.signal ?? new AbortController().signal;
    if (inCluster(command, parsed, io.env)) {
      if (parsed.values.repo !== undefined) throw new UsageError(`give either --repo (standalone) or --backup-name/--recovery-name (in a cluster), not both`);
      // Loaded only in a cluster: it brings the Kubernetes client, which standalone runs do not need.
      const { runInCluster } = await import('./incluster.ts');
      await runInCluster(command, parsed, { io, out, logger, signal });
    } else {
      const { runStandalone } = await import('./standalone.ts');
      await runStandalone(command, parsed, { io, out, logger, signal });
    }
    return 0;
  } catch (err) {
    return reportError(io, json, command, err);
  }
}

/** The process entry (agent/bin/stash.js): SIGTERM/SIGINT cancel the running restic cleanly (it releases its lock). */
export async function runCli(): Promise<void> {
  const controller = new AbortController();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => controller.abort());
  process.exitCode = await main(process.argv.slice(2), { signal: controller.signal });
}
