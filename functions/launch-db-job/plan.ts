// launch-db-job, the pure part: the batch/v1 Job that runs one database backup run (one
// BackupTrigger), built from the Backup's AgentTemplate, the AppBinding's connection and the
// Repository's storage Secret, or the reason no Job can be built. Also: what a finished Job means
// for the run's host entry.
import { createHash } from 'node:crypto';
import type { V1Container, V1EnvVar, V1Job, V1PodSpec, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import { agentName, API_VERSION } from '../../shared/api/index.ts';
import type { AgentTemplate, AppBinding, Backup, BackupTrigger, Container, HostRun, Repository } from '../../shared/api/index.ts';
import { agentReportingEnv, agentVolumeMounts, agentVolumes, LOCAL_REPOSITORY_VOLUME } from '../../shared/agent-pod.ts';
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

/** What Stash knows of each database kind: default port and scheme, and the Secret keys KubeDB writes. */
export interface Engine {
  engine: 'postgres' | 'mariadb' | 'redis';
  port: number;
  scheme: string;
  userKey: string | undefined;
  passwordKey: string;
  /** Redis may run without a password. */
  passwordOptional: boolean;
}

const POSTGRES: Engine = { engine: 'postgres', port: 5432, scheme: 'postgres', userKey: 'POSTGRES_USER', passwordKey: 'POSTGRES_PASSWORD', passwordOptional: false };
const MARIADB: Engine = { engine: 'mariadb', port: 3306, scheme: 'mysql', userKey: 'MYSQL_ROOT_USERNAME', passwordKey: 'MYSQL_ROOT_PASSWORD', passwordOptional: false };
const REDIS: Engine = { engine: 'redis', port: 6379, scheme: 'redis', userKey: undefined, passwordKey: 'REDIS_PASSWORD', passwordOptional: true };

/** AppBinding spec.type -> engine (KubeDB's types and the plain names, as the agent accepts them). */
export const ENGINES: Readonly<Record<string, Engine>> = {
  'kubedb.com/postgres': POSTGRES, postgres: POSTGRES, postgresql: POSTGRES,
  'kubedb.com/mysql': MARIADB, mysql: MARIADB, 'kubedb.com/mariadb': MARIADB, mariadb: MARIADB,
  'kubedb.com/redis': REDIS, redis: REDIS,
};

export function engineFor(type: string): Engine | undefined {
  return ENGINES[type.trim().toLowerCase()];
}

export function unsupportedTypeMessage(appBinding: AppBinding): string {
  return `AppBinding ${appBinding.metadata.namespace ?? ''}/${appBinding.metadata.name ?? ''} has type ${appBinding.spec.type}, which Stash cannot back up: ` +
    `use one of ${Object.keys(ENGINES).join(', ')}, or back up the database's volume with a workload Backup`;
}

function hash8(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

/** `text`, or cut to `limit` with `-<8 hex>` so that different long texts stay different. */
export function fitName(text: string, limit: number): string {
  if (text.length <= limit) return text;
  return `${text.slice(0, limit - 9).replace(/[-._]+$/, '')}-${hash8(text)}`;
}

/** The run's Job: `<trigger>-job`, at most 63 characters (the Job controller puts it in a label). */
export function jobName(triggerName: string): string {
  return fitName(`${triggerName}-job`, 63).replace(/^[.]+/, '');
}

/** A name as a label value (at most 63 characters). */
export function labelValue(name: string): string {
  return fitName(name, 63);
}

export interface Connection {
  host: string;
  port: number;
  scheme: string | undefined;
}

/** Where the database is: `<service>.<namespace>.svc:<port>`, or host and port of clientConfig.url. */
export function connectionOf(appBinding: AppBinding, engine: Engine): Connection | { error: string } {
  const where = `AppBinding ${appBinding.metadata.namespace ?? ''}/${appBinding.metadata.name ?? ''}`;
  const { service, url } = appBinding.spec.clientConfig;
  if (service) {
    return { host: `${service.name}.${appBinding.metadata.namespace ?? 'default'}.svc`, port: service.port, scheme: service.scheme };
  }
  if (url) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return { error: `${where}: spec.clientConfig.url is not a URL: write it as ${engine.scheme}://host:port` };
    }
    if (parsed.password !== '') {
      return { error: `${where}: spec.clientConfig.url holds a password, which would end up in the Job's spec: move it to the Secret named in spec.secret and remove it from the url` };
    }
    return { host: parsed.hostname.replace(/^\[|\]$/g, ''), port: parsed.port === '' ? engine.port : Number(parsed.port), scheme: parsed.protocol.replace(/:$/, '') };
  }
  return { error: `${where}: spec.clientConfig has neither service nor url: set one` };
}

/** `base` with `overrides` applied by name: a known name is replaced in place, a new one appended. */
function mergeEnv(base: readonly V1EnvVar[], overrides: readonly V1EnvVar[]): V1EnvVar[] {
  const out = [...base];
  for (const variable of overrides) {
    const index = out.findIndex((e) => e.name === variable.name);
    if (index >= 0) out[index] = variable;
    else out.push(variable);
  }
  return out;
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

const PLACEHOLDER = /^<[^<>]+>$/;

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

function databaseEnv(appBinding: AppBinding, engine: Engine, connection: Connection): V1EnvVar[] {
  const env: V1EnvVar[] = [
    { name: 'DB_TYPE', value: appBinding.spec.type },
    { name: 'DB_HOST', value: connection.host },
    { name: 'DB_PORT', value: String(connection.port) },
  ];
  if (connection.scheme !== undefined) env.push({ name: 'DB_SCHEME', value: connection.scheme });
  if (appBinding.spec.clientConfig.insecureSkipTLSVerify === true) env.push({ name: 'DB_INSECURE_SKIP_TLS_VERIFY', value: 'true' });
  const secret = appBinding.spec.secret?.name;
  if (secret !== undefined) {
    if (engine.userKey !== undefined) env.push({ name: 'DB_USER', valueFrom: { secretKeyRef: { name: secret, key: engine.userKey, optional: true } } });
    env.push({ name: 'DB_PASSWORD', valueFrom: { secretKeyRef: { name: secret, key: engine.passwordKey, ...(engine.passwordOptional ? { optional: true } : {}) } } });
  }
  return env;
}

/**
 * A template env entry with its `<placeholder>`s filled: a secretKeyRef to `<secret name>` points
 * at the AppBinding's Secret, `<host url>` is the database host, `<data-dir>` a directory on the
 * shared tmp volume. An unknown placeholder is an error (the Job would run with the literal text).
 */
function fillPlaceholders(variable: V1EnvVar, appBinding: AppBinding, connection: Connection, where: string): V1EnvVar | string {
  const ref = variable.valueFrom?.secretKeyRef;
  if (ref !== undefined && PLACEHOLDER.test(ref.name ?? '')) {
    const secret = appBinding.spec.secret?.name;
    if (secret === undefined) {
      return `${where} env ${variable.name} reads ${ref.name ?? ''} but AppBinding ${appBinding.metadata.name ?? ''} names no spec.secret: add the Secret holding the database credentials to the AppBinding`;
    }
    return { name: variable.name, valueFrom: { secretKeyRef: { ...ref, name: secret } } };
  }
  if (variable.value !== undefined && PLACEHOLDER.test(variable.value)) {
    const fills: Record<string, string> = { '<host url>': connection.host, '<host>': connection.host, '<port>': String(connection.port), '<data-dir>': `${TMP_PATH}/data` };
    const value = fills[variable.value];
    if (value === undefined) {
      return `${where} env ${variable.name} is the placeholder ${variable.value}, which Stash cannot fill (it fills <secret name>, <host url>, <host>, <port>, <data-dir>): set a value in the AgentTemplate`;
    }
    return { name: variable.name, value };
  }
  return variable;
}

function normaliseEnv(env: readonly V1EnvVar[]): V1EnvVar[] {
  return env.map((e) => (e.value === '' ? { name: e.name, ...(e.valueFrom ? { valueFrom: e.valueFrom } : {}) } : { ...e }));
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
  if (backend.local !== undefined) {
    const local = backend.local;
    const volume: V1Volume = { name: LOCAL_REPOSITORY_VOLUME };
    if (local.hostPath) volume.hostPath = { ...local.hostPath };
    else if (local.persistentVolumeClaim) volume.persistentVolumeClaim = { ...local.persistentVolumeClaim };
    else if (local.nfs) volume.nfs = { ...local.nfs };
    volumes.push(volume);
    stashMounts.push({ name: LOCAL_REPOSITORY_VOLUME, mountPath: local.mountPath });
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
      const filled = fillPlaceholders(variable, appBinding, connection, where);
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

export interface JobOutcome {
  /** The Job ended without the agent reporting: the host's error. */
  failed: boolean;
  error: string;
  at: string | undefined;
}

interface JobCondition { type: string; status: string; reason?: string; message?: string; lastTransitionTime?: Date | string }

function timeText(t: Date | string | undefined): string | undefined {
  if (t === undefined) return undefined;
  const d = typeof t === 'string' ? new Date(t) : t;
  return Number.isNaN(d.getTime()) ? undefined : `${d.toISOString().slice(0, 19)}Z`;
}

/**
 * Whether the Job has ended in a way that ends the run: Failed (the pod failed, the deadline
 * passed), or Complete while the run is still open longer than `graceSeconds` after completion
 * (the agent exited without reporting). undefined while the Job runs.
 */
export function jobOutcome(job: V1Job, now: Date, graceSeconds = 120): JobOutcome | undefined {
  const conditions = (job.status?.conditions ?? []) as JobCondition[];
  const failed = conditions.find((c) => c.type === 'Failed' && c.status === 'True');
  if (failed) {
    const detail = [failed.reason, failed.message].filter((x) => x !== undefined && x !== '').join(': ');
    return {
      failed: true,
      error: `Job ${job.metadata?.name ?? ''} failed${detail ? ` (${detail})` : ''}; see the Job's pod logs (kubectl logs job/${job.metadata?.name ?? ''} --all-containers)`,
      at: timeText(failed.lastTransitionTime),
    };
  }
  const complete = conditions.find((c) => c.type === 'Complete' && c.status === 'True');
  if (complete) {
    const at = timeText(complete.lastTransitionTime ?? job.status?.completionTime);
    if (at !== undefined && now.getTime() - Date.parse(at) < graceSeconds * 1000) return undefined;
    return {
      failed: true,
      error: `Job ${job.metadata?.name ?? ''} completed but its agent never reported the result to handle-trigger; check that the pod can reach STASH_FUNCTIONS_URL`,
      at,
    };
  }
  return undefined;
}

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
