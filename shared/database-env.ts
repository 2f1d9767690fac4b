/**
 * A database as the agent's environment: the engines Stash knows, where an AppBinding says the
 * database is, its DB_* variables and the AgentTemplates' `<placeholder>`s. Shared by the pods
 * that work on a database: launch-db-job's backup Job and run-recovery's recovery Job. Pure.
 */
import type { V1EnvVar } from '@kubernetes/client-node';
import type { AppBinding } from './api/index.ts';

/** What Stash knows of each database kind: default port and scheme, and the Secret keys KubeDB writes. */
export interface Engine {
  engine: 'postgres' | 'mariadb' | 'redis';
  port: number;
  scheme: string;
  userKey: string | undefined;
  passwordKey: string;
  /** Redis may run without a password. */
  passwordOptional: boolean;
}

const POSTGRES: Engine = { engine: 'postgres', port: 5432, scheme: 'postgres', userKey: 'POSTGRES_USER', passwordKey: 'POSTGRES_PASSWORD', passwordOptional: false };
const MARIADB: Engine = { engine: 'mariadb', port: 3306, scheme: 'mysql', userKey: 'MYSQL_ROOT_USERNAME', passwordKey: 'MYSQL_ROOT_PASSWORD', passwordOptional: false };
const REDIS: Engine = { engine: 'redis', port: 6379, scheme: 'redis', userKey: undefined, passwordKey: 'REDIS_PASSWORD', passwordOptional: true };

/** AppBinding spec.type -> engine (KubeDB's types and the plain names, as the agent accepts them). */
export const ENGINES: Readonly<Record<string, Engine>> = {
  'kubedb.com/postgres': POSTGRES, postgres: POSTGRES, postgresql: POSTGRES,
  'kubedb.com/mysql': MARIADB, mysql: MARIADB, 'kubedb.com/mariadb': MARIADB, mariadb: MARIADB,
  'kubedb.com/redis': REDIS, redis: REDIS,
};

export function engineFor(type: string): Engine | undefined {
  return ENGINES[type.trim().toLowerCase()];
}

export interface Connection {
  host: string;
  port: number;
  scheme: string | undefined;
}

/** Where the database is: `<service>.<namespace>.svc:<port>`, or host and port of clientConfig.url. */
export function connectionOf(appBinding: AppBinding, engine: Engine): Connection | { error: string } {
  const where = `AppBinding ${appBinding.metadata.namespace ?? ''}/${appBinding.metadata.name ?? ''}`;
  const { service, url } = appBinding.spec.clientConfig;
  if (service) {
    return { host: `${service.name}.${appBinding.metadata.namespace ?? 'default'}.svc`, port: service.port, scheme: service.scheme };
  }
  if (url) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return { error: `${where}: spec.clientConfig.url is not a URL: write it as ${engine.scheme}://host:port` };
    }
    if (parsed.password !== '') {
      return { error: `${where}: spec.clientConfig.url holds a password, which would end up in the Job's spec: move it to the Secret named in spec.secret and remove it from the url` };
    }
    return { host: parsed.hostname.replace(/^\[|\]$/g, ''), port: parsed.port === '' ? engine.port : Number(parsed.port), scheme: parsed.protocol.replace(/:$/, '') };
  }
  return { error: `${where}: spec.clientConfig has neither service nor url: set one` };
}

/** The database's connection as DB_* variables, the credentials as references to the AppBinding's Secret (never values). */
export function databaseEnv(appBinding: AppBinding, engine: Engine, connection: Connection): V1EnvVar[] {
  const env: V1EnvVar[] = [
    { name: 'DB_TYPE', value: appBinding.spec.type },
    { name: 'DB_HOST', value: connection.host },
    { name: 'DB_PORT', value: String(connection.port) },
  ];
  if (connection.scheme !== undefined) env.push({ name: 'DB_SCHEME', value: connection.scheme });
  if (appBinding.spec.clientConfig.insecureSkipTLSVerify === true) env.push({ name: 'DB_INSECURE_SKIP_TLS_VERIFY', value: 'true' });
  const secret = appBinding.spec.secret?.name;
  if (secret !== undefined) {
    if (engine.userKey !== undefined) env.push({ name: 'DB_USER', valueFrom: { secretKeyRef: { name: secret, key: engine.userKey, optional: true } } });
    env.push({ name: 'DB_PASSWORD', valueFrom: { secretKeyRef: { name: secret, key: engine.passwordKey, ...(engine.passwordOptional ? { optional: true } : {}) } } });
  }
  return env;
}

const PLACEHOLDER = /^<[^<>]+>$/;

/**
 * A template env entry with its `<placeholder>`s filled: a secretKeyRef to `<secret name>` points
 * at the AppBinding's Secret, `<host url>` is the database host, `<data-dir>` `dataDir` (a directory on the
 * pod's shared scratch volume). An unknown placeholder is an error (the Job would run with the literal text).
 */
export function fillPlaceholders(variable: V1EnvVar, appBinding: AppBinding, connection: Connection, where: string, dataDir: string): V1EnvVar | string {
  const ref = variable.valueFrom?.secretKeyRef;
  if (ref !== undefined && PLACEHOLDER.test(ref.name ?? '')) {
    const secret = appBinding.spec.secret?.name;
    if (secret === undefined) {
      return `${where} env ${variable.name} reads ${ref.name ?? ''} but AppBinding ${appBinding.metadata.name ?? ''} names no spec.secret: add the Secret holding the database credentials to the AppBinding`;
    }
    return { name: variable.name, valueFrom: { secretKeyRef: { ...ref, name: secret } } };
  }
  if (variable.value !== undefined && PLACEHOLDER.test(variable.value)) {
    const fills: Record<string, string> = { '<host url>': connection.host, '<host>': connection.host, '<port>': String(connection.port), '<data-dir>': dataDir };
    const value = fills[variable.value];
    if (value === undefined) {
      return `${where} env ${variable.name} is the placeholder ${variable.value}, which Stash cannot fill (it fills <secret name>, <host url>, <host>, <port>, <data-dir>): set a value in the AgentTemplate`;
    }
    return { name: variable.name, value };
  }
  return variable;
}
