/**
 * MariaDB / MySQL plans (pure): mariadb-dump in one consistent transaction (--single-transaction)
 * with routines, triggers and events; the mariadb client to restore. See docs/databases.md.
 */
import type { DatabaseConnection, DumpStep, ToolCommand, ToolNames } from './types.ts';

export const MARIADB_TOOLS: ToolNames = { dump: 'mariadb-dump', restore: 'mariadb', client: 'mariadb' };

/** Schemas the server generates itself: never dumped, never counted. */
export const SYSTEM_SCHEMAS: readonly string[] = ['information_schema', 'performance_schema', 'sys'];

function env(conn: DatabaseConnection): Record<string, string> {
  return conn.password !== undefined ? { MYSQL_PWD: conn.password } : {};
}

function server(conn: DatabaseConnection): string[] {
  return ['--protocol=TCP', '-h', conn.host, '-P', String(conn.port), '-u', conn.user ?? 'root'];
}

function client(conn: DatabaseConnection, tools: ToolNames): ToolCommand {
  return { command: [tools.client, ...server(conn), '--batch', '--skip-column-names'], env: env(conn) };
}

/** Lists the databases a full backup covers (system schemas left out), one per line. */
export function listDatabasesQuery(conn: DatabaseConnection, tools = MARIADB_TOOLS): { cmd: ToolCommand; sql: string } {
  return { cmd: client(conn, tools), sql: 'SHOW DATABASES;\n' };
}

export function countTablesQuery(conn: DatabaseConnection, database: string, tools = MARIADB_TOOLS): { cmd: ToolCommand; sql: string } {
  const literal = `'${database.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  return { cmd: client(conn, tools), sql: `SELECT count(*) FROM information_schema.tables WHERE table_schema = ${literal};\n` };
}

/**
 * One snapshot, always: `--all-databases` (with the `mysql` schema, so users and grants come
 * back, and FLUSH PRIVILEGES at the end) or `--databases a b ...`. One dump of several databases
 * is one transaction, hence consistent across them; each database is named in a tag.
 */
export function planBackup(conn: DatabaseConnection, databases: readonly string[], tools = MARIADB_TOOLS): DumpStep[] {
  const selection = conn.databases.length === 0 ? ['--all-databases', '--flush-privileges'] : ['--databases', ...conn.databases];
  const covered = conn.databases.length === 0 ? databases : conn.databases;
  return [{
    database: undefined,
    filename: 'mariadb.sql',
    tags: ['stash.engine=mariadb', `stash.database=${conn.databases.length === 0 ? 'all' : conn.databases.join('+')}`, ...covered.map((d) => `stash.db=${d}`)],
    dump: {
      command: [tools.dump, ...server(conn), '--single-transaction', '--routines', '--triggers', '--events', '--hex-blob',
        '--default-character-set=utf8mb4', ...selection],
      env: env(conn),
    },
  }];
}

/** The mariadb client reading the dump on stdin; it stops at the first error (no --force). */
export function planRestore(conn: DatabaseConnection, tools = MARIADB_TOOLS): ToolCommand {
  return { command: [tools.restore, ...server(conn), '--batch', '--default-character-set=utf8mb4'], env: env(conn) };
}
