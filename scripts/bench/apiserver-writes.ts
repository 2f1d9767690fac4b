/**
 * The yardstick for the functions' figures (benchmark 2): how fast one Node process can create
 * BackupTriggers and patch Backup status on the test control plane, through
 *  - `client-node`: @kubernetes/client-node's generated API classes (CustomObjectsApi), which the
 *    functions used until 2026-11-26, and
 *  - `shared/kube`: the functions' own transport (shared/kube/http.ts: client-node's KubeConfig,
 *    keep-alive node:https requests),
 * each in its own process (so each one's peak RSS is its own), at several concurrencies. Prints
 * writes per second, the client process's CPU per request and its peak RSS, side by side.
 *   node scripts/bench/apiserver-writes.ts        BENCH_N (default 1000), BENCH_CONCURRENCY (default 16,64)
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { API_VERSION, GROUP, VERSION } from '../../shared/api/index.ts';
import { createObject, patchStatus } from '../../shared/kube/index.ts';
import { forEachLimited } from '../../shared/runtime/index.ts';
import { deleteNamespace, freshNamespace, useCluster } from '../../test/support/cluster.ts';

const N = Number(process.env.BENCH_N ?? 1000);
const load1 = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ')[0] ?? '?';

interface ChildResult { creates: number; patches: number; cpuMsPerWrite: number; peakRssMB: number }

/** Child mode: `--child <client> <namespace> <concurrency> <round>` with KUBECONFIG set. */
async function child(client: string, ns: string, concurrency: number, round: string): Promise<ChildResult> {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const names = Array.from({ length: N }, (_, i) => `b-${i}`);
  const trigger = (name: string) => ({
    apiVersion: API_VERSION, kind: 'BackupTrigger', metadata: { name: `${name}-${round}`, namespace: ns }, spec: { targetBackup: { name } },
  });
  const status = { lastScheduledTime: `2026-01-01T00:${round.slice(-2).padStart(2, '0')}:00Z` };
  const api = kc.makeApiClient(CustomObjectsApi);
  const create = client === 'client-node'
    ? (name: string) => api.createNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backuptriggers', namespace: ns, body: trigger(name) })
    : (name: string) => createObject(kc, trigger(name));
  const patch = client === 'client-node'
    ? (name: string) => api.patchNamespacedCustomObjectStatus({ group: GROUP, version: VERSION, plural: 'backups', namespace: ns, name, body: { status } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
    : (name: string) => patchStatus(kc, { apiVersion: API_VERSION, kind: 'Backup', namespace: ns, name }, status, { fieldManager: 'bench', plural: 'backups' });
  const cpu0 = process.cpuUsage();
  let started = Date.now();
  await forEachLimited(names, concurrency, async (name) => { await create(name); });
  const creates = N / ((Date.now() - started) / 1000);
  started = Date.now();
  await forEachLimited(names, concurrency, async (name) => { await patch(name); });
  const patches = N / ((Date.now() - started) / 1000);
  const cpu = process.cpuUsage(cpu0);
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN);
  return { creates, patches, cpuMsPerWrite: (cpu.user + cpu.system) / 1000 / (2 * N), peakRssMB: Math.round(hwm / 1024) };
}

if (process.argv[2] === '--child') {
  const [client, ns, concurrency, round] = process.argv.slice(3);
  process.stdout.write(JSON.stringify(await child(client ?? '', ns ?? '', Number(concurrency), round ?? 'r0')) + '\n');
} else {
  const concurrencies = (process.env.BENCH_CONCURRENCY ?? '16,64').split(',').map(Number);
  const cluster = await useCluster();
  const ns = await freshNamespace(cluster, 'bench-writes');
  try {
    // The Backups whose status is patched, created once (not timed).
    await forEachLimited(Array.from({ length: N }, (_, i) => `b-${i}`), 32, async (name) => {
      await createObject(cluster.kc, {
        apiVersion: API_VERSION, kind: 'Backup', metadata: { name, namespace: ns },
        spec: { schedule: '* * * * *', backupAgent: 'stash-volume-backup', repository: { name: 'repo' }, targetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name }, targetDirectories: ['/data'] },
      });
    });
    console.log(`${N} BackupTrigger creates, then ${N} Backup status patches, from one Node process (${new Date().toISOString()})`);
    console.log('| client | in flight | creates/s | status patches/s | client CPU per write | client peak RSS | load |');
    console.log('| --- | --- | --- | --- | --- | --- | --- |');
    let round = 0;
    for (const concurrency of concurrencies) {
      for (const client of ['client-node', 'shared/kube']) {
        const run = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', client, ns, String(concurrency), `r${String(round++).padStart(2, '0')}`],
          { env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath }, encoding: 'utf8' });
        if (run.status !== 0) throw new Error(`${client} at ${concurrency}: exit ${run.status}: ${run.stderr}`);
        const r = JSON.parse(run.stdout.trim().split('\n').pop() ?? '{}') as ChildResult;
        console.log(`| ${client} | ${concurrency} | ${r.creates.toFixed(0)} | ${r.patches.toFixed(0)} | ${r.cpuMsPerWrite.toFixed(2)} ms | ${r.peakRssMB} MB | ${load1()} |`);
      }
    }
  } finally {
    await deleteNamespace(cluster, ns);
  }
}
