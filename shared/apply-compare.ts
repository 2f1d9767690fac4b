// Is a workload already what server-side applying a configuration would make it? Pure (used by
// inject-sidecar for the backup sidecar and run-recovery for the recovery init container).
//
// Two checks, both on what is really in the workload (no annotation or hash that another
// controller could erase, stashed/stash#1308):
//  1. the fields this field manager owns (its managedFields entry) are exactly the fields of the
//     apply configuration: nothing Stash applied before and no longer wants is left (a removed
//     env var, a renamed container, a dropped target directory), and nobody took a field over;
//  2. every value in the apply configuration is in the workload (values the apiserver defaults
//     beside them, such as a Secret volume's defaultMode, are ignored; quantities compare by value).
// Only when either differs does the handler apply, so a resync of unchanged Backups is reads only.
import type { V1ManagedFieldsEntry } from '@kubernetes/client-node';

/** Lists of the pod template that merge by key under server-side apply (core/v1 listMapKey); every other list is atomic. */
const LIST_MAP_KEYS: Readonly<Record<string, readonly string[]>> = {
  containers: ['name'],
  initContainers: ['name'],
  ephemeralContainers: ['name'],
  volumes: ['name'],
  env: ['name'],
  volumeMounts: ['mountPath'],
  ports: ['containerPort', 'protocol'],
  resizePolicy: ['resourceName'],
  claims: ['name'],
  volumeDevices: ['devicePath'],
};

/** Structs marked `+structType=atomic` in core/v1: owned as a whole, like a leaf. */
const ATOMIC_STRUCTS = new Set(['fieldRef', 'resourceFieldRef', 'configMapKeyRef', 'secretKeyRef']);

/** Separates the parts of a field path: JSON-encoded keys never hold a raw newline (unlike "/"). */
export const PATH_SEPARATOR = '\n';

/** Fields server-side apply never records in managedFields. */
const UNTRACKED = new Set(['f:apiVersion', 'f:kind', `f:metadata${PATH_SEPARATOR}f:name`, `f:metadata${PATH_SEPARATOR}f:namespace`]);

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function sortedJson(value: Record<string, unknown>): string {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) out[key] = value[key];
  return JSON.stringify(out);
}

function keyOf(item: Record<string, unknown>, keys: readonly string[]): string {
  const picked: Record<string, unknown> = {};
  for (const key of keys) if (item[key] !== undefined) picked[key] = item[key];
  return `k:${sortedJson(picked)}`;
}

/** The field paths an applied object sets, as managedFields names them (f:spec, f:template, ..., `k:{"name":"x"}`, joined by PATH_SEPARATOR). */
export function appliedFieldPaths(object: Record<string, unknown>): Set<string> {
  const paths = new Set<string>();
  const walk = (value: unknown, prefix: string, field: string | undefined): void => {
    if (Array.isArray(value)) {
      const keys = field === undefined ? undefined : LIST_MAP_KEYS[field];
      if (keys === undefined) return; // atomic list: the field itself is the leaf
      for (const item of value) {
        if (!isObject(item)) continue;
        const path = `${prefix}${PATH_SEPARATOR}${keyOf(item, keys)}`;
        paths.add(path);
        walkObject(item, path);
      }
      return;
    }
    if (isObject(value) && (field === undefined || !ATOMIC_STRUCTS.has(field))) walkObject(value, prefix);
  };
  const walkObject = (value: Record<string, unknown>, prefix: string): void => {
    for (const [key, child] of Object.entries(value)) {
      if (child === undefined) continue;
      const path = prefix === '' ? `f:${key}` : `${prefix}${PATH_SEPARATOR}f:${key}`;
      if (UNTRACKED.has(path)) continue;
      paths.add(path);
      walk(child, path, key);
    }
  };
  walkObject(object, '');
  // Parents of untracked leaves (f:metadata alone) are not recorded either.
  if (![...paths].some((p) => p.startsWith(`f:metadata${PATH_SEPARATOR}`))) paths.delete('f:metadata');
  return paths;
}

/** The field paths a managedFields entry (FieldsV1) names, in appliedFieldPaths' notation. */
export function ownedFieldPaths(fieldsV1: unknown): Set<string> {
  const paths = new Set<string>();
  const walk = (node: unknown, prefix: string): void => {
    if (!isObject(node)) return;
    for (const [key, child] of Object.entries(node)) {
      if (key === '.') continue;
      let name = key;
      if (key.startsWith('k:')) {
        try {
          const parsed: unknown = JSON.parse(key.slice(2));
          if (isObject(parsed)) name = `k:${sortedJson(parsed)}`;
        } catch {
          // keep the key as it is
        }
      }
      const path = prefix === '' ? name : `${prefix}${PATH_SEPARATOR}${name}`;
      paths.add(path);
      walk(child, path);
    }
  };
  walk(fieldsV1, '');
  return paths;
}

/** The Apply entry of `manager` on the main resource (not a subresource). */
export function managerEntry(managedFields: readonly V1ManagedFieldsEntry[] | undefined, manager: string): V1ManagedFieldsEntry | undefined {
  return managedFields?.find((m) => m.manager === manager && m.operation === 'Apply' && !m.subresource);
}

/** True when `manager` owns any field of the object (so a removal apply has something to remove). */
export function ownsFields(managedFields: readonly V1ManagedFieldsEntry[] | undefined, manager: string): boolean {
  const entry = managerEntry(managedFields, manager);
  return entry !== undefined && ownedFieldPaths(entry.fieldsV1).size > 0;
}

const QUANTITY = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$/;
const SUFFIX: Readonly<Record<string, number>> = {
  n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A Kubernetes quantity as a number ("500m" -> 0.5, "64Mi" -> 67108864); undefined if not one. */
export function quantityValue(text: string | number): number | undefined {
  if (typeof text === 'number') return text;
  const match = QUANTITY.exec(text);
  if (!match?.[1]) return undefined;
  const suffix = match[2] ?? '';
  if (/^[eE]/.test(suffix)) return Number(`${match[1]}${suffix}`);
  const factor = SUFFIX[suffix];
  return factor === undefined ? undefined : Number(match[1]) * factor;
}

function sameQuantity(a: unknown, b: unknown): boolean {
  if ((typeof a !== 'string' && typeof a !== 'number') || (typeof b !== 'string' && typeof b !== 'number')) return false;
  const x = quantityValue(a);
  const y = quantityValue(b);
  return x !== undefined && y !== undefined && Math.abs(x - y) <= Math.max(Math.abs(x), Math.abs(y)) * 1e-12;
}

/** Every value of `wanted` is in `actual` (objects: a subset; keyed lists: by key; atomic lists: element-wise). */
export function containsValues(wanted: unknown, actual: unknown, field?: string, parent?: string): boolean {
  if (Array.isArray(wanted)) {
    if (!Array.isArray(actual)) return false;
    const keys = field === undefined ? undefined : LIST_MAP_KEYS[field];
    if (keys !== undefined) {
      return wanted.every((item) => {
        if (!isObject(item)) return false;
        const key = keyOf(item, keys);
        const match: unknown = (actual as unknown[]).find((candidate) => isObject(candidate) && keyOf(candidate, keys) === key);
        return match !== undefined && containsValues(item, match, undefined, field);
      });
    }
    return wanted.length === actual.length && wanted.every((item, i) => containsValues(item, actual[i], undefined, field));
  }
  if (isObject(wanted)) {
    if (!isObject(actual)) return false;
    return Object.entries(wanted).every(([key, value]) => value === undefined || containsValues(value, actual[key], key, field));
  }
  if (parent === 'limits' || parent === 'requests') return wanted === actual || sameQuantity(wanted, actual);
  return wanted === actual;
}

/**
 * True when applying `applyConfig` with `manager` would change nothing: the manager owns exactly
 * the configuration's fields and the workload holds its values.
 */
export function isApplied(
  workload: { metadata?: { managedFields?: V1ManagedFieldsEntry[] } } & Record<string, unknown>,
  applyConfig: Record<string, unknown>,
  manager: string,
): boolean {
  const entry = managerEntry(workload.metadata?.managedFields, manager);
  const owned = entry === undefined ? new Set<string>() : ownedFieldPaths(entry.fieldsV1);
  const wanted = appliedFieldPaths(applyConfig);
  if (owned.size !== wanted.size || [...wanted].some((p) => !owned.has(p))) return false;
  const { apiVersion: _a, kind: _k, metadata: _m, ...rest } = applyConfig;
  return containsValues(rest, workload);
}
