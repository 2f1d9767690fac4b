// The backup sidecar a Backup puts into its workload's pod template: pure, no I/O.
//
// planSidecar() returns the partial workload object the handler server-side applies under the
// field manager `stash.appscode.com/inject-sidecar` (only the fields Stash owns: its containers
// and volumes), or why nothing is applied. Only what reaches the pod is in it: schedule,
// retention, excludes and paused are read by the agent from the functions at run time, so
// changing them never restarts a pod. The update strategy is never touched.
import { createHash } from 'node:crypto';
import type { V1Container, V1EnvVar, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import { agentName } from '../../shared/api/index.ts';
import type { AgentTemplate, Backup, Container, Repository } from '../../shared/api/index.ts';
import type { ConditionInput } from '../../shared/kube/index.ts';
import { agentReportingEnv, agentVolumeMounts, agentVolumes, mergeEnv, normaliseEnv } from '../../shared/agent-pod.ts';
import {
  agentSecurityContext, canonical, controllerOf, coveringMounts, isAtOrBelow, localRepositoryVolume, ownedNames, WORKLOAD_KINDS,
} from '../../shared/pod-template.ts';
import type { Workload } from '../../shared/pod-template.ts';
export { canonical, WORKLOAD_KINDS } from '../../shared/pod-template.ts';
/** Where this function's agents report unless told otherwise (options.functionsUrl). */
export { DEFAULT_FUNCTIONS_URL } from '../../shared/agent-pod.ts';

export const FIELD_MANAGER = 'stash.appscode.com/inject-sidecar';
export const FINALIZER = 'stash.appscode.com/inject-sidecar';
/** On the Backup: `<kind>/<name>` of the workload the sidecar was applied to (found again after targetRef changes). */
export const TARGET_ANNOTATION = 'stash.appscode.com/sidecar-target';

/**
 * On the Backup: which workload its targetRef names, as a label so that an event about a workload
 * finds its Backups with a label selector instead of reading every Backup of the namespace.
 * Written by inject-sidecar on every Backup it reconciles; a Backup not labelled yet (created
 * while the function was down) is labelled by the next resync.
 */
export const TARGET_LABEL = 'stash.appscode.com/target';

/** Where the sidecar finds what Stash mounts. */
export const TMP_VOLUME = 'stash-tmp';
export const TMP_PATH = '/tmp';
/** The StatefulSet controller labels each pod with its ordinal (GA in Kubernetes 1.32). */
export const POD_INDEX_LABEL = 'apps.kubernetes.io/pod-index';

/**
 * The TARGET_LABEL value for a workload: `<Kind>.<name>` when it fits a label value (63
 * characters; kinds are alphanumeric and names DNS labels or subdomains, so it is always valid),
 * else `<Kind>.` and the start of the name's SHA-256. Readers compare targetRef exactly after
 * selecting, so a shared hash prefix could never mix two workloads up.
 */
export function targetLabelValue(kind: string, name: string): string {
  const plain = `${kind}.${name}`;
  if (plain.length <= 63) return plain;
  return `${kind}.${createHash('sha256').update(name).digest('hex')}`.slice(0, 63);
}

/** What the Backup's status records about its sidecar: where it is, and that workload's generation when it was last verified. */
export interface SidecarStatus {
  target: string;
  targetGeneration: number;
}

/** The parts of a Backup (as read) that say whether its sidecar was verified for its current spec. */
export interface BackupState {
  metadata: { generation?: number; deletionTimestamp?: unknown; finalizers?: string[]; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: { targetRef?: { kind?: string; name?: string } };
  status?: { conditions?: { type: string; status: string; reason?: string; observedGeneration?: number }[]; sidecar?: Partial<SidecarStatus> };
}

/**
 * True when the Backup says its sidecar is in place for its current spec: Ready because the
 * sidecar was injected at this generation, labelled, finalized and annotated for its target.
 * An event about the Backup that finds this true (its own status or metadata writes, a label
 * change) needs no further reads; the per-minute resync always verifies in full.
 */
export function sidecarVerified(backup: BackupState): boolean {
  const m = backup.metadata;
  const target = backup.spec?.targetRef;
  if (m.deletionTimestamp !== undefined || target?.kind === undefined || target.name === undefined) return false;
  const key = `${target.kind}/${target.name}`;
  const ready = backup.status?.conditions?.find((c) => c.type === 'Ready');
  return ready?.status === 'True' && ready.reason === 'SidecarInjected' && ready.observedGeneration === m.generation &&
    (m.finalizers ?? []).includes(FINALIZER) && m.labels?.[TARGET_LABEL] === targetLabelValue(target.kind, target.name) &&
    m.annotations?.[TARGET_ANNOTATION] === key && backup.status?.sidecar?.target === key;
}

/**
 * True when an event about `workload` cannot concern this Backup's sidecar: the Backup is
 * verified and the workload's spec has not changed since (its generation is the one recorded).
 * A workload's status updates (the rollout the injection started) are the common case.
 */
export function workloadUnchangedSince(backup: BackupState, workload: { metadata?: { generation?: number } } | undefined): boolean {
  return workload !== undefined && sidecarVerified(backup) && workload.metadata?.generation !== undefined &&
    backup.status?.sidecar?.targetGeneration === workload.metadata.generation;
}

export type { Workload } from '../../shared/pod-template.ts';

/** The partial workload that is server-side applied. */
export interface ApplyConfig {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string };
  spec?: { template: { spec: { containers: V1Container[]; volumes: V1Volume[] } } };
}

export interface PlanOptions {
  /** handle-trigger's URL, which the agent reports to. Default DEFAULT_FUNCTIONS_URL. */
  functionsUrl?: string;
  /** Prometheus Pushgateway URL; '' (the default) = the agent pushes nothing. */
  pushGatewayUrl?: string;
}

export interface PlanInput {
  backup: Backup;
  agentTemplate: AgentTemplate;
  repository: Repository;
  workload: Workload;
  options?: PlanOptions;
}

export type Plan =
  | { action: 'apply'; applyConfig: ApplyConfig }
  | { action: 'none'; reason: string }
  | { action: 'refuse'; condition: ConditionInput };

/** Reasons of the Ready=False conditions this function sets. */
export type RefusalReason =
  | 'AgentTemplateNotFound' | 'RepositoryNotFound' | 'TargetNotFound' | 'UnsupportedTarget' | 'TargetManagedByController'
  | 'TargetDirectoryNotMounted' | 'InvalidAgentTemplate' | 'InvalidBackup' | 'RepositoryNotMountable' | 'MountPathConflict' | 'NameConflict'
  | 'SecurityContextConflict' | 'ReservedEnvironmentVariable' | 'TargetHasAnotherBackup' | 'ApplyConflict' | 'ApplyRejected';

export function refusal(reason: RefusalReason, message: string, observedGeneration?: number): ConditionInput {
  const condition: ConditionInput = { type: 'Ready', status: 'False', reason, message };
  if (observedGeneration !== undefined) condition.observedGeneration = observedGeneration;
  return condition;
}

export function describeWorkload(kind: string, namespace: string, name: string): string {
  return `${kind} ${namespace}/${name}`;
}

/** Null when `kind`/`apiVersion` is a workload Stash injects into, else the refusal message. */
export function unsupportedTargetMessage(targetRef: { apiVersion: string; kind: string; name: string }): string | undefined {
  const expected = WORKLOAD_KINDS[targetRef.kind];
  if (expected === undefined) {
    return `targetRef ${targetRef.kind} ${targetRef.name} (${targetRef.apiVersion}) cannot get a backup sidecar: Stash injects into ` +
      `${Object.keys(WORKLOAD_KINDS).join(', ')} (or backs up a database through an AppBinding). ` +
      (targetRef.kind === 'CronJob' || targetRef.kind === 'Job' || targetRef.kind === 'Pod'
        ? `A ${targetRef.kind} is not a long-running controller of pods: back up the volume it writes from a Deployment or StatefulSet that mounts it, or recover it with a Recovery.`
        : 'Point targetRef at one of those kinds.');
  }
  if (targetRef.apiVersion !== expected) {
    return `targetRef ${targetRef.kind} ${targetRef.name} has apiVersion ${targetRef.apiVersion}; Stash reads ${targetRef.kind} at ${expected}: set targetRef.apiVersion to ${expected}`;
  }
  return undefined;
}

/** The apply object that removes everything the field manager added: it owns no field any more. */
export function removalConfig(workload: { apiVersion: string; kind: string; metadata: { name?: string; namespace?: string } }): ApplyConfig {
  return {
    apiVersion: workload.apiVersion,
    kind: workload.kind,
    metadata: { name: workload.metadata.name ?? '', namespace: workload.metadata.namespace ?? '' },
  };
}

/** The variables Stash sets and a template or containerAttributes may not override. */
export const RESERVED_ENV = [
  'BACKUP_NAME', 'NAMESPACE', 'POD_NAME', 'POD_INDEX', 'NODE_NAME', 'STASH_HOST', 'STASH_FUNCTIONS_URL', 'STASH_TOKEN_FILE',
  'STASH_REPOSITORY_SECRET_DIR',
] as const;

/**
 * The environment Stash gives every sidecar container. STASH_HOST is the replica's restic host:
 * `host-0` for Deployment-like workloads (one replica backs up), `host-<ordinal>` for a
 * StatefulSet (the pod-index label via the downward API), the node name for a DaemonSet.
 */
export function stashEnv(backup: { name: string; namespace: string }, kind: string, options: PlanOptions, templateText: string): V1EnvVar[] {
  const env: V1EnvVar[] = [
    { name: 'BACKUP_NAME', value: backup.name },
    { name: 'NAMESPACE', value: backup.namespace },
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
  ];
  if (kind === 'StatefulSet') {
    env.push({ name: 'POD_INDEX', valueFrom: { fieldRef: { fieldPath: `metadata.labels['${POD_INDEX_LABEL}']` } } });
    env.push({ name: 'STASH_HOST', value: 'host-$(POD_INDEX)' });
  } else if (kind === 'DaemonSet') {
    env.push({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    env.push({ name: 'STASH_HOST', value: '$(NODE_NAME)' });
  } else {
    env.push({ name: 'STASH_HOST', value: 'host-0' });
  }
  env.push(...agentReportingEnv(options, templateText));
  return env;
}

/** Milliseconds of a metav1.Time, as a string (JSON) or a Date (client-node's typed reads); 0 if absent. */
function timeOf(value: unknown): number {
  if (value instanceof Date) return value.getTime();
  if (typeof value === 'string') return Date.parse(value) || 0;
  return 0;
}

/**
 * Whether `backup` is the Backup that owns the sidecar of its target: with one field manager,
 * two Backups on one workload would overwrite each other's sidecar on every resync. The oldest
 * live Backup (creationTimestamp, then name) wins; returns the winner when it is another one.
 */
export function otherClaimant(backup: Backup, siblings: readonly Backup[]): Backup | undefined {
  const key = (b: Backup): string => `${b.spec.targetRef.kind}/${b.spec.targetRef.name}`;
  const order = (b: Backup): string => `${String(timeOf(b.metadata.creationTimestamp)).padStart(16, '0')}\u0000${b.metadata.name ?? ''}`;
  const contenders = siblings
    .filter((b) => b.metadata.deletionTimestamp === undefined && key(b) === key(backup) && b.metadata.namespace === backup.metadata.namespace)
    .filter((b) => b.metadata.name !== backup.metadata.name);
  const first = [backup, ...contenders].sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0))[0];
  return first && first.metadata.name !== backup.metadata.name ? first : undefined;
}

/** The sidecar for `backup` in `workload`, or why none is applied. */
export function planSidecar(input: PlanInput): Plan {
  const { backup, agentTemplate, repository, workload } = input;
  const options = input.options ?? {};
  const spec = backup.spec;
  const namespace = backup.metadata.namespace ?? '';
  const backupName = backup.metadata.name ?? '';
  const generation = typeof backup.metadata.generation === 'number' ? backup.metadata.generation : undefined;
  const refuse = (reason: RefusalReason, message: string): Plan => ({ action: 'refuse', condition: refusal(reason, message, generation) });

  if (spec.targetRef.kind === 'AppBinding') {
    return { action: 'none', reason: `Backup ${namespace}/${backupName} backs up a database (AppBinding ${spec.targetRef.name}): launch-db-job runs it as a Job, no sidecar` };
  }
  const unsupported = unsupportedTargetMessage(spec.targetRef);
  if (unsupported !== undefined) return refuse('UnsupportedTarget', unsupported);
  if (workload.kind !== spec.targetRef.kind || workload.metadata.name !== spec.targetRef.name) {
    return refuse('TargetNotFound', `the workload read (${workload.kind} ${workload.metadata.name ?? ''}) is not targetRef ${spec.targetRef.kind} ${spec.targetRef.name}`);
  }
  const what = describeWorkload(workload.kind, namespace, spec.targetRef.name);

  const controller = controllerOf(workload.metadata);
  if (controller !== undefined) {
    const hint = WORKLOAD_KINDS[controller.kind] === controller.apiVersion
      ? `set targetRef to ${controller.kind} ${controller.name} (apiVersion ${controller.apiVersion}) instead`
      : `configure backups through ${controller.kind} ${controller.name}'s own operator, or back up its data with an AppBinding`;
    return refuse('TargetManagedByController',
      `${what} is controlled by ${controller.kind} ${controller.name} (its controller ownerReference); that controller rewrites the pod ` +
      `template, so a sidecar Stash added would be removed and re-added forever (stashed/stash#1308): ${hint}`);
  }

  const templateSpec = workload.spec?.template?.spec;
  if (templateSpec === undefined) return refuse('UnsupportedTarget', `${what} has no spec.template.spec; it is not a pod controller Stash can inject into`);

  const repoNamespace = spec.repository.namespace ?? namespace;
  if (repoNamespace !== namespace) {
    return refuse('RepositoryNotMountable',
      `Repository ${repoNamespace}/${spec.repository.name} is in another namespace than ${what}; the kubelet mounts its storage Secret ` +
      `${repository.spec.backend.storageSecretName} only into pods of namespace ${repoNamespace}: ` +
      `create the Repository and its Secret in namespace ${namespace}`);
  }

  const templateName = agentName(spec.backupAgent);
  if ((agentTemplate.spec.initContainers ?? []).length > 0) {
    return refuse('InvalidAgentTemplate',
      `AgentTemplate ${templateName} has initContainers, which a backup sidecar cannot run (they would run before the app at every pod start); ` +
      `a workload backup needs a template with containers only, such as stash-volume-backup`);
  }

  // Target directories -> the app volumes holding them, mounted read-only at the app's mount path.
  const directories = spec.targetDirectories ?? [];
  if (directories.length === 0) return refuse('InvalidBackup', `Backup ${namespace}/${backupName} lists no targetDirectories: list the directories (as the app mounts them) to back up`);
  // The app's containers: not the sidecar this manager applied before.
  const ownedContainers = ownedNames(workload.metadata, FIELD_MANAGER, 'f:containers');
  const appContainers = templateSpec.containers.filter((c) => !ownedContainers.has(c.name));
  const covering = coveringMounts(appContainers, directories, true);
  if (!covering.ok) {
    return refuse('TargetDirectoryNotMounted',
      `targetDirectories entry ${covering.directory} is not on any volume the containers of ${what} mount ` +
      `(${covering.mounted.length > 0 ? `they mount ${covering.mounted.join(', ')}` : 'they mount no volumes'}): a sidecar can only read volumes; ` +
      'fix the path in targetDirectories or mount a volume holding it in the app container');
  }
  const { mounts: targetMounts, identitySource } = covering;

  // Volumes Stash adds.
  const backend = repository.spec.backend;
  const volumes: V1Volume[] = [
    { name: TMP_VOLUME, emptyDir: {} },
    ...agentVolumes(backend.storageSecretName),
  ];
  const stashMounts: V1VolumeMount[] = [
    { name: TMP_VOLUME, mountPath: TMP_PATH },
    ...agentVolumeMounts(),
  ];
  const local = localRepositoryVolume(repository);
  if (local !== undefined) {
    volumes.push(local.volume);
    stashMounts.push(local.mount);
  }
  const ownedVolumes = ownedNames(workload.metadata, FIELD_MANAGER, 'f:volumes');
  const appVolumeClash = volumes.find((v) => (templateSpec.volumes ?? []).some((w) => w.name === v.name) && !ownedVolumes.has(v.name));
  if (appVolumeClash !== undefined) {
    return refuse('NameConflict',
      `${what} already has a volume named ${appVolumeClash.name}, a name Stash uses for its sidecar: rename that volume in the workload`);
  }
  for (const stashMount of stashMounts) {
    const clash = targetMounts.find((m) => isAtOrBelow(m.mountPath, stashMount.mountPath) || isAtOrBelow(stashMount.mountPath, m.mountPath));
    if (clash !== undefined) {
      return refuse('MountPathConflict',
        `the volume holding a target directory is mounted at ${clash.mountPath}, which overlaps ${stashMount.mountPath} where the sidecar mounts ` +
        `${stashMount.name}: back up a directory outside ${stashMount.mountPath} or mount the app volume elsewhere`);
    }
  }

  // Security context checks.
  const attributes = spec.containerAttributes;
  const podSecurity = templateSpec.securityContext;
  const effective = (field: 'runAsUser' | 'runAsNonRoot', sc: Record<string, unknown> | undefined): unknown =>
    sc?.[field] ?? identitySource?.securityContext?.[field] ?? podSecurity?.[field];

  const templateText = JSON.stringify(agentTemplate.spec.containers);
  const baseEnv = stashEnv({ name: backupName, namespace }, workload.kind, options, templateText);
  for (const [source, env] of [['containerAttributes.env of the Backup', attributes?.env ?? []], ...agentTemplate.spec.containers.map((c) => [`env of AgentTemplate ${templateName} container ${c.name}`, c.env ?? []] as const)] as const) {
    const reserved = env.find((e) => (RESERVED_ENV as readonly string[]).includes(e.name));
    if (reserved !== undefined) {
      return refuse('ReservedEnvironmentVariable',
        `${source} sets ${reserved.name}, which Stash sets itself to identify the Backup and the replica: remove it (Stash sets ${RESERVED_ENV.join(', ')})`);
    }
  }

  const appNames = new Set(appContainers.map((c) => c.name));
  const containers: V1Container[] = [];
  for (const agent of agentTemplate.spec.containers) {
    if (appNames.has(agent.name)) {
      return refuse('NameConflict',
        `${what} already has a container named ${agent.name}, the name of AgentTemplate ${templateName}'s container: rename one of them`);
    }
    const securityContext = agentSecurityContext(agent.securityContext, identitySource?.securityContext, attributes?.securityContext);
    if (effective('runAsNonRoot', securityContext) === true && effective('runAsUser', securityContext) === 0) {
      return refuse('SecurityContextConflict',
        `the sidecar would run as uid 0 while ${what} requires runAsNonRoot: the kubelet would refuse to start it; ` +
        'remove runAsUser: 0 from containerAttributes.securityContext (or the AgentTemplate) so the agent runs as the app does');
    }
    const built = sidecarContainer(agent, {
      env: normaliseEnv(mergeEnv(mergeEnv(baseEnv, (agent.env ?? []) as V1EnvVar[]), (attributes?.env ?? []) as V1EnvVar[])),
      mounts: [...targetMounts, ...stashMounts, ...templateMounts(agent, stashMounts)],
      securityContext,
      resources: attributes?.resources ?? agent.resources,
      imagePullPolicy: attributes?.imagePullPolicy ?? agent.imagePullPolicy,
    });
    if (typeof built === 'string') return refuse('InvalidAgentTemplate', `AgentTemplate ${templateName}: ${built}`);
    containers.push(built);
  }

  const applyConfig: ApplyConfig = {
    apiVersion: workload.apiVersion,
    kind: workload.kind,
    metadata: { name: spec.targetRef.name, namespace },
    spec: { template: { spec: { containers, volumes } } },
  };
  return { action: 'apply', applyConfig: canonical(applyConfig) as ApplyConfig };
}

/** The template's own volume mounts: only the scratch volume `tmp` (the default templates' name) is provided. */
function templateMounts(agent: Container, stashMounts: readonly V1VolumeMount[]): V1VolumeMount[] {
  const out: V1VolumeMount[] = [];
  for (const mount of agent.volumeMounts ?? []) {
    if (stashMounts.some((m) => m.mountPath === mount.mountPath)) continue;
    out.push({ ...mount, name: mount.name === 'tmp' ? TMP_VOLUME : mount.name });
  }
  return out;
}

function sidecarContainer(agent: Container, parts: {
  env: V1EnvVar[]; mounts: V1VolumeMount[]; securityContext: Record<string, unknown> | undefined;
  resources: Container['resources']; imagePullPolicy: Container['imagePullPolicy'];
}): V1Container | string {
  const unknownMount = (agent.volumeMounts ?? []).find((m) => m.name !== 'tmp');
  if (unknownMount !== undefined) {
    return `container ${agent.name} mounts volume ${unknownMount.name}, which a backup sidecar does not have (only "tmp", the scratch emptyDir): remove that mount`;
  }
  const container: V1Container = { name: agent.name, image: agent.image };
  if (agent.command) container.command = [...agent.command];
  if (agent.args) container.args = [...agent.args];
  if (agent.workingDir) container.workingDir = agent.workingDir;
  container.env = parts.env;
  if (agent.envFrom) container.envFrom = agent.envFrom;
  container.volumeMounts = parts.mounts;
  const resources = parts.resources;
  if (resources && (Object.keys(resources.limits ?? {}).length > 0 || Object.keys(resources.requests ?? {}).length > 0)) {
    const r: Record<string, Record<string, string>> = {};
    if (resources.limits && Object.keys(resources.limits).length > 0) r.limits = quantities(resources.limits);
    if (resources.requests && Object.keys(resources.requests).length > 0) r.requests = quantities(resources.requests);
    container.resources = r;
  }
  if (parts.securityContext) container.securityContext = parts.securityContext;
  if (parts.imagePullPolicy) container.imagePullPolicy = parts.imagePullPolicy;
  if (agent.ports) {
    container.ports = agent.ports.map((p) => ({ protocol: 'TCP', ...p })) as V1Container['ports'];
  }
  return container;
}

function quantities(values: Record<string, string | number>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(values)) out[key] = String(value);
  return out;
}
