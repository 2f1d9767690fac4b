// Repository: where a restic repository lives.
import { z } from 'zod';
import { backend } from './backends.ts';
import { API_VERSION, conditions, count, objectMeta, timestamp } from './common.ts';

export const repositorySpec = z.strictObject({
  backend,
});

export const repositoryPhase = z.enum(['Pending', 'Initializing', 'Ready', 'Failed']);
export const repositoryStatus = z.strictObject({
  phase: repositoryPhase.optional(),
  conditions: conditions(),
  observedGeneration: count().optional(),
  snapshotCount: count().optional(),
  totalSize: count().optional().meta({ description: 'bytes stored in the repository' }),
  lastBackupTime: timestamp().optional(),
  lastCheckTime: timestamp().optional(),
  integrity: z.enum(['True', 'False', 'Unknown']).optional().meta({ description: 'result of the last restic check' }),
});

export const repository = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal('Repository'),
  metadata: objectMeta,
  spec: repositorySpec,
  status: repositoryStatus.optional(),
});
export type Repository = z.infer<typeof repository>;
export type RepositorySpec = z.infer<typeof repositorySpec>;
export type RepositoryStatus = z.infer<typeof repositoryStatus>;
