/**
 * Benchmark 2 (issue 4): the functions on the real control plane (test/support/cluster.ts), in a
 * dedicated namespace that is deleted afterwards:
 *  - BENCH_N (default 1,000) Deployments, then one Backup per Deployment (default AgentTemplate
 *    stash-volume-backup, a local Repository + Secret), created at BENCH_RATE per second;
 *  - inject-sidecar runs as its own process (`node functions/inject-sidecar/index.ts`, PORT,
 *    KUBECONFIG, STASH_NAMESPACES) and gets its events from Knative's real ApiServerSource receive
 *    adapter (Reference mode, Backup/Repository/Deployment in the namespace) pointed straight at it
 *    (no Broker in between);
 *  - latency = from sending the Backup's create request to the sidecar container showing in the
 *    Deployment's pod template (seen by a watch from this process);
 *  - sweep: its own process (scripts/bench/sweep-server.ts = functions/sweep's server limited to the
 *    namespace), invoked as OpenFaaS's cron-connector does; the call returns when the sweep is done.
 *    First sweep (status writes), idle sweeps, and sweeps with a due run for every Backup, on a
 *    clock 30 days ahead (see sweep-server.ts);
 *  - peak RSS: VmHWM of each function process.
 *   node scripts/bench/functions.ts
 *   node scripts/bench/functions.ts --cleanup NAMESPACE    (after an interrupted run)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { AppsV1Api, CoreV1Api, CustomObjectsApi, Watch } from '@kubernetes/client-node';
import type { V1Deployment } from '@kubernetes/client-node';
import { listObjects, mergePatch, patchStatus } from '../../shared/kube/index.ts';
import { forEachLimited } from '../../shared/runtime/index.ts';
import { applyYaml, deleteNamespace, freshNamespace, useCluster } from '../../test/support/cluster.ts';
import { freePort } from '../../test/support/databases.ts';
import { startApiServerSourceAdapter } from '../../test/support/knative.ts';
import { repoRoot } from '../../test/support/tools.ts';

const N = Number(process.env.BENCH_N ?? 1000);
const RATE = Number(process.env.BENCH_RATE ?? 20);
const SWEEPS = Number(process.env.BENCH_SWEEPS ?? 3);
const benchDir = process.env.BENCH_DIR ?? '/tmp/stash-bench';
mkdirSync(benchDir, { recursive: true });
const GROUP = 'stash.appscode.com';
const VERSION = 'v1alpha2';
const SIDECAR = 'stash-backup';

const load1 = (): number => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const say = (text: string): void => { process.stderr.write(`[${new Date().toISOString().slice(11, 19)} load ${load1()}] ${text}\n`); };

async function limited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++] as T);
  }));
}

function hwmMB(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 102.4) / 10 : NaN;
}
function rssMB(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 102.4) / 10 : NaN;
}

/** The functions' Node options as deployed (knative/20-services.yaml: every Service sets the same). */
const DEPLOYED_NODE_OPTIONS = (() => {
  const m = /- name: NODE_OPTIONS\n\s+value: (\S+)/.exec(readFileSync(path.join(repoRoot, 'knative/20-services.yaml'), 'utf8'));
  if (!m?.[1]) throw new Error('knative/20-services.yaml sets no NODE_OPTIONS: the benchmark runs the functions as deployed');
  return m[1];
})();

async function startFunction(name: string, script: string, env: Record<string, string>, logLevel = 'warn'): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const log = openSync(path.join(benchDir, `${name}.log`), 'w');
  // NODE_OPTIONS as deployed (knative/20-services.yaml, stack.yml); BENCH_NODE_OPTIONS overrides it ('' = Node's defaults).
  const nodeOptions = process.env.BENCH_NODE_OPTIONS ?? DEPLOYED_NODE_OPTIONS;
  const child = spawn(process.execPath, [path.join(repoRoot, script)], {
    env: { ...process.env, ...env, PORT: String(port), LOG_LEVEL: logLevel, NODE_OPTIONS: nodeOptions }, stdio: ['ignore', log, log],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}; see ${benchDir}/${name}.log`);
    if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) return { child, url };
    await sleep(100);
  }
  throw new Error(`${name} did not answer /healthz`);
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] as number;
};
const median = (xs: number[]): number => pct(xs, 50);

/**
 * inject-sidecar's finalizer stays on the Backups once the function is stopped; without it the
 * namespace could never finish deleting. (The benchmark's Deployments go with the namespace.)
 */
async function stripFinalizers(namespace: string): Promise<void> {
  const custom = kc.makeApiClient(CustomObjectsApi);
  const list = await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: 'backups' }) as { items: { metadata: { name: string; finalizers?: string[] } }[] };
  const held = list.items.filter((b) => (b.metadata.finalizers ?? []).length > 0).map((b) => b.metadata.name);
  await limited(held, 16, async (name) => {
    await mergePatch(kc, { apiVersion: `${GROUP}/${VERSION}`, kind: 'Backup', namespace, name }, { metadata: { finalizers: null } }, { fieldManager: 'stash-bench' })
      .catch(() => undefined);
  });
  say(`removed the finalizer of ${held.length} Backups`);
}

const cluster = await useCluster();
const kc = cluster.kc;
if (process.argv[2] === '--cleanup') {
  // `node scripts/bench/functions.ts --cleanup NAMESPACE`: after an interrupted run.
  const leftover = process.argv[3];
  if (!leftover?.startsWith('bench-functions-')) throw new Error('--cleanup takes a bench-functions-* namespace');
  await deleteNamespace(cluster, leftover);
  await stripFinalizers(leftover);
  process.exit(0);
}
const ns = await freshNamespace(cluster, 'bench-functions');
const children: ChildProcess[] = [];
let adapterStop: (() => Promise<void>) | undefined;
const results: Record<string, unknown> = { n: N, rate: RATE, namespace: ns };
try {
  const apps = kc.makeApiClient(AppsV1Api);
  const core = kc.makeApiClient(CoreV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  await applyYaml(cluster, readFileSync(path.join(repoRoot, 'shared/api/defaults/agent-templates.yaml'), 'utf8'));
  await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'local-secret' }, stringData: { RESTIC_PASSWORD: 'bench' } } });
  await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'repositories', body: {
    apiVersion: `${GROUP}/${VERSION}`, kind: 'Repository', metadata: { name: 'local-repo' },
    spec: { backend: { local: { mountPath: '/stash-repo', subPath: 'bench', hostPath: { path: '/srv/stash-repo' } }, storageSecretName: 'local-secret' } },
  } });

  say(`creating ${N} Deployments in ${ns}`);
  const names = Array.from({ length: N }, (_, i) => `app-${String(i).padStart(4, '0')}`);
  const t = Date.now();
  await limited(names, 8, async (name) => {
    await apps.createNamespacedDeployment({ namespace: ns, body: {
      metadata: { name, labels: { app: name } },
      spec: { replicas: 1, selector: { matchLabels: { app: name } }, template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: 'app', image: 'busybox', args: ['sleep', '3600'], volumeMounts: [{ name: 'data', mountPath: '/data' }] }],
          volumes: [{ name: 'data', emptyDir: {} }] } } },
    } });
  });
  say(`Deployments created in ${((Date.now() - t) / 1000).toFixed(1)} s; letting the controllers settle`);
  await sleep(10_000);

  const inject = await startFunction('inject-sidecar', 'functions/inject-sidecar/index.ts', { KUBECONFIG: cluster.kubeconfigPath, STASH_NAMESPACES: ns }, 'info');
  children.push(inject.child);
  const adapter = await startApiServerSourceAdapter({
    kubeconfigPath: cluster.kubeconfigPath, sinkUrl: inject.url, mode: 'Reference', namespaces: [ns], name: 'stash-events', namespace: ns,
    resources: [
      { apiVersion: `${GROUP}/${VERSION}`, kind: 'Backup' },
      { apiVersion: `${GROUP}/${VERSION}`, kind: 'Repository' },
      { apiVersion: 'apps/v1', kind: 'Deployment' },
    ],
  });
  adapterStop = () => adapter.stop();
  say(`inject-sidecar (pid ${inject.child.pid}) and the ApiServerSource adapter (pid ${adapter.pid}) are up; RSS idle ${rssMB(inject.child.pid)} MB`);

  // Watch the Deployments: when does each one first carry the sidecar?
  const injectedAt = new Map<string, number>();
  let watching = true;
  const watch = new Watch(kc);
  let abortWatch: { abort: () => void } | undefined;
  const startWatch = async (): Promise<void> => {
    abortWatch = await watch.watch(`/apis/apps/v1/namespaces/${ns}/deployments`, {}, (_type, obj: V1Deployment) => {
      const name = obj.metadata?.name ?? '';
      if (!injectedAt.has(name) && obj.spec?.template.spec?.containers.some((c) => c.name === SIDECAR)) injectedAt.set(name, performance.now());
    }, () => { if (watching) void startWatch(); });
  };
  await startWatch();

  const backupBody = (name: string): object => ({
    apiVersion: `${GROUP}/${VERSION}`, kind: 'Backup', metadata: { name },
    spec: { schedule: '* * * * *', backupAgent: { name: 'stash-volume-backup' }, repository: { name: 'local-repo' },
      targetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name }, targetDirectories: ['/data'], retentionPolicy: { keepLast: 5 } },
  });
  // The adapter's watch is live once a canary Backup gets its sidecar (it sends nothing for older objects).
  await apps.createNamespacedDeployment({ namespace: ns, body: { metadata: { name: 'canary' }, spec: { selector: { matchLabels: { app: 'canary' } },
    template: { metadata: { labels: { app: 'canary' } }, spec: { containers: [{ name: 'app', image: 'busybox', volumeMounts: [{ name: 'data', mountPath: '/data' }] }], volumes: [{ name: 'data', emptyDir: {} }] } } } } });
  for (let attempt = 0; !injectedAt.has('canary'); attempt++) {
    if (attempt > 0) await custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backups', name: 'canary' }).catch(() => undefined);
    if (attempt >= 6) throw new Error('the canary Backup never got its sidecar: is the adapter delivering? see the logs in ' + benchDir);
    await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backups', body: backupBody('canary') }).catch(() => undefined);
    for (let i = 0; i < 100 && !injectedAt.has('canary'); i++) await sleep(100);
  }
  say('canary injected: the event path is live');

  say(`creating ${N} Backups at ${RATE}/s`);
  const sentAt = new Map<string, number>();
  const start = performance.now();
  await Promise.all(names.map(async (name, i) => {
    const due = start + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    sentAt.set(name, performance.now());
    await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backups', body: backupBody(name) });
  }));
  const createdIn = (performance.now() - start) / 1000;
  say(`Backups created in ${createdIn.toFixed(1)} s; waiting for every sidecar`);
  const deadline = Date.now() + Number(process.env.BENCH_INJECT_TIMEOUT ?? 1500) * 1000;
  let peakInjectRss = 0;
  while (names.some((n) => !injectedAt.has(n)) && Date.now() < deadline) {
    peakInjectRss = Math.max(peakInjectRss, rssMB(inject.child.pid));
    await sleep(500);
  }
  watching = false;
  abortWatch?.abort();
  const latencies = names.filter((n) => injectedAt.has(n)).map((n) => ((injectedAt.get(n) as number) - (sentAt.get(n) as number)) / 1000);
  const lastDone = Math.max(...[...injectedAt.values()]);
  results.inject = {
    injected: latencies.length, createdInSeconds: createdIn, allInjectedAfterSeconds: (lastDone - start) / 1000,
    p50: pct(latencies, 50), p90: pct(latencies, 90), p99: pct(latencies, 99), max: Math.max(...latencies),
    peakRssMB: hwmMB(inject.child.pid), adapterPeakRssMB: hwmMB(adapter.pid),
  };
  say(`inject: ${JSON.stringify(results.inject)}`);
  // Let the trailing update events drain before the sweeps, then stop the event path: the sweeps run alone.
  await sleep(5_000);
  await adapter.stop();
  adapterStop = undefined;

  const clockFile = path.join(benchDir, 'sweep-clock');
  // 30 days ahead, 30 s into a minute: another sweeper on the cluster (real clock) then never finds these Backups due.
  const t0 = Math.floor(Date.now() / 60_000) * 60_000 + 30 * 86_400_000 + 30_000;
  const setClock = (ms: number): void => writeFileSync(clockFile, new Date(ms).toISOString());
  setClock(t0);
  const sweep = await startFunction('sweep', 'scripts/bench/sweep-server.ts', { KUBECONFIG: cluster.kubeconfigPath, BENCH_NAMESPACE: ns, BENCH_CLOCK_FILE: clockFile }, 'info');
  children.push(sweep.child);
  const doneLines = (): string[] => readFileSync(path.join(benchDir, 'sweep.log'), 'utf8').split('\n').filter((l) => l.includes('"sweep done"'));
  /** The summary of the sweep after the `before`-th one (its log line may reach the file a moment after the answer). */
  const lastSummary = async (before: number): Promise<Record<string, number>> => {
    let lines = doneLines();
    for (let i = 0; i < 40 && lines.length <= before; i++) {
      await sleep(50);
      lines = doneLines();
    }
    const last = JSON.parse(lines.length > before ? lines.at(-1) ?? '{}' : '{}') as Record<string, number>;
    return { created: last.created ?? NaN, skipped: last.skipped ?? NaN, statusWrites: last.statusWrites ?? NaN, waiting: last.waiting ?? NaN, recorded: last.recorded ?? NaN, failed: last.failed ?? NaN, listMs: last.listMs ?? NaN, totalMs: last.totalMs ?? NaN };
  };
  const sweepOnce = async (): Promise<{ seconds: number; load: number; summary: Record<string, number> }> => {
    const load = load1();
    const before = doneLines().length;
    const started = performance.now();
    const r = await fetch(`${sweep.url}/`, { method: 'POST', headers: { 'X-Connector': 'cron-connector' } });
    const seconds = (performance.now() - started) / 1000;
    if (r.status !== 202) throw new Error(`sweep answered ${r.status}: ${await r.text()}`);
    return { seconds, load, summary: await lastSummary(before) };
  };
  const countTriggers = async (): Promise<number> =>
    ((await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backuptriggers' })) as { items: unknown[] }).items.length;
  const clearTriggers = async (): Promise<void> => {
    await custom.deleteCollectionNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'backuptriggers' });
    for (let k = 0; k < 120 && (await countTriggers()) > 0; k++) await sleep(500);
  };
  /**
   * Every run finished, as handle-trigger records it when the agent reports (no agents run here):
   * so the next tick starts new runs instead of skipping. The runs stay: a scheduled run is the
   * record of its tick until handle-trigger (or the sweep a minute later) copies it into the
   * Backup's status, and handle-trigger prunes only recorded runs.
   */
  const finishRuns = async (): Promise<void> => {
    const runs = await listObjects(cluster.kc, { apiVersion: `${GROUP}/${VERSION}`, kind: 'BackupTrigger', namespace: ns });
    await forEachLimited(runs.filter((t) => (t as { status?: { phase?: string } }).status?.phase !== 'Succeeded'), 32, async (t) => {
      await patchStatus(cluster.kc, { apiVersion: `${GROUP}/${VERSION}`, kind: 'BackupTrigger', namespace: ns, name: t.metadata?.name ?? '' },
        { phase: 'Succeeded' }, { fieldManager: 'stash-bench', plural: 'backuptriggers' });
    });
  };
  await clearTriggers();
  const first = await sweepOnce();
  // On the clock 30 days ahead every Backup is due at once: the first sweep creates a run for each.
  say(`first sweep (sets the Scheduled condition, creates ${N} runs): ${first.seconds.toFixed(2)} s ${JSON.stringify(first.summary)}`);
  await finishRuns();
  const idle: { seconds: number; load: number; summary: Record<string, number> }[] = [];
  const due: { seconds: number; load: number; summary: Record<string, number> }[] = [];
  for (let i = 0; i < SWEEPS; i++) {
    // Idle: the same (fake) minute again. Due: the next minute, every Backup's tick has come.
    setClock(t0 + i * 60_000 + 5_000);
    idle.push(await sweepOnce());
    say(`idle sweep: ${idle.at(-1)?.seconds.toFixed(2)} s ${JSON.stringify(idle.at(-1)?.summary)}`);
    setClock(t0 + (i + 1) * 60_000);
    const d = await sweepOnce();
    due.push(d);
    say(`due sweep: ${d.seconds.toFixed(2)} s ${JSON.stringify(d.summary)}; BackupTriggers now ${await countTriggers()}`);
    await finishRuns();
  }
  results.sweep = { first, idle, due, peakRssMB: hwmMB(sweep.child.pid) };
  const summary = {
    injectP50: (results.inject as { p50: number }).p50, injectP99: (results.inject as { p99: number }).p99,
    idleSweepMedian: median(idle.map((s) => s.seconds)), idleSweepRange: [Math.min(...idle.map((s) => s.seconds)), Math.max(...idle.map((s) => s.seconds))],
    dueSweepMedian: median(due.map((s) => s.seconds)), dueSweepRange: [Math.min(...due.map((s) => s.seconds)), Math.max(...due.map((s) => s.seconds))],
    injectPeakRssMB: (results.inject as { peakRssMB: number }).peakRssMB, sweepPeakRssMB: hwmMB(sweep.child.pid),
  };
  process.stdout.write(`${JSON.stringify(results, null, 1)}\n`);
  process.stdout.write(`
| measurement | figure | target |
| --- | --- | --- |
| Backup created -> sidecar injected, p50 | ${summary.injectP50.toFixed(3)} s | |
| Backup created -> sidecar injected, p99 | ${summary.injectP99.toFixed(3)} s | <= 1 s |
| idle sweep over ${N} Backups | ${summary.idleSweepMedian.toFixed(2)} s (${summary.idleSweepRange.map((x) => x.toFixed(2)).join('-')}) | <= 2 s |
| sweep with ${N} due runs | ${summary.dueSweepMedian.toFixed(2)} s (${summary.dueSweepRange.map((x) => x.toFixed(2)).join('-')}) | <= 2 s |
| inject-sidecar peak RSS | ${summary.injectPeakRssMB} MB | <= 100 MB |
| sweep peak RSS | ${summary.sweepPeakRssMB} MB | <= 100 MB |
`);
} finally {
  await adapterStop?.();
  for (const c of children) c.kill('SIGTERM');
  say(`deleting namespace ${ns}`);
  await deleteNamespace(cluster, ns);
  await stripFinalizers(ns);
}
