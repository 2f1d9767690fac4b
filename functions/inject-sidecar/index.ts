// The inject-sidecar function's server: Knative ApiServerSource (Reference or Resource mode) and
// PingSource CloudEvents, OpenFaaS cron-connector calls, and plain JSON calls
// `POST /invoke {kind, namespace, name}`, each routed to the level-triggered handler.
//
//   node functions/inject-sidecar/index.ts      PORT (default 8080), KUBECONFIG or in-cluster,
//                                               STASH_FUNCTIONS_URL, PUSH_GATEWAY_URL, LOG_LEVEL,
//                                               STASH_NAMESPACES (comma-separated; default all)
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { loadKubeConfig } from '../../shared/kube/index.ts';
import { agentOptionsFromEnv, createFunctionServer, handledObject, invokeObjectSchema, throwIfAnyFailed } from '../../shared/runtime/index.ts';
import { portFromEnv, runIfMain } from '../../shared/runtime/index.ts';
import type { FunctionServer, HandlerContext, Invocation } from '../../shared/runtime/index.ts';
import { HANDLED_KINDS, reconcileForObject, resyncAll } from './handler.ts';
import type { BatchResult, HandlerOptions, ObjectKey } from './handler.ts';

export const FUNCTION_NAME = 'inject-sidecar';

export const invokeSchema = invokeObjectSchema;

const routes = { '/invoke': invokeSchema };
type Routes = typeof routes;

/** Routes one invocation to the handler. Exported so tests and other functions can follow the shape. */
export async function handleInvocation(kc: KubeConfig, invocation: Invocation<Routes>, log: Logger, options: HandlerOptions = {}): Promise<BatchResult> {
  switch (invocation.source) {
    case 'apiserver':
    case 'http': {
      const ref = handledObject(invocation, FUNCTION_NAME, HANDLED_KINDS);
      const object: ObjectKey = ref.namespace === undefined ? { kind: ref.kind, name: ref.name } : { kind: ref.kind, namespace: ref.namespace, name: ref.name };
      const result = await reconcileForObject(kc, object, log, options);
      throwIfAnyFailed(result, `${ref.kind} ${ref.namespace ? `${ref.namespace}/` : ''}${ref.name}`, 'Backup(s)');
      return result;
    }
    case 'ping':
    case 'cron-connector':
      // A failure of one Backup is logged; the next sweep retries it, so the sweep itself succeeds.
      return resyncAll(kc, log, options);
  }
}

export interface ServerOptions extends HandlerOptions {
  logger?: Logger;
}

export function createInjectSidecarServer(kc: KubeConfig, options: ServerOptions = {}): FunctionServer {
  const { logger, ...handlerOptions } = options;
  return createFunctionServer<Routes>({
    name: FUNCTION_NAME,
    routes,
    ...(logger === undefined ? {} : { logger }),
    handle: async (invocation: Invocation<Routes>, ctx: HandlerContext) => {
      await handleInvocation(kc, invocation, ctx.log, handlerOptions);
    },
  });
}

/** Options from the environment: STASH_FUNCTIONS_URL and PUSH_GATEWAY_URL reach the sidecar; STASH_NAMESPACES limits what is served. */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): HandlerOptions {
  return agentOptionsFromEnv(env);
}

export async function main(): Promise<void> {
  const port = portFromEnv();
  const kc = loadKubeConfig();
  await createInjectSidecarServer(kc, optionsFromEnv()).listen(port);
}

runIfMain(import.meta, 'inject-sidecar', main);
