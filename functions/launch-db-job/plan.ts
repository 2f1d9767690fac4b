// launch-db-job, the pure part: the batch/v1 Job that runs one database backup run (one
// BackupTrigger), built from the Backup's AgentTemplate, the AppBinding's connection and the
// Repository's storage Secret, or the reason no Job can be built. Also: what a finished Job means
// for the run's host entry.
import type { V1EnvVar, V1Job, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import { agentName } from '../../shared/api/index.ts';
import type { AgentTemplate, AppBinding, Backup, BackupTrigger, Container, HostRun, Repository } from '../../shared/api/index.ts';
import { agentReportingEnv, agentVolumeMounts, agentVolumes } from '../../shared/agent-pod.ts';
import { agentJob, agentJobName, COMPONENT_LABEL, JOB_TMP_PATH, JOB_TMP_VOLUME, labelValue, MANAGED_BY_LABEL } from '../../shared/agent-job.ts';
import type { JobOptions as AgentJobOptions } from '../../shared/agent-job.ts';
import { connectionOf, databaseEnv, ENGINES, engineFor, fillPlaceholders } from '../../shared/database-env.ts';
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
export const COMPONENT = 'database-backup';
export { COMPONENT_LABEL, MANAGED_BY_LABEL, labelValue } from '../../shared/agent-job.ts';
export const TMP_VOLUME = JOB_TMP_VOLUME;
export const TMP_PATH = JOB_TMP_PATH;

/** The variables Stash sets on every container; a template or containerAttributes.env may not set them. */
export const RESERVED_ENV = [
  'BACKUP_NAME', 'NAMESPACE', 'TRIGGER_NAME', 'POD_NAME', 'STASH_HOST', 'STASH_FUNCTIONS_URL', 'STASH_TOKEN_FILE', 'STASH_REPOSITORY_SECRET_DIR',
] as const;

/** The Job's deadline (a run longer fails) and time kept after it finished (its record stays in the BackupTrigger), and where the agent reports. */
export interface JobOptions extends AgentJobOptions {
  /** Where the agent reports (handle-trigger). */
  functionsUrl?: string;
  pushGatewayUrl?: string;
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
  return agentJobName(triggerName, 'job');
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

  const templateText = JSON.stringify(agentTemplate.spec);
  const baseEnv = stashEnv(backup, trigger, options, templateText);
  const dbEnv = databaseEnv(appBinding, engine, connection);
  const dumpName = dumpContainerName(agentTemplate.spec);

  const labels: Record<string, string> = {
    [MANAGED_BY_LABEL]: 'stash',
    [COMPONENT_LABEL]: COMPONENT,
    [BACKUP_LABEL]: labelValue(backupName),
    [TRIGGER_LABEL]: labelValue(triggerName),
  };
  const built = agentJob({
    what: 'a database backup Job',
    templateName,
    template: agentTemplate.spec,
    volumes,
    stashMounts,
    env: baseEnv,
    main: dumpName,
    mainEnv: dbEnv,
    mainArgs: attributes?.args ?? [],
    fill: (variable, where) => fillPlaceholders(variable, appBinding, connection, where, `${TMP_PATH}/data`),
    attributes,
    pod,
    keepPorts: true,
    job: {
      name: jobName(triggerName), namespace, labels,
      owner: { kind: 'BackupTrigger', name: triggerName, uid: (trigger.metadata.uid as string | undefined) ?? '' },
      options,
    },
  });
  return built.ok ? built : refuse('InvalidAgentTemplate', built.message);
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
