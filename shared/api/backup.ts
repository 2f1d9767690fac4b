// Backup: what to back up, where, how often and how long to keep it.
import { z } from 'zod';
import {
  API_VERSION, absolutePath, agentRef, conditions, containerAttributes, count, objectMeta, podAttributes,
  repositoryRef, retentionPolicy, runPhase, targetRef, timestamp, withRules,
} from './common.ts';
import { oneTimezoneRule, scheduleField, timezoneField } from './schedule-fields.ts';

export const backupSpec = withRules(z.strictObject({
  schedule: scheduleField(),
  timezone: timezoneField().optional(),
  backupAgent: agentRef('backupAgent'),
  repository: repositoryRef,
  targetRef,
  targetDirectories: z.array(absolutePath('targetDirectories entry')).max(64).optional(),
  excludes: z.array(z.string().min(1)).max(256).optional().meta({ description: 'restic --exclude patterns' }),
  retentionPolicy: retentionPolicy.optional(),
  containerAttributes: containerAttributes.optional(),
  podAttributes: podAttributes.optional(),
  paused: z.boolean().optional().meta({ description: 'suspend scheduled runs (default false); triggers still run' }),
  backupHistoryLimit: count().max(100).optional().meta({ description: 'finished runs kept (default 5)' }),
}), [
  oneTimezoneRule,
  {
    cel: "self.targetRef.kind == 'AppBinding' || (has(self.targetDirectories) && size(self.targetDirectories) > 0)",
    message: 'a workload backup needs targetDirectories: list the directories (as mounted in the workload) to back up',
    field: 'targetDirectories',
    reason: 'FieldValueRequired',
    check: (v) => v.targetRef.kind === 'AppBinding' || (v.targetDirectories !== undefined && v.targetDirectories.length > 0),
  },
]);

export const backupPhase = z.enum(['Pending', 'Ready', 'Running', 'Paused', 'Failed', 'Invalid']);
export const backupRun = z.strictObject({
  name: z.string().min(1),
  phase: runPhase,
  startTime: timestamp().optional(),
  completionTime: timestamp().optional(),
  snapshotId: z.string().optional(),
  error: z.string().optional(),
});
export const sidecarStatus = z.strictObject({
  target: z.string().min(1).meta({ description: '<kind>/<name> of the workload whose pod template holds the backup sidecar' }),
  targetGeneration: count().meta({ description: "the workload's metadata.generation when inject-sidecar last verified the sidecar" }),
});
export const backupStatus = z.strictObject({
  phase: backupPhase.optional(),
  conditions: conditions(),
  observedGeneration: count().optional(),
  lastBackupTime: timestamp().optional(),
  lastSuccessfulBackupTime: timestamp().optional(),
  lastSnapshotId: z.string().optional(),
  lastBackupSize: count().optional().meta({ description: 'bytes added by the last successful run' }),
  lastRun: backupRun.optional(),
  nextScheduledTime: timestamp().optional(),
  lastScheduledTime: timestamp().optional().meta({ description: 'the last schedule tick a run was started (or skipped) for' }),
  lastSkippedTime: timestamp().optional().meta({ description: 'the last tick skipped because the previous run was still going' }),
  sidecar: sidecarStatus.optional(),
});

export const backup = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal('Backup'),
  metadata: objectMeta,
  spec: backupSpec,
  status: backupStatus.optional(),
});
export type Backup = z.infer<typeof backup>;
export type BackupSpec = z.infer<typeof backupSpec>;
export type BackupStatus = z.infer<typeof backupStatus>;
export type BackupRun = z.infer<typeof backupRun>;
