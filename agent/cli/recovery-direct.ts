/**
 * The direct-API fallback of in-cluster recovery (`stash recover --recovery-name=R`, `stash
 * update-recovery-status`), which incluster-recovery.ts loads only when there is no agent token:
 * it reads the Recovery, its Repository, the storage Secret and (for databases) the AppBinding and
 * its Secret from the Kubernetes API ($KUBECONFIG or in-cluster config), and patches the
 * Recovery's status itself. It therefore NEEDS A ROLE the agent otherwise never gets: get on
 * recoveries, repositories, secrets, appbindings; patch on recoveries/status; create on events.
 * It is kept for running the agent by hand with a kubeconfig (and its tests); Stash's own pods
 * never use it, and never load it (nor @kubernetes/client-node, which it needs).
 */
import { readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig, V1Secret } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { API_VERSION, APPCATALOG_API_VERSION, appBinding, parseObject, recovery as recoverySchema, repository as repositorySchema } from '../../shared/api/index.ts';
import type { Recovery, Repository } from '../../shared/api/index.ts';
import { ConflictError, emitEvent, getObject, kubeCall, loadKubeConfig, patchStatus } from '../../shared/kube/index.ts';
import { resticTargetFor } from '../backends/backends.ts';
import { connectionFromAppBinding, recoverDatabase } from '../db/index.ts';
import { metricsFileName, pushMetrics, recoveryRegistry, writeMetricsFile } from '../metrics/metrics.ts';
import { createRestic } from '../restic/restic.ts';
import type { ResticDriver } from '../restic/restic.ts';
import { recoverDirectories } from '../volume/volume.ts';
import { UsageError, boolString, required, str } from './args.ts';
import type { Command, Parsed } from './args.ts';
import { agentNamespace, decodeSecret, recoveryPlan, SERVICE_ACCOUNT_NAMESPACE_FILE } from './cluster-plan.ts';
import type { RepositoryRef } from './cluster-plan.ts';
import { metricsLocation, optionalUrl } from './agent-env.ts';
import type { ClusterContext } from './incluster.ts';

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
  const pushgatewayUrl = optionalUrl(p.values['pushgateway-url'], 'pushgateway-url');
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

async function isDirectory(p: string): Promise<boolean | undefined> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return undefined;
  }
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
    if (env.metricsDir) {
      const where = metricsLocation(env.metricsDir, metricsFileName(kind, env.namespace, name), await isDirectory(env.metricsDir));
      await writeMetricsFile(registry, where.dir, where.fileName);
    }
    if (env.pushgatewayUrl) await pushMetrics(registry, { url: env.pushgatewayUrl, namespace: env.namespace, name, kind });
  } catch (err) {
    env.log.warn({ err: (err as Error).message, kind, name }, 'could not report metrics');
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

/** The fallback: the recovery or its report through the Kubernetes API. */
export async function runDirectRecovery(command: Extract<Command, 'recover' | 'update-recovery-status'>, p: Parsed, ctx: ClusterContext): Promise<void> {
  const env = await clusterEnv(p, ctx);
  if (command === 'recover') return runRecover(p, ctx, env);
  const name = required(p, 'recovery-name', 'the Recovery to report on');
  const r = await read<Recovery>(env, recoverySchema, 'Recovery', API_VERSION, env.namespace, name, 'check --recovery-name and $NAMESPACE');
  // The recovery itself records its result (stash recover); this command reports what it recorded.
  ctx.out.info(`Recovery ${env.namespace}/${name}: ${(r.status?.recoveredHosts ?? []).map((h) => `${h.host} ${h.phase}`).join(', ') || 'nothing recorded yet'}`);
  ctx.out.result('update-recovery-status', { recovery: name, recoveredHosts: r.status?.recoveredHosts ?? [] });
}
