// Reading and writing objects. Handlers are level-triggered: they re-read the object an event
// names (getObject), compute the desired state, and write it with server-side apply under their
// own field manager, or patch status.
import { CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { kubeCall, NotFoundError } from './errors.ts';
import { apiClient, objectApi } from './client.ts';

export interface ObjectRef {
  apiVersion: string;
  kind: string;
  namespace?: string;
  name: string;
}

export function describeRef(ref: ObjectRef): string {
  return `${ref.kind} ${ref.namespace ? `${ref.namespace}/` : ''}${ref.name}`;
}

function header(ref: ObjectRef): KubernetesObject & { metadata: { name: string; namespace?: string } } {
  const metadata: { name: string; namespace?: string } = { name: ref.name };
  if (ref.namespace !== undefined) metadata.namespace = ref.namespace;
  return { apiVersion: ref.apiVersion, kind: ref.kind, metadata };
}

function refOf(object: KubernetesObject): ObjectRef {
  const name = object.metadata?.name;
  if (!object.apiVersion || !object.kind || !name) {
    throw new TypeError('object needs apiVersion, kind and metadata.name to be written; set them on the object passed in');
  }
  const ref: ObjectRef = { apiVersion: object.apiVersion, kind: object.kind, name };
  if (object.metadata?.namespace) ref.namespace = object.metadata.namespace;
  return ref;
}

/** Reads the object; undefined when it (or its namespace) does not exist. */
export async function getObject<T extends KubernetesObject = KubernetesObject>(kc: KubeConfig, ref: ObjectRef): Promise<T | undefined> {
  const api = objectApi(kc);
  try {
    return await kubeCall(`get ${describeRef(ref)}`, () => api.read<T>(header(ref)));
  } catch (error) {
    if (error instanceof NotFoundError) return undefined;
    throw error;
  }
}

export interface ApplyOptions {
  /** The function's name: each function owns its own fields (e.g. 'stash-inject-sidecar'). */
  fieldManager: string;
  /** Take fields over from other managers. Default true: a function's desired state wins. */
  force?: boolean;
  dryRun?: boolean;
}

/**
 * Server-side apply: `object` holds only the fields this manager owns; fields it owned before and
 * leaves out are removed. Returns the object as stored.
 */
export async function applyObject<T extends KubernetesObject>(kc: KubeConfig, object: T, options: ApplyOptions): Promise<T> {
  const api = objectApi(kc);
  const ref = refOf(object);
  return kubeCall(`apply ${describeRef(ref)} as ${options.fieldManager}`, () =>
    api.patch<T>(object, undefined, options.dryRun ? 'All' : undefined, options.fieldManager, options.force ?? true, PatchStrategy.ServerSideApply));
}

export interface PatchOptions {
  fieldManager: string;
  /** Fail with ConflictError unless the object still has this resourceVersion. */
  resourceVersion?: string;
}

/** JSON merge patch (RFC 7386): objects merge, arrays and scalars replace, null deletes. */
export async function mergePatch<T extends KubernetesObject = KubernetesObject>(
  kc: KubeConfig, ref: ObjectRef, patch: Record<string, unknown>, options: PatchOptions,
): Promise<T> {
  const api = objectApi(kc);
  const base = header(ref);
  const patchMetadata = (patch.metadata ?? {}) as Record<string, unknown>;
  const metadata: Record<string, unknown> = { ...patchMetadata, ...base.metadata };
  if (options.resourceVersion !== undefined) metadata.resourceVersion = options.resourceVersion;
  const body = { ...patch, apiVersion: ref.apiVersion, kind: ref.kind, metadata } as unknown as T;
  return kubeCall(`merge-patch ${describeRef(ref)}`, () =>
    api.patch<T>(body, undefined, undefined, options.fieldManager, undefined, PatchStrategy.MergePatch));
}

/** Plural resource name for a kind, for the custom-objects API. Stash CRDs keep plurals regular. */
export function pluralOf(kind: string): string {
  const lower = kind.toLowerCase();
  if (/(s|x|z|ch|sh)$/.test(lower)) return `${lower}es`;
  if (/[^aeiou]y$/.test(lower)) return `${lower.slice(0, -1)}ies`;
  return `${lower}s`;
}

export interface StatusPatchOptions extends PatchOptions {
  /** The resource's plural, when not the regular one pluralOf(kind) gives. */
  plural?: string;
}

/**
 * Merge-patches the status subresource of a custom resource (the only writes a spec-reading
 * function makes to its own kinds). `status` replaces arrays such as conditions whole: compute
 * them with setCondition on the object just read, and pass resourceVersion to detect races.
 */
export async function patchStatus<T extends KubernetesObject = KubernetesObject>(
  kc: KubeConfig, ref: ObjectRef, status: Record<string, unknown>, options: StatusPatchOptions,
): Promise<T> {
  const slash = ref.apiVersion.indexOf('/');
  if (slash < 0) {
    throw new TypeError(`patchStatus handles custom resources (group/version); ${describeRef(ref)} is in the core group ${ref.apiVersion}`);
  }
  const api = apiClient(kc, CustomObjectsApi);
  const body: Record<string, unknown> = { status };
  if (options.resourceVersion !== undefined) body.metadata = { resourceVersion: options.resourceVersion };
  const common = {
    group: ref.apiVersion.slice(0, slash), version: ref.apiVersion.slice(slash + 1),
    plural: options.plural ?? pluralOf(ref.kind), name: ref.name, body, fieldManager: options.fieldManager,
  };
  const headerOptions = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
  const result: unknown = await kubeCall(`patch status of ${describeRef(ref)}`, () => ref.namespace === undefined
    ? api.patchClusterCustomObjectStatus(common, headerOptions)
    : api.patchNamespacedCustomObjectStatus({ ...common, namespace: ref.namespace }, headerOptions));
  return result as T;
}
