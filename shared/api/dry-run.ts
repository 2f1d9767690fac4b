// Ask a real apiserver whether it accepts an object, without storing it: a create with
// dryRun=All and fieldValidation=Strict. Used by the integration tests; fit for a
// `validate --server` command.
import type { KubeConfig } from '@kubernetes/client-node';
import { KINDS } from './kinds.ts';
import { kubeRequestRaw } from '../kube/http.ts';

export interface ServerCause {
  field?: string;
  message?: string;
  reason?: string;
}
export interface ServerVerdict {
  /** HTTP status: 201 accepted, 422 invalid, 400 malformed/unknown field... */
  status: number;
  message: string;
  causes: ServerCause[];
}

/** Plurals of the built-in kinds a test may send beside Stash's own. */
const BUILTIN: Readonly<Record<string, { plural: string; namespaced: boolean }>> = {
  'apps/v1/Deployment': { plural: 'deployments', namespaced: true },
  'apps/v1/StatefulSet': { plural: 'statefulsets', namespaced: true },
  'v1/Secret': { plural: 'secrets', namespaced: true },
  'v1/ConfigMap': { plural: 'configmaps', namespaced: true },
};

export function collectionPath(obj: { apiVersion?: unknown; kind?: unknown }, namespace: string): string {
  const apiVersion = String(obj.apiVersion);
  const kind = String(obj.kind);
  const stash = KINDS.find((k) => `${k.group}/${k.version}` === apiVersion && k.kind === kind);
  const builtin = BUILTIN[`${apiVersion}/${kind}`];
  const plural = stash?.plural ?? builtin?.plural;
  if (plural === undefined) throw new Error(`dry-run: no plural known for ${apiVersion} ${kind}: add it to BUILTIN in shared/api/dry-run.ts`);
  const namespaced = stash !== undefined ? stash.scope === 'Namespaced' : (builtin?.namespaced ?? true);
  const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  return namespaced ? `${base}/namespaces/${namespace}/${plural}` : `${base}/${plural}`;
}

/** Create `obj` with dryRun=All in `namespace` (ignored for cluster-scoped kinds); never throws on 4xx. */
export async function dryRunCreate(kc: KubeConfig, obj: Record<string, unknown>, namespace: string): Promise<ServerVerdict> {
  if (kc.getCurrentCluster() === null) throw new Error('dry-run: the kubeconfig has no current cluster: set current-context');
  const body = { ...obj, metadata: { ...(obj.metadata as Record<string, unknown> | undefined), namespace: undefined } };
  const { status, text } = await kubeRequestRaw(kc, `dry-run create ${String(obj.kind)}`, 'POST', collectionPath(obj, namespace),
    { query: { dryRun: 'All', fieldValidation: 'Strict' }, body });
  let parsed: { kind?: string; message?: string; details?: { causes?: ServerCause[] } } = {};
  try { parsed = JSON.parse(text) as typeof parsed; } catch { /* non-JSON body: keep it as the message */ }
  return { status, message: parsed.kind === 'Status' ? (parsed.message ?? text) : '', causes: parsed.details?.causes ?? [] };
}
