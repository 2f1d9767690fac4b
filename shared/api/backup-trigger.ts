// BackupTrigger: run a Backup now, once.
import { z } from 'zod';
import { API_VERSION, conditions, count, dnsSubdomainName, objectMeta, runPhase, timestamp } from './common.ts';

export const backupTriggerSpec = z.strictObject({
  targetBackup: z.strictObject({ name: dnsSubdomainName('targetBackup.name') }),
}).meta({ 'x-kubernetes-validations': [{ rule: 'self == oldSelf', message: 'spec is immutable: create a new BackupTrigger instead' }] });

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
