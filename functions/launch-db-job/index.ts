// The launch-db-job function's server: Knative ApiServerSource events (BackupTrigger, Backup, Job,
// AppBinding, Repository, AgentTemplate), PingSource / cron-connector resyncs, and plain JSON calls
// `POST /invoke {kind, namespace, name}`.
//
//   node functions/launch-db-job/index.ts   PORT (default 8080), KUBECONFIG or in-cluster,
//                                           STASH_FUNCTIONS_URL, PUSH_GATEWAY_URL,
//                                           STASH_JOB_DEADLINE_SECONDS, STASH_JOB_TTL_SECONDS, LOG_LEVEL,
//                                           STASH_NAMESPACES (comma-separated; default all)
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { loadKubeConfig } from '../../shared/kube/index.ts';
import { agentJobOptionsFromEnv, createFunctionServer, handledObject, invokeObjectSchema, PermanentError } from '../../shared/runtime/index.ts';
import { portFromEnv, runIfMain } from '../../shared/runtime/index.ts';
import type { FunctionServer, HandlerContext, Invocation } from '../../shared/runtime/index.ts';
import { createLaunchDbJob } from './handler.ts';
import type { HandlerOptions } from './handler.ts';

export { createLaunchDbJob, resolveReferences, servedNamespaces } from './handler.ts';
export type { HandlerOptions, LaunchDbJob, Resolution, TriggerResult } from './handler.ts';
export * from './plan.ts';

export const FUNCTION_NAME = 'launch-db-job';
export const HANDLED_KINDS = ['BackupTrigger', 'Backup', 'Job', 'AppBinding', 'Repository', 'AgentTemplate'] as const;

export const invokeSchema = invokeObjectSchema;
const routes = { '/invoke': invokeSchema };
type Routes = typeof routes;

/** Routes one invocation to the handler. */
export async function handleInvocation(launcher: ReturnType<typeof createLaunchDbJob>, invocation: Invocation<Routes>, log: Logger): Promise<void> {
  if (invocation.source === 'ping' || invocation.source === 'cron-connector') {
    await launcher.resync(log);
    return;
  }
  const ref = handledObject(invocation, FUNCTION_NAME, HANDLED_KINDS);
  if (ref.kind === 'AgentTemplate') {
    await launcher.reconcileReferrers(ref.kind, undefined, ref.name, log);
    return;
  }
  if (ref.namespace === undefined) {
    throw new PermanentError(`a ${ref.kind} event needs the object's namespace; ${ref.kind} ${ref.name} came without one`);
  }
  if (!launcher.serves(ref.namespace)) {
    log.debug({ kind: ref.kind, namespace: ref.namespace, name: ref.name }, 'namespace not served by this function');
    return;
  }
  switch (ref.kind) {
    case 'BackupTrigger':
      await launcher.reconcileTrigger(ref.namespace, ref.name, log);
      return;
    case 'Backup':
      await launcher.reconcileBackup(ref.namespace, ref.name, log);
      return;
    case 'Job':
      await launcher.reconcileJob(ref.namespace, ref.name, log);
      return;
    default:
      await launcher.reconcileReferrers(ref.kind, ref.namespace, ref.name, log);
  }
}

export interface ServerOptions extends HandlerOptions {
  logger?: Logger;
}

export function createLaunchDbJobServer(kc: KubeConfig, options: ServerOptions = {}): FunctionServer {
  const { logger, ...handlerOptions } = options;
  const launcher = createLaunchDbJob(kc, handlerOptions);
  return createFunctionServer<Routes>({
    name: FUNCTION_NAME,
    routes,
    ...(logger === undefined ? {} : { logger }),
    handle: async (invocation: Invocation<Routes>, ctx: HandlerContext) => {
      await handleInvocation(launcher, invocation, ctx.log);
    },
  });
}

/** STASH_FUNCTIONS_URL, PUSH_GATEWAY_URL, STASH_JOB_DEADLINE_SECONDS, STASH_JOB_TTL_SECONDS, STASH_NAMESPACES. */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): HandlerOptions {
  return agentJobOptionsFromEnv(env);
}

export async function main(): Promise<void> {
  const port = portFromEnv();
  await createLaunchDbJobServer(loadKubeConfig(), optionsFromEnv()).listen(port);
}

runIfMain(import.meta, 'launch-db-job', main);
