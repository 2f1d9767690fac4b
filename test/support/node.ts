/**
 * The test node (scripts/node.sh, started by scripts/test.sh after the control plane): a real
 * kubelet with containerd and runc, the locally built images (scripts/images.ts), and
 * kube-scheduler. The node is tainted, so only the pods of a namespace made by nodeNamespace()
 * run there; every other test's pods stay Pending as before.
 *
 * Pods reach the host's loopback servers (the functions, databases, storage servers) at the
 * pod network's gateway with the same port: the node DNATs the gateway address to 127.0.0.1.
 * The node runs kube-proxy and CoreDNS (cluster.local, on the gateway), so a test may also give
 * pods a name: hostService() makes one for a host server.
 */
import { ApiException, CoreV1Api, DiscoveryV1Api, type V1ContainerStatus, type V1Pod } from '@kubernetes/client-node';
import type { Cluster } from './cluster.ts';
import { freshNamespace } from './cluster.ts';
import { waitFor } from './wait.ts';

/** The Node scripts/node.sh registers. */
export const NODE_NAME = 'stash-node';
/** The taint of the test node, and the namespace annotation that lets a namespace's pods tolerate it. */
export const NODE_TAINT_KEY = 'stash.appscode.com/test-node';
/** A namespace's annotations that give its pods the node's toleration (PodTolerationRestriction). */
export const TOLERATE_NODE_ANNOTATIONS: Readonly<Record<string, string>> = {
  'scheduler.alpha.kubernetes.io/defaultTolerations': JSON.stringify([{ key: NODE_TAINT_KEY, operator: 'Exists', effect: 'NoSchedule' }]),
};

/** The pod network's gateway on the host (the node's bridge): where pods reach host loopback ports. */
export const podGateway = process.env.STASH_POD_GATEWAY ?? '10.88.0.1';

/**
 * A fresh namespace whose pods run on the test node. The annotation is there from the namespace's
 * creation: added later, it can race the admission plugin's cache of the namespace.
 */
export function nodeNamespace(cluster: Cluster, prefix: string): Promise<string> {
  return freshNamespace(cluster, prefix, { ...TOLERATE_NODE_ANNOTATIONS });
}

/** A URL on the host as a pod reaches it: the same port at the gateway. */
export function podUrl(hostUrl: string): string {
  const url = new URL(hostUrl);
  url.hostname = podGateway;
  return url.toString().replace(/\/$/, '');
}

const core = (cluster: Cluster): CoreV1Api => cluster.kc.makeApiClient(CoreV1Api);

/** The cluster's DNS domain (the kubelet's clusterDomain, CoreDNS's zone: scripts/node.sh). */
export const CLUSTER_DOMAIN = 'cluster.local';

/**
 * A Service `name` in `namespace` for a server on the host's loopback at `port`, as a pod reaches
 * it by name: selector-less, with an EndpointSlice whose one endpoint is the gateway and `port`
 * (the Service's port and targetPort are `port` too). Returns its DNS name,
 * `<name>.<namespace>.svc.cluster.local` (`<name>.<namespace>.svc` resolves as well, through the
 * pod's DNS search list).
 *
 * The Service is headless: its name resolves (CoreDNS) to the gateway itself, where the node's
 * DNAT sends the connection on to 127.0.0.1. A ClusterIP could not lead there: kube-proxy would
 * DNAT the ClusterIP to the gateway, and a connection is DNATed only once, so it would reach the
 * gateway address itself, where the host's servers do not listen (and an endpoint may not be a
 * loopback address).
 */
export async function hostService(cluster: Cluster, namespace: string, name: string, port: number): Promise<string> {
  await core(cluster).createNamespacedService({
    namespace,
    body: {
      metadata: { name },
      spec: { clusterIP: 'None', ports: [{ name: 'tcp', protocol: 'TCP', port, targetPort: port }] },
    },
  });
  await cluster.kc.makeApiClient(DiscoveryV1Api).createNamespacedEndpointSlice({
    namespace,
    body: {
      metadata: {
        name,
        labels: { 'kubernetes.io/service-name': name, 'endpointslice.kubernetes.io/managed-by': 'stash-tests' },
      },
      addressType: 'IPv4',
      endpoints: [{ addresses: [podGateway], conditions: { ready: true } }],
      ports: [{ name: 'tcp', protocol: 'TCP', port }],
    },
  });
  return `${name}.${namespace}.svc.${CLUSTER_DOMAIN}`;
}

/** Waits for the namespace's default ServiceAccount (the controller-manager makes it): pods are refused before. */
export async function defaultServiceAccount(cluster: Cluster, namespace: string): Promise<void> {
  await waitFor(`ServiceAccount ${namespace}/default`, async () => {
    const accounts = await core(cluster).listNamespacedServiceAccount({ namespace });
    return accounts.items.some((a) => a.metadata?.name === 'default') ? true : undefined;
  });
}

/** Creates a pod once its namespace's default ServiceAccount exists (admission refuses it before). */
export function createPodWhenReady(cluster: Cluster, namespace: string, pod: V1Pod): Promise<V1Pod> {
  return waitFor(`pod ${namespace}/${pod.metadata?.name ?? '?'} to be created`, async () => {
    try {
      return await core(cluster).createNamespacedPod({ namespace, body: pod });
    } catch (error) {
      if (error instanceof ApiException && error.code === 403 && String(error.body).includes('serviceaccount')) return undefined;
      throw error;
    }
  }, 20_000);
}

/** A container's log, as the kubelet serves it through the apiserver ('' when there is none yet). */
export async function podLog(cluster: Cluster, namespace: string, name: string, container: string, previous = false): Promise<string> {
  try {
    return await core(cluster).readNamespacedPodLog({ namespace, name, container, previous });
  } catch {
    return '';
  }
}

/** Everything the pod's containers logged, for an assertion message. */
export async function podLogs(cluster: Cluster, pod: V1Pod): Promise<string> {
  const namespace = pod.metadata?.namespace ?? '';
  const name = pod.metadata?.name ?? '';
  const names = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].map((c) => c.name);
  const parts = await Promise.all(names.map(async (c) => `--- ${name}/${c}\n${await podLog(cluster, namespace, name, c)}`));
  return parts.join('\n');
}

/** Waits until the pod is in one of `phases`; returns it. */
export function podInPhase(cluster: Cluster, namespace: string, name: string, phases: readonly string[], timeoutMs = 120_000): Promise<V1Pod> {
  return waitFor(`pod ${namespace}/${name} to be ${phases.join(' or ')}`, async () => {
    const pod = await core(cluster).readNamespacedPod({ namespace, name });
    return phases.includes(pod.status?.phase ?? '') ? pod : undefined;
  }, timeoutMs, 500);
}

/** Waits until a pod matching the selector is Running with every container ready or running; returns it. */
export function runningPod(cluster: Cluster, namespace: string, labelSelector: string, accept: (pod: V1Pod) => boolean = () => true, timeoutMs = 120_000): Promise<V1Pod> {
  return waitFor(`a running pod ${labelSelector} in ${namespace}`, async () => {
    const pods = await core(cluster).listNamespacedPod({ namespace, labelSelector });
    return pods.items.find((p) => p.status?.phase === 'Running' && p.metadata?.deletionTimestamp === undefined && accept(p));
  }, timeoutMs, 500);
}

/** A container's status in a pod (init containers included). */
export function containerStatus(pod: V1Pod, container: string): V1ContainerStatus | undefined {
  return [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])].find((s) => s.name === container);
}

/** Each container's exit code (init containers first), from the kubelet's status; undefined while it has not ended. */
export function exitCodes(pod: V1Pod): Record<string, number | undefined> {
  const statuses = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])];
  return Object.fromEntries(statuses.map((s) => [s.name, s.state?.terminated?.exitCode]));
}

/** What the node did with a pod, for an assertion message: its status, its containers' logs and its Events. */
export async function podReport(cluster: Cluster, pod: V1Pod): Promise<string> {
  const namespace = pod.metadata?.namespace ?? '';
  const name = pod.metadata?.name ?? '';
  const now = await core(cluster).readNamespacedPod({ namespace, name }).catch(() => pod);
  const events = await core(cluster).listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${name}` });
  return `pod ${namespace}/${name} status: ${JSON.stringify(now.status)}\n${await podLogs(cluster, now)}\n` +
    `events:\n${events.items.map((e) => `${e.reason ?? ''}: ${e.message ?? ''}`).join('\n')}`;
}

/** Waits until the pod has ended (Succeeded or Failed); a timeout names its status, logs and Events. */
export async function podEnded(cluster: Cluster, namespace: string, name: string, timeoutMs = 240_000): Promise<V1Pod> {
  try {
    return await podInPhase(cluster, namespace, name, ['Succeeded', 'Failed'], timeoutMs);
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${await podReport(cluster, { metadata: { namespace, name } })}`, { cause: error });
  }
}
