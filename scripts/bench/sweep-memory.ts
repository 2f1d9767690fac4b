/**
 * Is the sweep's memory garbage or live data? Creates BENCH_N (default 1,000) Backups (no
 * workloads: the sweep does not read them) in a fresh namespace, then for each Node heap setting in
 * BENCH_HEAPS (default "default,128"; ","-separated: "default", a number = MB for --max-old-space-size, or
 * Node flags starting with "--", e.g. "--max-semi-space-size=1") starts scripts/bench/sweep-server.ts
 * as its own process and runs a first, an idle and a due sweep, printing each sweep's time and the
 * process's peak RSS (VmHWM). Deletes the namespace at the end.
 *   node scripts/bench/sweep-memory.ts          (BENCH_SWEEP_CONCURRENCY: writes in flight, default the sweep's own)
 */
import { spawn } from 'node:child_process';
import { openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { deleteNamespace, freshNamespace, useCluster } from '../../test/support/cluster.ts';
import { freePort } from '../../test/support/databases.ts';
import { repoRoot } from '../../test/support/tools.ts';

const N = Number(process.env.BENCH_N ?? 1000);
const heaps = (process.env.BENCH_HEAPS ?? 'default,128').split(',');
const benchDir = process.env.BENCH_DIR ?? '/tmp/stash-bench';
const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const load1 = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ')[0] ?? '?';

const cluster = await useCluster();
const custom = cluster.kc.makeApiClient(CustomObjectsApi);
const ns = await freshNamespace(cluster, 'bench-sweep-memory');
try {
  await cluster.kc.makeApiClient(CoreV1Api).createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'local-secret' }, stringData: { RESTIC_PASSWORD: 'bench' } } });
  const names = Array.from({ length: N }, (_, i) => `app-${String(i).padStart(4, '0')}`);
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < names.length) {
      const name = names[next++] as string;
      await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backups', body: {
        apiVersion: `${GROUP}/${VERSION}`, kind: 'Backup', metadata: { name },
        spec: { schedule: '* * * * *', backupAgent: { name: 'stash-volume-backup' }, repository: { name: 'local-repo' },
          targetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name }, targetDirectories: ['/data'], retentionPolicy: { keepLast: 5 } },
      } });
    }
  }));
  process.stderr.write(`${N} Backups in ${ns}\n`);
  let t0 = Math.floor(Date.now() / 60_000) * 60_000 + 30 * 86_400_000 + 30_000;
  for (const heap of heaps) {
    const clockFile = path.join(benchDir, 'sweep-memory-clock');
    writeFileSync(clockFile, new Date(t0).toISOString());
    const port = await freePort();
    const log = openSync(path.join(benchDir, `sweep-memory-${heap.replace(/[^\w.=-]/g, '_')}.log`), 'w');
    const flags = heap === 'default' ? [] : heap.startsWith('--') ? heap.split(' ') : [`--max-old-space-size=${heap}`];
    const child = spawn(process.execPath, [...flags, path.join(repoRoot, 'scripts/bench/sweep-server.ts')],
      { env: { ...process.env, PORT: String(port), KUBECONFIG: cluster.kubeconfigPath, BENCH_NAMESPACE: ns, BENCH_CLOCK_FILE: clockFile, LOG_LEVEL: 'warn' }, stdio: ['ignore', log, log] });
    for (let i = 0; i < 100 && !(await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)); i++) await sleep(100);
    const hwm = (): string => /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? '?';
    const rows: string[] = [`heap ${heap}: idle RSS peak ${Math.round(Number(hwm()) / 1024)} MB`];
    for (const [what, offset] of [['first (all due)', 0], ['idle', 5_000], ['due', 60_000], ['idle', 65_000], ['due', 120_000]] as const) {
      if (what === 'due' || what === 'first (all due)') {
        await custom.deleteCollectionNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backuptriggers' });
        for (let k = 0; k < 120; k++) {
          const list = await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backuptriggers' }) as { items: unknown[] };
          if (list.items.length === 0) break;
          await sleep(500);
        }
      }
      writeFileSync(clockFile, new Date(t0 + offset).toISOString());
      const load = load1();
      const started = performance.now();
      const r = await fetch(`http://127.0.0.1:${port}/`, { method: 'POST', headers: { 'X-Connector': 'cron-connector' } });
      rows.push(`  ${what} sweep: ${((performance.now() - started) / 1000).toFixed(2)} s (HTTP ${r.status}, load ${load}), peak RSS so far ${Math.round(Number(hwm()) / 1024)} MB`);
    }
    child.kill('SIGTERM');
    process.stdout.write(`${rows.join('\n')}\n`);
    t0 += 10 * 60_000;
  }
} finally {
  await deleteNamespace(cluster, ns);
}
