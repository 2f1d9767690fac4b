/**
 * The whole of Stash running locally against the real control plane: the six functions as
 * separate processes (`node functions/main.ts`, one per STASH_FUNCTION, as the image runs them)
 * and Knative Eventing's real adapters feeding them.
 *
 * What stands in for Knative's dataplane: a Broker and its Triggers cannot run here (they need
 * Knative's ingress/filter dataplane, Serving and a cluster network), so each function gets its own
 * ApiServerSource receive adapter in Reference mode watching exactly the kinds its Triggers in
 * knative/40-triggers.yaml let through (read from that file, with the apiVersions and selectors of
 * the ApiServerSource in knative/50-sources.yaml, so the stand-in follows the deployment), sinking
 * straight to the function. A function therefore receives the events it would get behind Broker +
 * Trigger, minus the Broker's retries. The real mtping adapter sends the per-minute tick to every
 * function through one PingSource per function (`<pingsource>-<function>`), standing for the one
 * PingSource the Broker fans out.
 *
 * Each process logs to `<stateDir>/<name>.log`. Nothing listens on port 8080 (the adapters bind it
 * for their health probes).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ApiException, CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import type { Cluster } from './cluster.ts';
import { freePort } from './databases.ts';
import { markPingSourceReady, startApiServerSourceAdapter, startPingAdapter } from './knative.ts';
import type { RunningAdapter, WatchedResource } from './knative.ts';
import { repoRoot } from './tools.ts';

export const FUNCTIONS = ['expand-template', 'handle-trigger', 'inject-sidecar', 'launch-db-job', 'run-recovery', 'sweep'] as const;
export type StackFunction = (typeof FUNCTIONS)[number];

export class StackError extends Error {
  override name = 'StackError';
}

export interface StackOptions {
  cluster: Cluster;
  /**
   * Limit the stack to these namespaces: the ApiServerSource adapters watch only them (cluster-scoped
   * kinds such as AgentTemplate are still watched cluster-wide) and every function gets
   * STASH_NAMESPACES. Default: all namespaces.
   */
  namespaces?: readonly string[];
  /** Logs, and anything else of the stack's, go here (created). */
  stateDir: string;
  /**
   * Knative's namespace stand-in: the PingSources, and mtping's ConfigMaps and leader Lease. Created
   * when missing. Default stash-system.
   */
  systemNamespace?: string;
  /** LOG_LEVEL of the functions (default info). */
  logLevel?: string;
  /** PingSource schedule (default `* * * * *`; mtping also takes a leading seconds field). */
  pingSchedule?: string;
  /**
   * The address at which agents reach the functions (default 127.0.0.1): the test node's pod
   * gateway (test/support/node.ts) for agents that run in real pods. The functions listen on
   * every address, so the host reaches them there too.
   */
  agentHost?: string;
}

export interface Stack {
  /** Each function's base URL, e.g. http://127.0.0.1:41234. */
  urls: Readonly<Record<StackFunction, string>>;
  /** handle-trigger's URL at agentHost: STASH_FUNCTIONS_URL of the functions, and what an agent must be given. */
  functionsUrl: string;
  systemNamespace: string;
  /** PingSource name per function (in systemNamespace). */
  pingSources: Readonly<Record<StackFunction, string>>;
  /** The Trigger kinds each function's adapter watches (from knative/40-triggers.yaml). */
  watchedKinds: Readonly<Record<StackFunction, readonly string[]>>;
  /** A process's log so far: a function's name, `adapter-<function>` or `mtping`. */
  log(name: string): string;
  /** Resolves when `pattern` matches a line of that log (already written or future). */
  waitForLog(name: string, pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Stops the ApiServerSource adapters (events stop; mtping and the functions keep running). */
  stopEventAdapters(): Promise<void>;
  /** Starts them again (a new adapter sends nothing for objects that already exist). */
  startEventAdapters(): Promise<void>;
  /** Stops everything and waits for every process to exit. Idempotent. */
  stop(): Promise<void>;
}

interface SelectorRequirement { key: string; operator: string; values?: string[] }
interface SourceResource { apiVersion: string; kind: string; selector?: { matchLabels?: Record<string, string>; matchExpressions?: SelectorRequirement[] } }

/**
 * A LabelSelector in string form, as the controller renders it (metav1.LabelSelectorAsSelector):
 * one requirement per matchLabels entry (`k=v`) and matchExpressions entry (`k in (a,b)`,
 * `k notin (a,b)`, `k`, `!k`), values sorted, requirements sorted by key.
 */
export function renderSelector(selector: SourceResource['selector']): string {
  const requirements: { key: string; text: string }[] = [];
  for (const [k, v] of Object.entries(selector?.matchLabels ?? {})) requirements.push({ key: k, text: `${k}=${v}` });
  for (const e of selector?.matchExpressions ?? []) {
    const values = [...(e.values ?? [])].sort();
    switch (e.operator) {
      case 'In': requirements.push({ key: e.key, text: `${e.key} in (${values.join(',')})` }); break;
      case 'NotIn': requirements.push({ key: e.key, text: `${e.key} notin (${values.join(',')})` }); break;
      case 'Exists': requirements.push({ key: e.key, text: e.key }); break;
      case 'DoesNotExist': requirements.push({ key: e.key, text: `!${e.key}` }); break;
      default: throw new StackError(`knative/50-sources.yaml: matchExpressions operator ${e.operator} (key ${e.key}) is not a LabelSelector operator`);
    }
  }
  return requirements.sort((a, b) => a.key.localeCompare(b.key)).map((r) => r.text).join(',');
}

/** The kinds the ApiServerSource stash-events watches (knative/50-sources.yaml), with apiVersion and selector. */
export function sourceResources(): Map<string, WatchedResource> {
  const text = readFileSync(path.join(repoRoot, 'knative/50-sources.yaml'), 'utf8');
  const resources = new Map<string, WatchedResource>();
  for (const doc of parseAllDocuments(text)) {
    const object = doc.toJS() as { kind?: string; spec?: { resources?: SourceResource[] } } | null;
    if (object?.kind !== 'ApiServerSource') continue;
    for (const r of object.spec?.resources ?? []) {
      const labels = renderSelector(r.selector);
      resources.set(r.kind, { apiVersion: r.apiVersion, kind: r.kind, ...(labels ? { selector: labels } : {}) });
    }
  }
  return resources;
}

interface Filter { exact?: Record<string, string>; any?: Filter[] }

export interface FunctionRoute {
  /** The `kind`s its Triggers let through (ApiServerSource events). */
  kinds: string[];
  /** The PingSources whose ticks its Triggers let through (by name). */
  pingSources: string[];
}

/** What each function receives, from its Triggers in knative/40-triggers.yaml (by subscriber). */
export function functionRoutes(): Map<string, FunctionRoute> {
  const text = readFileSync(path.join(repoRoot, 'knative/40-triggers.yaml'), 'utf8');
  const routes = new Map<string, FunctionRoute>();
  for (const doc of parseAllDocuments(text)) {
    const trigger = doc.toJS() as { kind?: string; spec?: { filters?: Filter[]; subscriber?: { ref?: { name?: string } } } } | null;
    const fn = trigger?.spec?.subscriber?.ref?.name;
    if (trigger?.kind !== 'Trigger' || fn === undefined) continue;
    const route = routes.get(fn) ?? { kinds: [], pingSources: [] };
    const visit = (f: Filter): void => {
      if (f.exact?.kind !== undefined && !route.kinds.includes(f.exact.kind)) route.kinds.push(f.exact.kind);
      const ping = f.exact?.type === 'dev.knative.sources.ping' ? /\/pingsources\/([^/]+)$/.exec(f.exact.source ?? '')?.[1] : undefined;
      if (ping !== undefined && !route.pingSources.includes(ping)) route.pingSources.push(ping);
      for (const inner of f.any ?? []) visit(inner);
    };
    for (const f of trigger.spec?.filters ?? []) visit(f);
    routes.set(fn, route);
  }
  return routes;
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

interface FunctionProcess {
  name: StackFunction;
  url: string;
  child: ChildProcess;
  exited: Promise<void>;
}

async function startFunction(name: StackFunction, port: number, env: Record<string, string>, logFile: string): Promise<FunctionProcess> {
  const fd = openSync(logFile, 'a');
  const child = spawn(process.execPath, [path.join(repoRoot, 'functions/main.ts')], {
    cwd: repoRoot,
    env: { ...env, STASH_FUNCTION: name, PORT: String(port) },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  children.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    children.delete(child);
    resolve();
  }));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new StackError(`function ${name} exited (code ${String(child.exitCode)}) before it served ${url}/healthz; its log ${logFile} ends:\n${tail(logFile)}`);
    }
    try {
      const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new StackError(`function ${name} did not answer ${url}/healthz within 30 s; its log ${logFile} ends:\n${tail(logFile)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return { name, url, child, exited };
}

function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function stopChild(p: FunctionProcess): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const killer = setTimeout(() => p.child.kill('SIGKILL'), 10_000);
  await p.exited;
  clearTimeout(killer);
}

async function ensureNamespace(cluster: Cluster, name: string): Promise<void> {
  try {
    await cluster.kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name } } });
  } catch (error) {
    if (!(error instanceof ApiException && error.code === 409)) throw error;
  }
}

/** A PingSource as Knative's controller leaves it: spec from the manifest, status Ready with the sink. */
async function ensurePingSource(cluster: Cluster, namespace: string, name: string, schedule: string, sinkUri: string): Promise<void> {
  const objects = cluster.kc.makeApiClient(CustomObjectsApi);
  const body = {
    apiVersion: 'sources.knative.dev/v1', kind: 'PingSource',
    metadata: { name, namespace, labels: { 'app.kubernetes.io/part-of': 'stash' } },
    spec: { schedule, sink: { uri: sinkUri } },
  };
  try {
    await objects.createNamespacedCustomObject({ group: 'sources.knative.dev', version: 'v1', namespace, plural: 'pingsources', body });
  } catch (error) {
    if (!(error instanceof ApiException && error.code === 409)) throw error;
    await objects.patchNamespacedCustomObject({ group: 'sources.knative.dev', version: 'v1', namespace, plural: 'pingsources', name, body: { spec: body.spec } });
  }
  await markPingSourceReady(cluster.kc, namespace, name, sinkUri);
}

export async function startStack(options: StackOptions): Promise<Stack> {
  const { cluster } = options;
  const stateDir = path.resolve(options.stateDir);
  mkdirSync(stateDir, { recursive: true });
  const systemNamespace = options.systemNamespace ?? 'stash-system';
  const namespaces = options.namespaces ?? [];
  const logFile = (name: string): string => path.join(stateDir, `${name}.log`);

  const routes = functionRoutes();
  const resources = sourceResources();
  const watchedKinds = {} as Record<StackFunction, string[]>;
  for (const fn of FUNCTIONS) {
    const route = routes.get(fn);
    if (route === undefined) throw new StackError(`knative/40-triggers.yaml has no Trigger for function ${fn}; the stack follows that file`);
    watchedKinds[fn] = route.kinds;
    for (const kind of route.kinds) {
      if (!resources.has(kind)) throw new StackError(`a Trigger of ${fn} filters on kind ${kind}, which the ApiServerSource in knative/50-sources.yaml does not watch; add it there`);
    }
  }

  const ports = {} as Record<StackFunction, number>;
  for (const fn of FUNCTIONS) {
    let port = await freePort();
    while (port === 8080 || Object.values(ports).includes(port)) port = await freePort();
    ports[fn] = port;
  }
  const urls = Object.fromEntries(FUNCTIONS.map((fn) => [fn, `http://127.0.0.1:${ports[fn]}`])) as Record<StackFunction, string>;
  const functionsUrl = `http://${options.agentHost ?? '127.0.0.1'}:${ports['handle-trigger']}`;
  const env: Record<string, string> = {
    PATH: `${path.join(repoRoot, 'node_modules/.bin')}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    HOME: process.env.HOME ?? '/tmp',
    KUBECONFIG: cluster.kubeconfigPath,
    STASH_FUNCTIONS_URL: functionsUrl,
    LOG_LEVEL: options.logLevel ?? 'info',
    ...(namespaces.length > 0 ? { STASH_NAMESPACES: namespaces.join(',') } : {}),
  };

  const functions: FunctionProcess[] = [];
  const adapters = new Map<string, RunningAdapter>();
  const flushers: NodeJS.Timeout[] = [];
  let stopping: Promise<void> | undefined;

  /** Adapter output lives in memory (knative.ts); copy it to its log file every second. */
  const keepLog = (name: string, adapter: RunningAdapter): RunningAdapter => {
    let written = 0;
    const flush = (): void => {
      const out = adapter.output();
      if (out.length > written) appendFileSync(logFile(name), out.slice(written));
      written = out.length;
    };
    const timer = setInterval(flush, 1_000);
    timer.unref();
    flushers.push(timer);
    return {
      pid: adapter.pid,
      output: () => adapter.output(),
      stop: async () => {
        await adapter.stop();
        clearInterval(timer);
        flush();
      },
    };
  };

  const startEventAdapters = async (): Promise<void> => {
    const starts: Promise<void>[] = [];
    for (const fn of FUNCTIONS) {
      const watched = watchedKinds[fn];
      if (watched.length === 0 || adapters.has(`adapter-${fn}`)) continue;
      const watchedResources = watched.map((kind) => resources.get(kind)).filter((r): r is WatchedResource => r !== undefined);
      starts.push((async () => {
        const adapter = await startApiServerSourceAdapter({
          kubeconfigPath: cluster.kubeconfigPath,
          sinkUrl: `${urls[fn]}/`,
          resources: watchedResources,
          mode: 'Reference',
          ...(namespaces.length > 0 ? { namespaces: [...namespaces] } : { allNamespaces: true }),
          name: `stash-events-${fn}`,
          namespace: systemNamespace,
          systemNamespace,
        });
        adapters.set(`adapter-${fn}`, keepLog(`adapter-${fn}`, adapter));
      })());
    }
    const results = await Promise.allSettled(starts);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  };

  const stopEventAdapters = async (): Promise<void> => {
    const names = [...adapters.keys()].filter((n) => n.startsWith('adapter-'));
    await Promise.all(names.map(async (n) => {
      await adapters.get(n)?.stop();
      adapters.delete(n);
    }));
  };

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await Promise.all([...adapters.values()].map((a) => a.stop()));
      adapters.clear();
      await Promise.all(functions.map(stopChild));
      for (const timer of flushers) clearInterval(timer);
    })();
    return stopping;
  };

  // One PingSource per function stands for the one PingSource the Broker fans out to every function.
  const pingSources = Object.fromEntries(FUNCTIONS.map((fn) => [fn, `${routes.get(fn)?.pingSources[0] ?? 'stash-resync'}-${fn}`])) as Record<StackFunction, string>;
  try {
    for (const fn of FUNCTIONS) writeFileSync(logFile(fn), '');
    functions.push(...await Promise.all(FUNCTIONS.map((fn) => startFunction(fn, ports[fn], env, logFile(fn)))));
    await ensureNamespace(cluster, systemNamespace);
    await startEventAdapters();
    for (const fn of FUNCTIONS) await ensurePingSource(cluster, systemNamespace, pingSources[fn], options.pingSchedule ?? '* * * * *', `${urls[fn]}/`);
    const mtping = await startPingAdapter({ kubeconfigPath: cluster.kubeconfigPath, systemNamespace });
    adapters.set('mtping', keepLog('mtping', mtping));
  } catch (error) {
    await stop();
    throw error;
  }

  const readLog = (name: string): string => {
    try {
      return readFileSync(logFile(name), 'utf8');
    } catch {
      return '';
    }
  };

  return {
    urls,
    functionsUrl,
    systemNamespace,
    pingSources,
    watchedKinds,
    log: readLog,
    async waitForLog(name, pattern, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const line = readLog(name).split('\n').find((l) => pattern.test(l));
        if (line !== undefined) return line;
        if (Date.now() > deadline) {
          throw new StackError(`no line of ${logFile(name)} matched ${String(pattern)} within ${timeoutMs} ms; it ends:\n${tail(logFile(name), 15)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    },
    stopEventAdapters,
    startEventAdapters,
    stop,
  };
}
