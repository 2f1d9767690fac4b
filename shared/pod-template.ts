/**
 * Pure helpers for the agent containers Stash puts into a workload's pod template (the backup
 * sidecar of inject-sidecar, the recovery init container of run-recovery): which workloads,
 * which app mounts hold a directory, the agent's identity, the local repository volume, and
 * what a field manager owns in a pod template.
 */
import path from 'node:path/posix';
import type { V1Container, V1ObjectMeta, V1PodTemplateSpec, V1SecurityContext, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import type { Repository } from './api/index.ts';
import { LOCAL_REPOSITORY_VOLUME } from './agent-pod.ts';

/** Kinds whose pod template (spec.template) Stash injects into, and the apiVersion each is served at. */
export const WORKLOAD_KINDS: Readonly<Record<string, string>> = {
  Deployment: 'apps/v1',
  StatefulSet: 'apps/v1',
  DaemonSet: 'apps/v1',
  ReplicaSet: 'apps/v1',
  ReplicationController: 'v1',
};

/** A workload as read from the API (any of WORKLOAD_KINDS). */
export interface Workload {
  apiVersion: string;
  kind: string;
  metadata: V1ObjectMeta;
  spec?: { template?: V1PodTemplateSpec } & Record<string, unknown>;
}

/** True when `dir` is `mountPath` or below it. */
export function isAtOrBelow(dir: string, mountPath: string): boolean {
  const d = path.normalize(dir).replace(/\/+$/, '') || '/';
  const m = path.normalize(mountPath).replace(/\/+$/, '') || '/';
  return m === '/' || d === m || d.startsWith(`${m}/`);
}

export interface AppMount {
  container: V1Container;
  mount: V1VolumeMount;
}

/** The app container mount holding `dir`: the deepest mountPath at or above it, first container first. */
export function mountHolding(containers: readonly V1Container[], dir: string): AppMount | undefined {
  let best: AppMount | undefined;
  for (const container of containers) {
    for (const mount of container.volumeMounts ?? []) {
      if (!isAtOrBelow(dir, mount.mountPath)) continue;
      if (best === undefined || path.normalize(mount.mountPath).length > path.normalize(best.mount.mountPath).length) best = { container, mount };
    }
  }
  return best;
}

export type CoveringMounts =
  | { ok: true; mounts: V1VolumeMount[]; identitySource: V1Container | undefined }
  | { ok: false; directory: string; mounted: string[] };

/**
 * The app mounts that hold `directories`, each once, at the app's own mountPath with the app's
 * subPath (so a directory below a mount is at the same path in the agent as in the app), read-only
 * when `readOnly`; and the app container mounting the first directory (whose identity the agent
 * takes). Or the first directory no container mounts, with what they do mount.
 */
export function coveringMounts(containers: readonly V1Container[], directories: readonly string[], readOnly: boolean): CoveringMounts {
  const mounts: V1VolumeMount[] = [];
  let identitySource: V1Container | undefined;
  for (const directory of directories) {
    const held = mountHolding(containers, directory);
    if (held === undefined) {
      return { ok: false, directory, mounted: containers.flatMap((c) => (c.volumeMounts ?? []).map((m) => `${m.mountPath} (${c.name})`)) };
    }
    identitySource ??= held.container;
    if (mounts.some((m) => m.mountPath === held.mount.mountPath)) continue;
    const out: V1VolumeMount = { name: held.mount.name, mountPath: held.mount.mountPath, ...(readOnly ? { readOnly: true } : {}) };
    if (held.mount.subPath) out.subPath = held.mount.subPath;
    if (held.mount.subPathExpr) out.subPathExpr = held.mount.subPathExpr;
    mounts.push(out);
  }
  return { ok: true, mounts, identitySource };
}

const IDENTITY_FIELDS = ['runAsUser', 'runAsGroup', 'runAsNonRoot'] as const;

/**
 * An agent container's securityContext: the template's, then the identity (runAsUser, runAsGroup,
 * runAsNonRoot) of the app container that mounts the first target directory, so the agent handles
 * the files as the app does, then the containerAttributes.securityContext. Pod-level settings
 * (runAsUser, runAsGroup, fsGroup, supplementalGroups, runAsNonRoot) apply to the agent as to every
 * container of the pod, so they are not copied.
 */
export function agentSecurityContext(
  template: Record<string, unknown> | undefined, app: V1SecurityContext | undefined, attributes: Record<string, unknown> | undefined,
): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = { ...(template ?? {}) };
  for (const field of IDENTITY_FIELDS) {
    const value = app?.[field];
    if (value !== undefined && value !== null) out[field] = value;
  }
  Object.assign(out, attributes ?? {});
  return Object.keys(out).length === 0 ? undefined : out;
}

/** Deterministic key order for a plain JSON value (objects sorted by key). */
export function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = canonical(v);
    }
    return out;
  }
  return value;
}

/** The controller ownerReference of an object (an operator that rewrites its pod template), if any. */
export function controllerOf(metadata: V1ObjectMeta): { kind: string; name: string; apiVersion: string } | undefined {
  const owner = metadata.ownerReferences?.find((o) => o.controller === true);
  return owner ? { kind: owner.kind, name: owner.name, apiVersion: owner.apiVersion } : undefined;
}

/** A local Repository's backend volume and where the agent mounts it (undefined for object stores). */
export function localRepositoryVolume(repository: Repository): { volume: V1Volume; mount: V1VolumeMount } | undefined {
  const local = repository.spec.backend.local;
  if (local === undefined) return undefined;
  const volume: V1Volume = { name: LOCAL_REPOSITORY_VOLUME };
  if (local.hostPath) volume.hostPath = { ...local.hostPath };
  else if (local.persistentVolumeClaim) volume.persistentVolumeClaim = { ...local.persistentVolumeClaim };
  else if (local.nfs) volume.nfs = { ...local.nfs };
  return { volume, mount: { name: LOCAL_REPOSITORY_VOLUME, mountPath: local.mountPath } };
}

/** Names of the pod template's containers, initContainers or volumes that `manager`'s Apply entry owns (from managedFields). */
export function ownedNames(
  metadata: Pick<V1ObjectMeta, 'managedFields'>, manager: string, list: 'f:containers' | 'f:initContainers' | 'f:volumes',
): Set<string> {
  const entry = metadata.managedFields?.find((m) => m.manager === manager && m.operation === 'Apply' && !m.subresource);
  const spec = dig(entry?.fieldsV1, ['f:spec', 'f:template', 'f:spec', list]);
  const names = new Set<string>();
  if (spec === null || typeof spec !== 'object') return names;
  for (const key of Object.keys(spec)) {
    if (!key.startsWith('k:')) continue;
    try {
      const parsed = JSON.parse(key.slice(2)) as { name?: unknown };
      if (typeof parsed.name === 'string') names.add(parsed.name);
    } catch {
      // not a key a Stash function writes
    }
  }
  return names;
}

function dig(value: unknown, keys: readonly string[]): unknown {
  let current = value;
  for (const key of keys) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}
