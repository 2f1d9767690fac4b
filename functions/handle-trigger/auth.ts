// Who is calling handle-trigger, and may they? Agents: a projected ServiceAccount token with
// audience `stash`, bound to their Pod, whose owner chain must lead to the Backup's workload (or
// to the run's Job). People and CI: any token the apiserver accepts, authorized by a
// SubjectAccessReview for `create backuptriggers` in the namespace.
import type {
  KubeConfig, V1Affinity, V1OwnerReference, V1SubjectAccessReviewStatus, V1TokenReviewStatus, V1UserInfo,
} from '@kubernetes/client-node';
import { GROUP } from '../../shared/api/index.ts';
import { ForbiddenError, getObject, kubeRequest, resourcePath } from '../../shared/kube/index.ts';
import { AGENT_AUDIENCE } from '../../shared/agent-protocol.ts';

/** An answer other than 200: status and a message that says what failed and the fix. */
export class HttpError extends Error {
  override name = 'HttpError';
  readonly status: number;
  readonly field: string | undefined;
  constructor(status: number, message: string, field?: string) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

/**
 * A Pod as the API sends it (JSON, read through shared/kube): the fields handle-trigger reads.
 * Timestamps would be RFC 3339 strings; the only one looked at is whether deletionTimestamp is set.
 */
export interface PodObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; uid?: string; ownerReferences?: V1OwnerReference[]; deletionTimestamp?: unknown };
  spec?: { nodeName?: string; affinity?: V1Affinity };
}

export const POD_NAME_EXTRA = 'authentication.kubernetes.io/pod-name';
export const POD_UID_EXTRA = 'authentication.kubernetes.io/pod-uid';

/** The bearer token of an Authorization header; 401 without one. */
export function bearerToken(header: string | undefined): string {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!match?.[1]) {
    throw new HttpError(401, 'no bearer token: send "Authorization: Bearer <token>" (agents: the projected ServiceAccount token with audience stash; people: a token of a user or ServiceAccount allowed to create backuptriggers)');
  }
  return match[1];
}

/** TokenReview of `token`; 401 when the apiserver does not accept it (for these audiences). */
export async function reviewToken(kc: KubeConfig, token: string, audiences?: string[]): Promise<V1UserInfo> {
  // A review has no name (createObject needs one): POST it to the cluster-scoped collection.
  const review = await kubeRequest<{ status?: V1TokenReviewStatus }>(kc, 'create TokenReview', 'POST', resourcePath('authentication.k8s.io/v1', 'tokenreviews'), {
    body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, ...(audiences ? { audiences } : {}) } },
  });
  const status = review.status;
  const wanted = audiences ? ` for audience ${audiences.join(', ')}` : '';
  if (!status?.authenticated || status.user?.username === undefined) {
    // status.error never holds the token; it says e.g. "token audiences ... is invalid for the target audiences".
    const why = status?.error ? `: ${status.error}` : '';
    const fix = audiences?.includes(AGENT_AUDIENCE)
      ? 'mount a projected serviceAccountToken volume with audience "stash" into the agent and send that token'
      : 'send a valid token of a user or ServiceAccount';
    throw new HttpError(401, `the token was not accepted${wanted}${why}; ${fix}`);
  }
  if (audiences && !audiences.some((a) => status.audiences?.includes(a))) {
    throw new HttpError(401, `the token is not meant for audience ${audiences.join(', ')}; mount a projected serviceAccountToken volume with audience "stash"`);
  }
  return status.user;
}

export interface AgentIdentity {
  namespace: string;
  serviceAccount: string;
  pod: PodObject;
  podName: string;
}

const SA_USER = /^system:serviceaccount:([^:]+):([^:]+)$/;

/**
 * The Pod an agent's token is bound to, read from the API. 401 unless the token is a ServiceAccount
 * token with audience `stash` bound to a Pod that still exists with the same uid.
 */
export async function authenticateAgent(kc: KubeConfig, authorization: string | undefined): Promise<AgentIdentity> {
  const user = await reviewToken(kc, bearerToken(authorization), [AGENT_AUDIENCE]);
  const sa = SA_USER.exec(user.username ?? '');
  const podName = user.extra?.[POD_NAME_EXTRA]?.[0];
  const podUid = user.extra?.[POD_UID_EXTRA]?.[0];
  if (!sa?.[1] || !sa[2] || !podName || !podUid) {
    throw new HttpError(401, `the token of ${user.username ?? 'an unknown user'} is not a ServiceAccount token bound to a Pod; mount a projected serviceAccountToken volume (audience "stash") into the agent`);
  }
  const namespace = sa[1];
  const pod: PodObject | undefined = await getObject(kc, { apiVersion: 'v1', kind: 'Pod', namespace, name: podName });
  if (pod === undefined) throw new HttpError(401, `the token's Pod ${namespace}/${podName} no longer exists`);
  if (pod.metadata?.uid !== podUid) throw new HttpError(401, `the token's Pod ${namespace}/${podName} was replaced by another Pod of that name; use the current Pod's token`);
  return { namespace, serviceAccount: sa[2], pod, podName };
}

/** One object in a Pod's chain of controllers. */
export interface Owner {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  object: { metadata?: { ownerReferences?: V1OwnerReference[]; uid?: string }; spec?: unknown };
}

/** The Pod's controllers, nearest first: [ReplicaSet, Deployment], [StatefulSet], [Job, BackupTrigger]... */
export async function ownerChain(kc: KubeConfig, pod: PodObject, maxDepth = 4): Promise<Owner[]> {
  const chain: Owner[] = [];
  const namespace = pod.metadata?.namespace ?? '';
  let refs = pod.metadata?.ownerReferences;
  for (let depth = 0; depth < maxDepth; depth++) {
    const ref = refs?.find((r) => r.controller === true) ?? (refs?.length === 1 ? refs[0] : undefined);
    if (ref === undefined) break;
    let object: Awaited<ReturnType<typeof getObject>>;
    try {
      object = await getObject(kc, { apiVersion: ref.apiVersion, kind: ref.kind, namespace, name: ref.name });
    } catch (error) {
      // An owner of a kind this function may not read (an operator's resource, a CronJob) lies
      // beyond every target Stash serves: the chain ends there.
      if (error instanceof ForbiddenError) break;
      throw error;
    }
    // An owner gone or recreated under the same name is not the owner any more.
    if (object === undefined || object.metadata?.uid !== ref.uid) break;
    chain.push({ apiVersion: ref.apiVersion, kind: ref.kind, name: ref.name, uid: ref.uid, object: object });
    refs = object.metadata?.ownerReferences;
  }
  return chain;
}

function groupOf(apiVersion: string): string {
  const slash = apiVersion.indexOf('/');
  return slash < 0 ? '' : apiVersion.slice(0, slash);
}

/** Does the chain contain the object `target` names (same group, kind and name)? */
export function chainReaches(chain: readonly Owner[], target: { apiVersion: string; kind: string; name: string }): boolean {
  return chain.some((o) => o.kind === target.kind && o.name === target.name && groupOf(o.apiVersion) === groupOf(target.apiVersion));
}

/** The run a database Job's pod belongs to: the BackupTrigger at the end of Pod -> Job -> BackupTrigger. */
export function jobRun(chain: readonly Owner[]): { job: string; trigger: string } | undefined {
  const jobIndex = chain.findIndex((o) => o.kind === 'Job' && groupOf(o.apiVersion) === 'batch');
  const trigger = chain[jobIndex + 1];
  if (jobIndex < 0 || trigger === undefined || trigger.kind !== 'BackupTrigger' || groupOf(trigger.apiVersion) !== GROUP) return undefined;
  return { job: chain[jobIndex]?.name ?? '', trigger: trigger.name };
}

/** The host a pod backs up as: host-<ordinal> for a StatefulSet pod, the node for a DaemonSet pod, else host-0. */
export function podHost(kind: string, pod: PodObject): string | undefined {
  if (kind === 'StatefulSet') {
    const m = /-(\d+)$/.exec(pod.metadata?.name ?? '');
    return m ? `host-${m[1]}` : undefined;
  }
  if (kind === 'DaemonSet') return podNode(pod);
  return 'host-0';
}

/** The node a pod runs on, or the one its DaemonSet meant it for (before scheduling). */
export function podNode(pod: PodObject): string | undefined {
  if (pod.spec?.nodeName) return pod.spec.nodeName;
  const terms = pod.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms ?? [];
  for (const term of terms) {
    const field = term.matchFields?.find((f) => f.key === 'metadata.name' && f.operator === 'In');
    if (field?.values?.[0]) return field.values[0];
  }
  return undefined;
}

/** The user behind a person's or CI's token, allowed to create BackupTriggers in `namespace`; 401/403 otherwise. */
export async function authorizeTriggerCreation(kc: KubeConfig, authorization: string | undefined, namespace: string): Promise<V1UserInfo> {
  const user = await reviewToken(kc, bearerToken(authorization));
  const review = await kubeRequest<{ status?: V1SubjectAccessReviewStatus }>(kc, 'create SubjectAccessReview', 'POST', resourcePath('authorization.k8s.io/v1', 'subjectaccessreviews'), {
    body: {
      apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview',
      spec: {
        user: user.username, groups: user.groups, uid: user.uid, extra: user.extra,
        resourceAttributes: { namespace, verb: 'create', group: GROUP, resource: 'backuptriggers' },
      },
    },
  });
  if (review.status?.allowed !== true) {
    throw new HttpError(403, `${user.username ?? 'this user'} may not create backuptriggers.${GROUP} in namespace ${namespace}` +
      `${review.status?.reason ? ` (${review.status.reason})` : ''}; grant the verb "create" on resource "backuptriggers" of apiGroup "${GROUP}" with a Role and RoleBinding in ${namespace}`);
  }
  return user;
}
