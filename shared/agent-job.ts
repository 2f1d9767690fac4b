/**
 * A Job that runs an AgentTemplate's containers once: the database backup Job of a run
 * (launch-db-job) and the recovery Job of a Recovery (run-recovery). Both are built the same way:
 * each template container gets Stash's environment, the template's own (with placeholders
 * filled), the user's containerAttributes, the scratch directory and Stash's mounts; the pod gets
 * the user's podAttributes; the Job runs once (backoffLimit 0), is owned by what it runs for, and
 * is deleted some time after it finished. Pure.
 */
import type { V1Container, V1EnvVar, V1Job, V1PodSpec, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import type { AgentTemplate, Container } from './api/index.ts';
import type { ContainerAttributes, PodAttributes } from './api/common.ts';
import { API_VERSION } from './api/index.ts';
import { mergeEnv, normaliseEnv } from './agent-pod.ts';
import { fitName } from './names.ts';

/** The scratch directory every agent Job has (the default AgentTemplates mount `tmp` at /tmp). */
export const JOB_TMP_VOLUME = 'tmp';
export const JOB_TMP_PATH = '/tmp';
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const COMPONENT_LABEL = 'app.kubernetes.io/component';
/** How long a Job may run, and how long a finished one is kept, unless the function is told otherwise. */
export const DEFAULT_ACTIVE_DEADLINE_SECONDS = 6 * 3600;
export const DEFAULT_TTL_SECONDS_AFTER_FINISHED = 24 * 3600;

/** A name as a label value (at most 63 characters). */
export function labelValue(name: string): string {
  return fitName(name, 63);
}

/** `<owner>-<suffix>`, at most 63 characters (the Job controller puts a Job's name in a label). */
export function agentJobName(owner: string, suffix: string): string {
  return fitName(`${owner}-${suffix}`, 63).replace(/^[.]+/, '');
}

export interface JobOptions {
  /** The Job's activeDeadlineSeconds (default 6 h). */
  activeDeadlineSeconds?: number;
  /** The Job's ttlSecondsAfterFinished (default 24 h). */
  ttlSecondsAfterFinished?: number;
}


export interface AgentJobInput {
  /** For messages: "a database backup Job", "a recovery Job". */
  what: string;
  templateName: string;
  template: AgentTemplate['spec'];
  /** Every volume of the pod: the scratch directory (JOB_TMP_VOLUME), Stash's own volumes, the target's. */
  volumes: V1Volume[];
  /** Stash's mounts, added to every container (a template container may not use their paths). */
  stashMounts: V1VolumeMount[];
  /** Stash's environment, first in every container. */
  env: V1EnvVar[];
  /** The container that does the work (the dump, the recovery): it also gets `mainEnv` and `mainArgs`. */
  main: string;
  mainEnv?: V1EnvVar[];
  mainArgs?: readonly string[];
  /** A template variable with placeholders filled in, or why it cannot be. */
  fill?: (variable: V1EnvVar, where: string) => V1EnvVar | string;
  attributes: ContainerAttributes | undefined;
  pod: PodAttributes | undefined;
  /** Whether template ports are kept (a database backup Job keeps them). */
  keepPorts?: boolean;
  job: {
    name: string;
    namespace: string;
    labels: Record<string, string>;
    owner: { kind: string; name: string; uid: string };
    options: JobOptions;
  };
}

function container(input: AgentJobInput, c: Container, kind: 'initContainers' | 'containers', volumeNames: ReadonlySet<string>): V1Container | string {
  const { attributes } = input;
  const where = `AgentTemplate ${input.templateName} ${kind} ${c.name}`;
  const templateEnv: V1EnvVar[] = [];
  for (const variable of (c.env ?? []) as V1EnvVar[]) {
    const filled = input.fill === undefined ? variable : input.fill(variable, where);
    if (typeof filled === 'string') return filled;
    templateEnv.push(filled);
  }
  const isMain = c.name === input.main;
  const env = normaliseEnv(mergeEnv(mergeEnv(mergeEnv(input.env, isMain ? input.mainEnv ?? [] : []), templateEnv), (attributes?.env ?? []) as V1EnvVar[]));
  const mounts: V1VolumeMount[] = [];
  for (const m of c.volumeMounts ?? []) {
    if (!volumeNames.has(m.name)) {
      return `${where} mounts volume ${m.name}, which ${input.what} does not have (it has ${[...volumeNames].join(', ')}): mount ${JOB_TMP_VOLUME} for scratch space`;
    }
    if (input.stashMounts.some((s) => s.mountPath === m.mountPath)) return `${where} mounts ${m.name} at ${m.mountPath}, where Stash mounts its own volume: use another path`;
    mounts.push({ ...m });
  }
  if (!mounts.some((m) => m.mountPath === JOB_TMP_PATH)) mounts.push({ name: JOB_TMP_VOLUME, mountPath: JOB_TMP_PATH });
  mounts.push(...input.stashMounts.filter((s) => !mounts.some((m) => m.name === s.name)));
  const out: V1Container = { name: c.name, image: c.image };
  if (c.command) out.command = [...c.command];
  const args = [...(c.args ?? []), ...(isMain ? input.mainArgs ?? [] : [])];
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
  if (input.keepPorts && c.ports) out.ports = c.ports as unknown as V1Container['ports'];
  return out;
}

/** The Job, or why the AgentTemplate cannot make one (a message naming the container and the fix). */
export function agentJob(input: AgentJobInput): { ok: true; job: V1Job } | { ok: false; message: string } {
  const volumeNames = new Set(input.volumes.map((v) => v.name));
  const build = (list: readonly Container[], kind: 'initContainers' | 'containers'): V1Container[] | string => {
    const out: V1Container[] = [];
    for (const c of list) {
      const built = container(input, c, kind, volumeNames);
      if (typeof built === 'string') return built;
      out.push(built);
    }
    return out;
  };
  const initContainers = build(input.template.initContainers ?? [], 'initContainers');
  if (typeof initContainers === 'string') return { ok: false, message: initContainers };
  const containers = build(input.template.containers, 'containers');
  if (typeof containers === 'string') return { ok: false, message: containers };

  const pod = input.pod;
  const podSpec: V1PodSpec = {
    restartPolicy: 'Never',
    // The agent talks to handle-trigger with the audience-bound token Stash mounts, never to the
    // Kubernetes API: the ServiceAccount's own token is not mounted.
    automountServiceAccountToken: false,
    ...(initContainers.length > 0 ? { initContainers } : {}),
    containers,
    volumes: input.volumes,
  };
  if (pod?.nodeSelector) podSpec.nodeSelector = { ...pod.nodeSelector };
  if (pod?.affinity) podSpec.affinity = pod.affinity;
  if (pod?.tolerations) podSpec.tolerations = pod.tolerations;
  if (pod?.serviceAccountName) podSpec.serviceAccountName = pod.serviceAccountName;
  if (pod?.priorityClassName) podSpec.priorityClassName = pod.priorityClassName;
  if (pod?.securityContext) podSpec.securityContext = pod.securityContext;
  if (pod?.imagePullSecrets) podSpec.imagePullSecrets = pod.imagePullSecrets.map((s) => ({ name: s.name }));

  const { name, namespace, labels, owner, options } = input.job;
  const job: V1Job = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name,
      namespace,
      labels,
      ownerReferences: [{ apiVersion: API_VERSION, kind: owner.kind, name: owner.name, uid: owner.uid, controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      // Never a second pod: a failed run or recovery fails, and a retry is the user's or the schedule's.
      backoffLimit: 0,
      activeDeadlineSeconds: options.activeDeadlineSeconds ?? DEFAULT_ACTIVE_DEADLINE_SECONDS,
      ttlSecondsAfterFinished: options.ttlSecondsAfterFinished ?? DEFAULT_TTL_SECONDS_AFTER_FINISHED,
      template: { metadata: { labels: { ...labels } }, spec: podSpec },
    },
  };
  return { ok: true, job };
}
