/**
 * PostgreSQL plans (pure): pg_dumpall for every database with roles, pg_dump per named database,
 * psql with ON_ERROR_STOP to restore. See docs/databases.md for the snapshot layout.
 */
import { Transform, type TransformCallback } from 'node:stream';
import type { DatabaseConnection, DumpStep, ToolCommand, ToolNames } from './types.ts';

export const POSTGRES_TOOLS: ToolNames & { readonly dumpAll: string } = { dump: 'pg_dump', dumpAll: 'pg_dumpall', restore: 'psql', client: 'psql' };

/** libpq connection-string value: always quoted, `\` and `'` escaped. */
export function conninfoValue(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** PostgreSQL's quote_ident as pg_dump's fmtId applies it (keywords aside: they are quoted by pg_dump too). */
export function quoteIdent(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}

function env(conn: DatabaseConnection): Record<string, string> {
  return {
    ...(conn.password !== undefined ? { PGPASSWORD: conn.password } : {}),
    PGCONNECT_TIMEOUT: '15',
    PGAPPNAME: 'stash',
  };
}

function server(conn: DatabaseConnection): string[] {
  return ['-h', conn.host, '-p', String(conn.port), '-U', conn.user ?? 'postgres'];
}

function psql(conn: DatabaseConnection, database: string, tools: ToolNames, extra: readonly string[] = []): ToolCommand {
  return {
    command: [tools.client, ...server(conn), '-d', `dbname=${conninfoValue(database)}`, '-X', '-q', '-v', 'ON_ERROR_STOP=1', ...extra],
    env: env(conn),
  };
}

/** Lists the databases a full backup covers (connectable, not templates), one per line. */
export function listDatabasesQuery(conn: DatabaseConnection, tools: ToolNames = POSTGRES_TOOLS): { cmd: ToolCommand; sql: string } {
  return {
    cmd: psql(conn, 'postgres', tools, ['-A', '-t', '-f', '-']),
    sql: 'SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1;\n',
  };
}

/** Counts the user tables of one database (the recovery's verification). */
export function countTablesQuery(conn: DatabaseConnection, database: string, tools: ToolNames = POSTGRES_TOOLS): { cmd: ToolCommand; sql: string } {
  return {
    cmd: psql(conn, database, tools, ['-A', '-t', '-f', '-']),
    sql: "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema');\n",
  };
}

/**
 * All databases: one snapshot of `pg_dumpall --clean --if-exists` (roles, tablespaces, every
 * database). Named databases: one snapshot per database of `pg_dump --create --clean --if-exists`,
 * tagged with its name, so each can be recovered on its own.
 */
export function planBackup(conn: DatabaseConnection, databases: readonly string[], tools = POSTGRES_TOOLS): DumpStep[] {
  const base = ['stash.engine=postgres'];
  if (conn.databases.length === 0) {
    return [{
      database: undefined,
      filename: 'postgres.sql',
      tags: [...base, 'stash.database=all', ...databases.map((d) => `stash.db=${d}`)],
      dump: { command: [tools.dumpAll, ...server(conn), '-l', 'postgres', '--clean', '--if-exists'], env: env(conn) },
    }];
  }
  return conn.databases.map((database) => ({
    database,
    filename: 'postgres.sql',
    tags: [...base, `stash.database=${database}`, `stash.db=${database}`],
    dump: { command: [tools.dump, ...server(conn), '-d', `dbname=${conninfoValue(database)}`, '--create', '--clean', '--if-exists'], env: env(conn) },
  }));
}

/** psql reading the dump on stdin, connected to the maintenance database `postgres`. */
export function planRestore(conn: DatabaseConnection, tools = POSTGRES_TOOLS): ToolCommand {
  return psql(conn, 'postgres', { ...tools, client: tools.restore }, ['-f', '-']);
}

/**
 * pg_dumpall writes `DROP ROLE IF EXISTS <user>;` and `CREATE ROLE <user>;` for the role it ran
 * as, expecting the restore to shrug off the errors; psql with ON_ERROR_STOP cannot. This stream
 * filter rewrites just those two statements for the restoring user (it can neither be dropped
 * nor created while connected) into `-- stash: skipped ...` comments; the role's `ALTER ROLE`
 * that follows still restores its attributes. It inspects only the globals section, up to the
 * first `\connect`, and passes everything after it through untouched. It holds at most one line.
 */
export function currentRoleFilter(user: string): Transform {
  const role = quoteIdent(user);
  const skip = new Set([`DROP ROLE IF EXISTS ${role};`, `DROP ROLE ${role};`, `CREATE ROLE ${role};`]);
  let partial: Buffer = Buffer.alloc(0);
  let passthrough = false;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      if (passthrough) return callback(null, chunk);
      const buf = partial.length > 0 ? Buffer.concat([partial, chunk]) : chunk;
      const out: Buffer[] = [];
      let start = 0;
      for (;;) {
        const nl = buf.indexOf(0x0a, start);
        if (nl < 0) break;
        const line = buf.subarray(start, nl).toString('utf8');
        if (line.startsWith('\\connect')) {
          passthrough = true;
          out.push(buf.subarray(start));
          partial = Buffer.alloc(0);
          return callback(null, Buffer.concat(out));
        }
        out.push(skip.has(line) ? Buffer.from(`-- stash: skipped ${line}\n`) : buf.subarray(start, nl + 1));
        start = nl + 1;
      }
      partial = Buffer.from(buf.subarray(start));
      callback(null, Buffer.concat(out));
    },
    flush(callback: TransformCallback) {
      const line = partial.toString('utf8');
      callback(null, skip.has(line) ? Buffer.from(`-- stash: skipped ${line}`) : partial);
    },
  });
}
