// The expand-template function's server: Knative ApiServerSource (Reference or Resource mode) and
// PingSource CloudEvents, OpenFaaS cron-connector calls, and plain JSON calls
// `POST /invoke {kind, namespace, name}`, each routed to the level-triggered handler.
//
//   node functions/expand-template/index.ts     PORT (default 8080), KUBECONFIG or in-cluster, LOG_LEVEL,
//                                               STASH_NAMESPACES (comma-separated; default all)
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { loadKubeConfig } from '../../shared/kube/index.ts';
import { createFunctionServer, handledObject, invokeObjectSchema, namespacesFromEnv, PermanentError, throwIfAnyFailed } from '../../shared/runtime/index.ts';
import { portFromEnv, runIfMain } from '../../shared/runtime/index.ts';
import type { FunctionServer, HandlerContext, Invocation } from '../../shared/runtime/index.ts';
import { HANDLED_KINDS, reconcileForObject, resyncAll } from './handler.ts';
import type { BatchResult, HandlerOptions, ObjectKey } from './handler.ts';

export const FUNCTION_NAME = 'expand-template';

export const invokeSchema = invokeObjectSchema;

const routes = { '/invoke': invokeSchema };
type Routes = typeof routes;

/** Routes one invocation to the handler. */
export async function handleInvocation(kc: KubeConfig, invocation: Invocation<Routes>, log: Logger, options: HandlerOptions = {}): Promise<BatchResult> {
  switch (invocation.source) {
    case 'apiserver':
    case 'http': {
      const ref = handledObject(invocation, FUNCTION_NAME, HANDLED_KINDS);
      if (ref.kind !== 'BackupTemplate' && ref.namespace === undefined) {
        throw new PermanentError(`an event about ${ref.kind} ${ref.name} must name its namespace: ${ref.kind} is namespaced; fix the sender`);
      }
      const object: ObjectKey = ref.namespace === undefined || ref.kind === 'BackupTemplate'
        ? { kind: ref.kind, name: ref.name }
        : { kind: ref.kind, namespace: ref.namespace, name: ref.name };
      const result = await reconcileForObject(kc, object, log, options);
      throwIfAnyFailed(result, `${ref.kind} ${object.namespace ? `${object.namespace}/` : ''}${ref.name}`, 'default backup(s)');
      return result;
    }
    case 'ping':
    case 'cron-connector':
      // A failure of one target is logged; the next sweep retries it, so the sweep itself succeeds.
      return resyncAll(kc, log, options);
  }
}

export interface ServerOptions extends HandlerOptions {
  logger?: Logger;
}

export function createExpandTemplateServer(kc: KubeConfig, options: ServerOptions = {}): FunctionServer {
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

/** Options from the environment: STASH_NAMESPACES limits what is served. */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): HandlerOptions {
  const options: HandlerOptions = {};
  const namespaces = namespacesFromEnv(env);
  if (namespaces !== undefined) options.namespaces = namespaces;
  return options;
}

export async function main(): Promise<void> {
  const port = portFromEnv();
  const kc = loadKubeConfig();
  await createExpandTemplateServer(kc, optionsFromEnv()).listen(port);
}

runIfMain(import.meta, 'expand-template', main);
