/**
 * In-cluster mode: `stash <command> --backup-name=B | --recovery-name=R`. Each command is
 * resolve (read the Backup/Recovery, its Repository and storage Secret; map them with the pure
 * cluster-plan.ts and agent/backends) -> run (agent/volume, agent/db, agent/retention through the
 * restic driver) -> report (status fields the agent owns, an Event, metrics).
 *
 * The agent writes only run results: Backup status lastBackupTime / lastSuccessfulBackupTime /
 * lastSnapshotId / lastBackupSize; Repository status snapshotCount / totalSize / lastBackupTime /
 * lastCheckTime / integrity; Recovery status recoveredHosts[this host] (+ snapshotId, stats).
 * Phases and conditions belong to the functions.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig, V1Secret } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { API_VERSION, APPCATALOG_API_VERSION, appBinding, backup as backupSchema, parseObject, recovery as recoverySchema, repository as repositorySchema } from '../../shared/api/index.ts';
import type { Backup, Recovery, Repository } from '../../shared/api/index.ts';
import { ConflictError, emitEvent, getObject, kubeCall, loadKubeConfig, patchStatus } from '../../shared/kube/index.ts';
import { resticTargetFor } from '../backends/backends.ts';
import { backupDatabase, connectionFromAppBinding, recoverDatabase } from '../db/index.ts';
import { createRestic } from '../restic/restic.ts';
import type { ResticDriver } from '../restic/restic.ts';
import { backupDirectories, recoverDirectories } from '../volume/volume.ts';
import { UsageError, boolString, required, str } from './args.ts';
import type { Command, Parsed } from './args.ts';
import { agentNamespace, backupPlan, decodeSecret, recoveryPlan, SERVICE_ACCOUNT_NAMESPACE_FILE } from './cluster-plan.ts';
import { backupRegistry, metricsFileName, pushMetrics, recoveryRegistry, writeMetricsFile } from '../metrics/metrics.ts';
import type { Registry } from 'prom-client';
import type { BackupSummary } from '../restic/types.ts';
import type { RepositoryRef } from './cluster-plan.ts';
import type { CliIo, Output } from './output.ts';

export interface ClusterContext {
  readonly io: CliIo;
  readonly out: Output;
  readonly logger: Logger;
  readonly signal: AbortSignal;
}

const FIELD_MANAGER = 'stash-agent';
const CONTROLLER = 'stash.appscode.com/agent';

interface Env {
  readonly kc: KubeConfig;
  readonly namespace: string;
  readonly log: Logger;
  readonly statusSubresource: boolean;
  readonly metricsDir: string | undefined;
  readonly pushgatewayUrl: string | undefined;
  readonly cacheDir: string | undefined;
}

async function clusterEnv(p: Parsed, ctx: ClusterContext): Promise<Env> {
  let saNamespace: string | undefined;
  try {
    saNamespace = await readFile(SERVICE_ACCOUNT_NAMESPACE_FILE, 'utf8');
  } catch {
    saNamespace = undefined;
  }
  const pushgatewayUrl = str(p, 'pushgateway-url');
  if (pushgatewayUrl && !/^https?:\/\//.test(pushgatewayUrl)) throw new UsageError(`--pushgateway-url must be an http:// or https:// URL, got "${pushgatewayUrl}"`);
  return {
    kc: loadKubeConfig(),
    namespace: agentNamespace(ctx.io.env, saNamespace),
    log: ctx.logger,
    statusSubresource: boolString(p, 'enable-status-subresource', true),
    metricsDir: str(p, 'metrics-dir'),
    pushgatewayUrl,
    cacheDir: str(p, 'cache-dir') ?? ctx.io.env.STASH_CACHE_DIR,
  };
}

async function read<T>(env: Env, schema: Parameters<typeof parseObject>[0], kind: string, apiVersion: string, namespace: string, name: string, hint: string): Promise<T> {
  const obj = await getObject(env.kc, { apiVersion, kind, namespace, name });
  if (!obj) throw new UsageError(`${kind} ${namespace}/${name} not found; ${hint}`);
  return parseObject(schema, kind, obj) as T;
}

async function readSecret(env: Env, namespace: string, name: string, what: string): Promise<V1Secret> {
  const api = env.kc.makeApiClient(CoreV1Api);
  return kubeCall(`get Secret ${namespace}/${name} (${what})`, () => api.readNamespacedSecret({ namespace, name }));
}

/** The Repository and a restic driver for it (password and keys from its storage Secret). */
async function openRepository(env: Env, ref: RepositoryRef): Promise<{ repository: Repository; restic: ResticDriver }> {
  const repository = await read<Repository>(env, repositorySchema, 'Repository', API_VERSION, ref.namespace, ref.name, 'create it or fix spec.repository');
  const secretName = repository.spec.backend.storageSecretName;
  const secret = await readSecret(env, ref.namespace, secretName, `storage Secret of Repository ${ref.name}`);
  const target = resticTargetFor(repository.spec.backend, decodeSecret(secret));
  return { repository, restic: createRestic(target, { logger: env.log, ...(env.cacheDir ? { cacheDir: env.cacheDir } : {}) }) };
}

async function patchRunStatus(env: Env, ref: { kind: string; namespace: string; name: string }, status: Record<string, unknown>): Promise<void> {
  if (!env.statusSubresource) {
    env.log.info({ ...ref }, 'status subresource disabled (--enable-status-subresource=false): not writing status');
    return;
  }
  await patchStatus(env.kc, { apiVersion: API_VERSION, ...ref }, status, { fieldManager: FIELD_MANAGER });
}

async function event(env: Env, obj: { kind: string; namespace: string; name: string; uid?: string | undefined }, type: 'Normal' | 'Warning', reason: string, message: string, action: string): Promise<void> {
  try {
    await emitEvent(env.kc, { apiVersion: API_VERSION, kind: obj.kind, namespace: obj.namespace, name: obj.name, ...(obj.uid ? { uid: obj.uid } : {}) }, { type, reason, message, action }, CONTROLLER);
  } catch (err) {
    env.log.warn({ err: (err as Error).message, reason }, 'could not record Event');
  }
}

/** Metrics through agent/metrics: a file in --metrics-dir and/or a push to --pushgateway-url. A metrics failure is logged, never fails the run. */
async function reportMetrics(env: Env, kind: 'backup' | 'recovery', name: string, registry: Registry): Promise<void> {
  try {
    if (env.metricsDir) await writeMetricsFile(registry, env.metricsDir, metricsFileName(kind, env.namespace, name));
    if (env.pushgatewayUrl) await pushMetrics(registry, { url: env.pushgatewayUrl, namespace: env.namespace, name, kind });
  } catch (err) {
    env.log.warn({ err: (err as Error).message, kind, name }, 'could not report metrics');
  }
}

async function refreshRepositoryStatus(env: Env, repository: Repository, restic: ResticDriver, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const snapshots = await restic.snapshots();
  const stats = await restic.stats('raw-data');
  const status = { snapshotCount: snapshots.length, totalSize: stats.totalSize, ...extra };
  await patchRunStatus(env, { kind: 'Repository', namespace: repository.metadata.namespace ?? env.namespace, name: repository.metadata.name ?? '' }, status);
  return status;
}

function backupName(p: Parsed): string {
  return required(p, 'backup-name', 'the Backup this agent serves');
}

async function runBackup(p: Parsed, ctx: ClusterContext, env: Env): Promise<void> {
  const name = backupName(p);
  const b = await read<Backup>(env, backupSchema, 'Backup', API_VERSION, env.namespace, name, 'check --backup-name and $NAMESPACE');
  const plan = backupPlan(b, ctx.io.env, os.hostname());
  const ref = { kind: 'Backup', namespace: env.namespace, name, uid: b.metadata.uid as string | undefined };
  const targetLabel = `${b.spec.targetRef.kind.toLowerCase()}/${b.spec.targetRef.name}`;
  const started = new Date();
  const log = env.log.child({ namespace: env.namespace, backup: name, host: plan.host });
  try {
    const { repository, restic } = await openRepository(env, plan.repository);
    await restic.init();
    let snapshotId: string;
    let dataAdded: number;
    let files = 0;
    let bytes = 0;
    let summary: BackupSummary | undefined;
    if (plan.type === 'volume') {
      const s = await backupDirectories(restic, { paths: plan.paths, excludes: plan.excludes, host: plan.host, tags: plan.tags, onProgress: (pr) => ctx.out.progress(pr), signal: ctx.signal });
      ctx.out.endProgress();
      summary = s;
      snapshotId = s.snapshotId;
      dataAdded = s.dataAdded;
      files = s.totalFilesProcessed;
      bytes = s.totalBytesProcessed;
    } else {
      const binding = await read<{ metadata: { name?: string; namespace?: string }; spec: { secret?: { name: string } } }>(
        env, appBinding, 'AppBinding', APPCATALOG_API_VERSION, plan.appBinding.namespace, plan.appBinding.name, 'fix spec.targetRef');
      const secret = binding.spec.secret ? await readSecret(env, plan.appBinding.namespace, binding.spec.secret.name, `login Secret of AppBinding ${plan.appBinding.name}`) : undefined;
      const conn = connectionFromAppBinding(binding as Parameters<typeof connectionFromAppBinding>[0], secret ? { data: secret.data ?? {} } : undefined, plan.databases);
      const r = await backupDatabase(restic, conn, { host: plan.host, tags: plan.tags, signal: ctx.signal });
      const last = r.snapshots.at(-1);
      summary = last?.summary;
      snapshotId = last?.summary.snapshotId ?? '';
      dataAdded = r.snapshots.reduce((n, s) => n + s.summary.dataAdded, 0);
      files = r.snapshots.length;
      bytes = r.snapshots.reduce((n, s) => n + s.summary.totalBytesProcessed, 0);
    }
    const now = new Date().toISOString();
    await patchRunStatus(env, ref, { lastBackupTime: now, lastSuccessfulBackupTime: now, lastSnapshotId: snapshotId, lastBackupSize: dataAdded });
    // Retention after the snapshot is safe: a failure here is a warning (the next run retries it), not a failed backup.
    let removed = 0;
    let retentionError: string | undefined;
    if (plan.forget) {
      try {
        const groups = await restic.forget(plan.forget, { signal: ctx.signal });
        removed = groups.reduce((n, g) => n + g.remove.length, 0);
      } catch (err) {
        retentionError = err instanceof Error ? err.message : String(err);
        log.warn({ err: retentionError }, 'retention failed after a successful backup');
        await event(env, ref, 'Warning', 'RetentionFailed', `host ${plan.host}: snapshot ${snapshotId.slice(0, 8)} was saved, but forgetting old snapshots failed: ${retentionError}`, 'Retention');
      }
    }
    await refreshRepositoryStatus(env, repository, restic, { lastBackupTime: now });
    await event(env, ref, 'Normal', 'BackupSucceeded', `host ${plan.host}: snapshot ${snapshotId.slice(0, 8)}, ${dataAdded} bytes added${removed ? `, ${removed} old snapshot(s) forgotten` : ''}`, 'Backup');
    await reportMetrics(env, 'backup', name, backupRegistry({
      namespace: env.namespace, backup: name, target: targetLabel, success: true, durationSeconds: (Date.now() - started.getTime()) / 1000,
      ...(summary ? { summary } : {}),
    }));
    log.info({ snapshotId, dataAdded, files, bytes, removed }, 'backup succeeded');
    ctx.out.info(`snapshot ${snapshotId.slice(0, 8)} saved for Backup ${env.namespace}/${name} (host ${plan.host})`);
    ctx.out.result('backup', { backup: name, namespace: env.namespace, host: plan.host, snapshotId, dataAdded, filesProcessed: files, bytesProcessed: bytes, forgotten: removed, ...(retentionError ? { retentionError } : {}) });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    try {
      await patchRunStatus(env, ref, { lastBackupTime: new Date().toISOString() });
    } catch (patchErr) {
      log.warn({ err: (patchErr as Error).message }, 'could not record the failed run in the Backup status');
    }
    await event(env, ref, 'Warning', 'BackupFailed', `host ${plan.host}: ${message}`, 'Backup');
    await reportMetrics(env, 'backup', name, backupRegistry({
      namespace: env.namespace, backup: name, target: targetLabel, success: false, durationSeconds: (Date.now() - started.getTime()) / 1000,
    }));
    throw err;
  }
}

/** Replaces this host's entry in status.recoveredHosts (read-modify-write guarded by resourceVersion). */
async function recordRecoveredHost(env: Env, name: string, entry: Record<string, unknown>, extra: Record<string, unknown>): Promise<void> {
  if (!env.statusSubresource) return;
  for (let attempt = 0; ; attempt++) {
    const current = await read<Recovery & { metadata: { resourceVersion?: string } }>(env, recoverySchema, 'Recovery', API_VERSION, env.namespace, name, 'it was deleted while recovering');
    const hosts = (current.status?.recoveredHosts ?? []).filter((h) => h.host !== entry.host);
    try {
      await patchStatus(env.kc, { apiVersion: API_VERSION, kind: 'Recovery', namespace: env.namespace, name },
        { recoveredHosts: [...hosts, entry], ...extra },
        { fieldManager: FIELD_MANAGER, ...(current.metadata.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}) });
      return;
    } catch (err) {
      if (!(err instanceof ConflictError) || attempt >= 4) throw err;
    }
  }
}

async function runRecover(p: Parsed, ctx: ClusterContext, env: Env): Promise<void> {
  const name = required(p, 'recovery-name', 'the Recovery this agent carries out');
  const r = await read<Recovery>(env, recoverySchema, 'Recovery', API_VERSION, env.namespace, name, 'check --recovery-name and $NAMESPACE');
  const plan = recoveryPlan(r, ctx.io.env, os.hostname());
  const ref = { kind: 'Recovery', namespace: env.namespace, name, uid: r.metadata.uid as string | undefined };
  const to = r.spec.recoverTo.workload;
  const targetLabel = to ? `${to.kind.toLowerCase()}/${to.name}` : `volume${r.spec.recoverTo.volume?.mountPath ?? ''}`;
  const started = Date.now();
  try {
    const { restic } = await openRepository(env, plan.repository);
    let snapshotId: string;
    let files = 0;
    let bytes = 0;
    if (plan.type === 'volume') {
      const res = await recoverDirectories(restic, {
        snapshot: plan.snapshot, host: plan.host, target: plan.target, paths: plan.include, ...(plan.from ? { from: plan.from } : {}),
        // Recovery into a workload or a volume is a rollback to the snapshot within the given paths.
        mode: 'rollback', onProgress: (pr) => ctx.out.progress(pr), signal: ctx.signal,
      });
      ctx.out.endProgress();
      snapshotId = res.snapshot.id;
      files = res.summary.filesRestored;
      bytes = res.summary.bytesRestored;
    } else {
      const binding = await read<{ metadata: { name?: string; namespace?: string }; spec: { secret?: { name: string } } }>(
        env, appBinding, 'AppBinding', APPCATALOG_API_VERSION, plan.appBinding.namespace, plan.appBinding.name, 'fix spec.recoverTo.workload');
      const secret = binding.spec.secret ? await readSecret(env, plan.appBinding.namespace, binding.spec.secret.name, `login Secret of AppBinding ${plan.appBinding.name}`) : undefined;
      const conn = connectionFromAppBinding(binding as Parameters<typeof connectionFromAppBinding>[0], secret ? { data: secret.data ?? {} } : undefined);
      const res = await recoverDatabase(restic, conn, { ...(plan.snapshot !== 'latest' ? { snapshot: plan.snapshot } : {}), host: plan.host });
      snapshotId = res.restored.at(-1)?.snapshotId ?? '';
      files = res.restored.length;
    }
    const now = new Date().toISOString();
    await recordRecoveredHost(env, name, { host: plan.host, phase: 'Succeeded', snapshotId, completionTime: now, files, bytes },
      { snapshotId, stats: { files, bytes, durationSeconds: (Date.now() - started) / 1000 } });
    await event(env, ref, 'Normal', 'RecoverySucceeded', `host ${plan.host}: restored snapshot ${snapshotId.slice(0, 8)} (${files} files, ${bytes} bytes)`, 'Recover');
    await reportMetrics(env, 'recovery', name, recoveryRegistry({
      namespace: env.namespace, recovery: name, target: targetLabel, success: true, durationSeconds: (Date.now() - started) / 1000,
      filesRestored: files, bytesRestored: bytes, finishedAt: new Date(),
    }));
    ctx.out.info(`restored snapshot ${snapshotId.slice(0, 8)} for Recovery ${env.namespace}/${name} (host ${plan.host})`);
    ctx.out.result('recover', { recovery: name, namespace: env.namespace, host: plan.host, snapshotId, files, bytes });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    try {
      await recordRecoveredHost(env, name, { host: plan.host, phase: 'Failed', completionTime: new Date().toISOString(), error: message }, {});
    } catch (patchErr) {
      env.log.warn({ err: (patchErr as Error).message }, 'could not record the failed recovery in the Recovery status');
    }
    await event(env, ref, 'Warning', 'RecoveryFailed', `host ${plan.host}: ${message}`, 'Recover');
    await reportMetrics(env, 'recovery', name, recoveryRegistry({
      namespace: env.namespace, recovery: name, target: targetLabel, success: false, durationSeconds: (Date.now() - started) / 1000,
    }));
    throw err;
  }
}

export async function runInCluster(command: Command, p: Parsed, ctx: ClusterContext): Promise<void> {
  const env = await clusterEnv(p, ctx);
  switch (command) {
    case 'init': {
      const b = await read<Backup>(env, backupSchema, 'Backup', API_VERSION, env.namespace, backupName(p), 'check --backup-name and $NAMESPACE');
      const ref = { namespace: b.spec.repository.namespace ?? env.namespace, name: b.spec.repository.name };
      const { restic } = await openRepository(env, ref);
      const existed = await restic.exists();
      if (!existed) await restic.init();
      ctx.out.info(existed ? `repository of Repository ${ref.namespace}/${ref.name} already exists` : `created the repository of Repository ${ref.namespace}/${ref.name}`);
      ctx.out.result('init', { repository: ref, created: !existed });
      return;
    }
    case 'backup':
      return runBackup(p, ctx, env);
    case 'recover':
      return runRecover(p, ctx, env);
    case 'update-repo-status': {
      const b = await read<Backup>(env, backupSchema, 'Backup', API_VERSION, env.namespace, backupName(p), 'check --backup-name and $NAMESPACE');
      const ref = { namespace: b.spec.repository.namespace ?? env.namespace, name: b.spec.repository.name };
      const { repository, restic } = await openRepository(env, ref);
      const status = await refreshRepositoryStatus(env, repository, restic);
      ctx.out.info(`Repository ${ref.namespace}/${ref.name}: ${String(status.snapshotCount)} snapshot(s), ${String(status.totalSize)} bytes`);
      ctx.out.result('update-repo-status', { repository: ref, status });
      return;
    }
    case 'update-recovery-status': {
      const name = required(p, 'recovery-name', 'the Recovery to report on');
      const r = await read<Recovery>(env, recoverySchema, 'Recovery', API_VERSION, env.namespace, name, 'check --recovery-name and $NAMESPACE');
      // The recovery itself records its result (stash recover); this command reports what it recorded.
      ctx.out.info(`Recovery ${env.namespace}/${name}: ${(r.status?.recoveredHosts ?? []).map((h) => `${h.host} ${h.phase}`).join(', ') || 'nothing recorded yet'}`);
      ctx.out.result('update-recovery-status', { recovery: name, recoveredHosts: r.status?.recoveredHosts ?? [] });
      return;
    }
    default:
      throw new UsageError(`this command has no in-cluster mode; use --repo and --password-file`);
  }
}
