/**
 * AppBinding `spec.type` -> engine, and each engine's defaults. KubeDB's types and the plain
 * names are both accepted; MySQL is served by the MariaDB plan (mariadb-dump/mariadb speak to
 * both; override the tool names with `tools` for MySQL's own mysqldump/mysql).
 */
import { UnsupportedDatabaseError } from './errors.ts';
import { MARIADB_TOOLS } from './mariadb.ts';
import { POSTGRES_TOOLS } from './postgres.ts';
import { REDIS_TOOLS } from './redis.ts';
import type { Engine, ToolNames } from './types.ts';

export const ENGINE_BY_TYPE: Readonly<Record<string, Engine>> = {
  'kubedb.com/postgres': 'postgres', postgres: 'postgres', postgresql: 'postgres',
  'kubedb.com/mysql': 'mariadb', mysql: 'mariadb',
  'kubedb.com/mariadb': 'mariadb', mariadb: 'mariadb',
  'kubedb.com/redis': 'redis', redis: 'redis',
};

export interface EngineDefaults {
  readonly port: number;
  /** Login user when the Secret names none (Redis: none, i.e. the `default` user). */
  readonly user: string | undefined;
  readonly tools: ToolNames;
  /** Secret keys tried in order for the user and for the password. */
  readonly userKeys: readonly string[];
  readonly passwordKeys: readonly string[];
  /** URL schemes accepted in `clientConfig.url`. */
  readonly schemes: readonly string[];
}

export const ENGINES: Readonly<Record<Engine, EngineDefaults>> = {
  postgres: {
    port: 5432, user: 'postgres', tools: POSTGRES_TOOLS,
    userKeys: ['POSTGRES_USER', 'username', 'user'], passwordKeys: ['POSTGRES_PASSWORD', 'password'],
    schemes: ['postgres', 'postgresql', 'tcp'],
  },
  mariadb: {
    port: 3306, user: 'root', tools: MARIADB_TOOLS,
    userKeys: ['MYSQL_ROOT_USERNAME', 'MARIADB_ROOT_USERNAME', 'MYSQL_USER', 'username', 'user'],
    passwordKeys: ['MYSQL_ROOT_PASSWORD', 'MARIADB_ROOT_PASSWORD', 'MYSQL_PASSWORD', 'password'],
    schemes: ['mysql', 'mariadb', 'tcp'],
  },
  redis: {
    port: 6379, user: undefined, tools: REDIS_TOOLS,
    userKeys: ['REDIS_USER', 'username', 'user'], passwordKeys: ['REDIS_PASSWORD', 'password'],
    schemes: ['redis', 'tcp'],
  },
};

/** The engine for an AppBinding `spec.type`, or an UnsupportedDatabaseError listing the known types. */
export function engineForType(type: string): Engine {
  const engine = ENGINE_BY_TYPE[type.trim().toLowerCase()];
  if (!engine) {
    throw new UnsupportedDatabaseError(`AppBinding spec.type "${type}" is not a database Stash can back up; ` +
      `use one of ${Object.keys(ENGINE_BY_TYPE).join(', ')}`);
  }
  return engine;
}
