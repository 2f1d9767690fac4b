/**
 * The local stack's entry (scripts/stack.sh runs it; KUBECONFIG names the control plane):
 *
 *   node scripts/stack.ts serve --state DIR   the six functions and Knative's adapters
 *                                             (test/support/stack.ts) until SIGTERM/SIGINT; logs in
 *                                             DIR, URLs in DIR/stack.env once everything is up
 *   node scripts/stack.ts demo --state DIR    the default demo against the running stack: namespace
 *                                             demo, a local repository, the design's stash-demo
 *                                             Deployment and backup-volume-demo Backup, one run
 *                                             executed by the sidecar in the Deployment's pod on
 *                                             the node (scripts/node.sh), then the design's volume
 *                                             Recovery of that snapshot (run-recovery's Job, its
 *                                             pod on the node) into a directory, compared with the
 *                                             original
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { AppsV1Api, CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import type { BackupTrigger } from '../shared/api/index.ts';
import { applyYaml } from '../test/support/cluster.ts';
import type { Cluster } from '../test/support/cluster.ts';
import { podGateway, podLog, podLogs, runningPod, TOLERATE_NODE_ANNOTATIONS } from '../test/support/node.ts';
import { designSample } from '../test/support/samples.ts';
import { startStack } from '../test/support/stack.ts';
import { repoRoot, toolPath } from '../test/support/tools.ts';

const GROUP = 'stash.appscode.com';

const VERSION = 'v1alpha2';
const DEMO = 'demo';

class StackCommandError extends Error {
  override name = 'StackCommandError';
}

function clusterFromEnv(): Cluster {
  const kubeconfigPath = process.env.KUBECONFIG;
  if (!kubeconfigPath || !existsSync(kubeconfigPath)) {
    throw new StackCommandError(`KUBECONFIG=${kubeconfigPath ?? ''} names no file: run scripts/stack.sh up (it starts the control plane and sets it)`);
  }
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return { kubeconfigPath, kc };
}

const say = (text: string): void => { process.stdout.write(`${text}\n`); };
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new StackCommandError(`timed out after ${timeoutMs / 1000} s waiting for ${what}; see the logs in the state directory`);
    await sleep(500);
  }
}

async function serve(stateDir: string): Promise<void> {
  const cluster = clusterFromEnv();
  const envFile = path.join(stateDir, 'stack.env');
  writeFileSync(envFile, '');
  // The agents run in pods on the node: they reach handle-trigger at the pod network's gateway.
  const stack = await startStack({ cluster, stateDir, systemNamespace: 'stash-system', agentHost: podGateway });
  writeFileSync(envFile, [
    `STASH_FUNCTIONS_URL=${stack.functionsUrl}`,
    ...Object.entries(stack.urls).map(([fn, url]) => `${fn.toUpperCase().replace(/-/g, '_')}_URL=${url}`),
    `KUBECONFIG=${cluster.kubeconfigPath}`,
    '',
  ].join('\n'));
  say(`stack up: ${JSON.stringify(stack.urls)}; logs in ${stateDir}`);
  const stop = (signal: string): void => {
    say(`${signal}: stopping the functions and adapters`);
    stack.stop().then(() => process.exit(0), (error: unknown) => {
      process.stderr.write(`stopping failed: ${String(error)}\n`);
      process.exit(1);
    });
  };
  process.once('SIGTERM', () => { stop('SIGTERM'); });
  process.once('SIGINT', () => { stop('SIGINT'); });
  setInterval(() => undefined, 60_000); // keeps the process alive until a signal
}

function readEnvFile(file: string): Record<string, string> {
  if (!existsSync(file)) throw new StackCommandError(`${file} does not exist: the stack is not running; run scripts/stack.sh up`);
  const entries = readFileSync(file, 'utf8').split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]);
  return Object.fromEntries(entries) as Record<string, string>;
}

function kubectl(args: string[], kubeconfigPath: string): string {
  return execFileSync(toolPath('kubectl'), args, { encoding: 'utf8', env: { ...process.env, KUBECONFIG: kubeconfigPath } });
}

async function demo(stateDir: string): Promise<void> {
  const cluster = clusterFromEnv();
  const env = readEnvFile(path.join(stateDir, 'stack.env'));
  if (!env.STASH_FUNCTIONS_URL) throw new StackCommandError(`${path.join(stateDir, 'stack.env')} names no STASH_FUNCTIONS_URL: restart the stack (scripts/stack.sh down; scripts/stack.sh up)`);
  const dir = path.join(stateDir, 'demo');
  const repoDir = path.join(dir, 'repository');
  const dataDir = path.join(dir, 'data');
  mkdirSync(repoDir, { recursive: true });
  mkdirSync(path.join(dataDir, 'reports'), { recursive: true });
  writeFileSync(path.join(dataDir, 'index.html'), '<h1>stash demo</h1>\n');
  writeFileSync(path.join(dataDir, 'reports', `report-${Date.now()}.bin`), randomBytes(64 * 1024));
  const passwordFile = path.join(dir, 'password');
  if (!existsSync(passwordFile)) writeFileSync(passwordFile, randomBytes(16).toString('hex'), { mode: 0o600 });
  const password = readFileSync(passwordFile, 'utf8');

  const repository = designSample('01-repository.yaml');
  repository.spec.backend = { local: { mountPath: repoDir, subPath: 'repo', hostPath: { path: repoDir } }, storageSecretName: 'local-secret' };
  const deployment = designSample('11-deployment-default-backup.yaml') as unknown as { metadata: Record<string, unknown>; spec: { template: { spec: { volumes: unknown[] } } } };
  delete deployment.metadata.annotations;
  deployment.spec.template.spec.volumes = [{ name: 'source-data', hostPath: { path: dataDir, type: 'Directory' } }];

  say(`== namespace ${DEMO}: Secret local-secret, Repository stash-backup-repo (local: ${repoDir}; the design uses GCS), Deployment stash-demo (data: ${dataDir}), Backup backup-volume-demo`);
  // The node is tainted (scripts/node.sh): the namespace's default toleration lets its pods run there.
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: DEMO, annotations: TOLERATE_NODE_ANNOTATIONS } }));
  await applyYaml(cluster, stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'local-secret' }, stringData: { RESTIC_PASSWORD: password } }), DEMO);
  await applyYaml(cluster, stringify(repository), DEMO);
  await applyYaml(cluster, stringify(deployment), DEMO);
  await applyYaml(cluster, stringify(designSample('02-backup-volume.yaml')), DEMO);

  const apps = cluster.kc.makeApiClient(AppsV1Api);
  const custom = cluster.kc.makeApiClient(CustomObjectsApi);
  const patched = await eventually('inject-sidecar to add the sidecar to Deployment demo/stash-demo', async () => {
    const d = await apps.readNamespacedDeployment({ namespace: DEMO, name: 'stash-demo' });
    return d.spec?.template.spec?.containers.some((c) => c.name === 'stash-backup') ? d : undefined;
  });
  say('== inject-sidecar patched the Deployment (from the ApiServerSource event); its containers:');
  for (const c of patched.spec?.template.spec?.containers ?? []) {
    say(`   ${c.name}: ${c.image ?? ''} ${[...(c.command ?? []), ...(c.args ?? [])].join(' ')}`);
    for (const m of c.volumeMounts ?? []) say(`      mount ${m.name} at ${m.mountPath}${m.readOnly ? ' (read-only)' : ''}`);
  }
  const pod = await runningPod(cluster, DEMO, 'app=stash-demo', (p) => p.spec?.containers.some((c) => c.name === 'stash-backup') === true, 180_000);
  say(`== the Deployment controller rolled out Pod ${pod.metadata?.name ?? ''}; the kubelet runs it on node ${pod.spec?.nodeName ?? '?'} with the sidecar`);

  const name = `backup-volume-demo-${Math.floor(Date.now() / 1000)}`;
  await custom.createNamespacedCustomObject({
    group: GROUP, version: VERSION, plural: 'backuptriggers', namespace: DEMO,
    body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'BackupTrigger', metadata: { name }, spec: { targetBackup: { name: 'backup-volume-demo' } } },
  });
  say(`== created BackupTrigger ${DEMO}/${name}; waiting for the run`);
  const run = await eventually(`BackupTrigger ${DEMO}/${name} to finish`, async () => {
    const t = await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'backuptriggers', namespace: DEMO, name }) as BackupTrigger;
    return t.status?.phase === 'Succeeded' || t.status?.phase === 'Failed' ? t : undefined;
  }, 300_000);
  writeFileSync(path.join(stateDir, 'demo-sidecar.log'), await podLog(cluster, DEMO, pod.metadata?.name ?? '', 'stash-backup'));
  const host = run.status?.hosts?.find((h) => h.host === 'host-0');
  say(`== run ${name}: phase ${run.status?.phase ?? '?'}, snapshot ${host?.snapshotId ?? '(none)'}${run.status?.phase === 'Failed' ? `, error: ${JSON.stringify(run.status)}` : ''} (sidecar log: ${path.join(stateDir, 'demo-sidecar.log')})`);
  say('== kubectl get backups,backuptriggers,repositories -A');
  say(kubectl(['get', 'backups,backuptriggers,repositories', '-A'], cluster.kubeconfigPath).trimEnd());
  say(`== snapshots in ${path.join(repoDir, 'repo')}`);
  try {
    say(execFileSync(process.execPath, [path.join(repoRoot, 'agent/bin/stash.js'), 'snapshots', '--repo', path.join(repoDir, 'repo'), '--password-file', passwordFile],
      { encoding: 'utf8', env: { ...process.env, STASH_RESTIC: toolPath('restic') } }).trimEnd());
  } catch (error) {
    say(`   (could not list snapshots: ${(error as Error).message.split('\n')[0] ?? ''})`);
  }
  if (run.status?.phase !== 'Succeeded') throw new StackCommandError(`the demo run ${DEMO}/${name} did not succeed; see ${path.join(stateDir, 'demo-sidecar.log')} and the function logs in ${stateDir}`);
  await recoverDemo(cluster, stateDir, dataDir);
}

/** The design's volume Recovery (recovery-volume-demo) into a hostPath directory: run-recovery's Job, its Pod on the node. */
async function recoverDemo(cluster: Cluster, stateDir: string, dataDir: string): Promise<void> {
  const target = path.join(stateDir, 'demo', `recovered-${Date.now()}`);
  mkdirSync(target, { recursive: true });
  const recovery = designSample('03-recovery-volume.yaml') as unknown as
    { metadata: { name: string }; spec: { paths?: string[]; recoverTo: { volume: { mountPath: string } } } };
  const name = `${recovery.metadata.name}-${Math.floor(Date.now() / 1000)}`;
  recovery.metadata.name = name;
  // The design recovers /source/data into a PVC; here into a hostPath directory (no volume provisioner).
  recovery.spec.recoverTo.volume = { mountPath: recovery.spec.recoverTo.volume.mountPath, hostPath: { path: target } } as typeof recovery.spec.recoverTo.volume;
  say(`== Recovery ${DEMO}/${name}: paths ${(recovery.spec.paths ?? []).join(', ')} of the latest snapshot into ${target} (the design uses a PVC)`);
  await applyYaml(cluster, stringify(recovery), DEMO);
  const core = cluster.kc.makeApiClient(CoreV1Api);
  const custom = cluster.kc.makeApiClient(CustomObjectsApi);
  const pod = JSON.parse(JSON.stringify(await eventually(`run-recovery's Job for ${name} and its Pod (the Job controller)`, async () => {
    const pods = await core.listNamespacedPod({ namespace: DEMO, labelSelector: `stash.appscode.com/recovery=${name}` });
    return pods.items[0];
  }))) as V1Pod;
  say(`== run-recovery created Job ${pod.metadata?.labels?.['batch.kubernetes.io/job-name'] ?? '?'}; the kubelet runs its Pod ${pod.metadata?.name ?? ''}`);
  type RecoveryStatus = { status?: { phase?: string; snapshotId?: string; error?: string; stats?: { files?: number; bytes?: number } } };
  const done = await eventually(`Recovery ${DEMO}/${name} to finish`, async () => {
    const r = await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: 'recoveries', namespace: DEMO, name }) as RecoveryStatus;
    return r.status?.phase === 'Succeeded' || r.status?.phase === 'Failed' ? r : undefined;
  }, 300_000);
  writeFileSync(path.join(stateDir, 'demo-recovery.log'), await podLogs(cluster, pod));
  say(`== Recovery ${name}: phase ${done.status?.phase ?? '?'}, snapshot ${done.status?.snapshotId?.slice(0, 8) ?? '(none)'}, ` +
    `${done.status?.stats?.files ?? 0} files, ${done.status?.stats?.bytes ?? 0} bytes (log: ${path.join(stateDir, 'demo-recovery.log')})`);
  if (done.status?.phase !== 'Succeeded') throw new StackCommandError(`the demo Recovery ${DEMO}/${name} failed: ${done.status?.error ?? ''}; see ${path.join(stateDir, 'demo-recovery.log')}`);
  const same = execFileSync('diff', ['-r', dataDir, target], { encoding: 'utf8' }) === '';
  say(`== diff -r ${dataDir} ${target}: ${same ? 'identical' : 'DIFFERENT'}`);
  say('== kubectl get recoveries -A');
  say(kubectl(['get', 'recoveries', '-A'], cluster.kubeconfigPath).trimEnd());
  if (!same) throw new StackCommandError(`the recovered files in ${target} differ from ${dataDir}`);
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({ allowPositionals: true, options: { state: { type: 'string', default: '/tmp/stash-stack' } } });
  const stateDir = path.resolve(values.state);
  mkdirSync(stateDir, { recursive: true });
  switch (positionals[0]) {
    case 'serve': return serve(stateDir);
    case 'demo': return demo(stateDir);
    default: throw new StackCommandError(`unknown command "${positionals[0] ?? ''}": use serve or demo (with --state DIR)`);
  }
}

if (import.meta.main) {
  main().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
