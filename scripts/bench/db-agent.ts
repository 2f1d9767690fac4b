/**
 * The agent's database backup as the `stash` CLI runs it, for the benchmark (until the CLI's
 * --db-* flags are settled): one Node process that builds the restic driver and the connection and
 * calls agent/db's backupDatabase, i.e. preflight (TCP check, psql listing the databases), then
 * `restic backup --stdin-from-command -- pg_dump ...` (pg_dump behind agent/db/with-env.ts, which
 * hands it the password through its environment).
 *
 *   STASH_RESTIC=... node scripts/bench/db-agent.ts REPO PASSWORD_FILE HOST PORT DB_PASSWORD_FILE DATABASE
 * Prints the backup result as JSON.
 */
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { backupDatabase } from '../../agent/db/index.ts';
import type { DatabaseConnection } from '../../agent/db/index.ts';
import { createRestic } from '../../agent/restic/restic.ts';

const [repo, passwordFile, host, port, dbPasswordFile, database] = process.argv.slice(2);
if (!repo || !passwordFile || !host || !port || !dbPasswordFile || !database) {
  process.stderr.write('usage: node scripts/bench/db-agent.ts REPO PASSWORD_FILE HOST PORT DB_PASSWORD_FILE DATABASE\n');
  process.exit(2);
}
const logger = pino({ level: 'warn' }, pino.destination(2));
const restic = createRestic({ repository: repo, env: { RESTIC_PASSWORD_FILE: passwordFile }, args: [], files: [] }, { logger });
const conn: DatabaseConnection = {
  engine: 'postgres', host, port: Number(port), user: 'postgres',
  password: readFileSync(dbPasswordFile, 'utf8').replace(/\r?\n$/, ''), databases: [database],
};
const result = await backupDatabase(restic, conn, { host: 'host-0', tags: [] });
process.stdout.write(`${JSON.stringify(result)}\n`);
