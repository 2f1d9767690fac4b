// The sweep function's server as functions/sweep/index.ts main() starts it, with two changes for
// the benchmark on a shared control plane: it sweeps one namespace only (SweepOptions.namespace),
// and its clock is read from BENCH_CLOCK_FILE (an ISO time written by the benchmark before each
// sweep; the real clock when the file is absent), so a sweep with every Backup due needs no wait
// for a minute boundary and another sweeper on the same cluster (real clock) never finds these
// Backups due first.   PORT, KUBECONFIG, BENCH_NAMESPACE, BENCH_CLOCK_FILE, LOG_LEVEL
import { readFileSync } from 'node:fs';
import { loadKubeConfig } from '../../shared/kube/index.ts';
import { createSweepServer } from '../../functions/sweep/index.ts';

const namespace = process.env.BENCH_NAMESPACE;
if (!namespace) throw new Error('BENCH_NAMESPACE is required: the namespace to sweep');
const clockFile = process.env.BENCH_CLOCK_FILE;
const now = (): Date => {
  if (clockFile === undefined) return new Date();
  try {
    return new Date(readFileSync(clockFile, 'utf8').trim());
  } catch {
    return new Date();
  }
};
await createSweepServer({ kc: loadKubeConfig(), namespace, now, ...(process.env.BENCH_SWEEP_CONCURRENCY ? { concurrency: Number(process.env.BENCH_SWEEP_CONCURRENCY) } : {}) }).listen(Number(process.env.PORT ?? '8080'));
