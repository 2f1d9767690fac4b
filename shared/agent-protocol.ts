// The agent protocol between a backup agent (sidecar or database Job, agent/cluster/) and
// handle-trigger: JSON over HTTP, bearer = the pod's projected ServiceAccount token (audience
// `stash`). One definition of every body, used by the server to validate requests and by the
// client to validate answers.
//
//   POST /agent/v1/claim  {namespace, backup, host}            -> 200 ClaimedRun | 204 nothing to do
//   POST /agent/v1/renew  {namespace, trigger, host}           -> 200 {renewTime} | 409 lease lost
//   POST /agent/v1/report {namespace, trigger, host, outcome}  -> 200 {trigger, phase} | 409 lease lost
//   POST /v1/namespaces/{namespace}/backups/{name}/trigger     -> 201 {namespace, name}   (people, CI)
//   POST /agent/v1/recovery/claim  {namespace, recovery, host?} -> 200 ClaimedRecovery | 204 nothing to do
//   POST /agent/v1/recovery/report {namespace, recovery, host, generation, outcome} -> 200 {recovery, host, phase} | 409 the Recovery changed
//
// Every error answer is `{error: <what failed and the fix>, field?: <request field>}` with
// 400 (bad body), 401 (no or invalid token), 403 (not allowed), 404 (no such object), 409 (lease
// lost; for a Recovery: it is being deleted, or its generation is not the claimed one), 422 (the
// object is invalid), 500/503 (retry later).
import { z } from 'zod';
import { backend, dnsLabelName, dnsSubdomainName, formatPath, retentionPolicy } from './api/index.ts';

/** The audience the agent's projected token must carry. */
export const AGENT_AUDIENCE = 'stash';

export const AGENT_PATHS = {
  claim: '/agent/v1/claim',
  renew: '/agent/v1/renew',
  report: '/agent/v1/report',
  recoveryClaim: '/agent/v1/recovery/claim',
  recoveryReport: '/agent/v1/recovery/report',
} as const;

const hostName = z.string()
  .min(1, { error: 'host must not be empty' })
  .max(253, { error: 'host must be at most 253 characters' })
  .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, { error: 'host must be host-<n> or a node name (lowercase letters, digits, "-" and ".")' });

export const claimRequest = z.strictObject({
  namespace: dnsLabelName('namespace'),
  backup: dnsSubdomainName('backup'),
  host: hostName,
});
export type ClaimRequest = z.infer<typeof claimRequest>;

export const renewRequest = z.strictObject({
  namespace: dnsLabelName('namespace'),
  trigger: dnsSubdomainName('trigger'),
  host: hostName,
});
export type RenewRequest = z.infer<typeof renewRequest>;

const count = () => z.int().min(0);

export const runOutcome = z.strictObject({
  phase: z.enum(['Succeeded', 'Failed']),
  snapshotId: z.string().min(1).max(128).optional(),
  /** Bytes the run added to the repository (restic data_added): the Backup's lastBackupSize. */
  bytes: count().optional(),
  /** Files the run processed. */
  files: count().optional(),
  /** Why the run failed, for people; the agent must keep secrets out of it. */
  error: z.string().max(4096).optional(),
  /** The repository as restic saw it after the run. */
  repository: z.strictObject({
    snapshotCount: count(),
    totalSize: count(),
    integrity: z.enum(['True', 'False', 'Unknown']).optional(),
  }).optional(),
});
export type RunOutcome = z.infer<typeof runOutcome>;

export const reportRequest = z.strictObject({
  namespace: dnsLabelName('namespace'),
  trigger: dnsSubdomainName('trigger'),
  host: hostName,
  outcome: runOutcome,
});
export type ReportRequest = z.infer<typeof reportRequest>;

/** What a claim answers with: everything the agent needs, read from the API at claim time. */
export const claimedRun = z.object({
  namespace: z.string(),
  backup: z.string(),
  trigger: z.string(),
  host: z.string(),
  leaseDurationSeconds: z.int().min(1),
  repository: z.object({
    namespace: z.string(),
    name: z.string(),
    /** The backend without secrets; the credentials are the storage Secret mounted as files. */
    backend,
    storageSecretName: z.string(),
  }),
  targetDirectories: z.array(z.string()),
  excludes: z.array(z.string()),
  /** restic --tag values identifying the Backup's snapshots. */
  tags: z.array(z.string()),
  retentionPolicy: retentionPolicy.optional(),
  /** restic --host: the host this run backs up. */
  hostname: z.string(),
  /** The Backup's targetRef kind (AppBinding for a database run). */
  targetKind: z.string(),
  /** containerAttributes.args of the Backup (e.g. the databases to dump). */
  args: z.array(z.string()),
  /** Run `restic check` after this backup: the Repository was never checked, or not for a day. */
  checkRepository: z.boolean().optional(),
});
export type ClaimedRun = z.infer<typeof claimedRun>;

/** How often a repository's integrity is checked (`restic check`, structure only) by the runs that use it. */
export const CHECK_INTERVAL_MS = 24 * 60 * 60 * 1000;

/** Is a check due, given the Repository's status.lastCheckTime? */
export function checkDue(lastCheckTime: string | undefined, now: Date, intervalMs = CHECK_INTERVAL_MS): boolean {
  if (lastCheckTime === undefined) return true;
  const last = Date.parse(lastCheckTime);
  return Number.isNaN(last) || now.getTime() - last >= intervalMs;
}

// --- Recovery (docs/recovery.md) -------------------------------------------------------------
// A recovery agent (the recovery Job of a volume or database, or the init container run-recovery
// puts into a workload) claims its Recovery for its host, recovers, and reports. The storage
// Secret is mounted into its pod (agentVolumes), so it needs no rights in the API.

export const recoveryClaimRequest = z.strictObject({
  namespace: dnsLabelName('namespace'),
  recovery: dnsSubdomainName('recovery'),
  /**
   * The host whose snapshots are recovered (restic --host): host-0, host-<ordinal> of a StatefulSet
   * pod, or a node name. It must be the pod's own host (403 otherwise). Optional: an agent that
   * cannot tell its host (an init container does not know its workload's kind) leaves it out and
   * handle-trigger claims the pod's own host; the answer's `host` says which.
   */
  host: hostName.optional(),
});
export type RecoveryClaimRequest = z.infer<typeof recoveryClaimRequest>;

/** What a recovery claim answers with (200); 204 = nothing to do (IfNotRecovered and this host already recovered at this generation). */
export const claimedRecovery = z.object({
  namespace: z.string(),
  recovery: z.string(),
  /** The Recovery's metadata.generation the claim was made for: sent back in the report. */
  generation: z.int().min(0),
  host: z.string(),
  policy: z.enum(['IfNotRecovered', 'Always']),
  repository: z.object({
    namespace: z.string(),
    name: z.string(),
    /** The backend without secrets; the credentials are the storage Secret mounted as files. */
    backend,
    storageSecretName: z.string(),
  }),
  /** "latest" or a restic snapshot ID. */
  snapshot: z.string(),
  /** spec.paths: what to recover (empty = the whole snapshot). */
  paths: z.array(z.string()),
  target: z.discriminatedUnion('type', [
    /** Files: restore into `directory` (a Job's mounted volume, or "/" in a workload's init container, where `paths` are the workload's own paths). */
    z.object({ type: z.literal('volume'), directory: z.string() }),
    /** A database: the connection comes from the DB_* environment of the pod (as for a backup Job). */
    z.object({ type: z.literal('database'), appBinding: z.string() }),
  ]),
  /** containerAttributes.args of the Recovery (e.g. the databases to restore). */
  args: z.array(z.string()),
});
export type ClaimedRecovery = z.infer<typeof claimedRecovery>;

export const recoveryOutcome = z.strictObject({
  phase: z.enum(['Succeeded', 'Failed']),
  snapshotId: z.string().min(1).max(128).optional(),
  files: count().optional(),
  bytes: count().optional(),
  durationSeconds: z.number().min(0).optional(),
  /** Why it failed, for people; the agent must keep secrets out of it. */
  error: z.string().max(4096).optional(),
});
export type RecoveryOutcome = z.infer<typeof recoveryOutcome>;

export const recoveryReportRequest = z.strictObject({
  namespace: dnsLabelName('namespace'),
  recovery: dnsSubdomainName('recovery'),
  host: hostName,
  generation: z.int().min(0),
  outcome: recoveryOutcome,
});
export type RecoveryReportRequest = z.infer<typeof recoveryReportRequest>;

export const recoveryReportAnswer = z.object({ recovery: z.string(), host: z.string(), phase: z.string() });
export type RecoveryReportAnswer = z.infer<typeof recoveryReportAnswer>;

export const renewAnswer = z.object({ renewTime: z.string(), leaseDurationSeconds: z.int().min(1) });
export type RenewAnswer = z.infer<typeof renewAnswer>;

export const reportAnswer = z.object({ trigger: z.string(), host: z.string(), phase: z.string() });
export type ReportAnswer = z.infer<typeof reportAnswer>;

export const triggerAnswer = z.object({ namespace: z.string(), name: z.string() });
export type TriggerAnswer = z.infer<typeof triggerAnswer>;

export const errorAnswer = z.object({ error: z.string(), field: z.string().optional() });

/** "host: host must not be empty; outcome.phase: ..." and the first field, for a 400 answer. */
export function describeIssues(error: z.ZodError): { message: string; field: string } {
  const parts = error.issues.map((issue) => `${formatPath(issue.path) || '(body)'}: ${issue.message}`);
  return { message: parts.join('; '), field: formatPath(error.issues[0]?.path ?? []) || '(body)' };
}
