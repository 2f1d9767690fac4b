/**
 * In-cluster recovery, the pure part: from a Recovery (shared/api) and the agent's environment
 * to what the agent will do on the direct-API fallback (recoveryPlan), the restore layout both
 * paths share (restoreLayout) and the host the protocol path claims (recoveryHost). No I/O.
 */
import path from 'node:path';
import type { Recovery } from '../../shared/api/index.ts';
import { replicaHost } from '../volume/identity.ts';

export class ClusterConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClusterConfigError';
  }
}

export const SERVICE_ACCOUNT_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/** $NAMESPACE, else the service account's namespace file's content (given by the caller). */
export function agentNamespace(env: Readonly<Record<string, string | undefined>>, serviceAccountNamespace: string | undefined): string {
  const ns = env.NAMESPACE?.trim() || serviceAccountNamespace?.trim();
  if (!ns) {
    throw new ClusterConfigError(`cannot tell the namespace: set $NAMESPACE (downward API metadata.namespace) or run in a Pod with a service account (${SERVICE_ACCOUNT_NAMESPACE_FILE})`);
  }
  return ns;
}

export interface RepositoryRef {
  readonly namespace: string;
  readonly name: string;
}

export interface VolumeRecoveryPlan {
  readonly type: 'volume';
  readonly repository: RepositoryRef;
  readonly snapshot: string;
  readonly host: string;
  /** restic restore arguments: target directory, the snapshot directory to take content from, includes. */
  readonly target: string;
  readonly from: string | undefined;
  readonly include: readonly string[];
}

export interface DatabaseRecoveryPlan {
  readonly type: 'database';
  readonly repository: RepositoryRef;
  readonly snapshot: string;
  readonly host: string;
  readonly appBinding: { readonly namespace: string; readonly name: string };
}

export type RecoveryPlan = VolumeRecoveryPlan | DatabaseRecoveryPlan;

/**
 * Where a recovery writes. Into a workload (init container): paths are restored in place
 * (target `/`, include = paths). Into a volume mounted at mountPath: one path's content lands in
 * mountPath; several paths keep their layout under mountPath. The recovering replica's host is
 * the snapshot host (`host-0` unless the agent is a StatefulSet/DaemonSet replica).
 */
export function recoveryPlan(recovery: Recovery, env: Readonly<Record<string, string | undefined>>, hostname: string): RecoveryPlan {
  const ns = recovery.metadata.namespace;
  const name = recovery.metadata.name;
  if (!ns || !name) throw new ClusterConfigError('the Recovery read from the API has no metadata.namespace or metadata.name');
  const spec = recovery.spec;
  const repository = { namespace: spec.repository.namespace ?? ns, name: spec.repository.name };
  const snapshot = spec.snapshot;
  const workload = spec.recoverTo.workload;
  const host = env.STASH_SNAPSHOT_HOST || replicaHost(workload?.kind ?? 'Deployment', env.POD_NAME || hostname, env.NODE_NAME);
  if (workload?.kind === 'AppBinding') {
    return { type: 'database', repository, snapshot, host, appBinding: { namespace: ns, name: workload.name } };
  }
  const paths = spec.paths ?? [];
  if (workload) {
    if (paths.length === 0) throw new ClusterConfigError(`Recovery ${ns}/${name}: spec.paths is empty; list the directories to recover into ${workload.kind} ${workload.name}`);
    return { type: 'volume', repository, snapshot, host, target: '/', from: undefined, include: paths };
  }
  const volume = spec.recoverTo.volume;
  if (!volume) throw new ClusterConfigError(`Recovery ${ns}/${name}: spec.recoverTo needs volume or workload`);
  const mount = volume.subPath ? path.posix.join(volume.mountPath, volume.subPath) : volume.mountPath;
  return { type: 'volume', repository, snapshot, host, ...restoreLayout(mount, paths) };
}

/**
 * restic restore arguments for a directory target (the protocol's `target.directory`): "/" (a
 * workload's init container) restores `paths` in place; a volume gets one path's content directly
 * (from = that path), several paths with their layout (include = paths); no paths = the whole snapshot.
 */
export function restoreLayout(directory: string, paths: readonly string[]): { target: string; from: string | undefined; include: readonly string[] } {
  const [only] = paths;
  if (directory !== '/' && paths.length === 1 && only) return { target: directory, from: only, include: [] };
  return { target: directory, from: undefined, include: [...paths] };
}

/**
 * The host a recovery agent claims (protocol path): $STASH_SNAPSHOT_HOST (a recovery Job has
 * host-0), else $STASH_HOST (as a sidecar is given it), else undefined: handle-trigger then claims
 * the pod's own host (host-<ordinal> of a StatefulSet pod, the node of a DaemonSet pod, else host-0),
 * which the agent cannot tell without knowing its workload's kind.
 */
export function recoveryHost(env: Readonly<Record<string, string | undefined>>): string | undefined {
  return env.STASH_SNAPSHOT_HOST?.trim() || env.STASH_HOST?.trim() || undefined;
}

/** Decodes a Secret's base64 `data` (and plain `stringData`) into strings. */
export function decodeSecret(secret: { data?: Readonly<Record<string, string>>; stringData?: Readonly<Record<string, string>> }): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(secret.data ?? {})) out[k] = Buffer.from(v, 'base64').toString('utf8');
  for (const [k, v] of Object.entries(secret.stringData ?? {})) out[k] = v;
  return out;
}
