// STASH_NAMESPACES: the namespaces one Stash install serves (comma-separated; unset or empty =
// every namespace). Every function reads it through namespacesFromEnv and limits its resync and
// its event handling to those namespaces with servesNamespace.

export const NAMESPACES_ENV = 'STASH_NAMESPACES';

/** A namespace name: an RFC 1123 DNS label (at most 63 of a-z, 0-9 and '-', alphanumeric at both ends). */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** STASH_NAMESPACES names something that cannot be a namespace. */
export class InvalidNamespacesError extends Error {
  override name = 'InvalidNamespacesError';
}

/**
 * The namespaces STASH_NAMESPACES names (trimmed, empty entries dropped, duplicates removed, in
 * order), or undefined when it is unset or names none: serve every namespace.
 */
export function namespacesFromEnv(env: NodeJS.ProcessEnv = process.env): string[] | undefined {
  const raw = env[NAMESPACES_ENV];
  if (raw === undefined) return undefined;
  const names = [...new Set(raw.split(',').map((n) => n.trim()).filter((n) => n !== ''))];
  const invalid = names.filter((n) => !DNS_LABEL.test(n));
  if (invalid.length > 0) {
    throw new InvalidNamespacesError(`${NAMESPACES_ENV}=${JSON.stringify(raw)}: ${invalid.map((n) => JSON.stringify(n)).join(', ')} ` +
      `${invalid.length === 1 ? 'is not a namespace name' : 'are not namespace names'} (a DNS label: at most 63 lowercase letters, digits and '-', ` +
      `starting and ending with a letter or digit); set ${NAMESPACES_ENV} to a comma-separated list of namespaces, or unset it to serve all namespaces`);
  }
  return names.length === 0 ? undefined : names;
}

/** Whether `namespace` is served: every namespace when `namespaces` is undefined. */
export function servesNamespace(namespaces: readonly string[] | undefined, namespace: string): boolean {
  return namespaces === undefined || namespaces.includes(namespace);
}
