/**
 * Knative Eventing's real adapters as plain processes, for integration tests against the real
 * control plane: the ApiServerSource receive adapter and the multi-tenant PingSource adapter
 * (mtping), both built from knative.dev/eventing (KNATIVE_EVENTING_VERSION in scripts/versions.env)
 * by scripts/tools.sh. Also an event sink that records exactly what they send.
 *
 * What Knative's controllers would do for them is done here instead, the same way:
 * - apiserversource: the controller turns an ApiServerSource into the env of a receive-adapter
 *   Deployment (pkg/reconciler/apiserversource/resources/receive_adapter.go makeEnv); this file
 *   builds the same env, K_SOURCE_CONFIG included, and guesses plurals the same way.
 * - pingsource: the controller resolves spec.sink into status.sinkUri and marks the source Ready
 *   (mtping skips sources that are not Ready: pkg/adapter/mtping/pingsource.go ReconcileKind);
 *   markPingSourceReady() writes that status.
 *
 * Both adapters also open a health-probe server on :8080 (knative.dev/pkg injection.
 * HealthCheckDefaultPort, not configurable; a bind failure is ignored by the adapter): tests in
 * this repository must not listen on port 8080.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CoreV1Api, CustomObjectsApi, KubeConfig, ApiException } from '@kubernetes/client-node';
import { toolPath } from './tools.ts';

export class KnativeAdapterError extends Error {
  override name = 'KnativeAdapterError';
}

// ---------------------------------------------------------------------------------------------
// Plurals and the ApiServerSource adapter's configuration

export interface GroupVersionResource {
  group: string;
  version: string;
  resource: string;
}

/**
 * The plural Knative guesses for a kind: k8s.io/apimachinery meta.UnsafeGuessKindToResource, which
 * the ApiServerSource controller uses (receive_adapter.go makeEnv) instead of asking discovery.
 * A CRD whose plural differs from this guess is never watched.
 */
export function guessResource(apiVersion: string, kind: string): GroupVersionResource {
  const slash = apiVersion.indexOf('/');
  const group = slash === -1 ? '' : apiVersion.slice(0, slash);
  const version = slash === -1 ? apiVersion : apiVersion.slice(slash + 1);
  if (!kind) throw new KnativeAdapterError(`guessResource: kind is empty for apiVersion ${apiVersion}; name the kind to watch`);
  const singular = kind.toLowerCase();
  let resource: string;
  if (singular.endsWith('endpoints')) resource = singular; // unpluralizedSuffixes
  else if (singular.endsWith('s')) resource = `${singular}es`;
  else if (singular.endsWith('y')) resource = `${singular.slice(0, -1)}ies`;
  else resource = `${singular}s`;
  return { group, version, resource };
}

export interface WatchedResource {
  apiVersion: string;
  kind: string;
  /** A label selector in string form (`app=x,tier!=db`), as the controller renders it. */
  selector?: string;
}

export type EventMode = 'Reference' | 'Resource';

/** The JSON the adapter reads from K_SOURCE_CONFIG (pkg/adapter/apiserver/config.go Config). */
export interface ApiServerSourceConfig {
  namespaces: string[];
  allNamespaces: boolean;
  resources: { gvr: { Group: string; Version: string; Resource: string }; selector?: string }[];
  mode: EventMode;
  failFast?: boolean;
}

export function apiServerSourceConfig(options: {
  resources: WatchedResource[];
  mode: EventMode;
  namespaces?: string[];
  allNamespaces?: boolean;
  failFast?: boolean;
}): ApiServerSourceConfig {
  const allNamespaces = options.allNamespaces ?? false;
  const namespaces = options.namespaces ?? [];
  if (allNamespaces === (namespaces.length > 0)) {
    throw new KnativeAdapterError('ApiServerSource adapter: give either namespaces (non-empty) or allNamespaces: true, not both or neither');
  }
  if (options.resources.length === 0) {
    throw new KnativeAdapterError('ApiServerSource adapter: resources is empty; name at least one {apiVersion, kind} to watch');
  }
  return {
    namespaces,
    allNamespaces,
    resources: options.resources.map((r) => {
      const gvr = guessResource(r.apiVersion, r.kind);
      // GVR has no json tags in Go, hence the capitalised keys; the selector is omitempty.
      return { gvr: { Group: gvr.group, Version: gvr.version, Resource: gvr.resource }, ...(r.selector ? { selector: r.selector } : {}) };
    }),
    mode: options.mode,
    ...(options.failFast ? { failFast: true } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Processes

export interface RunningAdapter {
  pid: number;
  /** Everything the process wrote to stdout and stderr so far (the last 1 MB). */
  output(): string;
  /** SIGTERM, then SIGKILL after 10 s; resolves when the process has exited. Idempotent. */
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** A TCP port on 127.0.0.1 that was free a moment ago. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Logs only what matters to a person (zap JSON, INFO and up), and no secrets: the env has none. */
const loggingConfig = (component: string): string =>
  JSON.stringify({
    'zap-logger-config': JSON.stringify({
      level: 'info',
      development: false,
      outputPaths: ['stdout'],
      errorOutputPaths: ['stderr'],
      encoding: 'json',
      encoderConfig: {
        timeKey: 'timestamp', levelKey: 'severity', nameKey: 'logger', callerKey: 'caller', messageKey: 'message',
        stacktraceKey: 'stacktrace', lineEnding: '', levelEncoder: '', timeEncoder: 'iso8601', durationEncoder: '', callerEncoder: '',
      },
    }),
    [`loglevel.${component}`]: 'info',
  });

/** No metrics or tracing exporters: nothing listens on 9092 and nothing is sent anywhere. */
const observabilityConfig = JSON.stringify({ metrics: { protocol: 'none' }, tracing: { protocol: 'none' } });

async function startProcess(
  tool: string,
  args: string[],
  env: Record<string, string>,
  ready: RegExp,
  timeoutMs: number,
): Promise<RunningAdapter> {
  const binary = toolPath(tool);
  const child = spawn(binary, args, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let log = '';
  const append = (chunk: Buffer): void => {
    log += chunk.toString('utf8');
    if (log.length > 1_000_000) log = log.slice(-1_000_000);
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    children.delete(child);
    resolve();
  }));
  const tail = (): string => log.split('\n').slice(-30).join('\n');

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      clearInterval(poll);
      child.kill('SIGKILL');
      reject(new KnativeAdapterError(`${tool} did not log ${String(ready)} within ${timeoutMs} ms; its output ends:\n${tail()}`));
    }, timeoutMs);
    const poll = setInterval(() => {
      if (ready.test(log)) {
        clearTimeout(timer);
        clearInterval(poll);
        resolve();
      }
    }, 50);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      clearInterval(poll);
      reject(new KnativeAdapterError(`${tool} exited (code ${String(code)}, signal ${String(signal)}) before it was ready; its output ends:\n${tail()}`));
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      clearInterval(poll);
      reject(new KnativeAdapterError(`${tool} could not be started from ${binary}: ${error.message}; run scripts/tools.sh ensure ${tool}`));
    });
  });

  let stopping: Promise<void> | undefined;
  return {
    pid: child.pid ?? -1,
    output: () => log,
    stop: () => {
      stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(killer);
      })();
      return stopping;
    },
  };
}

export interface ApiServerSourceAdapterOptions {
  kubeconfigPath: string;
  /** Where events go (K_SINK). */
  sinkUrl: string;
  resources: WatchedResource[];
  mode: EventMode;
  /** Namespaces to watch; or allNamespaces: true. */
  namespaces?: string[];
  allNamespaces?: boolean;
  /** The ApiServerSource's name (NAME) and namespace (NAMESPACE, also the Kn-Namespace header). */
  name?: string;
  namespace?: string;
  /** SYSTEM_NAMESPACE (Knative's own namespace); default knative-eventing. */
  systemNamespace?: string;
  /** Stop at the first failed watch instead of retrying (the source's failFast). */
  failFast?: boolean;
}

/**
 * Starts the real ApiServerSource receive adapter with the env Knative's controller would give its
 * Deployment, and resolves once its watches are starting. Like the real one it sends nothing for
 * objects that already exist: use deliveredAfter() to know a watch is live.
 */
export async function startApiServerSourceAdapter(options: ApiServerSourceAdapterOptions): Promise<RunningAdapter & { config: ApiServerSourceConfig }> {
  const config = apiServerSourceConfig(options);
  const namespace = options.namespace ?? options.namespaces?.[0] ?? 'default';
  const env: Record<string, string> = {
    KUBECONFIG: options.kubeconfigPath,
    K_SINK: options.sinkUrl,
    K_SOURCE_CONFIG: JSON.stringify(config),
    SYSTEM_NAMESPACE: options.systemNamespace ?? 'knative-eventing',
    NAMESPACE: namespace,
    NAME: options.name ?? 'stash-test',
    METRICS_DOMAIN: 'knative.dev/eventing',
    K_LOGGING_CONFIG: loggingConfig('apiserversource'),
    K_OBSERVABILITY_CONFIG: observabilityConfig,
    K_SINK_TIMEOUT: '-1',
    PROFILING_PORT: String(await freePort()),
  };
  const running = await startProcess(
    'apiserver-receive-adapter',
    ['--kubeconfig', options.kubeconfigPath],
    env,
    /Starting in (resilient|fail-fast) mode/,
    60_000,
  );
  return { ...running, config };
}

export interface PingAdapterOptions {
  kubeconfigPath: string;
  /**
   * Knative's namespace for this adapter (SYSTEM_NAMESPACE and NAMESPACE): it must exist. The
   * adapter reads the ConfigMaps config-logging and config-observability there (created here when
   * missing) and holds its leader-election Lease there. Use a fresh namespace per adapter, so a
   * Lease left by a killed adapter never delays the next one by its 15 s duration.
   */
  systemNamespace: string;
}

/**
 * Starts the real multi-tenant PingSource adapter. It watches PingSources in every namespace and,
 * for each one whose status is Ready, sends `dev.knative.sources.ping` to status.sinkUri on the
 * schedule (robfig cron with optional seconds). Resolves once it leads (its Lease is held).
 */
export async function startPingAdapter(options: PingAdapterOptions): Promise<RunningAdapter> {
  const kc = new KubeConfig();
  kc.loadFromFile(options.kubeconfigPath);
  const core = kc.makeApiClient(CoreV1Api);
  for (const name of ['config-logging', 'config-observability']) {
    const data: Record<string, string> = name === 'config-observability'
      ? { 'metrics-protocol': 'none', 'tracing-protocol': 'none' }
      : { 'loglevel.pingsource-mt-adapter': 'info' };
    try {
      await core.createNamespacedConfigMap({ namespace: options.systemNamespace, body: { metadata: { name }, data } });
    } catch (error) {
      if (!(error instanceof ApiException && error.code === 409)) {
        throw new KnativeAdapterError(`creating ConfigMap ${options.systemNamespace}/${name} for mtping failed: ${String(error)}; does the namespace exist?`, { cause: error });
      }
    }
  }
  // The env of config/core/deployments/pingsource-mt-adapter.yaml in knative.dev/eventing.
  const env: Record<string, string> = {
    KUBECONFIG: options.kubeconfigPath,
    SYSTEM_NAMESPACE: options.systemNamespace,
    NAMESPACE: options.systemNamespace,
    K_OBSERVABILITY_CONFIG: '{}',
    K_LOGGING_CONFIG: '',
    K_LEADER_ELECTION_CONFIG: '',
    // Knative delays shutdown past second N of the minute (default 55) so a tick is never lost
    // between pods; 59 means "never delay", so stop() is prompt.
    K_NO_SHUTDOWN_AFTER: '59',
    K_SINK_TIMEOUT: '-1',
    POD_NAME: `mtping-test-${process.pid}`,
    PROFILING_PORT: String(await freePort()),
  };
  return startProcess('mtping', ['--kubeconfig', options.kubeconfigPath], env, /has started leading/, 60_000);
}

/**
 * Does what Knative's PingSource controller would: records the resolved sink and marks the
 * source Ready (conditions of PingSourceCondSet: SinkProvided, Deployed, OIDCIdentityCreated).
 */
export async function markPingSourceReady(kc: KubeConfig, namespace: string, name: string, sinkUri: string): Promise<void> {
  const now = new Date().toISOString();
  const condition = (type: string): Record<string, string> => ({ type, status: 'True', lastTransitionTime: now });
  const objects = kc.makeApiClient(CustomObjectsApi);
  const current = await objects.getNamespacedCustomObject({ group: 'sources.knative.dev', version: 'v1', namespace, plural: 'pingsources', name }) as {
    metadata: { generation?: number };
  };
  await objects.replaceNamespacedCustomObjectStatus({
    group: 'sources.knative.dev', version: 'v1', namespace, plural: 'pingsources', name,
    body: {
      ...current,
      status: {
        observedGeneration: current.metadata.generation ?? 1,
        sinkUri,
        conditions: ['Ready', 'SinkProvided', 'Deployed', 'OIDCIdentityCreated'].map(condition),
      },
    },
  });
}

// ---------------------------------------------------------------------------------------------
// A sink that records exactly what arrives

export interface ReceivedRequest {
  method: string;
  path: string;
  /** Lower-cased names, as node:http gives them. */
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The body parsed as JSON, or undefined when it is empty or not JSON. */
  json: unknown;
  receivedAt: number;
}

export interface EventSink {
  url: string;
  received: ReceivedRequest[];
  /** Resolves with the first request (already received or future) that matches; rejects after timeoutMs. */
  waitFor(what: string, match: (request: ReceivedRequest) => boolean, timeoutMs?: number): Promise<ReceivedRequest>;
  close(): Promise<void>;
}

/** A plain node:http server on 127.0.0.1 that answers every request 202 with an empty body. */
export async function startEventSink(): Promise<EventSink> {
  const received: ReceivedRequest[] = [];
  const waiters = new Set<(request: ReceivedRequest) => void>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      let json: unknown;
      try {
        json = body.length > 0 ? JSON.parse(body.toString('utf8')) : undefined;
      } catch {
        json = undefined;
      }
      const request: ReceivedRequest = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body, json, receivedAt: Date.now() };
      received.push(request);
      for (const waiter of waiters) waiter(request);
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    received,
    waitFor(what, match, timeoutMs = 20_000) {
      const already = received.find(match);
      if (already) return Promise.resolve(already);
      return new Promise((resolve, reject) => {
        const waiter = (request: ReceivedRequest): void => {
          if (!match(request)) return;
          clearTimeout(timer);
          waiters.delete(waiter);
          resolve(request);
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          const seen = received.map((r) => `${String(r.headers['ce-type'])} ${String(r.headers['ce-subject'] ?? r.headers['ce-source'])}`);
          reject(new KnativeAdapterError(`no request matching "${what}" arrived within ${timeoutMs} ms; received ${received.length}: ${seen.slice(-10).join(', ')}`));
        }, timeoutMs);
        waiters.add(waiter);
      });
    },
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

/**
 * Repeats `act` (attempt 0, 1, ...) every intervalMs until a request matching `match` arrives: the
 * way to know an adapter's watch is live, since it sends nothing for objects that existed before
 * its initial list. Returns the request that got through.
 */
export async function deliveredAfter(
  sink: EventSink,
  what: string,
  act: (attempt: number) => Promise<void>,
  match: (request: ReceivedRequest) => boolean,
  { intervalMs = 500, timeoutMs = 30_000 } = {},
): Promise<ReceivedRequest> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; Date.now() < deadline; attempt += 1) {
    await act(attempt);
    try {
      return await sink.waitFor(what, match, intervalMs);
    } catch {
      // not yet: act again
    }
  }
  throw new KnativeAdapterError(`"${what}" never arrived within ${timeoutMs} ms; is the adapter running and its watch allowed (RBAC)?`);
}
