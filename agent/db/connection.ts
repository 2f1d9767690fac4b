/**
 * Where a DatabaseConnection comes from: an AppBinding plus its Secret (in a cluster), or flags
 * plus an environment variable (standalone `stash` CLI). The password is only ever read from the
 * Secret or the environment; it is never accepted in a URL or a flag.
 */
import { readFileSync } from 'node:fs';
import type { AppBinding } from '../../shared/api/app-binding.ts';
import { DatabaseConfigError } from './errors.ts';
import { ENGINES, engineForType } from './registry.ts';
import type { DatabaseConnection } from './types.ts';

/** A Kubernetes Secret as read from the API: `data` is base64, `stringData` plain. */
export interface SecretLike {
  readonly metadata?: { readonly name?: string };
  readonly data?: Readonly<Record<string, string>>;
  readonly stringData?: Readonly<Record<string, string>>;
}

function secretValue(secret: SecretLike | undefined, keys: readonly string[]): { key: string; value: string } | undefined {
  for (const key of keys) {
    const plain = secret?.stringData?.[key];
    if (plain !== undefined) return { key, value: plain };
    const encoded = secret?.data?.[key];
    if (encoded !== undefined) return { key, value: Buffer.from(encoded, 'base64').toString('utf8') };
  }
  return undefined;
}

/**
 * The connection an AppBinding describes. `databases` are the Backup's `args` (empty = all).
 * A service becomes `<name>.<namespace>.svc:<port>`; a url gives host and port (default port of
 * the engine when absent).
 */
export function connectionFromAppBinding(binding: Pick<AppBinding, 'metadata' | 'spec'>, secret: SecretLike | undefined, databases: readonly string[] = []): DatabaseConnection {
  const engine = engineForType(binding.spec.type);
  const defaults = ENGINES[engine];
  const where = `AppBinding ${binding.metadata.namespace ?? 'default'}/${binding.metadata.name ?? ''}`;
  let host: string;
  let port: number;
  const { url, service } = binding.spec.clientConfig;
  if (service) {
    host = `${service.name}.${binding.metadata.namespace ?? 'default'}.svc`;
    port = service.port;
  } else if (url) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new DatabaseConfigError(`${where}: spec.clientConfig.url is not a URL; write it as ${defaults.schemes[0] ?? 'tcp'}://host:port`);
    }
    if (parsed.password) throw new DatabaseConfigError(`${where}: spec.clientConfig.url holds a password; move it to the Secret named in spec.secret and remove it from the url`);
    const scheme = parsed.protocol.replace(/:$/, '');
    if (!defaults.schemes.includes(scheme)) throw new DatabaseConfigError(`${where}: url scheme "${scheme}" does not fit type ${binding.spec.type}; use ${defaults.schemes.join(', ')}`);
    host = parsed.hostname.replace(/^\[|\]$/g, '');
    port = parsed.port ? Number(parsed.port) : defaults.port;
  } else {
    throw new DatabaseConfigError(`${where}: spec.clientConfig needs a service or a url`);
  }
  if (binding.spec.secret && !secret) throw new DatabaseConfigError(`${where}: Secret ${binding.spec.secret.name} was not found; create it with the ${defaults.passwordKeys[0] ?? 'password'} key`);
  const password = secretValue(secret, defaults.passwordKeys);
  if (binding.spec.secret && !password) {
    throw new DatabaseConfigError(`${where}: Secret ${binding.spec.secret.name} has none of the keys ${defaults.passwordKeys.join(', ')}; add the database password under one of them`);
  }
  const user = secretValue(secret, defaults.userKeys)?.value ?? defaults.user;
  return { engine, host, port, user, password: password?.value, databases: [...databases] };
}

export interface DatabaseFlags {
  /** --db-type: an AppBinding type (kubedb.com/postgres, mysql, redis...). */
  readonly type: string;
  /** --db-host */
  readonly host: string;
  /** --db-port (default: the engine's) */
  readonly port?: number;
  /** --db-user (default: postgres / root / none for Redis) */
  readonly user?: string;
  /** --db-password-env: the environment variable holding the password (default DB_PASSWORD). */
  readonly passwordEnv?: string;
  /** --db-password-file: a file holding the password (trailing newline dropped). */
  readonly passwordFile?: string;
  /** --database (repeatable) */
  readonly databases?: readonly string[];
}

/** Standalone mode: the connection from CLI flags; the password from env or a file, never a flag. */
export function connectionFromFlags(flags: DatabaseFlags, env: NodeJS.ProcessEnv = process.env): DatabaseConnection {
  const engine = engineForType(flags.type);
  const defaults = ENGINES[engine];
  if (!flags.host) throw new DatabaseConfigError('--db-host is required: the database server\'s host name or IP');
  const port = flags.port ?? defaults.port;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new DatabaseConfigError(`--db-port ${port} is not a TCP port (1-65535)`);
  let password: string | undefined;
  if (flags.passwordFile) {
    try {
      password = readFileSync(flags.passwordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new DatabaseConfigError(`--db-password-file ${flags.passwordFile} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}); point it at a readable file holding only the password`);
    }
  } else {
    password = env[flags.passwordEnv ?? 'DB_PASSWORD'];
  }
  return { engine, host: flags.host, port, user: flags.user ?? defaults.user, password, databases: [...(flags.databases ?? [])] };
}
