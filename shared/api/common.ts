// Building blocks shared by every Stash kind: names, references, conditions, container and pod
// attributes, and the cross-field rule table that yields both a zod refinement and a CEL rule.
import { z } from 'zod';

export const GROUP = 'stash.appscode.com';
export const VERSION = 'v1alpha2';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const APPCATALOG_GROUP = 'appcatalog.appscode.com';
export const APPCATALOG_VERSION = 'v1alpha1';
export const APPCATALOG_API_VERSION = `${APPCATALOG_GROUP}/${APPCATALOG_VERSION}`;

/** RFC 1123 subdomain: what Kubernetes requires of metadata.name for most kinds. */
export const DNS_SUBDOMAIN_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
const DNS_SUBDOMAIN = new RegExp(DNS_SUBDOMAIN_PATTERN);
/** RFC 1123 label: what Kubernetes requires of a namespace or a container name. */
export const DNS_LABEL_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
const DNS_LABEL = new RegExp(DNS_LABEL_PATTERN);

/**
 * The valid Kubernetes name closest to `input`: camelCase words split by '-', lowercased,
 * anything else outside [a-z0-9.-] turned into '-'. `stashVolumeBackup` -> `stash-volume-backup`.
 */
export function suggestDnsName(input: string): string {
  return input
    .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1-$2')
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/-+/g, '-')
    .replace(/^[-.]+|[-.]+$/g, '')
    .slice(0, 253);
}

function nameError(what: string, input: unknown): string {
  const text = typeof input === 'string' ? input : JSON.stringify(input);
  const hint = typeof input === 'string' && suggestDnsName(input) !== '' ? `; use "${suggestDnsName(input)}"` : '';
  return `${what} "${text}" is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)${hint}`;
}

/** A reference to (or the name of) an object whose name must be an RFC 1123 subdomain. */
export const dnsSubdomainName = (what = 'name') =>
  z.string()
    .min(1, { error: `${what} must not be empty` })
    .max(253, { error: `${what} must be at most 253 characters` })
    .regex(DNS_SUBDOMAIN, { error: (iss) => nameError(what, iss.input) });

/** A namespace name or a container name: RFC 1123 label. */
export const dnsLabelName = (what = 'name') =>
  z.string()
    .min(1, { error: `${what} must not be empty` })
    .max(63, { error: `${what} must be at most 63 characters` })
    .regex(DNS_LABEL, { error: (iss) => nameError(what, iss.input) });

/** Non-negative integer that fits a Kubernetes int64 field. */
export const count = () => z.int().min(0);

/** RFC 3339 date-time as Kubernetes serialises metav1.Time. */
export const timestamp = () => z.iso.datetime({ offset: true });

/** A Kubernetes resource.Quantity: "64Mi", "250m", 2. */
export const quantity = () =>
  z.union([z.string().regex(/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$/, { error: (iss) => `"${String(iss.input)}" is not a Kubernetes quantity such as 64Mi, 250m or 2` }), z.int()])
    .meta({ 'x-kubernetes-int-or-string': true });

/**
 * A deep Kubernetes core type (affinity, security contexts, volume sources...) that Stash passes
 * through to the pods it creates without reading it: typed as an open object here, preserved
 * unchanged by the apiserver (`x-kubernetes-preserve-unknown-fields`), validated by the apiserver
 * again when it reaches a Pod.
 */
export const passthroughObject = (description: string) =>
  z.record(z.string(), z.unknown()).meta({ description, 'x-kubernetes-preserve-unknown-fields': true });

/** The first `limit` issues of a failed parse, `path: message; ...` (paths as formatPath prints them). */
export function describeParseIssues(error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] }, limit = 3): string {
  return error.issues.slice(0, limit).map((i) => `${formatPath(i.path) || '(root)'}: ${i.message}`).join('; ');
}

/** A zod issue path as the apiserver prints field paths: spec.containers[0].name */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += (out === '' ? '' : '.') + String(p);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Cross-field rules: one definition feeds the zod refinement and the CRD's x-kubernetes-validations.

export interface CrossFieldRule<T> {
  /** CEL expression over `self` (the object the rule is attached to). */
  readonly cel: string;
  /** The message both the apiserver and zod report. */
  readonly message: string;
  /** The same predicate in TypeScript. */
  readonly check: (value: T) => boolean;
  /** Optional child field the error is reported on (apiserver fieldPath and zod issue path). */
  readonly field?: string;
  /** Kubernetes reason: defaults to FieldValueInvalid. */
  readonly reason?: 'FieldValueInvalid' | 'FieldValueRequired' | 'FieldValueForbidden' | 'FieldValueDuplicate';
}

export interface CelValidation {
  rule: string;
  message: string;
  fieldPath?: string;
  reason?: string;
}

export function celOf<T>(rule: CrossFieldRule<T>): CelValidation {
  const out: CelValidation = { rule: rule.cel, message: rule.message };
  if (rule.field !== undefined) out.fieldPath = `.${rule.field}`;
  if (rule.reason !== undefined) out.reason = rule.reason;
  return out;
}

/** Attach cross-field rules to an object schema: zod refinement + CEL metadata from one table. */
export function withRules<S extends z.ZodObject>(schema: S, rules: readonly CrossFieldRule<z.output<S>>[], description?: string): S {
  const refined = schema.superRefine((value, ctx) => {
    for (const rule of rules) {
      if (!rule.check(value)) {
        ctx.addIssue({ code: 'custom', message: rule.message, path: rule.field === undefined ? [] : [rule.field], input: value });
      }
    }
  });
  const meta: Record<string, unknown> = { 'x-kubernetes-validations': rules.map(celOf) };
  if (description !== undefined) meta.description = description;
  return refined.meta(meta);
}

/** CEL and TS for "exactly one of these keys is set". */
export function exactlyOne<T extends object>(keys: readonly string[], what: string): CrossFieldRule<T> {
  return {
    cel: `[${keys.map((k) => `has(self.${k})`).join(', ')}].filter(x, x).size() == 1`,
    message: `exactly one ${what} must be set: one of ${keys.join(', ')}`,
    check: (v) => keys.filter((k) => (v as Record<string, unknown>)[k] !== undefined).length === 1,
  };
}

// ---------------------------------------------------------------------------------------------
// References and metadata

export const objectMeta = z.looseObject({
  name: dnsSubdomainName('metadata.name').optional(),
  generateName: z.string().optional(),
  namespace: dnsLabelName('metadata.namespace').optional(),
  labels: z.record(z.string(), z.string({ error: 'label values must be strings; quote them ("true")' })).optional(),
  annotations: z.record(z.string(), z.string({ error: 'annotation values must be strings; quote them ("true")' })).optional(),
});

/** A reference to a Repository, optionally in another namespace (defaults to the referrer's). */
export const repositoryRef = z.strictObject({
  name: dnsSubdomainName('repository.name'),
  namespace: dnsLabelName('repository.namespace').optional(),
});

/** The object to back up or recover into: a workload (apps/v1 Deployment...) or an AppBinding. */
export const targetRef = z.strictObject({
  apiVersion: z.string().min(1).meta({ description: 'e.g. apps/v1 or appcatalog.appscode.com/v1alpha1' }),
  kind: z.string().regex(/^[A-Z][A-Za-z0-9]*$/, { error: 'kind must be a Kubernetes kind such as Deployment, StatefulSet, DaemonSet or AppBinding' }),
  name: dnsSubdomainName('targetRef.name'),
});
export type TargetRef = z.infer<typeof targetRef>;

/**
 * An AgentTemplate reference. Users write both `backupAgent: {name: x}` and `backupAgent: x`
 * (the design does both): both are accepted; read it through `agentName()`.
 * The CRD types it as an untyped preserved node, since a structural schema cannot say
 * "string or object"; zod checks the shape and the name.
 */
export const agentRef = (what: string) =>
  z.union([dnsSubdomainName(what), z.strictObject({ name: dnsSubdomainName(`${what}.name`) })])
    .meta({ description: `${what}: an AgentTemplate name, as a string or as {name: <name>}`, 'x-stash-untyped': true });
export type AgentRef = string | { name: string };

/** The AgentTemplate name of either shape of agent reference. */
export function agentName(ref: AgentRef): string {
  return typeof ref === 'string' ? ref : ref.name;
}

// ---------------------------------------------------------------------------------------------
// Container and pod attributes

export const envVar = withRules(z.strictObject({
  name: z.string().min(1),
  value: z.string().optional(),
  valueFrom: z.strictObject({
    secretKeyRef: z.strictObject({ name: z.string().min(1), key: z.string().min(1), optional: z.boolean().optional() }).optional(),
    configMapKeyRef: z.strictObject({ name: z.string().min(1), key: z.string().min(1), optional: z.boolean().optional() }).optional(),
    fieldRef: z.strictObject({ apiVersion: z.string().optional(), fieldPath: z.string().min(1) }).optional(),
    resourceFieldRef: passthroughObject('a Kubernetes ResourceFieldSelector').optional(),
  }).optional(),
}), [{
  cel: '!(has(self.value) && has(self.valueFrom))',
  message: 'set either value or valueFrom, not both',
  field: 'valueFrom',
  check: (v) => !(v.value !== undefined && v.valueFrom !== undefined),
}]);

export const resourceRequirements = z.strictObject({
  requests: z.record(z.string(), quantity()).optional(),
  limits: z.record(z.string(), quantity()).optional(),
});

export const imagePullPolicy = z.enum(['Always', 'IfNotPresent', 'Never']);

export const containerAttributes = z.strictObject({
  args: z.array(z.string()).max(256).optional().meta({ description: 'extra arguments passed to the backup/recovery command, e.g. database names' }),
  env: z.array(envVar).max(128).optional(),
  resources: resourceRequirements.optional(),
  securityContext: passthroughObject('a Kubernetes SecurityContext for the agent container').optional(),
  imagePullPolicy: imagePullPolicy.optional(),
});
export type ContainerAttributes = z.infer<typeof containerAttributes>;

export const podAttributes = z.strictObject({
  nodeSelector: z.record(z.string(), z.string()).optional(),
  affinity: passthroughObject('a Kubernetes Affinity').optional(),
  tolerations: z.array(passthroughObject('a Kubernetes Toleration')).optional(),
  serviceAccountName: dnsSubdomainName('podAttributes.serviceAccountName').optional(),
  priorityClassName: z.string().optional(),
  securityContext: passthroughObject('a Kubernetes PodSecurityContext').optional(),
  imagePullSecrets: z.array(z.strictObject({ name: dnsSubdomainName('imagePullSecrets.name') })).optional(),
});
export type PodAttributes = z.infer<typeof podAttributes>;

// ---------------------------------------------------------------------------------------------
// Status building blocks

export const conditionStatus = z.enum(['True', 'False', 'Unknown']);
/** metav1.Condition. */
export const condition = z.strictObject({
  type: z.string().min(1).max(316),
  status: conditionStatus,
  reason: z.string().max(1024).regex(/^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?)?$/).optional(),
  message: z.string().max(32768).optional(),
  lastTransitionTime: timestamp(),
  observedGeneration: count().optional(),
});
export type Condition = z.infer<typeof condition>;
export const conditions = () => z.array(condition).max(32).optional();

/** Phases of one run (a backup run, a recovery, a trigger). */
export const runPhase = z.enum(['Pending', 'Running', 'Succeeded', 'Failed', 'Skipped']);
export type RunPhase = z.infer<typeof runPhase>;

// ---------------------------------------------------------------------------------------------
// Volume sources Stash mounts (local backend, recovery into a volume)

export const hostPathSource = z.strictObject({
  path: z.string().regex(/^\//, { error: 'hostPath.path must be an absolute path' }),
  type: z.string().optional(),
});
export const pvcSource = z.strictObject({ claimName: dnsSubdomainName('persistentVolumeClaim.claimName'), readOnly: z.boolean().optional() });
export const nfsSource = z.strictObject({
  server: z.string().min(1),
  path: z.string().regex(/^\//, { error: 'nfs.path must be an absolute path' }),
  readOnly: z.boolean().optional(),
});
export const emptyDirSource = z.strictObject({ medium: z.string().optional(), sizeLimit: quantity().optional() });
export const absolutePath = (what: string) => z.string().regex(/^\//, { error: `${what} must be an absolute path (start with "/")` });

/** Retention: restic forget flags. */
export const retentionPolicy = withRules(z.strictObject({
  name: z.string().optional().meta({ description: 'a label for this policy, e.g. keep-last-5' }),
  keepLast: count().optional(),
  keepHourly: count().optional(),
  keepDaily: count().optional(),
  keepWeekly: count().optional(),
  keepMonthly: count().optional(),
  keepYearly: count().optional(),
  keepTags: z.array(z.string().min(1)).max(64).optional(),
  prune: z.boolean().optional().meta({ description: 'run restic prune after forget (default false)' }),
  dryRun: z.boolean().optional().meta({ description: 'only report what forget would remove' }),
}), [{
  cel: 'has(self.keepLast) || has(self.keepHourly) || has(self.keepDaily) || has(self.keepWeekly) || has(self.keepMonthly) || has(self.keepYearly) || has(self.keepTags)',
  message: 'set at least one keep rule: keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly or keepTags',
  check: (v) => v.keepLast !== undefined || v.keepHourly !== undefined || v.keepDaily !== undefined || v.keepWeekly !== undefined
    || v.keepMonthly !== undefined || v.keepYearly !== undefined || v.keepTags !== undefined,
}], 'which snapshots restic forget keeps');
export type RetentionPolicy = z.infer<typeof retentionPolicy>;
