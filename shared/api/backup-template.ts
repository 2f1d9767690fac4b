// BackupTemplate (cluster-scoped): the default backup a workload or AppBinding opts into with
// annotations. Stash derives a Repository and a Backup from it in the target's namespace.
import { z } from 'zod';
import { backend } from './backends.ts';
import { API_VERSION, agentRef, formatPath, containerAttributes, dnsSubdomainName, objectMeta, podAttributes, retentionPolicy, withRules } from './common.ts';
import { oneTimezoneRule, scheduleField, timezoneField } from './schedule-fields.ts';

export const backupTemplateSpec = withRules(z.strictObject({
  backend: backend.meta({ description: 'as in a Repository; prefix may hold ${metadata.namespace} and ${metadata.name} of the target' }),
  schedule: scheduleField(),
  timezone: timezoneField().optional(),
  backupAgent: agentRef('backupAgent'),
  retentionPolicy: retentionPolicy.optional(),
  containerAttributes: containerAttributes.optional(),
  podAttributes: podAttributes.optional(),
}), [oneTimezoneRule]);

export const backupTemplate = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal('BackupTemplate'),
  metadata: objectMeta,
  spec: backupTemplateSpec,
});
export type BackupTemplate = z.infer<typeof backupTemplate>;
export type BackupTemplateSpec = z.infer<typeof backupTemplateSpec>;

/** Replace `${metadata.namespace}` / `${metadata.name}` by the target's. */
export function expandTemplatePrefix(prefix: string, target: { namespace: string; name: string }): string {
  return prefix.replaceAll('${metadata.namespace}', target.namespace).replaceAll('${metadata.name}', target.name);
}

// Annotations a workload or an AppBinding carries to opt into default backup.
export const ANNOTATION_BACKUP = 'stash.appscode.com/backup';
export const ANNOTATION_TARGET_DIRECTORIES = 'stash.appscode.com/targetDirectories';
export const ANNOTATION_BACKUP_TEMPLATE = 'stash.appscode.com/backupTemplate';

export const defaultBackupAnnotations = z.object({
  [ANNOTATION_BACKUP]: z.enum(['true', 'false'], { error: `${ANNOTATION_BACKUP} must be "true" or "false" (a quoted string)` }),
  [ANNOTATION_BACKUP_TEMPLATE]: dnsSubdomainName(ANNOTATION_BACKUP_TEMPLATE),
  [ANNOTATION_TARGET_DIRECTORIES]: z.string().optional(),
});

export class InvalidAnnotationsError extends Error {
  constructor(detail: string) {
    super(`default-backup annotations are invalid: ${detail}`);
    this.name = 'InvalidAnnotationsError';
  }
}

export interface DefaultBackupRequest {
  enabled: boolean;
  template: string;
  targetDirectories: string[];
}

/**
 * Read the default-backup annotations. `targetDirectories` is written "[/a,/b]" (the design) or
 * "/a,/b". Returns undefined when the object does not opt in; throws InvalidAnnotationsError when malformed.
 */
export function parseDefaultBackupAnnotations(annotations: Record<string, string> | undefined): DefaultBackupRequest | undefined {
  if (annotations?.[ANNOTATION_BACKUP] === undefined) return undefined;
  const r = defaultBackupAnnotations.safeParse(annotations);
  if (!r.success) throw new InvalidAnnotationsError(r.error.issues.map((i) => `metadata.annotations.${formatPath(i.path)}: ${i.message}`).join('; '));
  const a = r.data;
  const raw = (a[ANNOTATION_TARGET_DIRECTORIES] ?? '').trim().replace(/^\[/, '').replace(/\]$/, '');
  const dirs = raw.split(',').map((d) => d.trim()).filter((d) => d !== '');
  return { enabled: a[ANNOTATION_BACKUP] === 'true', template: a[ANNOTATION_BACKUP_TEMPLATE], targetDirectories: dirs };
}
