/**
 * In-cluster mode: `stash <command> --backup-name=B` in the backup sidecar or a database Job.
 *
 * The agent has no rights on the Kubernetes API (docs/architecture.md, "The agent reports through
 * the functions"). It gets the storage Secret as files (STASH_REPOSITORY_SECRET_DIR), its settings
 * in its environment (NAMESPACE, BACKUP_NAME, STASH_HOST, TRIGGER_NAME in a Job, DB_* for a
 * database) and a projected token (STASH_TOKEN_FILE) it presents to handle-trigger
 * (STASH_FUNCTIONS_URL): it claims a run, holds the lease while it works, and reports the outcome
 * (snapshot, bytes, files, repository stats); handle-trigger writes every status and Event.
 *
 * - backup in a sidecar (no TRIGGER_NAME): a loop of claims until SIGTERM;
 * - backup in a database Job (TRIGGER_NAME): one claim; exit 0 when the run Succeeded or there was
 *   nothing to claim, non-zero when it Failed or the lease was lost;
 * - init: checks the Secret files and the token, no API call and no claim (backup creates the
 *   repository when it is missing);
 * - update-repo-status: pushes the metrics file the backup step wrote to the Pushgateway.
 * - recover / update-recovery-status: through handle-trigger's recovery protocol as well
 *   (recovery-protocol.ts); without a token file, the direct-API fallback (incluster-recovery.ts).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { ClaimedRun, RunOutcome } from '../../shared/agent-protocol.ts';
import { resticTargetFor } from '../backends/backends.ts';
import { createFunctionsClient, runClaimedRun, sidecarLoop } from '../cluster/index.ts';
import type { RunResult } from '../cluster/index.ts';
import { backupDatabase, connectionFromFlags } from '../db/index.ts';
import { backupRegistry, metricsFileName, pushMetricsText, writeMetricsFile } from '../metrics/metrics.ts';
import { createRestic, RepositoryDamagedError } from '../restic/restic.ts';
import type { ResticDriver } from '../restic/restic.ts';
import type { BackupSummary } from '../restic/types.ts';
import { forgetArgs } from '../retention/retention.ts';
import { backupDirectories } from '../volume/volume.ts';
import { UsageError, str } from './args.ts';
import type { Command, Parsed } from './args.ts';
import {
  AgentConfigError, agentSettings, databaseFlagsFromEnv, DEFAULT_JOB_METRICS_FILE, metricsLocation, optionalUrl, secretKeysFrom, succeeded, targetLabel, volumeFacts,
} from './agent-env.ts';
import type { AgentSettings, RunFacts } from './agent-env.ts';
import { runRecoveryCommand } from './incluster-recovery.ts';
import type { CliIo, Output } from './output.ts';

export interface ClusterContext {
  readonly io: CliIo;
  readonly out: Output;
  readonly logger: Logger;
  readonly signal: AbortSignal;
}

/** The run ended Failed or was lost: the process exits non-zero (a database Job then fails). */
export class RunFailedError extends Error {
  override name = 'RunFailedError';
}

/** Reads the storage Secret the kubelet mounted as files (one per key). */
export async function readSecretDir(dir: string): Promise<Record<string, string>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    throw new AgentConfigError(`cannot read the storage Secret at ${dir} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); ` +
      'mount the Repository\'s storage Secret there (the Stash sidecar and database Job do) or set STASH_REPOSITORY_SECRET_DIR to where it is mounted');
  }
  const entries: { name: string; content: string }[] = [];
  for (const name of names) {
    if (name.startsWith('.')) continue;
    const file = path.join(dir, name);
    if (!(await stat(file)).isFile()) continue;
    entries.push({ name, content: await readFile(file, 'utf8') });
  }
  return secretKeysFrom(entries);
}

async function isDirectory(p: string): Promise<boolean | undefined> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return undefined;
  }
}

interface MetricsSettings {
  /** --metrics-dir (a directory or a file path), or the Job default. */
  readonly location: string | undefined;
  readonly pushgatewayUrl: string | undefined;
}

function metricsSettings(p: Parsed, env: CliIo['env'], inJob: boolean): MetricsSettings {
  const location = str(p, 'metrics-dir') ?? (inJob ? DEFAULT_JOB_METRICS_FILE : undefined);
  return { location, pushgatewayUrl: optionalUrl(p.values['pushgateway-url'], 'pushgateway-url') ?? optionalUrl(env.PUSH_GATEWAY_URL, 'pushgateway-url (from $PUSH_GATEWAY_URL)') };
}

async function metricsFile(location: string, namespace: string, backup: string): Promise<string> {
  const where = metricsLocation(location, metricsFileName('backup', namespace, backup), await isDirectory(location));
  return path.join(where.dir, where.fileName);
}

interface WorkContext {
  readonly settings: AgentSettings;
  readonly ctx: ClusterContext;
  readonly metrics: MetricsSettings;
  readonly cacheDir: string | undefined;
  readonly log: Logger;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Metrics are never worth failing a run for: a failure is logged. */
async function reportMetrics(w: WorkContext, run: ClaimedRun, success: boolean, durationSeconds: number, summary: BackupSummary | undefined): Promise<void> {
  const registry = backupRegistry({
    namespace: run.namespace, backup: run.backup, target: targetLabel(run), success, durationSeconds, ...(summary ? { summary } : {}),
  });
  try {
    if (w.metrics.location) {
      const file = await metricsFile(w.metrics.location, run.namespace, run.backup);
      await writeMetricsFile(registry, path.dirname(file), path.basename(file));
    }
    if (w.metrics.pushgatewayUrl) await pushMetricsText(await registry.metrics(), { url: w.metrics.pushgatewayUrl, namespace: run.namespace, name: run.backup, kind: 'backup' });
  } catch (error) {
    w.log.warn({ err: message(error), backup: run.backup }, 'could not report metrics');
  }
}

/** One claimed run: the backup itself, retention, repository stats, metrics. */
async function doRun(w: WorkContext, run: ClaimedRun, signal: AbortSignal): Promise<RunOutcome> {
  const started = Date.now();
  const log = w.log.child({ namespace: run.namespace, backup: run.backup, trigger: run.trigger, host: run.host });
  let summary: BackupSummary | undefined;
  try {
    const secret = await readSecretDir(w.settings.secretDir);
    const target = resticTargetFor(run.repository.backend, secret);
    const restic: ResticDriver = createRestic(target, { logger: log, ...(w.cacheDir ? { cacheDir: w.cacheDir } : {}) });
    if (!(await restic.exists())) {
      await restic.init();
      log.info({ repository: restic.repository }, 'created the repository');
    }

    let facts: Pick<RunFacts, 'snapshotId' | 'bytesAdded' | 'files'>;
    if (run.targetKind === 'AppBinding') {
      const conn = connectionFromFlags(databaseFlagsFromEnv(w.ctx.io.env, run.args), w.ctx.io.env);
      const result = await backupDatabase(restic, conn, { host: run.hostname, tags: run.tags, signal });
      summary = result.snapshots.at(-1)?.summary;
      facts = {
        snapshotId: summary?.snapshotId ?? '',
        bytesAdded: result.snapshots.reduce((n, s) => n + s.summary.dataAdded, 0),
        files: result.snapshots.reduce((n, s) => n + s.summary.totalFilesProcessed, 0),
      };
    } else {
      summary = await backupDirectories(restic, {
        paths: run.targetDirectories, excludes: run.excludes, host: run.hostname, tags: run.tags, signal,
        onProgress: (pr) => w.ctx.out.progress(pr),
      });
      w.ctx.out.endProgress();
      facts = volumeFacts(summary);
    }
    log.info({ snapshotId: facts.snapshotId, bytesAdded: facts.bytesAdded, files: facts.files }, 'snapshot saved');

    // Retention after the snapshot: a failure is a warning (the next run retries it), not a failed run.
    let forgotten = 0;
    const policyArgs = run.retentionPolicy ? forgetArgs(run.retentionPolicy, { tags: run.tags, host: run.hostname }) : undefined;
    if (policyArgs) {
      try {
        const groups = await restic.forget(policyArgs, { signal });
        forgotten = groups.reduce((n, g) => n + g.remove.length, 0);
      } catch (error) {
        if (signal.aborted) throw error;
        log.warn({ err: message(error) }, 'retention failed after a successful backup; the next run retries it');
      }
    }

    let repository: RunFacts['repository'];
    try {
      const snapshots = await restic.snapshots();
      const stats = await restic.stats('raw-data');
      repository = { snapshotCount: snapshots.length, totalSize: stats.totalSize };
    } catch (error) {
      if (signal.aborted) throw error;
      log.warn({ err: message(error) }, 'could not read the repository\'s stats; reporting the run without them');
    }
    if (repository && run.checkRepository === true) repository = { ...repository, integrity: await checkIntegrity(restic, signal, log) };

    await reportMetrics(w, run, true, (Date.now() - started) / 1000, summary);
    w.ctx.out.info(`snapshot ${facts.snapshotId.slice(0, 8)} saved for Backup ${run.namespace}/${run.backup} (host ${run.hostname})${forgotten ? `, ${forgotten} old snapshot(s) forgotten` : ''}`);
    return succeeded({ ...facts, repository });
  } catch (error) {
    w.ctx.out.endProgress();
    await reportMetrics(w, run, false, (Date.now() - started) / 1000, undefined);
    throw error;
  }
}

function describe(result: Exclude<RunResult, { status: 'idle' }>): Record<string, unknown> {
  if (result.status === 'lost') return { trigger: result.run.trigger, host: result.run.host, status: 'lost', reason: result.reason };
  return {
    trigger: result.run.trigger, host: result.run.host, status: 'reported', phase: result.outcome.phase,
    ...(result.outcome.snapshotId ? { snapshotId: result.outcome.snapshotId } : {}),
    ...(result.outcome.error ? { error: result.outcome.error } : {}),
  };
}

async function runBackup(p: Parsed, ctx: ClusterContext, settings: AgentSettings): Promise<void> {
  const inJob = settings.trigger !== undefined;
  const w: WorkContext = {
    settings, ctx,
    metrics: metricsSettings(p, ctx.io.env, inJob),
    cacheDir: str(p, 'cache-dir') ?? ctx.io.env.STASH_CACHE_DIR,
    log: ctx.logger.child({ namespace: settings.namespace, backup: settings.backup, host: settings.host }),
  };
  if (!settings.functionsUrl) {
    throw new AgentConfigError('$STASH_FUNCTIONS_URL is not set: the agent claims and reports its runs through handle-trigger; set it to the function\'s URL (inject-sidecar and launch-db-job set it)');
  }
  const client = createFunctionsClient({ baseUrl: settings.functionsUrl, tokenFile: settings.tokenFile });
  const target = { namespace: settings.namespace, backup: settings.backup, host: settings.host };
  const work = (run: ClaimedRun, signal: AbortSignal): Promise<RunOutcome> => doRun(w, run, signal);

  if (inJob) {
    const result = await runClaimedRun(client, target, work, { signal: ctx.signal, log: w.log });
    if (result.status === 'idle') {
      ctx.out.info(`no pending run of Backup ${settings.namespace}/${settings.backup} for ${settings.host}: nothing to do`);
      ctx.out.result('backup', { backup: settings.backup, namespace: settings.namespace, status: 'idle' });
      return;
    }
    if (result.status === 'lost') throw new RunFailedError(`run ${result.run.trigger} of Backup ${settings.namespace}/${settings.backup} was taken from this agent: ${result.reason}`);
    if (result.outcome.phase !== 'Succeeded') {
      throw new RunFailedError(`run ${result.run.trigger} of Backup ${settings.namespace}/${settings.backup} failed: ${result.outcome.error ?? 'no message'}`);
    }
    ctx.out.result('backup', { backup: settings.backup, namespace: settings.namespace, ...describe(result) });
    return;
  }

  w.log.info({ functionsUrl: settings.functionsUrl }, 'backup sidecar started: claiming runs');
  await sidecarLoop(client, target, work, {
    signal: ctx.signal,
    log: w.log,
    onRun: (result) => ctx.out.event('run', describe(result)),
  });
  w.log.info({}, 'backup sidecar stopped');
  ctx.out.result('backup', { backup: settings.backup, namespace: settings.namespace, status: 'stopped' });
}

/** init: the Secret files hold a password and the token is there; the repository is created by backup when missing. */
async function runInit(ctx: ClusterContext, settings: AgentSettings): Promise<void> {
  const secret = await readSecretDir(settings.secretDir);
  if (!secret.RESTIC_PASSWORD) {
    throw new AgentConfigError(`the storage Secret mounted at ${settings.secretDir} has no RESTIC_PASSWORD key; add the repository password to the Repository's storage Secret under RESTIC_PASSWORD`);
  }
  try {
    const token = await readFile(settings.tokenFile, 'utf8');
    if (token.trim() === '') throw new Error('empty');
  } catch (error) {
    throw new AgentConfigError(`the ServiceAccount token at ${settings.tokenFile} cannot be read (${(error as NodeJS.ErrnoException).code ?? message(error)}); mount a projected serviceAccountToken volume with audience "stash" there or set STASH_TOKEN_FILE`);
  }
  ctx.out.info(`storage Secret (${Object.keys(secret).length} key(s)) and token present; the backup step creates the repository if it is missing`);
  ctx.out.result('init', { backup: settings.backup, namespace: settings.namespace, secretKeys: Object.keys(secret).sort(), checked: true });
}

/** update-repo-status: the report already carried the repository stats; push the backup step's metrics file. */
async function runUpdateRepoStatus(p: Parsed, ctx: ClusterContext, settings: AgentSettings): Promise<void> {
  const metrics = metricsSettings(p, ctx.io.env, true);
  if (!metrics.pushgatewayUrl) {
    ctx.out.info('the Backup and Repository status were reported to handle-trigger by the backup step; no --pushgateway-url given, so there is nothing to push');
    ctx.out.result('update-repo-status', { backup: settings.backup, namespace: settings.namespace, pushed: false });
    return;
  }
  const file = await metricsFile(metrics.location ?? DEFAULT_JOB_METRICS_FILE, settings.namespace, settings.backup);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new AgentConfigError(`cannot read the metrics file ${file} the backup step should have written (${(error as NodeJS.ErrnoException).code ?? message(error)}); ` +
      'give this step and the backup step the same --metrics-dir on a volume they share (the Job\'s /tmp emptyDir)');
  }
  await pushMetricsText(text, { url: metrics.pushgatewayUrl, namespace: settings.namespace, name: settings.backup, kind: 'backup' });
  ctx.out.info(`pushed ${file} to the Pushgateway at ${metrics.pushgatewayUrl}; the status was reported by the backup step`);
  ctx.out.result('update-repo-status', { backup: settings.backup, namespace: settings.namespace, pushed: true, file });
}

export async function runInCluster(command: Command, p: Parsed, ctx: ClusterContext): Promise<void> {
  switch (command) {
    case 'recover':
    case 'update-recovery-status':
      return runRecoveryCommand(command, p, ctx);
    case 'init':
      return runInit(ctx, agentSettings(ctx.io.env, str(p, 'backup-name')));
    case 'backup':
      return runBackup(p, ctx, agentSettings(ctx.io.env, str(p, 'backup-name')));
    case 'update-repo-status':
      return runUpdateRepoStatus(p, ctx, agentSettings(ctx.io.env, str(p, 'backup-name')));
    default:
      throw new UsageError('this command has no in-cluster mode; use --repo and --password-file');
  }
}

/**
 * `restic check` (structure, no data read), asked for by handle-trigger once a day per repository:
 * True when clean, False when restic finds damage, Unknown when the check itself could not run.
 */
async function checkIntegrity(restic: ResticDriver, signal: AbortSignal, log: Logger): Promise<'True' | 'False' | 'Unknown'> {
  try {
    await restic.check({ signal });
    return 'True';
  } catch (error) {
    if (signal.aborted) throw error;
    if (error instanceof RepositoryDamagedError) {
      log.error({ err: message(error) }, 'the repository check found damage');
      return 'False';
    }
    log.warn({ err: message(error) }, 'the repository check could not run; integrity stays unknown');
    return 'Unknown';
  }
}
