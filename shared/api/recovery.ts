// Recovery: restore a snapshot into a volume, into a running workload, or into a database.
import { z } from 'zod';
import {
  API_VERSION, absolutePath, agentRef, conditions, containerAttributes, count, emptyDirSource, exactlyOne, hostPathSource,
  nfsSource, objectMeta, podAttributes, pvcSource, repositoryRef, targetRef, timestamp, withRules,
} from './common.ts';

export const recoveryVolume = withRules(z.strictObject({
  mountPath: absolutePath('recoverTo.volume.mountPath'),
  subPath: z.string().regex(/^[^/]/, { error: 'subPath must be a relative path' }).optional(),
  persistentVolumeClaim: pvcSource.optional(),
  hostPath: hostPathSource.optional(),
  emptyDir: emptyDirSource.optional(),
  nfs: nfsSource.optional(),
}), [exactlyOne(['persistentVolumeClaim', 'hostPath', 'emptyDir', 'nfs'], 'volume source')]);

export const recoverTo = withRules(z.strictObject({
  volume: recoveryVolume.optional(),
  workload: targetRef.optional().meta({ description: 'a workload (apps/v1 Deployment...) or an AppBinding (a database)' }),
}), [exactlyOne(['volume', 'workload'], 'recovery target')]);

export const SNAPSHOT_PATTERN = '^(latest|[0-9a-f]{8}|[0-9a-f]{64})$';
export const recoverySpec = z.strictObject({
  repository: repositoryRef,
  recoveryAgent: agentRef('recoveryAgent'),
  paths: z.array(absolutePath('paths entry')).max(64).optional().meta({ description: 'directories to recover (default: the whole snapshot)' }),
  snapshot: z.string().regex(new RegExp(SNAPSHOT_PATTERN), { error: (iss) => `snapshot "${String(iss.input)}" must be "latest" or a restic snapshot ID (8 or 64 hex digits)` })
    .default('latest'),
  recoverTo,
  recoveryPolicy: z.enum(['IfNotRecovered', 'Always']).default('IfNotRecovered')
    .meta({ description: 'Always: recover on every restart of the workload; IfNotRecovered: once' }),
  containerAttributes: containerAttributes.optional(),
  podAttributes: podAttributes.optional(),
});

export const recoveryPhase = z.enum(['Pending', 'Running', 'Succeeded', 'Failed']);
export const recoveredHost = z.strictObject({
  host: z.string().min(1),
  phase: recoveryPhase,
  snapshotId: z.string().optional(),
  completionTime: timestamp().optional(),
  files: count().optional(),
  bytes: count().optional(),
  error: z.string().optional(),
  /** The Recovery's metadata.generation this entry is for (written by handle-trigger): IfNotRecovered skips a host only when it Succeeded at the current generation. */
  generation: count().optional(),
  /** The pod that recovered (or is recovering) this host. */
  pod: z.string().optional(),
});
export const recoveryStatus = z.strictObject({
  phase: recoveryPhase.optional(),
  conditions: conditions(),
  observedGeneration: count().optional(),
  startTime: timestamp().optional(),
  completionTime: timestamp().optional(),
  snapshotId: z.string().optional(),
  recoveredHosts: z.array(recoveredHost).max(1024).optional(),
  stats: z.strictObject({ files: count().optional(), bytes: count().optional(), durationSeconds: z.number().min(0).optional() }).optional(),
  error: z.string().optional(),
});

export const recovery = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal('Recovery'),
  metadata: objectMeta,
  spec: recoverySpec,
  status: recoveryStatus.optional(),
});
export type Recovery = z.infer<typeof recovery>;
export type RecoverySpec = z.infer<typeof recoverySpec>;
export type RecoveryStatus = z.infer<typeof recoveryStatus>;
