/**
 * The real Kubernetes control plane for integration tests (scripts/control-plane.sh): etcd,
 * kube-apiserver and kube-controller-manager on loopback, shared by every test process, with
 * Stash's CRDs (shared/api/crds/) and Knative Eventing's CRDs installed. The one node (a real
 * kubelet: test/support/node.ts) is tainted, so Pods stay Pending except in a namespace made by
 * nodeNamespace(). Isolate tests with freshNamespace().
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { repoRoot } from './tools.ts';

export interface Cluster {
  /** An admin kubeconfig (client certificate in system:masters); also fine for `KUBECONFIG=`. */
  kubeconfigPath: string;
  /** Loaded from kubeconfigPath. */
  kc: KubeConfig;
}

export class ControlPlaneError extends Error {
  override name = 'ControlPlaneError';
}

/** Label put on every namespace freshNamespace() creates. */
export const testNamespaceLabel = 'stash.test/namespace';

let starting: Promise<Cluster> | undefined;

/**
 * Starts the control plane once per process (`scripts/control-plane.sh up`, which is idempotent and
 * shared across processes) and returns an admin client configuration. The first run may build the
 * binaries (minutes); later runs take seconds.
 */
export function useCluster(): Promise<Cluster> {
  starting ??= start().catch((error: unknown) => {
    starting = undefined;
    throw error;
  });
  return starting;
}

function start(): Promise<Cluster> {
  const script = path.join(repoRoot, 'scripts/control-plane.sh');
  return new Promise((resolve, reject) => {
    execFile(script, ['up'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) {
        reject(
          new ControlPlaneError(
            `scripts/control-plane.sh up failed (${error.message.split('\n')[0]}); its output ends:\n` +
              `${stderr.split('\n').slice(-25).join('\n')}\n` +
              'Fix the cause above, or run `scripts/control-plane.sh down` and retry to start afresh.',
          ),
        );
        return;
      }
      const last = stdout.trim().split('\n').pop() ?? '';
      if (!last.startsWith('KUBECONFIG=')) {
        reject(new ControlPlaneError(`scripts/control-plane.sh up printed no KUBECONFIG=<path> line last (got: ${JSON.stringify(last)})`));
        return;
      }
      const kubeconfigPath = last.slice('KUBECONFIG='.length);
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfigPath);
      resolve({ kubeconfigPath, kc });
    });
  });
}

/** A DNS-1123 label: lowercase letters, digits and '-', at most 63 characters. */
function dnsLabel(prefix: string, suffix: string): string {
  const clean = prefix
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '');
  const head = (clean || 'test').slice(0, 63 - suffix.length - 1).replace(/-+$/, '');
  return `${head}-${suffix}`;
}

/**
 * Creates a namespace named `<prefix>-<random>` (labelled stash.test/namespace=true, with the
 * given annotations) and returns its name. The control plane runs the namespace controller, so deleteNamespace() really empties it.
 */
export async function freshNamespace(cluster: Cluster, prefix: string, annotations?: Record<string, string>): Promise<string> {
  const name = dnsLabel(prefix, randomBytes(4).toString('hex'));
  await cluster.kc.makeApiClient(CoreV1Api).createNamespace({
    body: { metadata: { name, labels: { [testNamespaceLabel]: 'true' }, ...(annotations ? { annotations } : {}) } },
  });
  return name;
}

/** Deletes a namespace (background; the namespace controller removes its contents). Absent is fine. */
export async function deleteNamespace(cluster: Cluster, name: string): Promise<void> {
  try {
    await cluster.kc.makeApiClient(CoreV1Api).deleteNamespace({ name });
  } catch (error) {
    if (error instanceof ApiException && error.code === 404) return;
    throw error;
  }
}

/**
 * Deletes namespaces whose Stash objects of `plural` (backups, recoveries) may still hold a
 * function's finalizer when no function is left to release it (the end of a test that stopped
 * them): removes those finalizers first.
 */
export async function deleteNamespacesReleasing(cluster: Cluster, namespaces: readonly string[], plural: string): Promise<void> {
  const custom = cluster.kc.makeApiClient(CustomObjectsApi);
  const where = { group: 'stash.appscode.com', version: 'v1alpha2', plural };
  for (const namespace of namespaces.filter((n) => n !== '')) {
    const list = await custom.listNamespacedCustomObject({ ...where, namespace }).catch(() => ({ items: [] })) as { items: KubernetesObject[] };
    for (const item of list.items) {
      if (!item.metadata?.finalizers?.length) continue;
      await custom.patchNamespacedCustomObject({ ...where, namespace, name: item.metadata.name ?? '', body: [{ op: 'remove', path: '/metadata/finalizers' }] })
        .catch(() => undefined);
    }
    await deleteNamespace(cluster, namespace);
  }
}

function describe(object: KubernetesObject): string {
  const ns = object.metadata?.namespace ? `${object.metadata.namespace}/` : '';
  return `${object.apiVersion ?? '?'} ${object.kind ?? '?'} ${ns}${object.metadata?.name ?? '?'}`;
}

/**
 * Creates or updates every object in a (multi-document) YAML text by server-side apply (field
 * manager `stash-test`, forced), in document order, and returns the objects as stored. `namespace`
 * fills metadata.namespace where a document leaves it out (ignored for cluster-scoped kinds).
 * Kinds whose CRD was applied just before are waited for (up to 10 s) until discovery serves them.
 */
export async function applyYaml(cluster: Cluster, yamlText: string, namespace?: string): Promise<KubernetesObject[]> {
  const documents = parseAllDocuments(yamlText);
  const objects: KubernetesObject[] = [];
  for (const document of documents) {
    if (document.errors.length > 0) {
      throw new Error(`applyYaml: the YAML does not parse: ${document.errors.map((e) => e.message).join('; ')}`);
    }
    const value: unknown = document.toJS();
    if (value === null || value === undefined) continue;
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw new Error('applyYaml: every YAML document must be a Kubernetes object (a mapping with apiVersion, kind, metadata.name)');
    }
    const object = value as KubernetesObject;
    if (!object.apiVersion || !object.kind || !object.metadata?.name) {
      throw new Error(`applyYaml: a document lacks apiVersion, kind or metadata.name (${describe(object)}); add them`);
    }
    if (namespace && !object.metadata.namespace) object.metadata.namespace = namespace;
    objects.push(object);
  }

  const results: KubernetesObject[] = [];
  for (const object of objects) {
    const deadline = Date.now() + 10_000;
    for (;;) {
      // A new client per attempt: KubernetesObjectApi caches discovery per apiVersion.
      const client = KubernetesObjectApi.makeApiClient(cluster.kc);
      try {
        results.push(await client.patch(object, undefined, undefined, 'stash-test', true, PatchStrategy.ServerSideApply));
        break;
      } catch (error) {
        const unknownKind = error instanceof Error && /Unrecognized API version and kind|Failed to fetch resource metadata/.test(error.message);
        if (unknownKind && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 250));
          continue;
        }
        const detail = error instanceof ApiException ? `HTTP ${error.code}: ${String(error.body)}` : String(error);
        throw new Error(`applyYaml: applying ${describe(object)} failed: ${detail}`, { cause: error });
      }
    }
  }
  return results;
}

/** A namespaced custom object (Stash's kinds by default), or undefined when it does not exist. */
export async function getCustomObject<T>(cluster: Cluster, plural: string, namespace: string, name: string, group = 'stash.appscode.com', version = 'v1alpha2'): Promise<T | undefined> {
  try {
    return await cluster.kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({ group, version, plural, namespace, name }) as T;
  } catch (error) {
    if (error instanceof ApiException && error.code === 404) return undefined;
    throw error;
  }
}
