/**
 * In-cluster recovery through handle-trigger (docs/recovery.md): `stash recover --recovery-name=R`
 * in a recovery Job or in the init container run-recovery puts into a workload. The agent has no
 * Kubernetes API rights: it claims the Recovery for its host (POST /agent/v1/recovery/claim with
 * the projected token in $STASH_TOKEN_FILE), recovers with restic using the storage Secret mounted
 * at $STASH_REPOSITORY_SECRET_DIR (and, for a database, the DB_* environment, as a database backup
 * Job does), and reports the outcome; handle-trigger writes the Recovery's status and Events.
 *
 * - 204 (IfNotRecovered, this host already recovered at the Recovery's generation): prints
 *   "already recovered" and exits 0, so an init container lets the app start;
 * - a failed recovery is reported Failed (with the error, secrets redacted) and exits non-zero;
 * - a report answered 409 (the Recovery changed while recovering) exits non-zero: the pod restarts
 *   and claims the new generation.
 * `update-recovery-status` has nothing left to do here (the recover step reported): it says so.
 */
import { readFile, stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { DEFAULT_FUNCTIONS_URL } from '../../shared/agent-pod.ts';
import type { ClaimedRecovery, RecoveryOutcome } from '../../shared/agent-protocol.ts';
import { resticTargetFor } from '../backends/backends.ts';
import { createFunctionsClient, FunctionsCallError, RecoveryChangedError } from '../cluster/index.ts';
import type { FunctionsClient, RecoveryReportAnswer } from '../cluster/index.ts';
import { connectionFromFlags, recoverDatabase } from '../db/index.ts';
import { metricsFileName, pushMetrics, recoveryRegistry, writeMetricsFile } from '../metrics/metrics.ts';
import { createRestic } from '../restic/restic.ts';
import { recoverDirectories } from '../volume/volume.ts';
import { UsageError, str } from './args.ts';
import type { Command, Parsed } from './args.ts';
import { AgentConfigError, databaseFlagsFromEnv, DEFAULT_SECRET_DIR, metricsLocation, optionalUrl } from './agent-env.ts';
import { agentNamespace, recoveryHost, restoreLayout, SERVICE_ACCOUNT_NAMESPACE_FILE } from './cluster-plan.ts';
import type { ClusterContext } from './incluster.ts';
import { readSecretDir, RunFailedError } from './incluster.ts';

export interface RecoverySettings {
  readonly namespace: string;
  readonly recovery: string;
  /** undefined: handle-trigger claims the pod's own host. */
  readonly host: string | undefined;
  readonly functionsUrl: string;
  readonly tokenFile: string;
  readonly secretDir: string;
}

const set = (v: string | undefined): string | undefined => (v === undefined || v.trim() === '' ? undefined : v.trim());

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function settingsFrom(p: Parsed, env: ClusterContext['io']['env'], tokenFile: string): Promise<RecoverySettings> {
  let saNamespace: string | undefined;
  try {
    saNamespace = await readFile(SERVICE_ACCOUNT_NAMESPACE_FILE, 'utf8');
  } catch {
    saNamespace = undefined;
  }
  const recovery = str(p, 'recovery-name') ?? set(env.RECOVERY_NAME);
  if (!recovery) throw new UsageError('--recovery-name is required (or $RECOVERY_NAME): the Recovery this agent carries out');
  const functionsUrl = set(env.STASH_FUNCTIONS_URL) ?? DEFAULT_FUNCTIONS_URL;
  if (!/^https?:\/\//.test(functionsUrl)) throw new AgentConfigError(`$STASH_FUNCTIONS_URL "${functionsUrl}" must be an http:// or https:// URL`);
  return {
    namespace: agentNamespace(env, saNamespace),
    recovery,
    host: recoveryHost(env),
    functionsUrl,
    tokenFile,
    secretDir: set(env.STASH_REPOSITORY_SECRET_DIR) ?? DEFAULT_SECRET_DIR,
  };
}

/** Replaces every secret value (at least 4 characters long) in `text` with ***. */
export function redact(text: string, secrets: readonly (string | undefined)[]): string {
  let out = text;
  for (const s of secrets) {
    const value = s?.trim();
    if (value && value.length >= 4) out = out.split(value).join('***');
  }
  return out;
}

interface Done {
  readonly outcome: RecoveryOutcome;
  readonly target: string;
}

/** Recovers what the claim says; never throws: a failure is a Failed outcome with a message free of secrets. */
async function recover(claim: ClaimedRecovery, s: RecoverySettings, ctx: ClusterContext, log: Logger, cacheDir: string | undefined): Promise<Done> {
  const started = Date.now();
  const secrets: (string | undefined)[] = [ctx.io.env.DB_PASSWORD];
  const targetLabel = claim.target.type === 'database' ? `appbinding/${claim.target.appBinding}` : `volume${claim.target.directory}`;
  try {
    const secret = await readSecretDir(s.secretDir);
    secrets.push(...Object.values(secret));
    const restic = createRestic(resticTargetFor(claim.repository.backend, secret), { logger: log, ...(cacheDir ? { cacheDir } : {}) });
    let outcome: RecoveryOutcome;
    if (claim.target.type === 'volume') {
      const layout = restoreLayout(claim.target.directory, claim.paths);
      const res = await recoverDirectories(restic, {
        snapshot: claim.snapshot, host: claim.host, target: layout.target, paths: layout.include, ...(layout.from ? { from: layout.from } : {}),
        // A recovery is a rollback to the snapshot within the given paths (files the snapshot lacks are removed).
        mode: 'rollback', onProgress: (pr) => ctx.out.progress(pr), signal: ctx.signal,
      });
      ctx.out.endProgress();
      outcome = {
        phase: 'Succeeded', snapshotId: res.snapshot.id, files: res.summary.filesRestored, bytes: res.summary.bytesRestored,
        durationSeconds: (Date.now() - started) / 1000,
      };
    } else {
      const conn = connectionFromFlags(databaseFlagsFromEnv(ctx.io.env, claim.args), ctx.io.env);
      secrets.push(conn.password);
      const res = await recoverDatabase(restic, conn, { ...(claim.snapshot !== 'latest' ? { snapshot: claim.snapshot } : {}), host: claim.host });
      const snapshotId = res.restored.at(-1)?.snapshotId;
      outcome = { phase: 'Succeeded', ...(snapshotId ? { snapshotId } : {}), files: res.restored.length, durationSeconds: (Date.now() - started) / 1000 };
    }
    return { outcome, target: targetLabel };
  } catch (error) {
    ctx.out.endProgress();
    const text = redact(message(error), secrets).slice(0, 4000);
    log.error({ err: text }, 'recovery failed');
    return { outcome: { phase: 'Failed', error: text, durationSeconds: (Date.now() - started) / 1000 }, target: targetLabel };
  }
}

/** Reports, retrying a call that could not get through (unreachable, 5xx) a few times. */
async function report(client: FunctionsClient, claim: ClaimedRecovery, outcome: RecoveryOutcome, log: Logger, retryMs = 2000, attempts = 5): Promise<RecoveryReportAnswer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.reportRecovery({ namespace: claim.namespace, recovery: claim.recovery, host: claim.host, generation: claim.generation, outcome });
    } catch (error) {
      const retryable = !(error instanceof RecoveryChangedError) && (!(error instanceof FunctionsCallError) || error.status === undefined || error.status >= 500);
      if (!retryable || attempt >= attempts) throw error;
      log.warn({ err: message(error), attempt }, 'could not report the recovery; retrying');
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  }
}

async function isDirectory(p: string): Promise<boolean | undefined> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return undefined;
  }
}

/** Metrics (--metrics-dir, --pushgateway-url or $PUSH_GATEWAY_URL) are never worth failing a recovery for. */
async function reportMetrics(p: Parsed, ctx: ClusterContext, s: RecoverySettings, done: Done, log: Logger): Promise<void> {
  const dir = str(p, 'metrics-dir');
  const url = optionalUrl(p.values['pushgateway-url'], 'pushgateway-url') ?? optionalUrl(ctx.io.env.PUSH_GATEWAY_URL, 'pushgateway-url (from $PUSH_GATEWAY_URL)');
  if (!dir && !url) return;
  const o = done.outcome;
  const registry = recoveryRegistry({
    namespace: s.namespace, recovery: s.recovery, target: done.target, success: o.phase === 'Succeeded', durationSeconds: o.durationSeconds ?? 0,
    ...(o.files !== undefined ? { filesRestored: o.files } : {}), ...(o.bytes !== undefined ? { bytesRestored: o.bytes } : {}), finishedAt: new Date(),
  });
  try {
    if (dir) {
      const where = metricsLocation(dir, metricsFileName('recovery', s.namespace, s.recovery), await isDirectory(dir));
      await writeMetricsFile(registry, where.dir, where.fileName);
    }
    if (url) await pushMetrics(registry, { url, namespace: s.namespace, name: s.recovery, kind: 'recovery' });
  } catch (error) {
    log.warn({ err: message(error) }, 'could not report metrics');
  }
}

async function runRecover(p: Parsed, ctx: ClusterContext, s: RecoverySettings): Promise<void> {
  const log = ctx.logger.child({ namespace: s.namespace, recovery: s.recovery, ...(s.host ? { host: s.host } : {}) });
  const client = createFunctionsClient({ baseUrl: s.functionsUrl, tokenFile: s.tokenFile });
  const claim = await client.claimRecovery({ namespace: s.namespace, recovery: s.recovery, ...(s.host ? { host: s.host } : {}) });
  if (claim === undefined) {
    ctx.out.info(`Recovery ${s.namespace}/${s.recovery}: ${s.host ?? 'this pod\'s host'} already recovered (recoveryPolicy IfNotRecovered): nothing to do`);
    ctx.out.result('recover', { recovery: s.recovery, namespace: s.namespace, ...(s.host ? { host: s.host } : {}), status: 'already-recovered' });
    return;
  }
  log.info({ host: claim.host, generation: claim.generation, target: claim.target.type, snapshot: claim.snapshot }, 'claimed the recovery');
  const done = await recover(claim, s, ctx, log, str(p, 'cache-dir') ?? ctx.io.env.STASH_CACHE_DIR);
  await reportMetrics(p, ctx, s, done, log);
  let answer: RecoveryReportAnswer;
  try {
    answer = await report(client, claim, done.outcome, log);
  } catch (error) {
    if (error instanceof RecoveryChangedError) {
      throw new RunFailedError(`Recovery ${s.namespace}/${s.recovery} changed while recovering host ${claim.host}; the result was dropped (restart to recover the new generation): ${error.message}`);
    }
    throw error;
  }
  const o = done.outcome;
  if (o.phase !== 'Succeeded') {
    throw new RunFailedError(`recovery of host ${claim.host} for Recovery ${s.namespace}/${s.recovery} failed (reported; the Recovery is ${answer.phase}): ${o.error ?? 'no message'}`);
  }
  ctx.out.info(`restored snapshot ${(o.snapshotId ?? '').slice(0, 8)} for Recovery ${s.namespace}/${s.recovery} (host ${claim.host}); the Recovery is ${answer.phase}`);
  ctx.out.result('recover', {
    recovery: s.recovery, namespace: s.namespace, host: claim.host, generation: claim.generation, status: 'reported', phase: answer.phase,
    ...(o.snapshotId ? { snapshotId: o.snapshotId } : {}), files: o.files ?? 0, bytes: o.bytes ?? 0,
  });
}

/** The protocol path of `recover` and `update-recovery-status` (incluster-recovery.ts picks it when the token file exists). */
export async function runRecoveryProtocol(command: Extract<Command, 'recover' | 'update-recovery-status'>, p: Parsed, ctx: ClusterContext, tokenFile: string): Promise<void> {
  const s = await settingsFrom(p, ctx.io.env, tokenFile);
  if (command === 'recover') return runRecover(p, ctx, s);
  // No API rights: the Recovery cannot be read here. The recover step already reported to handle-trigger.
  ctx.out.info(`Recovery ${s.namespace}/${s.recovery}: the recover step reported its outcome to handle-trigger, which wrote the Recovery's status; nothing to update`);
  ctx.out.result('update-recovery-status', { recovery: s.recovery, namespace: s.namespace, reported: true });
}
