// run-recovery, the pure part (docs/recovery.md): from a Recovery, its AgentTemplate, its
// Repository and its target, what recovers:
//   - recoverTo.volume            -> a batch/v1 Job `<recovery>-recovery` with the volume mounted;
//   - recoverTo.workload AppBinding -> the same Job with the database's DB_* environment;
//   - recoverTo.workload Deployment/StatefulSet/DaemonSet/ReplicaSet/ReplicationController
//                                 -> an apply configuration adding one init container to the
//                                    workload's pod template (server-side applied under FIELD_MANAGER);
// or why nothing can be made (a Ready=False condition). Also: what a failed Job means for the
// Recovery's status. No I/O.
import type { V1Container, V1EnvVar, V1Job, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import { agentName } from '../../shared/api/index.ts';
import { agentJob, agentJobName, COMPONENT_LABEL, JOB_TMP_PATH, JOB_TMP_VOLUME, labelValue, MANAGED_BY_LABEL } from '../../shared/agent-job.ts';
import type { AgentTemplate, AppBinding, Container, Recovery, Repository } from '../../shared/api/index.ts';
import type { ConditionInput } from '../../shared/kube/index.ts';
import {
  agentReportingEnv, agentVolumeMounts, agentVolumes, mergeEnv, normaliseEnv, SECRET_VOLUME, TOKEN_VOLUME, LOCAL_REPOSITORY_VOLUME,
} from '../../shared/agent-pod.ts';
import type { AgentPodOptions } from '../../shared/agent-pod.ts';
import { connectionOf, databaseEnv, ENGINES, engineFor, fillPlaceholders } from '../../shared/database-env.ts';
import {
  agentSecurityContext, canonical, controllerOf, coveringMounts, isAtOrBelow, localRepositoryVolume, ownedNames, WORKLOAD_KINDS,
} from '../../shared/pod-template.ts';
import type { Workload } from '../../shared/pod-template.ts';
/** Where this function's agents report unless told otherwise (options.functionsUrl). */
export { DEFAULT_FUNCTIONS_URL } from '../../shared/agent-pod.ts';
export { WORKLOAD_KINDS } from '../../shared/pod-template.ts';
export { jobOutcome } from '../../shared/job-outcome.ts';
export type { JobOutcome } from '../../shared/job-outcome.ts';

export const FIELD_MANAGER = 'stash.appscode.com/run-recovery';
export const FINALIZER = 'stash.appscode.com/run-recovery';
/** The reporting controller of this function's Events. */
export const CONTROLLER = 'stash.appscode.com/run-recovery';
/** On the Recovery: `<kind>/<name>` of the workload the init container was applied to (found again after recoverTo changes). */
export const TARGET_ANNOTATION = 'stash.appscode.com/recovery-target';
/** The Recovery condition this function owns. */
export const READY_CONDITION = 'Ready';
/** The host a recovery Job recovers (the host a Deployment's or a database's backup writes). */
export const HOST = 'host-0';

export const RECOVERY_LABEL = 'stash.appscode.com/recovery';
export const COMPONENT = 'recovery';
export { COMPONENT_LABEL, JOB_TMP_VOLUME, labelValue, MANAGED_BY_LABEL } from '../../shared/agent-job.ts';

/** The Job's volume holding the recovery target (recoverTo.volume's source). */
export const RECOVERY_VOLUME = 'stash-recovery-target';
export const TMP_PATH = JOB_TMP_PATH;

/**
 * The init container's volumes, named apart from the backup sidecar's (stash-tmp, stash-repository,
 * stash-token): a workload often has both, and each field manager must own (and on removal drop)
 * only its own volumes.
 */
export const INIT_VOLUMES = {
  tmp: 'stash-recovery-tmp',
  secret: 'stash-recovery-repository',
  token: 'stash-recovery-token',
  local: 'stash-recovery-local-repository',
} as const;

/** The variables Stash sets on recovery containers; a template or containerAttributes.env may not set them. */
export const RESERVED_ENV = [
  'RECOVERY_NAME', 'NAMESPACE', 'POD_NAME', 'NODE_NAME', 'STASH_HOST', 'STASH_SNAPSHOT_HOST', 'STASH_FUNCTIONS_URL', 'STASH_TOKEN_FILE',
  'STASH_REPOSITORY_SECRET_DIR',
] as const;

export interface PlanOptions extends AgentPodOptions {
  /** handle-trigger's URL, which the agent reports to. Default DEFAULT_FUNCTIONS_URL. */
  functionsUrl?: string;
  /** Prometheus Pushgateway URL; unset = the agent pushes nothing. */
  pushGatewayUrl?: string;
  /** A recovery Job running longer than this fails (Job DeadlineExceeded). Default 6 h. */
  activeDeadlineSeconds?: number;
  /** A finished Job is deleted after this (the result stays in the Recovery's status). Default 1 day. */
  ttlSecondsAfterFinished?: number;
}

/** Reasons of the Ready=False conditions this function sets. */
export type RefusalReason =
  | 'InvalidRecovery' | 'AgentTemplateNotFound' | 'InvalidAgentTemplate' | 'RepositoryNotFound' | 'RepositoryNotMountable' | 'TargetNotFound'
  | 'AppBindingNotFound' | 'InvalidAppBinding' | 'UnsupportedDatabase' | 'UnsupportedTarget' | 'PathsRequired' | 'PathNotMounted'
  | 'TargetManagedByController' | 'TargetHasAnotherRecovery' | 'NameConflict' | 'MountPathConflict' | 'SecurityContextConflict'
  | 'ReservedEnvironmentVariable' | 'ApplyConflict' | 'ApplyRejected' | 'JobFailed';

export function refusal(reason: RefusalReason, message: string, observedGeneration?: number): ConditionInput {
  const condition: ConditionInput = { type: READY_CONDITION, status: 'False', reason, message };
  if (observedGeneration !== undefined) condition.observedGeneration = observedGeneration;
  return condition;
}

/** What kind of target a Recovery names. */
export type TargetType = 'volume' | 'database' | 'workload' | 'unsupported';

export function targetType(recovery: Recovery): TargetType {
  const { volume, workload } = recovery.spec.recoverTo;
  if (volume !== undefined) return 'volume';
  if (workload?.kind === 'AppBinding') return 'database';
  if (workload !== undefined && WORKLOAD_KINDS[workload.kind] === workload.apiVersion) return 'workload';
  return 'unsupported';
}

/** Why recoverTo.workload names nothing Stash can recover into. */
export function unsupportedTargetMessage(recovery: Recovery): string {
  const w = recovery.spec.recoverTo.workload;
  if (w === undefined) return 'spec.recoverTo names neither a volume nor a workload: set one';
  const expected = WORKLOAD_KINDS[w.kind];
  if (expected !== undefined) {
    return `spec.recoverTo.workload ${w.kind} ${w.name} has apiVersion ${w.apiVersion}; Stash reads ${w.kind} at ${expected}: set spec.recoverTo.workload.apiVersion to ${expected}`;
  }
  return `spec.recoverTo.workload ${w.kind} ${w.name} (${w.apiVersion}) cannot be recovered into: Stash recovers into ${Object.keys(WORKLOAD_KINDS).join(', ')} ` +
    '(an init container), a database through an AppBinding (a Job), or a volume (spec.recoverTo.volume, a Job): point spec.recoverTo at one of those';
}

/** The recovery Job's name: `<recovery>-recovery`, at most 63 characters (the Job controller puts it in a label). */
export function jobName(recoveryName: string): string {
  return agentJobName(recoveryName, 'recovery');
}

/**
 * The container that recovers: the first (init containers first) whose command or first argument
 * is `recover` (`stash recover ...`); else the first init container; else the first container.
 */
export function recoverContainerName(spec: AgentTemplate['spec']): string {
  const all: Container[] = [...(spec.initContainers ?? []), ...spec.containers];
  const recovers = (c: Container): boolean =>
    c.command?.[0] === 'recover' || c.args?.[0] === 'recover' || (c.command !== undefined && c.command.length > 1 && c.command[1] === 'recover');
  const found = all.find(recovers) ?? spec.initContainers?.[0] ?? spec.containers[0];
  return found?.name ?? '';
}

const fieldRef = (fieldPath: string): V1EnvVar['valueFrom'] => ({ fieldRef: { fieldPath } });

/**
 * The environment of a recovery Job's containers: the Recovery, the pod, the restic host
 * (STASH_SNAPSHOT_HOST=host-0, and STASH_HOST as a backup Job has it), then where to report.
 */
export function jobEnv(recovery: Recovery, options: AgentPodOptions, templateText: string): V1EnvVar[] {
  return [
    { name: 'RECOVERY_NAME', value: recovery.metadata.name ?? '' },
    { name: 'NAMESPACE', value: recovery.metadata.namespace ?? '' },
    { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
    { name: 'STASH_HOST', value: HOST },
    { name: 'STASH_SNAPSHOT_HOST', value: HOST },
    ...agentReportingEnv(options, templateText),
  ];
}

/**
 * The environment of the init container in a workload: the Recovery and the pod; the agent
 * derives each pod's host from POD_NAME (StatefulSet ordinal) or NODE_NAME (DaemonSet), as the
 * backup sidecar does, so no STASH_SNAPSHOT_HOST is set.
 */
export function initContainerEnv(recovery: Recovery, options: AgentPodOptions, templateText: string): V1EnvVar[] {
  return [
    { name: 'RECOVERY_NAME', value: recovery.metadata.name ?? '' },
    { name: 'NAMESPACE', value: recovery.metadata.namespace ?? '' },
    { name: 'POD_NAME', valueFrom: fieldRef('metadata.name') },
    { name: 'NODE_NAME', valueFrom: fieldRef('spec.nodeName') },
    ...agentReportingEnv(options, templateText),
  ];
}

function generationOf(recovery: Recovery): number | undefined {
  return typeof recovery.metadata.generation === 'number' ? recovery.metadata.generation : undefined;
}

/** The first reserved variable set by the Recovery's containerAttributes or the template, as a refusal message. */
function reservedEnvMessage(recovery: Recovery, agentTemplate: AgentTemplate, containers: readonly Container[]): string | undefined {
  const templateName = agentTemplate.metadata.name ?? agentName(recovery.spec.recoveryAgent);
  for (const [source, env] of [
    ['spec.containerAttributes.env of the Recovery', recovery.spec.containerAttributes?.env ?? []],
    ...containers.map((c) => [`env of AgentTemplate ${templateName} container ${c.name}`, c.env ?? []] as const),
  ] as const) {
    const reserved = env.find((e) => (RESERVED_ENV as readonly string[]).includes(e.name));
    if (reserved !== undefined) {
      return `${source} sets ${reserved.name}, which Stash sets itself to identify the Recovery and the pod: remove it (Stash sets ${RESERVED_ENV.join(', ')})`;
    }
  }
  return undefined;
}

function repositoryNamespaceMessage(recovery: Recovery, repository: Repository): string | undefined {
  const namespace = recovery.metadata.namespace ?? 'default';
  const repoNamespace = repository.metadata.namespace ?? recovery.spec.repository.namespace ?? namespace;
  if (repoNamespace === namespace) return undefined;
  return `Repository ${repoNamespace}/${repository.metadata.name ?? ''} (spec.repository) is in another namespace than Recovery ${namespace}/${recovery.metadata.name ?? ''}: ` +
    `the recovering pod can only mount its storage Secret ${repository.spec.backend.storageSecretName} from its own namespace; ` +
    `create the Repository and its Secret in namespace ${namespace}`;
}

/** The volume recoverTo.volume names, as a pod volume. */
function recoveryTargetVolume(volume: NonNullable<Recovery['spec']['recoverTo']['volume']>): V1Volume {
  const out: V1Volume = { name: RECOVERY_VOLUME };
  if (volume.persistentVolumeClaim) out.persistentVolumeClaim = { ...volume.persistentVolumeClaim };
  else if (volume.hostPath) out.hostPath = { ...volume.hostPath };
  else if (volume.nfs) out.nfs = { ...volume.nfs };
  else out.emptyDir = { ...(volume.emptyDir ?? {}) } as V1Volume['emptyDir'];
  return out;
}

function quantities(values: Record<string, string | number>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(values)) out[key] = String(value);
  return out;
}

function resourcesOf(resources: Container['resources']): V1Container['resources'] | undefined {
  if (!resources) return undefined;
  const out: Record<string, Record<string, string>> = {};
  if (resources.limits && Object.keys(resources.limits).length > 0) out.limits = quantities(resources.limits);
  if (resources.requests && Object.keys(resources.requests).length > 0) out.requests = quantities(resources.requests);
  return Object.keys(out).length === 0 ? undefined : out;
}

// ---------------------------------------------------------------------------------------------
// The recovery Job (a volume, a database)

export interface JobInput {
  recovery: Recovery;
  agentTemplate: AgentTemplate;
  repository: Repository;
  /** The database, for recoverTo.workload kind AppBinding. */
  appBinding?: AppBinding;
  options?: PlanOptions;
}

export type JobPlan = { ok: true; job: V1Job } | { ok: false; condition: ConditionInput };

/** The Job that recovers into recoverTo.volume or into the AppBinding's database, or why there can be none. */
export function planRecoveryJob(input: JobInput): JobPlan {
  const { recovery, agentTemplate, repository, appBinding } = input;
  const options = input.options ?? {};
  const namespace = recovery.metadata.namespace ?? 'default';
  const name = recovery.metadata.name ?? '';
  const generation = generationOf(recovery);
  const refuse = (reason: RefusalReason, message: string): JobPlan => ({ ok: false, condition: refusal(reason, message, generation) });
  const templateName = agentTemplate.metadata.name ?? agentName(recovery.spec.recoveryAgent);
  const attributes = recovery.spec.containerAttributes;
  const pod = recovery.spec.podAttributes;
  const type = targetType(recovery);
  if (type !== 'volume' && type !== 'database') {
    return refuse('UnsupportedTarget', `Recovery ${namespace}/${name} recovers into a workload, not through a Job`);
  }
  const volume = recovery.spec.recoverTo.volume;

  // The database: where it is and its credentials (the AppBinding's Secret, by reference).
  let dbEnv: V1EnvVar[] = [];
  let connection: ReturnType<typeof connectionOf> | undefined;
  if (type === 'database') {
    if (appBinding === undefined) {
      return refuse('AppBindingNotFound', `AppBinding ${namespace}/${recovery.spec.recoverTo.workload?.name ?? ''} (spec.recoverTo.workload) was not given`);
    }
    const engine = engineFor(appBinding.spec.type);
    if (engine === undefined) {
      return refuse('UnsupportedDatabase',
        `AppBinding ${namespace}/${appBinding.metadata.name ?? ''} has type ${appBinding.spec.type}, which Stash cannot recover into: ` +
        `use one of ${Object.keys(ENGINES).join(', ')}, or recover the database's volume with spec.recoverTo.volume`);
    }
    connection = connectionOf(appBinding, engine);
    if ('error' in connection) return refuse('InvalidAppBinding', connection.error);
    dbEnv = databaseEnv(appBinding, engine, connection);
  }

  const repoProblem = repositoryNamespaceMessage(recovery, repository);
  if (repoProblem !== undefined) return refuse('RepositoryNotMountable', repoProblem);
  const templateContainers = [...(agentTemplate.spec.initContainers ?? []), ...agentTemplate.spec.containers];
  const reserved = reservedEnvMessage(recovery, agentTemplate, templateContainers);
  if (reserved !== undefined) return refuse('ReservedEnvironmentVariable', reserved);

  // Volumes: scratch, the storage Secret as files, the token, a local repository, the target volume.
  const volumes: V1Volume[] = [{ name: JOB_TMP_VOLUME, emptyDir: {} }, ...agentVolumes(repository.spec.backend.storageSecretName)];
  const stashMounts: V1VolumeMount[] = agentVolumeMounts();
  const local = localRepositoryVolume(repository);
  if (local !== undefined) {
    volumes.push(local.volume);
    stashMounts.push(local.mount);
  }
  if (volume !== undefined) {
    // The whole volume at mountPath: the agent restores into mountPath/subPath (agent/cli/cluster-plan.ts).
    const clash = stashMounts.find((m) => isAtOrBelow(volume.mountPath, m.mountPath) || isAtOrBelow(m.mountPath, volume.mountPath));
    if (clash !== undefined) {
      return refuse('MountPathConflict',
        `spec.recoverTo.volume.mountPath ${volume.mountPath} overlaps ${clash.mountPath}, where the recovery Job mounts ${clash.name}: choose another mountPath`);
    }
    if (isAtOrBelow(volume.mountPath, TMP_PATH) || isAtOrBelow(TMP_PATH, volume.mountPath)) {
      return refuse('MountPathConflict',
        `spec.recoverTo.volume.mountPath ${volume.mountPath} overlaps ${TMP_PATH}, the recovery Job's scratch directory: choose another mountPath`);
    }
    volumes.push(recoveryTargetVolume(volume));
    stashMounts.push({ name: RECOVERY_VOLUME, mountPath: volume.mountPath });
  }

  const templateText = JSON.stringify(agentTemplate.spec);
  const baseEnv = jobEnv(recovery, options, templateText);
  const recoverName = recoverContainerName(agentTemplate.spec);

  const labels: Record<string, string> = { [MANAGED_BY_LABEL]: 'stash', [COMPONENT_LABEL]: COMPONENT, [RECOVERY_LABEL]: labelValue(name) };
  const built = agentJob({
    what: 'a recovery Job',
    templateName,
    template: agentTemplate.spec,
    volumes,
    stashMounts,
    env: baseEnv,
    main: recoverName,
    mainEnv: dbEnv,
    // containerAttributes.args reach the agent through its claim, not its command line.
    fill: appBinding === undefined || connection === undefined || 'error' in connection
      ? undefined
      : (variable, where) => fillPlaceholders(variable, appBinding, connection, where, `${TMP_PATH}/data`),
    attributes,
    pod,
    job: {
      name: jobName(name), namespace, labels,
      owner: { kind: 'Recovery', name, uid: (recovery.metadata.uid as string | undefined) ?? '' },
      options,
    },
  });
  return built.ok ? built : refuse('InvalidAgentTemplate', built.message);
}

// ---------------------------------------------------------------------------------------------
// The init container in a workload

export type { Workload } from '../../shared/pod-template.ts';

/** The partial workload that is server-side applied. */
export interface ApplyConfig {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string };
  spec?: { template: { spec: { initContainers: V1Container[]; volumes: V1Volume[] } } };
}

export interface InitContainerInput {
  recovery: Recovery;
  agentTemplate: AgentTemplate;
  repository: Repository;
  workload: Workload;
  options?: AgentPodOptions;
}

export type InitContainerPlan = { ok: true; applyConfig: ApplyConfig; container: string } | { ok: false; condition: ConditionInput };

/** The apply object that removes everything FIELD_MANAGER added: it owns no field any more. */
export function removalConfig(workload: { apiVersion: string; kind: string; metadata: { name?: string; namespace?: string } }): ApplyConfig {
  return { apiVersion: workload.apiVersion, kind: workload.kind, metadata: { name: workload.metadata.name ?? '', namespace: workload.metadata.namespace ?? '' } };
}

/** The template's own mounts of the init container: only the scratch volume `tmp` (the default templates' name) is provided. */
function templateMounts(agent: Container, stashMounts: readonly V1VolumeMount[]): V1VolumeMount[] | string {
  const out: V1VolumeMount[] = [];
  for (const mount of agent.volumeMounts ?? []) {
    if (mount.name !== 'tmp') {
      return `container ${agent.name} mounts volume ${mount.name}, which a recovery init container does not have (only "tmp", the scratch emptyDir): remove that mount`;
    }
    if (stashMounts.some((m) => m.mountPath === mount.mountPath)) continue;
    out.push({ ...mount, name: INIT_VOLUMES.tmp });
  }
  return out;
}

/**
 * The init container that recovers `spec.paths` into the workload, as an apply configuration, or
 * why none is applied. One container: the template's recovering one (recoverContainerName), with
 * the app containers' mounts that hold spec.paths (writable, at the app's paths: the agent
 * restores into `/`), the agent's volumes, and the identity of the app container mounting the
 * first path. Server-side apply appends it after the workload's own init containers (a new item of
 * a keyed list goes after the live ones; putting it first would mean co-owning the app's init
 * containers), so it runs before every app container.
 */
export function planInitContainer(input: InitContainerInput): InitContainerPlan {
  const { recovery, agentTemplate, repository, workload } = input;
  const options = input.options ?? {};
  const spec = recovery.spec;
  const namespace = recovery.metadata.namespace ?? '';
  const name = recovery.metadata.name ?? '';
  const generation = generationOf(recovery);
  const refuse = (reason: RefusalReason, message: string): InitContainerPlan => ({ ok: false, condition: refusal(reason, message, generation) });
  const target = spec.recoverTo.workload;
  if (target === undefined || targetType(recovery) !== 'workload') return refuse('UnsupportedTarget', unsupportedTargetMessage(recovery));
  if (workload.kind !== target.kind || workload.metadata.name !== target.name) {
    return refuse('TargetNotFound', `the workload read (${workload.kind} ${workload.metadata.name ?? ''}) is not spec.recoverTo.workload ${target.kind} ${target.name}`);
  }
  const what = `${target.kind} ${namespace}/${target.name}`;

  const controller = controllerOf(workload.metadata);
  if (controller !== undefined) {
    const hint = WORKLOAD_KINDS[controller.kind] === controller.apiVersion
      ? `set spec.recoverTo.workload to ${controller.kind} ${controller.name} (apiVersion ${controller.apiVersion}) instead`
      : `recover through ${controller.kind} ${controller.name}'s own operator, or recover its volume with spec.recoverTo.volume`;
    return refuse('TargetManagedByController',
      `${what} is controlled by ${controller.kind} ${controller.name} (its controller ownerReference); that controller rewrites the pod ` +
      `template, so an init container Stash added would be removed and re-added forever: ${hint}`);
  }
  const templateSpec = workload.spec?.template?.spec;
  if (templateSpec === undefined) return refuse('UnsupportedTarget', `${what} has no spec.template.spec; it is not a pod controller Stash can recover into`);

  const repoProblem = repositoryNamespaceMessage(recovery, repository);
  if (repoProblem !== undefined) return refuse('RepositoryNotMountable', repoProblem);

  const paths = spec.paths ?? [];
  if (paths.length === 0) {
    return refuse('PathsRequired',
      `Recovery ${namespace}/${name} recovers into ${what} but lists no spec.paths: list the directories to recover, as the app's containers mount them (e.g. /source/data)`);
  }
  const covering = coveringMounts(templateSpec.containers, paths, false);
  if (!covering.ok) {
    return refuse('PathNotMounted',
      `spec.paths entry ${covering.directory} is not on any volume the containers of ${what} mount ` +
      `(${covering.mounted.length > 0 ? `they mount ${covering.mounted.join(', ')}` : 'they mount no volumes'}): files recovered there would be lost with the init container; ` +
      'fix the path in spec.paths or mount a volume holding it in the app container');
  }
  const { mounts: targetMounts, identitySource } = covering;

  const templateName = agentTemplate.metadata.name ?? agentName(spec.recoveryAgent);
  const recoverName = recoverContainerName(agentTemplate.spec);
  const agent = [...(agentTemplate.spec.initContainers ?? []), ...agentTemplate.spec.containers].find((c) => c.name === recoverName);
  if (agent === undefined) return refuse('InvalidAgentTemplate', `AgentTemplate ${templateName} has no container: add one that runs \`stash recover\``);
  const reserved = reservedEnvMessage(recovery, agentTemplate, [agent]);
  if (reserved !== undefined) return refuse('ReservedEnvironmentVariable', reserved);

  // The app's containers and volumes: not what this manager applied before.
  const ownedInit = ownedNames(workload.metadata, FIELD_MANAGER, 'f:initContainers');
  const ownedVolumes = ownedNames(workload.metadata, FIELD_MANAGER, 'f:volumes');
  const appNames = new Set([...(templateSpec.initContainers ?? []).filter((c) => !ownedInit.has(c.name)), ...templateSpec.containers].map((c) => c.name));
  if (appNames.has(agent.name)) {
    return refuse('NameConflict', `${what} already has a container named ${agent.name}, the name of AgentTemplate ${templateName}'s recovery container: rename one of them`);
  }

  // Volumes Stash adds, named apart from the backup sidecar's.
  const [secretVolume, tokenVolume] = agentVolumes(repository.spec.backend.storageSecretName);
  const rename: Record<string, string> = { [SECRET_VOLUME]: INIT_VOLUMES.secret, [TOKEN_VOLUME]: INIT_VOLUMES.token, [LOCAL_REPOSITORY_VOLUME]: INIT_VOLUMES.local };
  const volumes: V1Volume[] = [
    { name: INIT_VOLUMES.tmp, emptyDir: {} },
    { ...(secretVolume as V1Volume), name: INIT_VOLUMES.secret },
    { ...(tokenVolume as V1Volume), name: INIT_VOLUMES.token },
  ];
  const stashMounts: V1VolumeMount[] = [
    { name: INIT_VOLUMES.tmp, mountPath: TMP_PATH },
    ...agentVolumeMounts().map((m) => ({ ...m, name: rename[m.name] ?? m.name })),
  ];
  const local = localRepositoryVolume(repository);
  if (local !== undefined) {
    volumes.push({ ...local.volume, name: INIT_VOLUMES.local });
    stashMounts.push({ ...local.mount, name: INIT_VOLUMES.local });
  }
  const appVolumeClash = volumes.find((v) => (templateSpec.volumes ?? []).some((w) => w.name === v.name) && !ownedVolumes.has(v.name));
  if (appVolumeClash !== undefined) {
    return refuse('NameConflict', `${what} already has a volume named ${appVolumeClash.name}, a name Stash uses for its recovery init container: rename that volume in the workload`);
  }
  for (const stashMount of stashMounts) {
    const clash = targetMounts.find((m) => isAtOrBelow(m.mountPath, stashMount.mountPath) || isAtOrBelow(stashMount.mountPath, m.mountPath));
    if (clash !== undefined) {
      return refuse('MountPathConflict',
        `the volume holding a recovered path is mounted at ${clash.mountPath}, which overlaps ${stashMount.mountPath} where the init container mounts ` +
        `${stashMount.name}: recover a directory outside ${stashMount.mountPath} or mount the app volume elsewhere`);
    }
  }
  const ownMounts = templateMounts(agent, stashMounts);
  if (typeof ownMounts === 'string') return refuse('InvalidAgentTemplate', `AgentTemplate ${templateName}: ${ownMounts}`);

  // Runs as the app container that mounts the first path, so recovered files belong to the app.
  const attributes = spec.containerAttributes;
  const securityContext = agentSecurityContext(agent.securityContext, identitySource?.securityContext, attributes?.securityContext);
  const podSecurity = templateSpec.securityContext;
  const effective = (field: 'runAsUser' | 'runAsNonRoot'): unknown => securityContext?.[field] ?? identitySource?.securityContext?.[field] ?? podSecurity?.[field];
  if (effective('runAsNonRoot') === true && effective('runAsUser') === 0) {
    return refuse('SecurityContextConflict',
      `the init container would run as uid 0 while ${what} requires runAsNonRoot: the kubelet would refuse to start it (and the app with it); ` +
      'remove runAsUser: 0 from spec.containerAttributes.securityContext (or the AgentTemplate) so the agent runs as the app does');
  }

  const templateText = JSON.stringify(agent);
  const container: V1Container = { name: agent.name, image: agent.image };
  if (agent.command) container.command = [...agent.command];
  if (agent.args) container.args = [...agent.args];
  if (agent.workingDir) container.workingDir = agent.workingDir;
  container.env = normaliseEnv(mergeEnv(mergeEnv(initContainerEnv(recovery, options, templateText), (agent.env ?? []) as V1EnvVar[]), (attributes?.env ?? []) as V1EnvVar[]));
  if (agent.envFrom) container.envFrom = agent.envFrom;
  container.volumeMounts = [...targetMounts, ...stashMounts, ...ownMounts];
  const resources = resourcesOf(attributes?.resources ?? agent.resources);
  if (resources) container.resources = resources;
  if (securityContext) container.securityContext = securityContext;
  const pullPolicy = attributes?.imagePullPolicy ?? agent.imagePullPolicy;
  if (pullPolicy) container.imagePullPolicy = pullPolicy;

  const applyConfig: ApplyConfig = {
    apiVersion: workload.apiVersion,
    kind: workload.kind,
    metadata: { name: target.name, namespace },
    spec: { template: { spec: { initContainers: [container], volumes } } },
  };
  return { ok: true, applyConfig: canonical(applyConfig) as ApplyConfig, container: agent.name };
}

// ---------------------------------------------------------------------------------------------
// Status

type RecoveredHost = NonNullable<NonNullable<Recovery['status']>['recoveredHosts']>[number];

/** True when the agent (through handle-trigger) reported a result for `host`, or the Recovery is over. */
export function hostReported(recovery: Pick<Recovery, 'status'>, host = HOST): boolean {
  const phase = recovery.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return true;
  const entry = recovery.status?.recoveredHosts?.find((h) => h.host === host);
  return entry !== undefined && (entry.phase === 'Succeeded' || entry.phase === 'Failed');
}

/** The status patch that fails the Recovery for a Job that ended without a report: host-0 Failed, phase Failed, the error. */
export function failedStatus(recovery: Pick<Recovery, 'status'>, error: string, now: Date, host = HOST): Record<string, unknown> {
  const at = `${now.toISOString().slice(0, 19)}Z`;
  const hosts: RecoveredHost[] = [...(recovery.status?.recoveredHosts ?? [])];
  const index = hosts.findIndex((h) => h.host === host);
  const entry: RecoveredHost = { ...(index >= 0 ? hosts[index] : { host }), host, phase: 'Failed', completionTime: at, error };
  if (index >= 0) hosts[index] = entry;
  else hosts.push(entry);
  return { phase: 'Failed', error, completionTime: at, recoveredHosts: hosts };
}
