// The run-recovery function's server: Knative ApiServerSource events (Recovery, Job, the workload
// kinds, AgentTemplate, Repository, AppBinding), PingSource / cron-connector resyncs, and plain
// JSON calls `POST /invoke {kind, namespace, name}`.
//
//   node functions/run-recovery/index.ts    PORT (default 8080), KUBECONFIG or in-cluster,
//                                           STASH_FUNCTIONS_URL, PUSH_GATEWAY_URL,
//                                           STASH_JOB_DEADLINE_SECONDS, STASH_JOB_TTL_SECONDS, LOG_LEVEL,
//                                           STASH_NAMESPACES (comma-separated; default all)
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { loadKubeConfig } from '../../shared/kube/index.ts';
import { agentJobOptionsFromEnv, createFunctionServer, handledObject, invokeObjectSchema, PermanentError, throwIfAnyFailed } from '../../shared/runtime/index.ts';
import { portFromEnv, runIfMain } from '../../shared/runtime/index.ts';
import type { FunctionServer, HandlerContext, Invocation } from '../../shared/runtime/index.ts';
import { createRunRecovery } from './handler.ts';
import type { HandlerOptions, RunRecovery } from './handler.ts';
import { WORKLOAD_KINDS } from './plan.ts';

export { createRunRecovery } from './handler.ts';
export type { HandlerOptions, Outcome, RunRecovery } from './handler.ts';
export * from './plan.ts';

export const FUNCTION_NAME = 'run-recovery';
export const HANDLED_KINDS = ['Recovery', 'Job', ...Object.keys(WORKLOAD_KINDS), 'AppBinding', 'Repository', 'AgentTemplate'] as const;

export const invokeSchema = invokeObjectSchema;
const routes = { '/invoke': invokeSchema };
type Routes = typeof routes;

/** Routes one invocation to the handler. */
export async function handleInvocation(recoverer: RunRecovery, invocation: Invocation<Routes>, log: Logger): Promise<void> {
  if (invocation.source === 'ping' || invocation.source === 'cron-connector') {
    // A failure of one Recovery is logged; the next resync retries it, so the resync itself succeeds.
    await recoverer.resync(log);
    return;
  }
  const ref = handledObject(invocation, FUNCTION_NAME, HANDLED_KINDS);
  const what = `${ref.kind} ${ref.namespace ? `${ref.namespace}/` : ''}${ref.name}`;
  if (ref.kind === 'AgentTemplate') {
    throwIfAnyFailed(await recoverer.reconcileReferrers(ref.kind, undefined, ref.name, log), what, 'Recovery(s)');
    return;
  }
  if (ref.namespace === undefined) {
    throw new PermanentError(`a ${ref.kind} event needs the object's namespace; ${ref.kind} ${ref.name} came without one`);
  }
  if (!recoverer.serves(ref.namespace)) {
    log.debug({ kind: ref.kind, namespace: ref.namespace, name: ref.name }, 'namespace not served by this function');
    return;
  }
  switch (ref.kind) {
    case 'Recovery':
      await recoverer.reconcileRecovery(ref.namespace, ref.name, log);
      return;
    case 'Job':
      await recoverer.reconcileJob(ref.namespace, ref.name, log);
      return;
    case 'AppBinding':
    case 'Repository':
      throwIfAnyFailed(await recoverer.reconcileReferrers(ref.kind, ref.namespace, ref.name, log), what, 'Recovery(s)');
      return;
    default:
      throwIfAnyFailed(await recoverer.reconcileWorkload(ref.kind, ref.namespace, ref.name, log), what, 'Recovery(s)');
  }
}

export interface ServerOptions extends HandlerOptions {
  logger?: Logger;
}

export function createRunRecoveryServer(kc: KubeConfig, options: ServerOptions = {}): FunctionServer {
  const { logger, ...handlerOptions } = options;
  const recoverer = createRunRecovery(kc, handlerOptions);
  return createFunctionServer<Routes>({
    name: FUNCTION_NAME,
    routes,
    ...(logger === undefined ? {} : { logger }),
    handle: async (invocation: Invocation<Routes>, ctx: HandlerContext) => {
      await handleInvocation(recoverer, invocation, ctx.log);
    },
  });
}

/** STASH_FUNCTIONS_URL, PUSH_GATEWAY_URL, STASH_JOB_DEADLINE_SECONDS, STASH_JOB_TTL_SECONDS, STASH_NAMESPACES. */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): HandlerOptions {
  return agentJobOptionsFromEnv(env);
}

export async function main(): Promise<void> {
  const port = portFromEnv();
  await createRunRecoveryServer(loadKubeConfig(), optionsFromEnv()).listen(port);
}

runIfMain(import.meta, 'run-recovery', main);
