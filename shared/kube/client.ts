// Loads the Kubernetes client configuration the way every Stash function needs it.
import { existsSync } from 'node:fs';
import { KubeConfig, KubernetesObjectApi } from '@kubernetes/client-node';
import type { ApiConstructor, ApiType } from '@kubernetes/client-node';
import { KubeConfigError } from './errors.ts';

const serviceAccountToken = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * $KUBECONFIG when set (tests, running a function outside the cluster), else the in-cluster
 * ServiceAccount, else ~/.kube/config. Throws KubeConfigError when none gives a cluster.
 */
export function loadKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  const kubeconfig = process.env.KUBECONFIG;
  try {
    if (kubeconfig) {
      // loadFromDefault reads $KUBECONFIG (and merges a colon-separated list).
      kc.loadFromDefault();
    } else if (process.env.KUBERNETES_SERVICE_HOST && existsSync(serviceAccountToken)) {
      kc.loadFromCluster();
    } else {
      kc.loadFromDefault();
    }
  } catch (error) {
    throw new KubeConfigError(
      `could not load the Kubernetes configuration from ${kubeconfig ? `KUBECONFIG=${kubeconfig}` : 'the in-cluster ServiceAccount or ~/.kube/config'}: ` +
        `${(error as Error).message}; set KUBECONFIG to a readable kubeconfig or run in a Pod with a ServiceAccount token`, { cause: error });
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) {
    throw new KubeConfigError(
      `no Kubernetes cluster configured (${kubeconfig ? `KUBECONFIG=${kubeconfig} has no current-context cluster` : 'not in a Pod and no ~/.kube/config'}); ` +
        'set KUBECONFIG or run in a Pod with a ServiceAccount token');
  }
  return kc;
}

const objectApis = new WeakMap<KubeConfig, KubernetesObjectApi>();
const typedApis = new WeakMap<KubeConfig, Map<unknown, unknown>>();

/**
 * One generic object client per KubeConfig. KubernetesObjectApi learns each group version's
 * resources (kind -> plural) with a discovery request and remembers them in the instance, so a
 * client made per call pays a discovery round trip before every read or write; a kind it has not
 * seen (a CRD installed later) is looked up again.
 */
export function objectApi(kc: KubeConfig): KubernetesObjectApi {
  let api = objectApis.get(kc);
  if (api === undefined) {
    api = KubernetesObjectApi.makeApiClient(kc);
    objectApis.set(kc, api);
  }
  return api;
}

/** `kc.makeApiClient(Api)`, made once per KubeConfig and API class. */
export function apiClient<T extends ApiType>(kc: KubeConfig, Api: ApiConstructor<T>): T {
  let byClass = typedApis.get(kc);
  if (byClass === undefined) {
    byClass = new Map();
    typedApis.set(kc, byClass);
  }
  let api = byClass.get(Api) as T | undefined;
  if (api === undefined) {
    api = kc.makeApiClient(Api);
    byClass.set(Api, api);
  }
  return api;
}
