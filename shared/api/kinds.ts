// The table of kinds: schema, names, scope and kubectl columns. The CRD generator and the
// validation helpers read it.
import type { z } from 'zod';
import { agentTemplate } from './agent-template.ts';
import { appBinding } from './app-binding.ts';
import { backup } from './backup.ts';
import { backupTemplate } from './backup-template.ts';
import { backupTrigger } from './backup-trigger.ts';
import { APPCATALOG_GROUP, APPCATALOG_VERSION, GROUP, VERSION } from './common.ts';
import { recovery } from './recovery.ts';
import { repository } from './repository.ts';

export interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description?: string;
  priority?: number;
  format?: string;
}

export interface KindInfo {
  kind: string;
  group: string;
  version: string;
  plural: string;
  singular: string;
  shortNames: string[];
  scope: 'Namespaced' | 'Cluster';
  /** The whole object (apiVersion, kind, metadata, spec, status). */
  schema: z.ZodObject;
  columns: PrinterColumn[];
}

const phase: PrinterColumn = { name: 'Phase', type: 'string', jsonPath: '.status.phase' };
const age: PrinterColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

export const KINDS: readonly KindInfo[] = [
  {
    kind: 'Repository', group: GROUP, version: VERSION, plural: 'repositories', singular: 'repository', shortNames: ['repo'],
    scope: 'Namespaced', schema: repository,
    columns: [
      { name: 'Integrity', type: 'string', jsonPath: '.status.integrity' },
      { name: 'Snapshots', type: 'integer', jsonPath: '.status.snapshotCount' },
      { name: 'Size', type: 'integer', jsonPath: '.status.totalSize', description: 'bytes' },
      { name: 'Last-Backup', type: 'date', jsonPath: '.status.lastBackupTime' },
      { name: 'Secret', type: 'string', jsonPath: '.spec.backend.storageSecretName', priority: 1 },
      phase, age,
    ],
  },
  {
    kind: 'Backup', group: GROUP, version: VERSION, plural: 'backups', singular: 'backup', shortNames: ['bkp'],
    scope: 'Namespaced', schema: backup,
    columns: [
      { name: 'Schedule', type: 'string', jsonPath: '.spec.schedule' },
      { name: 'Target-Kind', type: 'string', jsonPath: '.spec.targetRef.kind' },
      { name: 'Target', type: 'string', jsonPath: '.spec.targetRef.name' },
      { name: 'Repository', type: 'string', jsonPath: '.spec.repository.name', priority: 1 },
      { name: 'Paused', type: 'boolean', jsonPath: '.spec.paused' },
      { name: 'Last-Backup', type: 'date', jsonPath: '.status.lastBackupTime' },
      { name: 'Last-Success', type: 'date', jsonPath: '.status.lastSuccessfulBackupTime', priority: 1 },
      { name: 'Next', type: 'date', jsonPath: '.status.nextScheduledTime', priority: 1 },
      phase, age,
    ],
  },
  {
    kind: 'Recovery', group: GROUP, version: VERSION, plural: 'recoveries', singular: 'recovery', shortNames: ['rcv'],
    scope: 'Namespaced', schema: recovery,
    columns: [
      { name: 'Repository', type: 'string', jsonPath: '.spec.repository.name' },
      { name: 'Snapshot', type: 'string', jsonPath: '.spec.snapshot' },
      { name: 'Policy', type: 'string', jsonPath: '.spec.recoveryPolicy' },
      { name: 'Workload', type: 'string', jsonPath: '.spec.recoverTo.workload.name', priority: 1 },
      { name: 'Completed', type: 'date', jsonPath: '.status.completionTime' },
      phase, age,
    ],
  },
  {
    kind: 'BackupTrigger', group: GROUP, version: VERSION, plural: 'backuptriggers', singular: 'backuptrigger', shortNames: ['bkt'],
    scope: 'Namespaced', schema: backupTrigger,
    columns: [
      { name: 'Backup', type: 'string', jsonPath: '.spec.targetBackup.name' },
      { name: 'Snapshot', type: 'string', jsonPath: '.status.snapshotId' },
      { name: 'Completed', type: 'date', jsonPath: '.status.completionTime' },
      phase, age,
    ],
  },
  {
    kind: 'BackupTemplate', group: GROUP, version: VERSION, plural: 'backuptemplates', singular: 'backuptemplate', shortNames: ['bktpl'],
    scope: 'Cluster', schema: backupTemplate,
    columns: [{ name: 'Schedule', type: 'string', jsonPath: '.spec.schedule' }, age],
  },
  {
    kind: 'AgentTemplate', group: GROUP, version: VERSION, plural: 'agenttemplates', singular: 'agenttemplate', shortNames: ['agt'],
    scope: 'Cluster', schema: agentTemplate,
    columns: [{ name: 'Image', type: 'string', jsonPath: '.spec.containers[0].image' }, age],
  },
  {
    kind: 'AppBinding', group: APPCATALOG_GROUP, version: APPCATALOG_VERSION, plural: 'appbindings', singular: 'appbinding', shortNames: ['ab'],
    scope: 'Namespaced', schema: appBinding,
    columns: [{ name: 'Type', type: 'string', jsonPath: '.spec.type' }, age],
  },
];

export function kindInfo(kind: string): KindInfo {
  const k = KINDS.find((x) => x.kind === kind);
  if (k === undefined) throw new Error(`unknown kind ${kind}: expected one of ${KINDS.map((x) => x.kind).join(', ')}`);
  return k;
}
