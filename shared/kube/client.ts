// Loads the Kubernetes client configuration the way every Stash function needs it.
import { existsSync } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
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
