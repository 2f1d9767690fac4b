/**
 * `node with-env.ts <env-file> -- <command> [args...]`: runs the command with extra environment
 * variables read from a JSON file, which it deletes first. The database backup uses it so that
 * restic's `--stdin-from-command` can start a dump tool with its password in the environment
 * (PGPASSWORD, MYSQL_PWD, REDISCLI_AUTH) without the password ever reaching a command line.
 *
 * stdout and stderr are the child's own (inherited): this process never reads the dump, so it
 * adds no buffering. It exits with the child's code, or 128+signal if the child was killed.
 */
import { spawn } from 'node:child_process';
import { readFileSync, unlinkSync } from 'node:fs';
import { constants } from 'node:os';

const [envFile, separator, command, ...args] = process.argv.slice(2);
if (!envFile || separator !== '--' || !command) {
  process.stderr.write('usage: with-env.ts <env-file> -- <command> [args...]\n');
  process.exit(2);
}
let extra: Record<string, string>;
try {
  extra = JSON.parse(readFileSync(envFile, 'utf8')) as Record<string, string>;
  unlinkSync(envFile);
} catch (err) {
  process.stderr.write(`with-env: cannot read the environment file ${envFile}: ${(err as Error).message}\n`);
  process.exit(2);
}
const child = spawn(command, args, { env: { ...process.env, ...extra }, stdio: 'inherit' });
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => child.kill(signal));
child.on('error', (err) => {
  process.stderr.write(`with-env: cannot start ${command}: ${err.message}\n`);
  process.exit(127);
});
child.on('exit', (code, signal) => {
  process.exit(code ?? 128 + (signal ? constants.signals[signal] : 0));
});
