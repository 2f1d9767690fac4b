export { createFunctionServer } from './server.ts';
export type { FunctionServer, FunctionServerOptions, Handler, HandlerContext, ListenOptions, RunningServer } from './server.ts';
export { PermanentError, TransientError, InvalidRequestError } from './errors.ts';
export { handledObject, invokeObjectSchema, invokeRefSchema, objectRefSchema, parseEventRequest, parseHttpRequest, PING_TYPE } from './invocation.ts';
export type {
  ApiServerAction, ApiServerInvocation, CronConnectorInvocation, HttpInvocation, HttpRoutes, Invocation, NamedObject, ObjectRef, PingInvocation,
} from './invocation.ts';
export { InvalidNamespacesError, NAMESPACES_ENV, namespacesFromEnv, servesNamespace } from './namespaces.ts';
export { InvalidPortError, portFromEnv, runIfMain } from './main.ts';
export { forEachLimited, reconcileBatch, throwIfAnyFailed } from './batch.ts';
export type { BatchResult } from './batch.ts';
export { agentJobOptionsFromEnv, agentOptionsFromEnv } from './agent-options.ts';
export type { AgentJobOptions, AgentOptions } from './agent-options.ts';
