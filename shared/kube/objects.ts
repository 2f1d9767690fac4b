// Reading and writing objects. Handlers are level-triggered: they re-read the object an event
// names (getObject), compute the desired state, and write it with server-side apply under their
// own field manager, or patch status.
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { NotFoundError } from './errors.ts';
import { kubeRequest, resourcePath } from './http.ts';

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

/** The object's path, e.g. /apis/apps/v1/namespaces/demo/deployments/web. */
function objectPath(ref: ObjectRef, subresource?: string): string {
  return resourcePath(ref.apiVersion, pluralOf(ref.kind), { namespace: ref.namespace, name: ref.name, ...(subresource === undefined ? {} : { subresource }) });
}

/** Reads the object; undefined when it (or its namespace) does not exist. */
export async function getObject<T extends KubernetesObject = KubernetesObject>(kc: KubeConfig, ref: ObjectRef): Promise<T | undefined> {
  try {
    return await kubeRequest<T>(kc, `get ${describeRef(ref)}`, 'GET', objectPath(ref));
  } catch (error) {
    if (error instanceof NotFoundError) return undefined;
    throw error;
  }
}

/**
 * The reads of one invocation, shared: a resync of many Backups that name the same AgentTemplate
 * or Repository reads each once. A failed read is not remembered. Make one per invocation, never
 * longer: it holds no invalidation.
 */
export type ReadCache = Map<string, Promise<KubernetesObject | undefined>>;

/** getObject through `cache` (when given): the same object is read once per cache. */
export function getObjectOnce<T extends KubernetesObject = KubernetesObject>(kc: KubeConfig, ref: ObjectRef, cache: ReadCache | undefined): Promise<T | undefined> {
  if (cache === undefined) return getObject<T>(kc, ref);
  const key = `${ref.apiVersion}/${ref.kind}/${ref.namespace ?? ''}/${ref.name}`;
  let read = cache.get(key);
  if (read === undefined) {
    read = getObject(kc, ref);
    cache.set(key, read);
    read.catch(() => cache.delete(key));
  }
  return read as Promise<T | undefined>;
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
  const ref = refOf(object);
  return kubeRequest<T>(kc, `apply ${describeRef(ref)} as ${options.fieldManager}`, 'PATCH', objectPath(ref), {
    query: { fieldManager: options.fieldManager, force: options.force ?? true, dryRun: options.dryRun ? 'All' : undefined },
    body: object, contentType: 'application/apply-patch+yaml',
  });
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
  const base = header(ref);
  const patchMetadata = (patch.metadata ?? {}) as Record<string, unknown>;
  const metadata: Record<string, unknown> = { ...patchMetadata, ...base.metadata };
  if (options.resourceVersion !== undefined) metadata.resourceVersion = options.resourceVersion;
  const body = { ...patch, apiVersion: ref.apiVersion, kind: ref.kind, metadata };
  return kubeRequest<T>(kc, `merge-patch ${describeRef(ref)}`, 'PATCH', objectPath(ref), {
    query: { fieldManager: options.fieldManager }, body, contentType: 'application/merge-patch+json',
  });
}

/** Plural resource name for a kind. Every kind Stash reads or writes (its own and Kubernetes') has a regular plural. */
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
  if (!ref.apiVersion.includes('/')) {
    throw new TypeError(`patchStatus handles custom resources (group/version); ${describeRef(ref)} is in the core group ${ref.apiVersion}`);
  }
  const body: Record<string, unknown> = { status };
  if (options.resourceVersion !== undefined) body.metadata = { resourceVersion: options.resourceVersion };
  const path = resourcePath(ref.apiVersion, options.plural ?? pluralOf(ref.kind), { namespace: ref.namespace, name: ref.name, subresource: 'status' });
  return kubeRequest<T>(kc, `patch status of ${describeRef(ref)}`, 'PATCH', path, {
    query: { fieldManager: options.fieldManager }, body, contentType: 'application/merge-patch+json',
  });
}

export interface ListOptions {
  apiVersion: string;
  kind: string;
  /** One namespace; absent = all namespaces (or a cluster-scoped kind). */
  namespace?: string | undefined;
  labelSelector?: string | undefined;
  fieldSelector?: string | undefined;
  /** Page size (default 500); the pages are followed to the end. */
  limit?: number;
}

/** Every object of a kind (in one namespace or all), following continue tokens. Items get apiVersion and kind set. */
export async function listObjects<T extends KubernetesObject = KubernetesObject>(kc: KubeConfig, options: ListOptions): Promise<T[]> {
  const path = resourcePath(options.apiVersion, pluralOf(options.kind), { namespace: options.namespace });
  const where = `${options.namespace === undefined ? 'in all namespaces' : `in namespace ${options.namespace}`}` +
    `${options.labelSelector === undefined ? '' : ` with labels ${options.labelSelector}`}${options.fieldSelector === undefined ? '' : ` with fields ${options.fieldSelector}`}`;
  const items: T[] = [];
  let token: string | undefined;
  do {
    const page = await kubeRequest<{ items?: T[]; metadata?: { continue?: string } }>(kc, `list ${options.kind}s ${where}`, 'GET', path, {
      query: { limit: options.limit ?? 500, continue: token, labelSelector: options.labelSelector, fieldSelector: options.fieldSelector },
    });
    for (const item of page.items ?? []) items.push({ ...item, apiVersion: options.apiVersion, kind: options.kind });
    token = page.metadata?.continue || undefined;
  } while (token !== undefined);
  return items;
}

/** Creates the object (AlreadyExistsError when the name is taken); returns it as stored. */
export async function createObject<T extends KubernetesObject>(kc: KubeConfig, object: T, options: { fieldManager?: string; dryRun?: boolean } = {}): Promise<T> {
  const ref = refOf(object);
  const path = resourcePath(ref.apiVersion, pluralOf(ref.kind), { namespace: ref.namespace });
  return kubeRequest<T>(kc, `create ${describeRef(ref)}`, 'POST', path, {
    query: { fieldManager: options.fieldManager, dryRun: options.dryRun ? 'All' : undefined }, body: object,
  });
}

/** Replaces the object (PUT): with metadata.resourceVersion set, ConflictError when it changed meanwhile. */
export async function replaceObject<T extends KubernetesObject>(kc: KubeConfig, object: T, options: { fieldManager?: string } = {}): Promise<T> {
  const ref = refOf(object);
  return kubeRequest<T>(kc, `replace ${describeRef(ref)}`, 'PUT', objectPath(ref), { query: { fieldManager: options.fieldManager }, body: object });
}

export interface DeleteOptions {
  propagationPolicy?: 'Foreground' | 'Background' | 'Orphan';
  /** Delete only this very object (its uid) or this version of it. */
  preconditions?: { uid?: string; resourceVersion?: string };
}

/** Deletes the object; false when it did not exist. */
export async function deleteObject(kc: KubeConfig, ref: ObjectRef, options: DeleteOptions = {}): Promise<boolean> {
  const body: Record<string, unknown> = { apiVersion: 'v1', kind: 'DeleteOptions' };
  if (options.propagationPolicy !== undefined) body.propagationPolicy = options.propagationPolicy;
  if (options.preconditions !== undefined) body.preconditions = options.preconditions;
  try {
    await kubeRequest(kc, `delete ${describeRef(ref)}`, 'DELETE', objectPath(ref), { body });
    return true;
  } catch (error) {
    if (error instanceof NotFoundError) return false;
    throw error;
  }
}

/**
 * listObjects over the namespaces a function serves: one list in all namespaces when `namespaces`
 * is undefined, else one per namespace (STASH_NAMESPACES), side by side.
 */
export async function listInNamespaces<T extends KubernetesObject = KubernetesObject>(
  kc: KubeConfig, options: Omit<ListOptions, 'namespace'>, namespaces: readonly string[] | undefined,
): Promise<T[]> {
  if (namespaces === undefined) return listObjects<T>(kc, options);
  return (await Promise.all(namespaces.map((namespace) => listObjects<T>(kc, { ...options, namespace })))).flat();
}
