/**
 * The functions' RBAC as knative/10-rbac.yaml deploys it, applied for real for a namespace that
 * stands in for stash-system: its ServiceAccounts there, its ClusterRoles and ClusterRoleBindings
 * under names with a suffix (cluster-scoped objects are shared by every test process), bound to
 * those ServiceAccounts.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { CoreV1Api, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import type { V1ClusterRole, V1ClusterRoleBinding, V1ServiceAccount } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import type { Cluster } from './cluster.ts';
import { repoRoot } from './tools.ts';

export interface AppliedRbac {
  /** The suffix of the ClusterRoles' and ClusterRoleBindings' names. */
  readonly suffix: string;
  /** Deletes the ClusterRoles and ClusterRoleBindings (the ServiceAccounts go with their namespace). */
  remove(): Promise<void>;
}

function rbacObjects(): { kind?: string; metadata?: { name?: string } }[] {
  const text = readFileSync(path.join(repoRoot, 'knative/10-rbac.yaml'), 'utf8');
  return parseAllDocuments(text).map((d) => d.toJS() as { kind?: string; metadata?: { name?: string } } | null).filter((o) => o !== null);
}

export async function applyFunctionRbac(cluster: Cluster, namespace: string, suffix: string): Promise<AppliedRbac> {
  const rbac = cluster.kc.makeApiClient(RbacAuthorizationV1Api);
  const core = cluster.kc.makeApiClient(CoreV1Api);
  const objects = rbacObjects();
  const created: (() => Promise<unknown>)[] = [];
  const remove = async (): Promise<void> => {
    for (const undo of created.reverse()) await undo().catch(() => undefined);
  };
  try {
    for (const account of objects.filter((o) => o.kind === 'ServiceAccount') as V1ServiceAccount[]) {
      await core.createNamespacedServiceAccount({ namespace, body: { ...account, metadata: { name: account.metadata?.name ?? '', namespace } } });
    }
    for (const role of objects.filter((o) => o.kind === 'ClusterRole') as V1ClusterRole[]) {
      const name = `${role.metadata?.name ?? ''}-${suffix}`;
      await rbac.createClusterRole({ body: { ...role, metadata: { name, labels: { 'stash.test/rbac': suffix } } } });
      created.push(() => rbac.deleteClusterRole({ name }));
    }
    for (const binding of objects.filter((o) => o.kind === 'ClusterRoleBinding') as V1ClusterRoleBinding[]) {
      const name = `${binding.metadata?.name ?? ''}-${suffix}`;
      await rbac.createClusterRoleBinding({
        body: {
          ...binding,
          metadata: { name, labels: { 'stash.test/rbac': suffix } },
          roleRef: { ...binding.roleRef, name: `${binding.roleRef.name}-${suffix}` },
          subjects: binding.subjects?.map((s) => ({ ...s, namespace })),
        },
      });
      created.push(() => rbac.deleteClusterRoleBinding({ name }));
    }
  } catch (error) {
    await remove();
    throw error;
  }
  return { suffix, remove };
}

/**
 * A ServiceAccount `account` in `namespace` allowed to start runs (create BackupTriggers: what
 * handle-trigger's HTTP endpoint checks), and a token of it for 10 minutes.
 */
export async function triggerCaller(cluster: Cluster, namespace: string, account = 'ci'): Promise<string> {
  const rbac = cluster.kc.makeApiClient(RbacAuthorizationV1Api);
  const core = cluster.kc.makeApiClient(CoreV1Api);
  await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: account } } });
  await rbac.createNamespacedRole({
    namespace,
    body: { metadata: { name: `${account}-trigger-backups` }, rules: [{ apiGroups: ['stash.appscode.com'], resources: ['backuptriggers'], verbs: ['create'] }] },
  });
  await rbac.createNamespacedRoleBinding({
    namespace,
    body: {
      metadata: { name: `${account}-trigger-backups` },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: `${account}-trigger-backups` },
      subjects: [{ kind: 'ServiceAccount', name: account, namespace }],
    },
  });
  const answer = await core.createNamespacedServiceAccountToken({ namespace, name: account, body: { spec: { expirationSeconds: 600 } } });
  return answer.status?.token ?? '';
}
