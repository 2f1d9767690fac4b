// launch-db-job, the pure part: the batch/v1 Job that runs one database backup run (one
// BackupTrigger), built from the Backup's AgentTemplate, the AppBinding's connection and the
// Repository's storage Secret, or the reason no Job can be built. Also: what a finished Job means
// for the run's host entry.
import type { V1Container, V1EnvVar, V1Job, V1PodSpec, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import { agentName, API_VERSION } from '../../shared/api/index.ts';
import type { AgentTemplate, AppBinding, Backup, BackupTrigger, Container, HostRun, Repository } from '../../shared/api/index.ts';
import { agentReportingEnv, agentVolumeMounts, agentVolumes, mergeEnv, normaliseEnv } from '../../shared/agent-pod.ts';
import { connectionOf, databaseEnv, ENGINES, engineFor, fillPlaceholders } from '../../shared/database-env.ts';
import { fitName } from '../../shared/names.ts';
import { localRepositoryVolume } from '../../shared/pod-template.ts';
export { connectionOf, databaseEnv, ENGINES, engineFor } from '../../shared/database-env.ts';
export type { Connection, Engine } from '../../shared/database-env.ts';
export { fitName } from '../../shared/names.ts';
export { jobOutcome } from '../../shared/job-outcome.ts';
export type { JobOutcome } from '../../shared/job-outcome.ts';
/** Where this function's agents report unless told otherwise (options.functionsUrl). */
export { DEFAULT_FUNCTIONS_URL } from '../../shared/agent-pod.ts';

export const FIELD_MANAGER = 'stash.appscode.com/launch-db-job';
export const CONTROLLER = 'stash.appscode.com/launch-db-job';
/** The Backup condition this function owns. */
export const JOB_CONDITION = 'DatabaseJobReady';
export const HOST = 'host-0';

export const BACKUP_LABEL = 'stash.appscode.com/backup';
export const TRIGGER_LABEL = 'stash.appscode.com/backuptrigger';
export const COMPONENT_LABEL = 'app.kubernetes.io/component';
export const COMPONENT = 'database-backup';
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';

export const TMP_VOLUME = 'tmp';
export const TMP_PATH = '/tmp';

/** The variables Stash sets on every container; a template or containerAttributes.env may not set them. */
export const RESERVED_ENV = [
  'BACKUP_NAME', 'NAMESPACE', 'TRIGGER_NAME', 'POD_NAME', 'STASH_HOST', 'STASH_FUNCTIONS_URL', 'STASH_TOKEN_FILE', 'STASH_REPOSITORY_SECRET_DIR',
] as const;

export interface JobOptions {
  /** Where the agent reports (handle-trigger). */
  functionsUrl?: string;
  pushGatewayUrl?: string;
  /** A run longer than this fails (Job DeadlineExceeded). Default 6 h. */
  activeDeadlineSeconds?: number;
  /** A finished Job is deleted after this (its run record stays in the BackupTrigger). Default 1 day. */
  ttlSecondsAfterFinished?: number;
}

export interface DatabaseJobInput {
  backup: Backup;
  trigger: BackupTrigger;
  agentTemplate: AgentTemplate;
  appBinding: AppBinding;
  repository: Repository;
  options?: JobOptions;
}

export type RefusalReason = 'UnsupportedDatabase' | 'InvalidAppBinding' | 'InvalidAgentTemplate' | 'RepositoryUnusable' | 'ReservedEnvironmentVariable';
export type JobPlan = { ok: true; job: V1Job } | { ok: false; reason: RefusalReason; message: string };

export function unsupportedTypeMessage(appBinding: AppBinding): string {
  return `AppBinding ${appBinding.metadata.namespace ?? ''}/${appBinding.metadata.name ?? ''} has type ${appBinding.spec.type}, which Stash cannot back up: ` +
    `use one of ${Object.keys(ENGINES).join(', ')}, or back up the database's volume with a workload Backup`;
}

/** The run's Job: `<trigger>-job`, at most 63 characters (the Job controller puts it in a label). */
export function jobName(triggerName: string): string {
  return fitName(`${triggerName}-job`, 63).replace(/^[.]+/, '');
}

/** A name as a label value (at most 63 characters). */
export function labelValue(name: string): string {
  return fitName(name, 63);
}

/**
 * The container that runs the dump: the first (init containers first) whose command or first
 * argument is `backup` (`stash backup ...`, the design's `command: [backup]`); else the last
 * init container; else the first container.
 */
export function dumpContainerName(spec: AgentTemplate['spec']): string {
  const all: Container[] = [...(spec.initContainers ?? []), ...spec.containers];
  const runsBackup = (c: Container): boolean =>
    c.command?.[0] === 'backup' || c.args?.[0] === 'backup' || (c.command !== undefined && c.command.length > 1 && c.command[1] === 'backup');
  const found = all.find(runsBackup) ?? spec.initContainers?.at(-1) ?? spec.containers[0];
  return found?.name ?? '';
}


function stashEnv(backup: Backup, trigger: BackupTrigger, options: JobOptions, templateText: string): V1EnvVar[] {
  const env: V1EnvVar[] = [
    { name: 'BACKUP_NAME', value: backup.metadata.name ?? '' },
    { name: 'NAMESPACE', value: backup.metadata.namespace ?? '' },
    { name: 'TRIGGER_NAME', value: trigger.metadata.name ?? '' },
    { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
    { name: 'STASH_HOST', value: HOST },
  ];
  env.push(...agentReportingEnv(options, templateText));
  return env;
}

function refuse(reason: RefusalReason, message: string): JobPlan {
  return { ok: false, reason, message };
}

/** The Job for one database backup run, or why there can be none. */
export function planDatabaseJob(input: DatabaseJobInput): JobPlan {
  const { backup, trigger, agentTemplate, appBinding, repository } = input;
  const options = input.options ?? {};
  const namespace = backup.metadata.namespace ?? 'default';
  const backupName = backup.metadata.name ?? '';
  const triggerName = trigger.metadata.name ?? '';
  const templateName = agentTemplate.metadata.name ?? agentName(backup.spec.backupAgent);
  const attributes = backup.spec.containerAttributes;
  const pod = backup.spec.podAttributes;

  const engine = engineFor(appBinding.spec.type);
  if (engine === undefined) return refuse('UnsupportedDatabase', unsupportedTypeMessage(appBinding));
  const connection = connectionOf(appBinding, engine);
  if ('error' in connection) return refuse('InvalidAppBinding', connection.error);

  const repositoryNamespace = repository.metadata.namespace ?? namespace;
  if (repositoryNamespace !== namespace) {
    return refuse('RepositoryUnusable',
      `Repository ${repositoryNamespace}/${repository.metadata.name ?? ''} is in another namespace than Backup ${namespace}/${backupName}: ` +
        `a Job can only mount its storage Secret ${repository.spec.backend.storageSecretName} from its own namespace; create the Repository and its Secret in ${namespace}`);
  }

  for (const [source, env] of [
    ['containerAttributes.env of the Backup', attributes?.env ?? []],
    ...[...(agentTemplate.spec.initContainers ?? []), ...agentTemplate.spec.containers].map((c) => [`env of AgentTemplate ${templateName} container ${c.name}`, c.env ?? []] as const),
  ] as const) {
    const reserved = env.find((e) => (RESERVED_ENV as readonly string[]).includes(e.name));
    if (reserved !== undefined) {
      return refuse('ReservedEnvironmentVariable',
        `${source} sets ${reserved.name}, which Stash sets itself to identify the Backup and the run: remove it (Stash sets ${RESERVED_ENV.join(', ')})`);
    }
  }

  // Volumes: the shared scratch directory, the storage Secret as files, the token for handle-trigger.
  const backend = repository.spec.backend;
  const volumes: V1Volume[] = [
    { name: TMP_VOLUME, emptyDir: {} },
    ...agentVolumes(backend.storageSecretName),
  ];
  const stashMounts: V1VolumeMount[] = agentVolumeMounts();
  const local = localRepositoryVolume(repository);
  if (local !== undefined) {
    volumes.push(local.volume);
    stashMounts.push(local.mount);
  }
  const volumeNames = new Set(volumes.map((v) => v.name));

  const templateText = JSON.stringify(agentTemplate.spec);
  const baseEnv = stashEnv(backup, trigger, options, templateText);
  const dbEnv = databaseEnv(appBinding, engine, connection);
  const dumpName = dumpContainerName(agentTemplate.spec);

  const build = (c: Container, kind: 'initContainers' | 'containers'): V1Container | string => {
    const where = `AgentTemplate ${templateName} ${kind} ${c.name}`;
    const templateEnv: V1EnvVar[] = [];
    for (const variable of (c.env ?? []) as V1EnvVar[]) {
      const filled = fillPlaceholders(variable, appBinding, connection, where, `${TMP_PATH}/data`);
      if (typeof filled === 'string') return filled;
      templateEnv.push(filled);
    }
    const isDump = c.name === dumpName;
    const env = normaliseEnv(mergeEnv(mergeEnv(mergeEnv(baseEnv, isDump ? dbEnv : []), templateEnv), (attributes?.env ?? []) as V1EnvVar[]));
    const mounts: V1VolumeMount[] = [];
    for (const m of c.volumeMounts ?? []) {
      if (!volumeNames.has(m.name)) {
        return `${where} mounts volume ${m.name}, which a database backup Job does not have (it has ${[...volumeNames].join(', ')}): mount ${TMP_VOLUME} for scratch space`;
      }
      if (stashMounts.some((s) => s.mountPath === m.mountPath)) return `${where} mounts ${m.name} at ${m.mountPath}, where Stash mounts its own volume: use another path`;
      mounts.push({ ...m });
    }
    if (!mounts.some((m) => m.mountPath === TMP_PATH)) mounts.push({ name: TMP_VOLUME, mountPath: TMP_PATH });
    mounts.push(...stashMounts.filter((s) => !mounts.some((m) => m.name === s.name)));
    const out: V1Container = { name: c.name, image: c.image };
    if (c.command) out.command = [...c.command];
    const args = [...(c.args ?? []), ...(isDump ? attributes?.args ?? [] : [])];
    if (args.length > 0) out.args = args;
    if (c.workingDir) out.workingDir = c.workingDir;
    out.env = env;
    if (c.envFrom) out.envFrom = c.envFrom;
    out.volumeMounts = mounts;
    const resources = attributes?.resources ?? c.resources;
    if (resources) out.resources = resources as V1Container['resources'];
    const securityContext = attributes?.securityContext ? { ...(c.securityContext ?? {}), ...attributes.securityContext } : c.securityContext;
    if (securityContext) out.securityContext = securityContext;
    const pullPolicy = attributes?.imagePullPolicy ?? c.imagePullPolicy;
    if (pullPolicy) out.imagePullPolicy = pullPolicy;
    if (c.ports) out.ports = c.ports as unknown as V1Container['ports'];
    return out;
  };

  const initContainers: V1Container[] = [];
  for (const c of agentTemplate.spec.initContainers ?? []) {
    const built = build(c, 'initContainers');
    if (typeof built === 'string') return refuse('InvalidAgentTemplate', built);
    initContainers.push(built);
  }
  const containers: V1Container[] = [];
  for (const c of agentTemplate.spec.containers) {
    const built = build(c, 'containers');
    if (typeof built === 'string') return refuse('InvalidAgentTemplate', built);
    containers.push(built);
  }

  const labels: Record<string, string> = {
    [MANAGED_BY_LABEL]: 'stash',
    [COMPONENT_LABEL]: COMPONENT,
    [BACKUP_LABEL]: labelValue(backupName),
    [TRIGGER_LABEL]: labelValue(triggerName),
  };
  const podSpec: V1PodSpec = {
    restartPolicy: 'Never',
    // The agent talks to handle-trigger with the audience-bound token below, never to the
    // Kubernetes API: the ServiceAccount's own token is not mounted.
    automountServiceAccountToken: false,
    ...(initContainers.length > 0 ? { initContainers } : {}),
    containers,
    volumes,
  };
  if (pod?.nodeSelector) podSpec.nodeSelector = { ...pod.nodeSelector };
  if (pod?.affinity) podSpec.affinity = pod.affinity;
  if (pod?.tolerations) podSpec.tolerations = pod.tolerations;
  if (pod?.serviceAccountName) podSpec.serviceAccountName = pod.serviceAccountName;
  if (pod?.priorityClassName) podSpec.priorityClassName = pod.priorityClassName;
  if (pod?.securityContext) podSpec.securityContext = pod.securityContext;
  if (pod?.imagePullSecrets) podSpec.imagePullSecrets = pod.imagePullSecrets.map((s) => ({ name: s.name }));

  const job: V1Job = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: jobName(triggerName),
      namespace,
      labels,
      ownerReferences: [{
        apiVersion: API_VERSION, kind: 'BackupTrigger', name: triggerName, uid: (trigger.metadata.uid as string | undefined) ?? '',
        controller: true, blockOwnerDeletion: true,
      }],
    },
    spec: {
      // A retry is a new run (a new BackupTrigger), never a second pod of this one.
      backoffLimit: 0,
      activeDeadlineSeconds: options.activeDeadlineSeconds ?? 6 * 3600,
      ttlSecondsAfterFinished: options.ttlSecondsAfterFinished ?? 24 * 3600,
      template: { metadata: { labels: { ...labels } }, spec: podSpec },
    },
  };
  return { ok: true, job };
}

// ---------------------------------------------------------------------------------------------
// A finished Job and the run's host entry

/** True when the run is over (or this host is): nothing more to write. */
export function hostFinished(trigger: BackupTrigger, host = HOST): boolean {
  const phase = trigger.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed' || phase === 'Skipped') return true;
  const entry = trigger.status?.hosts?.find((h) => h.host === host);
  return entry !== undefined && (entry.phase === 'Succeeded' || entry.phase === 'Failed' || entry.phase === 'Skipped');
}

/** The run's hosts with `host` marked Failed (kept entries keep their fields; a missing one is added). */
export function failedHosts(trigger: BackupTrigger, error: string, now: Date, job: string | undefined, host = HOST): HostRun[] {
  const at = `${now.toISOString().slice(0, 19)}Z`;
  const hosts = [...(trigger.status?.hosts ?? [])];
  const index = hosts.findIndex((h) => h.host === host);
  const base: HostRun = index >= 0 ? { ...(hosts[index] as HostRun) } : { host, phase: 'Failed' };
  const entry: HostRun = { ...base, phase: 'Failed', completionTime: at, error, ...(job !== undefined ? { job } : {}) };
  if (index >= 0) hosts[index] = entry;
  else hosts.push(entry);
  return hosts;
}

/** Whether a Backup's target is a database (an AppBinding). */
export function isDatabaseBackup(backup: Backup): boolean {
  return backup.spec.targetRef.kind === 'AppBinding';
}
