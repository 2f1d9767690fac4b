/**
 * Process plumbing for the database plans: finding tools, checking that a server answers, running
 * small client queries.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { DatabaseQueryError, DatabaseToolNotFoundError, DatabaseUnreachableError } from './errors.ts';
import type { DatabaseConnection, ToolCommand } from './types.ts';

const PACKAGES: Record<string, string> = {
  pg_dump: 'postgresql-client', pg_dumpall: 'postgresql-client', psql: 'postgresql-client',
  'mariadb-dump': 'mariadb-client', mariadb: 'mariadb-client', mysqldump: 'mysql-client', mysql: 'mysql-client',
  'redis-cli': 'redis-tools',
};

/** Absolute path of `tool` (a name looked up on PATH, or a path), or a DatabaseToolNotFoundError. */
export function findTool(tool: string, pathEnv = process.env['PATH'] ?? ''): string {
  const candidates = tool.includes('/') ? [tool] : pathEnv.split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, tool));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch { /* next */ }
  }
  const pkg = PACKAGES[path.basename(tool)];
  throw new DatabaseToolNotFoundError(tool, `the database tool "${tool}" was not found ${tool.includes('/') ? 'or is not executable' : 'on PATH'}; ` +
    `install it${pkg ? ` (Debian package ${pkg})` : ''} in the agent image or point the agent at it (e.g. --db-tool-dir)`);
}

export const address = (conn: Pick<DatabaseConnection, 'host' | 'port'>): string =>
  conn.host.includes(':') ? `[${conn.host}]:${conn.port}` : `${conn.host}:${conn.port}`;

/** Resolves when a TCP connection to host:port opens; otherwise a DatabaseUnreachableError naming it. */
export async function checkReachable(conn: DatabaseConnection, timeoutMs = 10_000): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const socket = net.connect({ host: conn.host, port: conn.port });
    const fail = (reason: string, cause?: unknown) => {
      socket.destroy();
      reject(new DatabaseUnreachableError(address(conn), `cannot reach the ${conn.engine} server at ${address(conn)}: ${reason}; ` +
        'check the AppBinding\'s service/url (or --db-host/--db-port) and that the server is running and accepts connections from the agent', { cause }));
    };
    socket.setTimeout(timeoutMs, () => fail(`no answer within ${timeoutMs} ms`));
    socket.once('connect', () => { socket.end(); resolve(); });
    socket.once('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message, err));
  });
}

/** Replaces every secret in `text` by `***`. */
export function redact(text: string, secrets: readonly (string | undefined)[]): string {
  let out = text;
  for (const secret of secrets) if (secret) out = out.split(secret).join('***');
  return out;
}

const MAX_QUERY_OUTPUT = 16 << 20;

/**
 * Runs a client query (small output: database lists, counts) and returns its stdout. Never used for
 * dumps, which only ever flow from the dump tool to restic.
 */
export async function runQuery(cmd: ToolCommand, what: string, secrets: readonly (string | undefined)[], input?: string): Promise<string> {
  const [bin, ...args] = cmd.command;
  if (!bin) throw new DatabaseQueryError(`${what}: empty command`);
  findTool(bin);
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env: { ...process.env, ...cmd.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      outBytes += d.length;
      if (outBytes > MAX_QUERY_OUTPUT) child.kill('SIGKILL');
      else out.push(d);
    });
    child.stderr.on('data', (d: Buffer) => { err = (err + d.toString('utf8')).slice(-8192); });
    child.on('error', (e) => reject(new DatabaseQueryError(`${what}: cannot start ${bin}: ${e.message}`)));
    child.on('close', (code, signal) => {
      if (code === 0) return resolve(Buffer.concat(out).toString('utf8'));
      const why = outBytes > MAX_QUERY_OUTPUT ? 'its output exceeded 16 MiB' : signal ? `killed by ${signal}` : `exit code ${code}`;
      reject(new DatabaseQueryError(`${what} failed (${path.basename(bin)}, ${why}): ${redact(err.trim(), secrets) || 'no message'}`));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}
