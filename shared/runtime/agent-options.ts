// What a function that starts agents (inject-sidecar's sidecars, launch-db-job's and
// run-recovery's Jobs) reads from its environment: where the agents report, where they push
// metrics, the Jobs' deadline and time kept, and the namespaces it serves.
import { namespacesFromEnv } from './namespaces.ts';

export interface AgentOptions {
  /** STASH_FUNCTIONS_URL: handle-trigger's URL as the agents reach it. */
  functionsUrl?: string;
  /** PUSH_GATEWAY_URL: the Prometheus Pushgateway the agents push to. */
  pushGatewayUrl?: string;
  /** STASH_NAMESPACES: only these namespaces (default all). */
  namespaces?: readonly string[];
}

export interface AgentJobOptions extends AgentOptions {
  /** STASH_JOB_DEADLINE_SECONDS: a Job's activeDeadlineSeconds. */
  activeDeadlineSeconds?: number;
  /** STASH_JOB_TTL_SECONDS: a Job's ttlSecondsAfterFinished. */
  ttlSecondsAfterFinished?: number;
}

function seconds(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const text = env[name];
  if (text === undefined || text === '') return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}=${text} is not a positive whole number of seconds: fix or unset it`);
  return n;
}

export function agentOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): AgentOptions {
  const options: AgentOptions = {};
  if (env.STASH_FUNCTIONS_URL) options.functionsUrl = env.STASH_FUNCTIONS_URL;
  if (env.PUSH_GATEWAY_URL) options.pushGatewayUrl = env.PUSH_GATEWAY_URL;
  const namespaces = namespacesFromEnv(env);
  if (namespaces !== undefined) options.namespaces = namespaces;
  return options;
}

export function agentJobOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): AgentJobOptions {
  const options: AgentJobOptions = agentOptionsFromEnv(env);
  const deadline = seconds(env, 'STASH_JOB_DEADLINE_SECONDS');
  if (deadline !== undefined) options.activeDeadlineSeconds = deadline;
  const ttl = seconds(env, 'STASH_JOB_TTL_SECONDS');
  if (ttl !== undefined) options.ttlSecondsAfterFinished = ttl;
  return options;
}
