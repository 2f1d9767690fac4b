// The sweep function's server: a Knative PingSource CloudEvent or an OpenFaaS cron-connector call
// every minute runs one sweep of all schedules.
//
//   node functions/sweep/index.ts     PORT (default 8080), KUBECONFIG or in-cluster, LOG_LEVEL,
//                                     STASH_NAMESPACES (comma-separated; default all)
import { loadKubeConfig } from '../../shared/kube/index.ts';
import { createFunctionServer, namespacesFromEnv } from '../../shared/runtime/index.ts';
import { portFromEnv, runIfMain } from '../../shared/runtime/index.ts';
import type { FunctionServer } from '../../shared/runtime/index.ts';
import type { Logger } from 'pino';
import { createSweepHandler } from './handler.ts';
import type { SweepOptions } from './handler.ts';

export { createSweep, createSweepHandler, FIELD_MANAGER, forEachLimited, servedNamespaces } from './handler.ts';
export type { SweepOptions, SweepSummary } from './handler.ts';
export { BACKUP_LABEL, fitName, isActiveRun, nameLabelValue, planSchedules, SCHEDULE_CONDITION, scheduledTrigger, scheduledTriggerName } from './plan.ts';
export type { BackupPlan, ScheduleStatusPatch } from './plan.ts';

export function createSweepServer(options: SweepOptions & { logger?: Logger }): FunctionServer {
  return createFunctionServer({ name: 'sweep', handle: createSweepHandler(options), ...(options.logger ? { logger: options.logger } : {}) });
}

/** Options from the environment: STASH_NAMESPACES limits the sweep to those namespaces. */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): Pick<SweepOptions, 'namespaces'> {
  const namespaces = namespacesFromEnv(env);
  return namespaces === undefined ? {} : { namespaces };
}

export async function main(): Promise<void> {
  const port = portFromEnv();
  const options = optionsFromEnv();
  await createSweepServer({ kc: loadKubeConfig(), ...options }).listen(port);
}

runIfMain(import.meta, 'sweep', main);
