// The functions' HTTP transport to the Kubernetes API: @kubernetes/client-node's KubeConfig says
// where the apiserver is and how to authenticate (certificates, ServiceAccount token files, exec
// plugins, auth providers); the requests themselves go through one keep-alive node:https agent
// per KubeConfig, as JSON in and out.
//
// Why not client-node's generated API classes: each request through them costs ~2.7 ms of CPU
// and the process grew past 500 MB while sending 2,000 creates at 64 in flight, against
// ~0.25 ms and ~180 MB this way (docs/benchmarks.md, "The Kubernetes client"). A function that
// starts 1,000 runs in a sweep spent most of its time there. The same is what
// kubernetes-fluent-client does: client-node's KubeConfig, its own requests.
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { KubeConfigError, statusError } from './errors.ts';

/** Query parameters; undefined values are left out. */
export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query;
  /** Sent as JSON (also for apply patches: JSON is YAML). */
  body?: unknown;
  /** Content-Type of the body (default application/json). */
  contentType?: string;
  /** Accept header (default application/json), e.g. for PartialObjectMetadata. */
  accept?: string;
}

interface Transport {
  base: URL;
  agent: http.Agent;
  /** The Authorization (and impersonation) headers, refreshed every HEADER_TTL_MS. */
  headers(): Promise<Record<string, string>>;
}

/**
 * How long the authentication headers are reused. client-node's authenticators cache their own
 * tokens (a ServiceAccount token file is re-read after a minute, exec plugins until expiry), so
 * asking them every few seconds follows token rotation without asking on every request.
 */
const HEADER_TTL_MS = 5_000;
/** Requests in flight per apiserver (the functions' batches stay below it). */
const MAX_SOCKETS = 64;
/** A request that gets no answer in this time fails (and the event or sweep is retried). */
const REQUEST_TIMEOUT_MS = 60_000;

const transports = new WeakMap<KubeConfig, Promise<Transport>>();

async function createTransport(kc: KubeConfig): Promise<Transport> {
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) throw new KubeConfigError('no Kubernetes cluster configured: set KUBECONFIG or run in a Pod with a ServiceAccount token');
  if (cluster.proxyUrl) {
    throw new KubeConfigError(`the kubeconfig's cluster ${cluster.name} sets proxy-url, which Stash's functions do not support: reach the apiserver directly (in a Pod, the in-cluster configuration does)`);
  }
  const base = new URL(cluster.server);
  const tls: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(tls);
  const agent = base.protocol === 'http:'
    ? new http.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS })
    : new https.Agent({
      keepAlive: true, maxSockets: MAX_SOCKETS,
      ...(tls.ca ? { ca: tls.ca } : {}), ...(tls.cert ? { cert: tls.cert } : {}), ...(tls.key ? { key: tls.key } : {}),
      ...(tls.rejectUnauthorized === false ? { rejectUnauthorized: false } : {}), ...(tls.servername ? { servername: tls.servername } : {}),
    });
  let cached: { at: number; headers: Promise<Record<string, string>> } | undefined;
  const headers = (): Promise<Record<string, string>> => {
    if (cached === undefined || Date.now() - cached.at > HEADER_TTL_MS) {
      const opts: https.RequestOptions = {};
      const fresh = kc.applyToHTTPSOptions(opts).then(() => {
        const out: Record<string, string> = {};
        for (const [k, v] of Object.entries((opts.headers ?? {}) as Record<string, unknown>)) if (typeof v === 'string') out[k] = v;
        return out;
      });
      cached = { at: Date.now(), headers: fresh };
      fresh.catch(() => { cached = undefined; });
    }
    return cached.headers;
  };
  return { base, agent, headers };
}

function transportFor(kc: KubeConfig): Promise<Transport> {
  let transport = transports.get(kc);
  if (transport === undefined) {
    transport = createTransport(kc);
    transports.set(kc, transport);
    transport.catch(() => transports.delete(kc));
  }
  return transport;
}

function withQuery(path: string, query: Query | undefined): string {
  if (query === undefined) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, String(value));
  const text = params.toString();
  return text === '' ? path : `${path}?${text}`;
}

/** An apiserver answer as it came: the status and the body text. */
export interface RawAnswer {
  status: number;
  text: string;
}

/**
 * One request to the apiserver, answered with its status and body whatever the status (for a
 * caller that reads 4xx answers itself, such as a dry run); a network failure rejects with an
 * Error naming `action`.
 */
export async function kubeRequestRaw(kc: KubeConfig, action: string, method: string, path: string, options: RequestOptions = {}): Promise<RawAnswer> {
  const transport = await transportFor(kc);
  const headers: Record<string, string | number> = { ...(await transport.headers()), accept: options.accept ?? 'application/json' };
  const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
  if (payload !== undefined) {
    headers['content-type'] = options.contentType ?? 'application/json';
    headers['content-length'] = payload.length;
  }
  const url = new URL(withQuery(path, options.query), transport.base);
  const send = url.protocol === 'http:' ? http.request : https.request;
  return new Promise<RawAnswer>((resolve, reject) => {
    const request = send(url, { method, headers, agent: transport.agent, timeout: REQUEST_TIMEOUT_MS }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error(`no answer from the apiserver in ${REQUEST_TIMEOUT_MS / 1000} s`)));
    request.on('error', (error) => reject(new Error(`${action} failed: ${error.message}; check that the apiserver at ${transport.base.origin} is reachable`, { cause: error })));
    request.end(payload);
  });
}

/**
 * One request to the apiserver; resolves with the parsed JSON answer. A status of 400 or more
 * rejects with the typed error for it (NotFoundError, ConflictError, ...: see errors.ts) whose
 * message starts with `action`; a network failure rejects with an Error naming `action` too.
 */
export async function kubeRequest<T = unknown>(kc: KubeConfig, action: string, method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const { status, text } = await kubeRequestRaw(kc, action, method, path, options);
  if (status >= 400) throw statusError(status, text, action);
  return (text === '' ? undefined : JSON.parse(text)) as T;
}

/** The API path of a resource: /api/v1/... for the core group, /apis/<group>/<version>/... otherwise. */
export function resourcePath(apiVersion: string, plural: string, options: { namespace?: string | undefined; name?: string | undefined; subresource?: string } = {}): string {
  const root = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  const ns = options.namespace === undefined ? '' : `/namespaces/${encodeURIComponent(options.namespace)}`;
  const name = options.name === undefined ? '' : `/${encodeURIComponent(options.name)}`;
  const sub = options.subresource === undefined ? '' : `/${options.subresource}`;
  return `${root}${ns}/${plural}${name}${sub}`;
}
