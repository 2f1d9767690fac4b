// handle-trigger: the server. Events (BackupTrigger and Backup changes from ApiServerSource, the
// per-minute ping, OpenFaaS cron-connector, POST /invoke) go through shared/runtime; the agent
// protocol and the trigger endpoint answer with their own status codes (routes.ts), mounted in
// front of the runtime's app. Run: `node functions/handle-trigger/index.ts` (PORT, KUBECONFIG,
// LOG_LEVEL, STASH_LEASE_DURATION_SECONDS, STASH_PENDING_TIMEOUT_SECONDS, STASH_NAMESPACES).
import type { Express } from 'express';
import type { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { loadKubeConfig } from '../../shared/kube/index.ts';
import { createFunctionServer, invokeRefSchema, namespacesFromEnv, portFromEnv, servesNamespace } from '../../shared/runtime/index.ts';
import type { Invocation, ListenOptions, RunningServer } from '../../shared/runtime/index.ts';
import { reconcileBackupHistory, reconcileTrigger, resync } from './handler.ts';
import type { HandlerConfig } from './handler.ts';
import type { RunTiming } from './plan.ts';
import { protocolRouter } from './routes.ts';

export const FUNCTION_NAME = 'handle-trigger';
const routes = { '/invoke': invokeRefSchema };

export interface HandleTriggerOptions {
  kc?: KubeConfig;
  timing?: Partial<RunTiming>;
  logger?: Logger;
  now?: () => Date;
  /** Serve only these namespaces (resync and events); default all. main() reads STASH_NAMESPACES. */
  namespaces?: readonly string[];
}

export interface HandleTriggerServer {
  app: Express;
  config: HandlerConfig;
  /** Signal handling is off unless asked for (main() asks). */
  listen(port: number, options?: ListenOptions): Promise<RunningServer>;
}

function envSeconds(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name}=${raw} is not a positive whole number of seconds; fix or unset it (default ${fallback})`);
  return value;
}

/** Lease and pending timeouts from STASH_LEASE_DURATION_SECONDS (30) and STASH_PENDING_TIMEOUT_SECONDS (1800). */
export function timingFromEnv(): RunTiming {
  return {
    leaseDurationSeconds: envSeconds('STASH_LEASE_DURATION_SECONDS', 30),
    pendingTimeoutSeconds: envSeconds('STASH_PENDING_TIMEOUT_SECONDS', 1800),
  };
}

async function dispatch(config: HandlerConfig, invocation: Invocation<typeof routes>): Promise<void> {
  switch (invocation.source) {
    case 'ping':
    case 'cron-connector': {
      const result = await resync(config);
      config.log.info(result, 'sweep done');
      return;
    }
    case 'apiserver':
    case 'http': {
      const ref = invocation.source === 'apiserver' ? invocation.ref : invocation.body;
      if (ref.namespace === undefined) return;
      if (!servesNamespace(config.namespaces, ref.namespace)) {
        config.log.debug({ kind: ref.kind, namespace: ref.namespace, name: ref.name }, 'namespace not served by this function');
        return;
      }
      if (ref.kind === 'BackupTrigger') {
        if (invocation.source === 'apiserver' && invocation.action === 'delete') return;
        await reconcileTrigger(config, ref.namespace, ref.name);
      } else if (ref.kind === 'Backup') {
        await reconcileBackupHistory(config, ref.namespace, ref.name);
      } else {
        config.log.debug({ kind: ref.kind }, 'ignoring an event for a kind handle-trigger does not handle');
      }
    }
  }
}

export function createHandleTriggerServer(options: HandleTriggerOptions = {}): HandleTriggerServer {
  const logger = options.logger ?? pino({ level: process.env.LOG_LEVEL ?? 'info' });
  const config: HandlerConfig = {
    kc: options.kc ?? loadKubeConfig(),
    timing: { ...timingFromEnv(), ...options.timing },
    log: logger.child({ function: FUNCTION_NAME }),
    ...(options.now ? { now: options.now } : {}),
    ...(options.namespaces === undefined ? {} : { namespaces: [...options.namespaces] }),
  };
  const server = createFunctionServer({
    name: FUNCTION_NAME, logger, routes, routers: [protocolRouter(config)], handle: (invocation) => dispatch(config, invocation),
  });
  return { app: server.app, config, listen: (port, options) => server.listen(port, { handleSignals: false, ...options }) };
}

/** Options from the environment: STASH_NAMESPACES limits what is served (timing is read by the server). */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): Pick<HandleTriggerOptions, 'namespaces'> {
  const namespaces = namespacesFromEnv(env);
  return namespaces === undefined ? {} : { namespaces };
}

/** Entry point: PORT (8080), KUBECONFIG or the in-cluster ServiceAccount, STASH_NAMESPACES. */
export async function main(): Promise<void> {
  // The runtime drains in-flight requests on SIGTERM/SIGINT, then exits.
  await createHandleTriggerServer(optionsFromEnv()).listen(portFromEnv(), { handleSignals: true });
}

if (import.meta.main) await main();
