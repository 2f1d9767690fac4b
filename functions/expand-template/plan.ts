// The Repository and Backup a BackupTemplate yields for one annotated workload or AppBinding:
// pure, no I/O.
//
// readDefaultBackupRequest() reads the target's annotations; checkTemplate() parses the
// BackupTemplate; planDefaultBackup() returns the two objects the handler server-side applies
// under FIELD_MANAGER (only the fields the template and the annotations set, so a person's own
// additions survive), or why nothing is applied. Both objects are validated with the Stash
// schemas before anything is written, so the handler creates both or neither.
import { createHash } from 'node:crypto';
import type { KubernetesObject } from '@kubernetes/client-node';
import {
  ANNOTATION_BACKUP, ANNOTATION_BACKUP_TEMPLATE, ANNOTATION_TARGET_DIRECTORIES, API_VERSION, APPCATALOG_API_VERSION, agentName,
  backup as backupSchema, backupTemplate as backupTemplateSchema, BACKEND_KEYS, expandTemplatePrefix, formatPath, InvalidAnnotationsError,
  parseDefaultBackupAnnotations, repository as repositorySchema,
} from '../../shared/api/index.ts';
import type { Backend, BackupSpec, BackupTemplate } from '../../shared/api/index.ts';

export const FIELD_MANAGER = 'stash.appscode.com/expand-template';
/** On every generated object: the BackupTemplate it came from (hashed when longer than 63). */
export const TEMPLATE_LABEL = 'stash.appscode.com/template';
/** On every generated object: `<Kind>.<name>` of its target (hashed when longer than 63). */
export const GENERATED_FOR_LABEL = 'stash.appscode.com/generated-for';
/** The longest generated name: fits a label value, so other functions can label by it unchanged. */
export const MAX_GENERATED_NAME = 63;
const MAX_LABEL_VALUE = 63;

/** Kinds that opt into default backup with annotations, and the apiVersion each is read at. */
export const TARGET_KINDS: Readonly<Record<string, string>> = {
  Deployment: 'apps/v1',
  StatefulSet: 'apps/v1',
  DaemonSet: 'apps/v1',
  ReplicaSet: 'apps/v1',
  ReplicationController: 'v1',
  AppBinding: APPCATALOG_API_VERSION,
};

/** A target as read from the API: any of TARGET_KINDS. */
export interface Target {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    annotations?: Record<string, string>;
    ownerReferences?: { apiVersion: string; kind: string; name: string; controller?: boolean }[];
  };
}

export type RefusalReason =
  | 'InvalidDefaultBackupAnnotations' | 'BackupTemplateNotFound' | 'InvalidBackupTemplate' | 'InvalidExpandedBackup'
  | 'StorageSecretNotFound' | 'TargetHasAnotherBackup' | 'GeneratedNameTaken' | 'ApplyRejected' | 'DeleteForbidden';

export interface Refusal {
  reason: RefusalReason;
  message: string;
}

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

/**
 * `text` cut to `limit` characters, ending in `-<8 hex of a hash of text>` when it had to be cut,
 * so different long names stay different. Separators left at the cut are dropped, so a valid DNS
 * subdomain or label value stays one.
 */
export function fitName(text: string, limit: number): string {
  if (text.length <= limit) return text;
  const head = text.slice(0, limit - 9).replace(/[-._]+$/, '');
  return `${head}-${shortHash(text)}`;
}

/** The name of the Repository and of the Backup generated for a target: `<kind>-<name>`, at most 63 characters. */
export function generatedName(kind: string, name: string): string {
  return fitName(`${kind.toLowerCase()}-${name}`, MAX_GENERATED_NAME);
}

/** The GENERATED_FOR_LABEL value of a target. */
export function generatedForValue(kind: string, name: string): string {
  return fitName(`${kind}.${name}`, MAX_LABEL_VALUE);
}

/** The TEMPLATE_LABEL value of a BackupTemplate. */
export function templateLabelValue(template: string): string {
  return fitName(template, MAX_LABEL_VALUE);
}

export function describeTarget(kind: string, namespace: string, name: string): string {
  return `${kind} ${namespace}/${name}`;
}

/** True when `object` carries the labels this function puts on what it generates for the target. */
export function isGeneratedFor(object: KubernetesObject | undefined, kind: string, name: string): boolean {
  const labels = object?.metadata?.labels;
  return labels?.[TEMPLATE_LABEL] !== undefined && labels[GENERATED_FOR_LABEL] === generatedForValue(kind, name);
}

/** The target a generated object names in its ownerReferences (undefined when none is a target kind). */
export function generatedTarget(object: KubernetesObject): { kind: string; namespace: string; name: string } | undefined {
  const namespace = object.metadata?.namespace;
  if (namespace === undefined || object.metadata?.labels?.[GENERATED_FOR_LABEL] === undefined) return undefined;
  const owner = object.metadata.ownerReferences?.find((o) => TARGET_KINDS[o.kind] !== undefined);
  return owner === undefined ? undefined : { kind: owner.kind, namespace, name: owner.name };
}

export type DefaultBackupRequest =
  | { state: 'off'; reason: string }
  | { state: 'invalid'; message: string }
  | { state: 'on'; template: string; targetDirectories: string[] | undefined };

/** The Deployment controller marks the ReplicaSets it makes (and copies its own annotations into them) with this. */
export const DEPLOYMENT_REVISION_ANNOTATION = 'deployment.kubernetes.io/revision';

/** What YAML 1.1 and people read as a boolean; only the lowercase strings "true"/"false" count here. */
const BOOLEAN_LOOKING = /^(true|false|yes|no|on|off|y|n|1|0)$/i;

/**
 * The directories of a `stash.appscode.com/targetDirectories` annotation. Accepted: the design's
 * `[/a,/b]`, the same without brackets, and a JSON array `["/a","/b"]`. Every entry must be an
 * absolute path, listed once.
 */
export function parseTargetDirectories(raw: string): { ok: true; directories: string[] } | { ok: false; message: string } {
  const key = ANNOTATION_TARGET_DIRECTORIES;
  const example = `${key}: "[/source/data]" (several: "[/source/data,/var/lib/app]")`;
  const text = raw.trim();
  const opens = text.startsWith('[');
  const closes = text.endsWith(']');
  if (opens !== closes) {
    return { ok: false, message: `${key} "${raw}" has ${opens ? 'no closing "]"' : 'no opening "["'}: write it as ${example}` };
  }
  const inner = opens ? text.slice(1, -1).trim() : text;
  let entries: string[];
  if (inner.startsWith('"')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(`[${inner}]`);
    } catch {
      parsed = undefined;
    }
    if (!Array.isArray(parsed) || !parsed.every((e) => typeof e === 'string')) {
      return { ok: false, message: `${key} "${raw}" is neither a list of paths nor a JSON array of strings: write it as ${example}` };
    }
    entries = parsed.map((e) => e.trim());
  } else {
    entries = inner === '' ? [] : inner.split(',').map((e) => e.trim());
  }
  if (entries.length === 0) {
    return { ok: false, message: `${key} "${raw}" lists no directory: list the directories to back up, as mounted in the workload, e.g. ${example}` };
  }
  const seen = new Set<string>();
  for (const entry of entries) {
    if (entry === '') return { ok: false, message: `${key} "${raw}" has an empty entry (two commas in a row, or a trailing comma): write it as ${example}` };
    if (/["'[\]]/.test(entry)) {
      return { ok: false, message: `${key} "${raw}": entry ${JSON.stringify(entry)} holds a quote or bracket: write the paths bare, as ${example}` };
    }
    if (!entry.startsWith('/')) {
      return { ok: false, message: `${key} "${raw}": "${entry}" is not an absolute path: start it with "/" (the path as mounted in the workload's container), e.g. ${example}` };
    }
    if (seen.has(entry)) return { ok: false, message: `${key} "${raw}" lists "${entry}" twice: list it once` };
    seen.add(entry);
  }
  return { ok: true, directories: entries };
}

/** ` (found "<key>", spelt differently)` when an annotation is `expected` but for case, '-' and '_'; else ''. */
function misspelt(annotations: Record<string, string>, expected: string): string {
  const fold = (key: string): string => key.toLowerCase().replace(/[-_]/g, '');
  const near = Object.keys(annotations).find((key) => key !== expected && fold(key) === fold(expected));
  return near === undefined ? '' : ` (found "${near}": the key is spelt exactly ${expected})`;
}

/**
 * Reads the default-backup annotations of a target. `off` when it does not opt in (no
 * `stash.appscode.com/backup`, or "false", or a ReplicaSet made by a Deployment, which inherits the
 * Deployment's annotations, even once orphaned); `invalid` with what to fix; `on` with the template
 * and directories.
 */
export function readDefaultBackupRequest(target: Target): DefaultBackupRequest {
  const annotations = target.metadata.annotations ?? {};
  const value = annotations[ANNOTATION_BACKUP];
  const controller = target.metadata.ownerReferences?.find((o) => o.controller === true);
  if (controller !== undefined && TARGET_KINDS[controller.kind] !== undefined) {
    return { state: 'off', reason: `controlled by ${controller.kind} ${controller.name}, whose annotations it copies; the ${controller.kind} is backed up` };
  }
  if (target.kind === 'ReplicaSet' && annotations[DEPLOYMENT_REVISION_ANNOTATION] !== undefined) {
    // Orphaned by `kubectl delete deployment --cascade=orphan`: still the Deployment's annotations.
    return { state: 'off', reason: `made by a Deployment (annotation ${DEPLOYMENT_REVISION_ANNOTATION}), whose annotations it copied` };
  }
  if (value === undefined) return { state: 'off', reason: `no ${ANNOTATION_BACKUP} annotation` };
  if (value === 'false') return { state: 'off', reason: `${ANNOTATION_BACKUP} is "false"` };
  const what = describeTarget(target.kind, target.metadata.namespace, target.metadata.name);
  if (value !== 'true') {
    const looks = BOOLEAN_LOOKING.test(value.trim()) ? ' (a boolean written another way)' : '';
    return {
      state: 'invalid',
      message: `${what}: annotation ${ANNOTATION_BACKUP} is "${value}"${looks}; Stash reads only the lowercase strings "true" and "false": ` +
        `write ${ANNOTATION_BACKUP}: "true" (quoted in YAML) to back it up with its BackupTemplate, or "false" to stop`,
    };
  }
  if (annotations[ANNOTATION_BACKUP_TEMPLATE] === undefined) {
    return {
      state: 'invalid',
      message: `${what}: ${ANNOTATION_BACKUP} is "true" but annotation ${ANNOTATION_BACKUP_TEMPLATE} is missing${misspelt(annotations, ANNOTATION_BACKUP_TEMPLATE)}: ` +
        `set it to the name of a BackupTemplate (kubectl get backuptemplates)`,
    };
  }
  let template: string;
  try {
    const parsed = parseDefaultBackupAnnotations(annotations);
    template = parsed?.template ?? '';
  } catch (error) {
    if (!(error instanceof InvalidAnnotationsError)) throw error;
    return { state: 'invalid', message: `${what}: ${error.message}; fix the annotation (${ANNOTATION_BACKUP_TEMPLATE} names a cluster-scoped BackupTemplate)` };
  }
  const rawDirectories = annotations[ANNOTATION_TARGET_DIRECTORIES];
  if (target.kind === 'AppBinding') {
    if (rawDirectories !== undefined) {
      return {
        state: 'invalid',
        message: `${what}: an AppBinding's database is dumped whole by the template's backupAgent, so ${ANNOTATION_TARGET_DIRECTORIES} does not apply: ` +
          'remove that annotation (pick databases with the template\'s containerAttributes.args)',
      };
    }
    return { state: 'on', template, targetDirectories: undefined };
  }
  if (rawDirectories === undefined) {
    return {
      state: 'invalid',
      message: `${what}: a workload backup needs annotation ${ANNOTATION_TARGET_DIRECTORIES}${misspelt(annotations, ANNOTATION_TARGET_DIRECTORIES)}: ` +
        `add ${ANNOTATION_TARGET_DIRECTORIES}: "[/source/data]" listing the directories, as mounted in the workload, to back up`,
    };
  }
  const directories = parseTargetDirectories(rawDirectories);
  if (!directories.ok) return { state: 'invalid', message: `${what}: ${directories.message}` };
  return { state: 'on', template, targetDirectories: directories.directories };
}

function describeIssues(issues: readonly { path: readonly PropertyKey[]; message: string }[], prefix = ''): string {
  return issues.slice(0, 5).map((i) => `${[prefix, formatPath(i.path)].filter((p) => p !== '').join('.') || '(root)'}: ${i.message}`).join('; ');
}

/** The BackupTemplate `name` as read (undefined: it does not exist), or why it cannot be used. */
export function checkTemplate(name: string, raw: unknown): { ok: true; template: BackupTemplate } | { ok: false; refusal: Refusal } {
  if (raw === undefined) {
    return {
      ok: false,
      refusal: {
        reason: 'BackupTemplateNotFound',
        message: `BackupTemplate ${name} (cluster-scoped) named by annotation ${ANNOTATION_BACKUP_TEMPLATE} does not exist: ` +
          'create it, or set the annotation to an existing one (kubectl get backuptemplates)',
      },
    };
  }
  const parsed = backupTemplateSchema.safeParse(raw);
  if (!parsed.success) {
    return {
      ok: false,
      refusal: { reason: 'InvalidBackupTemplate', message: `BackupTemplate ${name} does not match the BackupTemplate schema (${describeIssues(parsed.error.issues)}): fix these fields of the template` },
    };
  }
  return { ok: true, template: parsed.data };
}

/** The template's backend with `${metadata.namespace}` / `${metadata.name}` in each prefix expanded for the target. */
export function expandBackend(backend: Backend, target: { namespace: string; name: string }): Backend {
  const expanded = structuredClone(backend);
  for (const key of BACKEND_KEYS) {
    const store = expanded[key] as { prefix?: string } | undefined;
    if (store?.prefix !== undefined) store.prefix = expandTemplatePrefix(store.prefix, target);
  }
  return expanded;
}

/** Paths of string values that still hold a `${...}` placeholder. */
function unexpandedPlaceholders(value: unknown, path: string): string[] {
  if (typeof value === 'string') return value.includes('${') ? [path] : [];
  if (Array.isArray(value)) return value.flatMap((v, i) => unexpandedPlaceholders(v, `${path}[${i}]`));
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).flatMap(([k, v]) => unexpandedPlaceholders(v, path === '' ? k : `${path}.${k}`));
  }
  return [];
}

export interface GeneratedMetadata {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  ownerReferences: { apiVersion: string; kind: string; name: string; uid: string }[];
}

export interface RepositoryApply {
  apiVersion: typeof API_VERSION;
  kind: 'Repository';
  metadata: GeneratedMetadata;
  spec: { backend: Backend };
}

export interface BackupApply {
  apiVersion: typeof API_VERSION;
  kind: 'Backup';
  metadata: GeneratedMetadata;
  spec: BackupSpec;
}

export type StorageSecretState = 'present' | 'absent' | 'unknown';

export interface PlanInput {
  target: Target;
  /** From readDefaultBackupRequest (state 'on'). */
  targetDirectories: string[] | undefined;
  template: BackupTemplate;
  /** Whether the template's storageSecretName exists in the target's namespace ('unknown': the function may not read Secrets). */
  storageSecret: StorageSecretState;
  /** The Repository and Backup that already have the generated name, if any. */
  existing: { repository?: KubernetesObject | undefined; backup?: KubernetesObject | undefined };
  /** The Backups in the target's namespace (to find hand-written ones of the same target). */
  backups: readonly KubernetesObject[];
}

export type Plan =
  | { action: 'apply'; repository: RepositoryApply; backup: BackupApply }
  | { action: 'refuse'; refusal: Refusal };

function refuse(reason: RefusalReason, message: string): Plan {
  return { action: 'refuse', refusal: { reason, message } };
}

/** The Repository and Backup for an annotated target, or why none is applied. */
export function planDefaultBackup(input: PlanInput): Plan {
  const { target, template } = input;
  const { kind } = target;
  const { name, namespace, uid } = target.metadata;
  const templateName = template.metadata.name ?? '';
  const what = describeTarget(kind, namespace, name);
  const objectName = generatedName(kind, name);

  const handWritten = input.backups.filter((b) => {
    const ref = (b as { spec?: { targetRef?: { kind?: string; name?: string } } }).spec?.targetRef;
    return ref?.kind === kind && ref.name === name && !isGeneratedFor(b, kind, name) && b.metadata?.deletionTimestamp == null;
  }).map((b) => b.metadata?.name ?? '');
  if (handWritten.length > 0) {
    return refuse('TargetHasAnotherBackup',
      `${what} is annotated for default backup (BackupTemplate ${templateName}) and is also the target of Backup ${handWritten.map((b) => `${namespace}/${b}`).join(', ')}: ` +
      `remove annotation ${ANNOTATION_BACKUP} (or set it to "false") to keep the hand-written Backup, or delete that Backup to use the template`);
  }

  for (const [kindName, existing] of [['Repository', input.existing.repository], ['Backup', input.existing.backup]] as const) {
    if (existing !== undefined && !isGeneratedFor(existing, kind, name)) {
      return refuse('GeneratedNameTaken',
        `${kindName} ${namespace}/${objectName}, the name Stash generates for ${what}, already exists and was not generated for it ` +
        `(no label ${GENERATED_FOR_LABEL}=${generatedForValue(kind, name)}): rename or delete that ${kindName}, and Stash creates its own on the next resync`);
    }
  }

  const secretName = template.spec.backend.storageSecretName;
  if (input.storageSecret === 'absent') {
    return refuse('StorageSecretNotFound',
      `Secret ${namespace}/${secretName}, the storageSecretName of BackupTemplate ${templateName}, does not exist in the namespace of ${what}; ` +
      `Stash never copies Secrets between namespaces: create Secret ${secretName} in namespace ${namespace} with RESTIC_PASSWORD and the backend's credentials`);
  }

  const metadata: GeneratedMetadata = {
    name: objectName,
    namespace,
    labels: { [TEMPLATE_LABEL]: templateLabelValue(templateName), [GENERATED_FOR_LABEL]: generatedForValue(kind, name) },
    ownerReferences: [{ apiVersion: target.apiVersion, kind, name, uid }],
  };

  const backend = expandBackend(template.spec.backend, { namespace, name });
  const leftOver = unexpandedPlaceholders(backend, 'spec.backend');
  if (leftOver.length > 0) {
    return refuse('InvalidBackupTemplate',
      `BackupTemplate ${templateName}: ${leftOver.join(', ')} holds a placeholder; Stash expands \${metadata.namespace} and \${metadata.name} ` +
      `only in the prefix of ${BACKEND_KEYS.filter((k) => !['local', 'sftp', 'rest'].includes(k)).join(', ')}: move it into the prefix or write the value out`);
  }
  const repository: RepositoryApply = { apiVersion: API_VERSION, kind: 'Repository', metadata, spec: { backend } };
  const repositoryCheck = repositorySchema.safeParse(repository);
  if (!repositoryCheck.success) {
    return refuse('InvalidExpandedBackup',
      `the Repository BackupTemplate ${templateName} expands to for ${what} is invalid (${describeIssues(repositoryCheck.error.issues)}): ` +
      'change the template\'s spec.backend (e.g. shorten the prefix) so it holds for every workload using it');
  }

  const spec: BackupSpec = {
    schedule: template.spec.schedule,
    backupAgent: { name: agentName(template.spec.backupAgent) },
    repository: { name: objectName },
    targetRef: { apiVersion: target.apiVersion, kind, name },
  };
  if (template.spec.timezone !== undefined) spec.timezone = template.spec.timezone;
  if (input.targetDirectories !== undefined) spec.targetDirectories = input.targetDirectories;
  if (template.spec.retentionPolicy !== undefined) spec.retentionPolicy = template.spec.retentionPolicy;
  if (template.spec.containerAttributes !== undefined) spec.containerAttributes = template.spec.containerAttributes;
  if (template.spec.podAttributes !== undefined) spec.podAttributes = template.spec.podAttributes;
  const backup: BackupApply = { apiVersion: API_VERSION, kind: 'Backup', metadata: structuredClone(metadata), spec };
  const backupCheck = backupSchema.safeParse(backup);
  if (!backupCheck.success) {
    return refuse('InvalidExpandedBackup',
      `the Backup BackupTemplate ${templateName} expands to for ${what} is invalid (${describeIssues(backupCheck.error.issues)}): ` +
      `fix the template, or the annotations of ${what}`);
  }
  return { action: 'apply', repository, backup };
}
