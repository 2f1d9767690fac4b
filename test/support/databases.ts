/**
 * Real database servers for the integration tests: PostgreSQL 15, MariaDB and Redis from the
 * Debian packages, each started in its own temporary directory on a free loopback port with a
 * password, never the system services. Each `start*` returns a handle whose `stop()` ends the
 * server and removes its directory; call it from `after()`.
 *
 * Passwords reach the servers through files (mode 0600) or stdin, and the clients through env.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile, mkdtemp, writeFile, rm, chown, chmod, readFile } from 'node:fs/promises';
import { existsSync, openSync, closeSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const POSTGRES_BIN = process.env['STASH_TEST_PG_BIN'] ?? '/usr/lib/postgresql/15/bin';

/** A free TCP port on 127.0.0.1 (the kernel picks it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') return reject(new Error('no port'));
      server.close(() => resolve(address.port));
    });
  });
}

function newPassword(): string {
  // Includes characters that need quoting in option files and connection strings.
  return `p:w'd"${randomBytes(9).toString('base64url')}\\#`;
}

async function userIds(user: string): Promise<{ uid: number; gid: number }> {
  const { stdout: uid } = await execFileAsync('id', ['-u', user]);
  const { stdout: gid } = await execFileAsync('id', ['-g', user]);
  return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
}

async function waitFor(what: string, check: () => Promise<boolean>, child: ChildProcess, logFile: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      throw new Error(`${what} exited with code ${child.exitCode} while starting; its log:\n${log.slice(-3000)}`);
    }
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  const log = await readFile(logFile, 'utf8').catch(() => '');
  throw new Error(`${what} did not become ready within ${timeoutMs} ms; its log:\n${log.slice(-3000)}`);
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}

/**
 * If the test process exits without calling stop() (a crash, a cancelled run), the server is
 * killed and its directory removed anyway, so nothing outlives the test file.
 */
function cleanupOnExit(child: ChildProcess, dir: string, signal: NodeJS.Signals): () => void {
  const hook = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', hook);
  return () => process.off('exit', hook);
}

/** Runs a client with stdin `input`; rejects with its stderr when it exits non-zero. */
export async function runClient(command: string, args: readonly string[], env: Record<string, string>, input?: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new Error(`${command} ${args.join(' ')} exited with ${code}: ${Buffer.concat(err).toString('utf8')}`));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}

// ---------------------------------------------------------------------------------------------

export interface PostgresServer {
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly user: 'postgres';
  readonly password: string;
  readonly dir: string;
  /** Runs SQL through psql (ON_ERROR_STOP, unaligned, tuples only) and returns its output. */
  psql(sql: string, database?: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startPostgres(): Promise<PostgresServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'stash-pg-'));
  const { uid, gid } = await userIds('postgres');
  await chown(dir, uid, gid);
  const data = path.join(dir, 'data');
  const password = newPassword();
  const pwfile = path.join(dir, 'pwfile');
  await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
  await chown(pwfile, uid, gid);
  await execFileAsync('runuser', ['-u', 'postgres', '--', path.join(POSTGRES_BIN, 'initdb'), '-D', data, '-U', 'postgres',
    '--auth=scram-sha-256', `--pwfile=${pwfile}`, '--encoding=UTF8', '--locale=C.UTF-8']);
  await rm(pwfile);
  // Pods on the test node reach this loopback server through the node's DNAT from its bridge
  // gateway (scripts/node.sh): they connect from the pod network, with the password like anyone.
  await appendFile(path.join(data, 'pg_hba.conf'), 'host all all 0.0.0.0/0 scram-sha-256\n');
  const port = await freePort();
  const logFile = path.join(dir, 'postgres.log');
  await writeFile(logFile, '');
  await chown(logFile, uid, gid);
  const logFd = openSync(logFile, 'a');
  const child = spawn(path.join(POSTGRES_BIN, 'postgres'), ['-D', data, '-p', String(port),
    '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'max_connections=40'], { uid, gid, stdio: ['ignore', 'ignore', logFd] });
  closeSync(logFd);
  const forget = cleanupOnExit(child, dir, 'SIGQUIT');
  const env = { PGPASSWORD: password };
  const psql = (sql: string, database = 'postgres') =>
    runClient('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', database, '-v', 'ON_ERROR_STOP=1', '-X', '-q', '-A', '-t', '-f', '-'], env, sql);
  await waitFor('postgres', async () => (await psql('select 1')).trim() === '1', child, logFile);
  return {
    host: '127.0.0.1', port, user: 'postgres', password, dir, psql,
    async stop() {
      forget();
      await stopChild(child, 'SIGINT');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------

export interface MariadbServer {
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly user: 'root';
  readonly password: string;
  readonly dir: string;
  /** Runs SQL through the mariadb client (batch, no column names) and returns its output. */
  sql(sql: string, database?: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startMariadb(): Promise<MariadbServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'stash-mariadb-'));
  const { uid, gid } = await userIds('mysql');
  await chown(dir, uid, gid);
  const data = path.join(dir, 'data');
  const socket = path.join(dir, 'mariadb.sock');
  await execFileAsync('mariadb-install-db', ['--no-defaults', '--user=mysql', `--datadir=${data}`, '--skip-test-db', '--auth-root-authentication-method=socket'], { maxBuffer: 16 << 20 });
  const port = await freePort();
  const logFile = path.join(dir, 'mariadb.log');
  await writeFile(logFile, '');
  await chown(logFile, uid, gid);
  const child = spawn('mariadbd', ['--no-defaults', '--user=mysql', `--datadir=${data}`, `--socket=${socket}`, `--port=${port}`,
    '--bind-address=127.0.0.1', `--pid-file=${path.join(dir, 'mariadb.pid')}`, `--log-error=${logFile}`, '--innodb-buffer-pool-size=64M',
    '--innodb-log-file-size=16M', '--skip-log-bin', '--max-connections=40', '--event-scheduler=OFF'], { stdio: 'ignore' });
  const forget = cleanupOnExit(child, dir, 'SIGKILL');
  // OS root reaches root@localhost through unix_socket authentication until a password is set.
  await waitFor('mariadbd', async () => existsSync(socket) && (await runClient('mariadb', ['--no-defaults', `--socket=${socket}`, '-uroot', '-e', 'select 1'], {})).includes('1'), child, logFile);
  const password = newPassword();
  const quoted = `'${password.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  await runClient('mariadb', ['--no-defaults', `--socket=${socket}`, '-uroot'], {},
    `ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD(${quoted});\n` +
    `CREATE USER root@'127.0.0.1' IDENTIFIED BY ${quoted};\nGRANT ALL PRIVILEGES ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;\n` +
    // pods on the test node, through the node's DNAT to this loopback server (scripts/node.sh)
    `CREATE USER root@'%' IDENTIFIED BY ${quoted};\nGRANT ALL PRIVILEGES ON *.* TO root@'%' WITH GRANT OPTION;\nFLUSH PRIVILEGES;\n`);
  const env = { MYSQL_PWD: password };
  const sql = (text: string, database?: string) =>
    runClient('mariadb', ['--no-defaults', '-h', '127.0.0.1', '-P', String(port), '-uroot', '--batch', '--skip-column-names', ...(database ? [database] : [])], env, text);
  return {
    host: '127.0.0.1', port, user: 'root', password, dir, sql,
    async stop() {
      forget();
      await stopChild(child, 'SIGTERM', 30_000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------

export interface RedisServer {
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly password: string;
  readonly dir: string;
  /** Runs one redis-cli command (arguments as separate strings) and returns its raw output. */
  cli(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export async function startRedis(): Promise<RedisServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'stash-redis-'));
  const { uid, gid } = await userIds('redis');
  await chown(dir, uid, gid);
  await chmod(dir, 0o700);
  const port = await freePort();
  const password = randomBytes(18).toString('base64url');
  const logFile = path.join(dir, 'redis.log');
  const config = [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, `logfile ${logFile}`, 'daemonize no', 'save ""', 'appendonly no',
    `requirepass "${password}"`, 'protected-mode yes'].join('\n');
  // The configuration (with the password) goes through stdin, never the command line.
  const child = spawn('redis-server', ['-'], { uid, gid, stdio: ['pipe', 'ignore', 'ignore'] });
  child.stdin?.end(`${config}\n`);
  const forget = cleanupOnExit(child, dir, 'SIGKILL');
  const env = { REDISCLI_AUTH: password };
  const cli = (...args: string[]) => runClient('redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--no-raw', ...args], env);
  await waitFor('redis-server', async () => (await cli('PING')).trim() === 'PONG', child, logFile);
  return {
    host: '127.0.0.1', port, password, dir, cli,
    async stop() {
      forget();
      await stopChild(child, 'SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}
