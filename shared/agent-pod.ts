/**
 * What every pod that runs the Stash agent has (the backup sidecar, a database Job): the contract
 * between the functions that render those pods (inject-sidecar, launch-db-job) and the agent that
 * runs in them. The agent reads its storage Secret from files the kubelet mounts and talks to
 * handle-trigger with a projected ServiceAccount token of audience `stash`.
 */
import type { V1EnvVar, V1Volume, V1VolumeMount } from '@kubernetes/client-node';

/** Where agents report: the handle-trigger function's in-cluster URL (Knative Service). */
export const DEFAULT_FUNCTIONS_URL = 'http://handle-trigger.stash-system.svc.cluster.local';

export const SECRET_VOLUME = 'stash-repository';
export const SECRET_PATH = '/etc/stash/repository';
export const TOKEN_VOLUME = 'stash-token';
export const TOKEN_DIR = '/var/run/secrets/stash';
export const TOKEN_PATH = 'token';
export const TOKEN_FILE = `${TOKEN_DIR}/${TOKEN_PATH}`;
export const TOKEN_AUDIENCE = 'stash';
export const TOKEN_EXPIRATION_SECONDS = 3600;
export const LOCAL_REPOSITORY_VOLUME = 'stash-local-repository';

export interface AgentPodOptions {
  /** Where the agent reports (handle-trigger); DEFAULT_FUNCTIONS_URL when unset. */
  readonly functionsUrl?: string;
  readonly pushGatewayUrl?: string;
}

/**
 * The storage Secret (optional: a missing Secret must not keep the pod — for a sidecar, the user's
 * app — from starting; the agent then fails the run naming the Secret and key) and the token.
 */
export function agentVolumes(storageSecretName: string): V1Volume[] {
  return [
    { name: SECRET_VOLUME, secret: { secretName: storageSecretName, optional: true } },
    {
      name: TOKEN_VOLUME,
      projected: { sources: [{ serviceAccountToken: { audience: TOKEN_AUDIENCE, expirationSeconds: TOKEN_EXPIRATION_SECONDS, path: TOKEN_PATH } }] },
    },
  ];
}

/** The mounts of agentVolumes(), read-only. */
export function agentVolumeMounts(): V1VolumeMount[] {
  return [
    { name: SECRET_VOLUME, mountPath: SECRET_PATH, readOnly: true },
    { name: TOKEN_VOLUME, mountPath: TOKEN_DIR, readOnly: true },
  ];
}

/**
 * The environment after the identity variables: metrics, the design's flags, and where to report.
 * The design's AgentTemplates spell one variable ENABLE_ANALYSTICS: it is given too when used.
 */
export function agentReportingEnv(options: AgentPodOptions, templateText: string): V1EnvVar[] {
  const env: V1EnvVar[] = [
    options.pushGatewayUrl ? { name: 'PUSH_GATEWAY_URL', value: options.pushGatewayUrl } : { name: 'PUSH_GATEWAY_URL' },
    { name: 'ENABLE_STATUS_SUB_RESOURCE', value: 'true' },
    { name: 'ENABLE_ANALYTICS', value: 'false' },
  ];
  if (templateText.includes('$(ENABLE_ANALYSTICS)')) env.push({ name: 'ENABLE_ANALYSTICS', value: 'false' });
  env.push(
    { name: 'STASH_FUNCTIONS_URL', value: options.functionsUrl ?? DEFAULT_FUNCTIONS_URL },
    { name: 'STASH_TOKEN_FILE', value: TOKEN_FILE },
    { name: 'STASH_REPOSITORY_SECRET_DIR', value: SECRET_PATH },
  );
  return env;
}

/** `base` with `overrides` applied by name: a known name is replaced in place, a new one appended. */
export function mergeEnv(base: readonly V1EnvVar[], overrides: readonly V1EnvVar[]): V1EnvVar[] {
  const out = [...base];
  for (const variable of overrides) {
    const index = out.findIndex((e) => e.name === variable.name);
    if (index >= 0) out[index] = variable;
    else out.push(variable);
  }
  return out;
}

/** An empty value is written as no value (what the apiserver stores, so comparisons hold). */
export function normaliseEnv(env: readonly V1EnvVar[]): V1EnvVar[] {
  return env.map((e) => (e.value === '' ? { name: e.name, ...(e.valueFrom ? { valueFrom: e.valueFrom } : {}) } : { ...e }));
}
