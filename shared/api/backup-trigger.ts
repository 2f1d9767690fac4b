// BackupTrigger: run a Backup now, once.
import { z } from 'zod';
import { API_VERSION, conditions, count, dnsSubdomainName, objectMeta, runPhase, timestamp } from './common.ts';

export const triggerOrigin = z.enum(['Manual', 'Schedule']);
export type TriggerOrigin = z.infer<typeof triggerOrigin>;

export const backupTriggerSpec = z.strictObject({
  targetBackup: z.strictObject({ name: dnsSubdomainName('targetBackup.name') }),
  origin: triggerOrigin.optional().meta({ description: 'Manual (default) or Schedule: set by the sweep for a scheduled run' }),
  scheduledTime: timestamp().optional().meta({ description: 'the schedule tick this run stands for (origin Schedule)' }),
}).meta({ 'x-kubernetes-validations': [{ rule: 'self == oldSelf', message: 'spec is immutable: create a new BackupTrigger instead' }] });

/** One host's part of a run: a Deployment backs up as host-0, each StatefulSet replica as host-<ordinal>. */
export const hostRun = z.strictObject({
  host: z.string().min(1),
  phase: runPhase,
  pod: z.string().optional().meta({ description: 'the pod whose agent ran this host' }),
  job: z.string().optional().meta({ description: 'the Job that ran this host (database backups)' }),
  startTime: timestamp().optional(),
  completionTime: timestamp().optional(),
  snapshotId: z.string().optional(),
  bytes: count().optional(),
  files: count().optional(),
  error: z.string().optional(),
});
export type HostRun = z.infer<typeof hostRun>;

export const backupTriggerStatus = z.strictObject({
  phase: runPhase.optional(),
  conditions: conditions(),
  observedGeneration: count().optional(),
  startTime: timestamp().optional(),
  completionTime: timestamp().optional(),
  snapshotId: z.string().optional(),
  bytes: count().optional(),
  files: count().optional(),
  error: z.string().optional(),
  hosts: z.array(hostRun).max(256).optional(),
});

export const backupTrigger = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal('BackupTrigger'),
  metadata: objectMeta,
  spec: backupTriggerSpec,
  status: backupTriggerStatus.optional(),
});
export type BackupTrigger = z.infer<typeof backupTrigger>;
export type BackupTriggerStatus = z.infer<typeof backupTriggerStatus>;
