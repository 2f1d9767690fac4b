/**
 * The agent's memory in a pod on the real node (scripts/node.sh), against the memory limit the
 * design's samples give its container (128Mi): the stash-agent image backs up the benchmark tree
 * (scripts/bench/gen-tree.ts: 1.3 GB in 50,000 files; BENCH_FILES for fewer) from a hostPath into
 * a hostPath repository, once with no limit (what it takes), then with the samples' limit and
 * others (does it fit). The figures are the container's own memory cgroup, read inside the container after the
 * backup: the peak RSS of the agent and restic together (their VmRSS summed every 50 ms, in the
 * run without a limit), the peak of usage (page cache included, which the kernel
 * reclaims under a limit), how often the limit was reached (failcnt) and whether the OOM killer ran.
 *
 *   KUBECONFIG=<control plane> node scripts/bench/agent-pod.ts      (the node must be up)
 *   BENCH_LIMITS=128Mi,256Mi (default) the limits tried after the run without one
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { deleteNamespace, useCluster } from '../../test/support/cluster.ts';
import { createPodWhenReady, nodeNamespace, podEnded, podLog } from '../../test/support/node.ts';
import { repoRoot } from '../../test/support/tools.ts';

const benchDir = process.env.BENCH_DIR ?? '/tmp/stash-bench';
const tree = path.join(benchDir, 'tree');
/** The limits to try after the run without one (BENCH_LIMITS, comma-separated). */
const LIMITS = (process.env.BENCH_LIMITS ?? '128Mi,256Mi').split(',').map((l) => l.trim()).filter(Boolean);

// A sampler in the same container: every 50 ms the resident memory (VmRSS) of the container's
// other processes (the agent's node and restic), the peak written out when the backup has ended.
// Only where there is no limit: it is a Node process of its own (~40 MB) that would count against one.
const sampler = `node -e 'const f=require("fs"); let peak=0;` +
  ` const rss=(p)=>{ try { return +(/VmRSS:\\s+(\\d+) kB/.exec(f.readFileSync("/proc/"+p+"/status","utf8"))||[0,0])[1]*1024; } catch { return 0; } };` +
  ` const t=setInterval(()=>{ let sum=0; for (const p of f.readdirSync("/proc")) if (/^\\d+$/.test(p) && +p!==process.pid) sum+=rss(p); peak=Math.max(peak,sum); }, 50);` +
  ` process.on("SIGTERM", ()=>{ clearInterval(t); f.writeFileSync("/tmp/rss-peak", String(peak)); process.exit(0); });' &`;
/** The pod's command: init, then the backup; the report runs whatever the backup's outcome, and the pod exits with the backup's code. */
const command = (sample: boolean): string => [
  sample ? `${sampler} sampler=$!; ` : '',
  'stash init --repo /repo --password-file /secret/password >/dev/null && { ',
  'stash backup --repo /repo --password-file /secret/password --host bench --json /data >/tmp/backup.json; code=$?; ',
  sample ? 'kill $sampler; wait $sampler; ' : '',
  // No coreutils in the image: Node reads the container's own memory cgroup (cgroup v1, mounted at its root).
  `node -e 'const f=require("fs"),r=(n)=>f.readFileSync("/sys/fs/cgroup/memory/"+n,"utf8").trim();` +
  ` console.log(f.readFileSync("/tmp/backup.json","utf8").split("\\n").filter((l)=>l.includes("result")).at(-1));` +
  ` console.log(JSON.stringify({peakUsage:+r("memory.max_usage_in_bytes"),failcnt:+r("memory.failcnt"),` +
  ` oomKills:+(/oom_kill (\\d+)/.exec(r("memory.oom_control"))||[0,0])[1],peakRss:f.existsSync("/tmp/rss-peak")?+f.readFileSync("/tmp/rss-peak","utf8"):undefined}))'; `,
  'exit $code; }',
].join('');

async function run(limit: string | undefined): Promise<void> {
  const cluster = await useCluster();
  const namespace = await nodeNamespace(cluster, 'bench-agent-pod');
  const repoDir = path.join(benchDir, `pod-repo-${limit ?? 'none'}`);
  rmSync(repoDir, { recursive: true, force: true });
  mkdirSync(repoDir, { recursive: true });
  try {
    await cluster.kc.makeApiClient(CoreV1Api).createNamespacedSecret({ namespace, body: { metadata: { name: 'repo' }, stringData: { password: 'bench-password' } } });
    const started = Date.now();
    await createPodWhenReady(cluster, namespace, {
      metadata: { name: 'backup' },
      spec: {
        restartPolicy: 'Never',
        containers: [{
          name: 'agent', image: 'stash-agent:0.1.0', imagePullPolicy: 'IfNotPresent', command: ['/bin/sh', '-c', command(limit === undefined)],
          ...(limit ? { resources: { limits: { memory: limit } } } : {}),
          volumeMounts: [{ name: 'data', mountPath: '/data', readOnly: true }, { name: 'repo', mountPath: '/repo' }, { name: 'secret', mountPath: '/secret' }, { name: 'tmp', mountPath: '/tmp' }],
        }],
        volumes: [
          { name: 'data', hostPath: { path: tree, type: 'Directory' } },
          { name: 'repo', hostPath: { path: repoDir, type: 'Directory' } },
          { name: 'secret', secret: { secretName: 'repo' } },
          { name: 'tmp', emptyDir: {} },
        ],
      },
    });
    const pod = await podEnded(cluster, namespace, 'backup', 1_800_000);
    const seconds = (Date.now() - started) / 1000;
    const log = await podLog(cluster, namespace, 'backup', 'agent');
    const state = pod.status?.containerStatuses?.[0]?.state?.terminated;
    const lines = log.trim().split('\n');
    const memory = lines.at(-1)?.startsWith('{"peakUsage"') ? JSON.parse(lines.at(-1) ?? '{}') as Record<string, number> : undefined;
    const backup = lines.find((l) => l.startsWith('{"type":"result"'));
    const mb = (n: number | undefined): string => (n === undefined ? '?' : `${(n / 1048576).toFixed(0)} MiB`);
    process.stdout.write(`| ${limit ?? 'none'} | ${pod.status?.phase ?? '?'} (exit ${state?.exitCode ?? '?'}${state?.reason ? `, ${state.reason}` : ''}) | ${seconds.toFixed(1)} s | ` +
      `${mb(memory?.peakRss)} | ${mb(memory?.peakUsage)} | ${memory?.failcnt ?? '?'} | ${memory?.oomKills ?? '?'} |\n`);
    if (pod.status?.phase !== 'Succeeded') process.stdout.write(`  the agent said: ${(backup ? String((JSON.parse(backup) as { error?: { message?: string } }).error?.message ?? backup) : log.slice(-1500)).trim()}\n`);
  } finally {
    await deleteNamespace(cluster, namespace);
    rmSync(repoDir, { recursive: true, force: true });
  }
}

if (!existsSync(path.join(tree, '.complete'))) {
  execFileSync(process.execPath, [path.join(repoRoot, 'scripts/bench/gen-tree.ts'), tree], { stdio: 'inherit' });
}
process.stdout.write(`tree: ${execFileSync('du', ['-sh', tree], { encoding: 'utf8' }).split('\t')[0] ?? '?'} in ${execFileSync('find', [tree, '-type', 'f'], { encoding: 'utf8', maxBuffer: 1 << 28 }).split('\n').length - 1} files\n`);
process.stdout.write('| memory limit | outcome | wall (pod) | peak RSS (agent + restic) | peak usage (cgroup, incl. page cache) | limit reached (failcnt) | OOM kills |\n| --- | --- | --- | --- | --- | --- | --- |\n');
await run(undefined);
for (const limit of LIMITS) await run(limit);
