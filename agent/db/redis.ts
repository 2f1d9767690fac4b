/**
 * Redis: back up a consistent RDB (`redis-cli --rdb -`, the server forks and streams a point-in-time
 * snapshot as it does for a new replica); restore it into the running server by briefly acting as
 * its master. The agent listens on a port, tells the server `REPLICAOF <agent> <port>`, answers the
 * replication handshake with FULLRESYNC and streams the RDB from `restic dump` straight into the
 * socket (EOF-marker framing, so its size need not be known), waits until the server has loaded
 * it, then sends `REPLICAOF NO ONE`. The server replaces its whole dataset with the RDB's (every
 * logical database, every type, TTLs) without a restart and without access to its disk.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Readable } from 'node:stream';
import { DatabaseConfigError, DatabaseRecoveryError } from './errors.ts';
import { address, redact, runQuery } from './process.ts';
import type { DatabaseConnection, DumpStep, ToolCommand, ToolNames } from './types.ts';

export const REDIS_TOOLS: ToolNames = { dump: 'redis-cli', restore: 'redis-cli', client: 'redis-cli' };

function env(conn: DatabaseConnection): Record<string, string> {
  return conn.password !== undefined ? { REDISCLI_AUTH: conn.password } : {};
}

/** A redis-cli invocation against the server (the password in REDISCLI_AUTH, never `-a`). */
export function cli(conn: DatabaseConnection, args: readonly string[], tools: ToolNames = REDIS_TOOLS): ToolCommand {
  return {
    command: [tools.client, '-h', conn.host, '-p', String(conn.port), ...(conn.user ? ['--user', conn.user] : []), ...args],
    env: env(conn),
  };
}

/** One snapshot `redis.rdb` holding every logical database. */
export function planBackup(conn: DatabaseConnection, tools = REDIS_TOOLS): DumpStep[] {
  if (conn.databases.length > 0) {
    throw new DatabaseConfigError(`Redis backups always hold every logical database (an RDB cannot be split), but databases ${JSON.stringify(conn.databases)} were named; ` +
      'remove the Backup\'s args (or --database flags) for a Redis target');
  }
  return [{ database: undefined, filename: 'redis.rdb', tags: ['stash.engine=redis', 'stash.database=all'], dump: cli(conn, ['--rdb', '-'], { ...tools, client: tools.dump }) }];
}

/** `INFO` as key -> value. */
export function parseInfo(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) map.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return map;
}

/** Keys per logical database from `INFO keyspace` (`db0:keys=3,expires=1,...`). */
export function keyspace(info: Map<string, string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of info) {
    const m = /^keys=(\d+)/.exec(value);
    if (/^db\d+$/.test(key) && m?.[1]) out[key] = Number(m[1]);
  }
  return out;
}

/** RDB format version each Redis release line reads (highest first): `REDIS00NN` header. */
const RDB_VERSIONS: readonly (readonly [major: number, minor: number, rdb: number])[] = [
  [7, 4, 12], [7, 2, 11], [7, 0, 10], [5, 0, 9], [4, 0, 8], [3, 2, 7], [2, 6, 6],
];

/** The highest RDB version a server with this `redis_version` loads (undefined: unknown/too old). */
export function maxRdbVersion(redisVersion: string): number | undefined {
  const [major = Number.NaN, minor = Number.NaN] = redisVersion.split('.').map(Number);
  if (!Number.isFinite(major) || !Number.isFinite(minor)) return undefined;
  for (const [maj, min, rdb] of RDB_VERSIONS) if (major > maj || (major === maj && minor >= min)) return rdb;
  return undefined;
}

/** The RDB version in a `REDIS00NN` header, or undefined if it is not one. */
export function rdbVersion(header: Buffer): number | undefined {
  const m = /^REDIS(\d{4})$/.exec(header.toString('latin1'));
  return m?.[1] ? Number(m[1]) : undefined;
}

/** Reads the first `n` bytes of a paused stream and puts them back. */
async function peek(stream: Readable, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  while (length < n) {
    const chunk = stream.read() as Buffer | null;
    if (chunk) {
      chunks.push(chunk);
      length += chunk.length;
      continue;
    }
    if (stream.readableEnded || stream.destroyed) break;
    await new Promise<void>((resolve) => {
      const done = () => { stream.off('readable', done); stream.off('end', done); stream.off('close', done); stream.off('error', done); resolve(); };
      stream.on('readable', done).on('end', done).on('close', done).on('error', done);
    });
  }
  const all = Buffer.concat(chunks);
  if (all.length > 0) stream.unshift(all);
  return all.subarray(0, n);
}

/** Parses RESP arrays of bulk strings (what a replica sends its master) from a growing buffer. */
function parseCommands(buffer: Buffer): { commands: string[][]; rest: Buffer } {
  const commands: string[][] = [];
  let pos = 0;
  outer: while (pos < buffer.length) {
    if (buffer[pos] !== 0x2a /* '*' */) {
      // Inline command (e.g. a bare newline keepalive): up to the end of the line.
      const nl = buffer.indexOf(0x0a, pos);
      if (nl < 0) break;
      const words = buffer.subarray(pos, nl).toString('utf8').trim().split(/\s+/).filter(Boolean);
      if (words.length > 0) commands.push(words);
      pos = nl + 1;
      continue;
    }
    const headerEnd = buffer.indexOf('\r\n', pos);
    if (headerEnd < 0) break;
    const count = Number(buffer.subarray(pos + 1, headerEnd).toString());
    let p = headerEnd + 2;
    const args: string[] = [];
    for (let i = 0; i < count; i++) {
      const lenEnd = buffer.indexOf('\r\n', p);
      if (lenEnd < 0 || buffer[p] !== 0x24 /* '$' */) break outer;
      const len = Number(buffer.subarray(p + 1, lenEnd).toString());
      if (buffer.length < lenEnd + 2 + len + 2) break outer;
      args.push(buffer.subarray(lenEnd + 2, lenEnd + 2 + len).toString('utf8'));
      p = lenEnd + 2 + len + 2;
    }
    commands.push(args);
    pos = p;
  }
  return { commands, rest: Buffer.from(buffer.subarray(pos)) };
}

export interface RedisRestoreOptions {
  /** Where the agent listens for the server's replication connection (default 0.0.0.0). */
  readonly listenHost?: string;
  /** The address the server uses to reach the agent (the agent pod's IP; default 127.0.0.1). */
  readonly advertiseHost?: string;
  /** How long the whole transfer and load may take (default 30 minutes). */
  readonly timeoutMs?: number;
  readonly tools?: ToolNames;
}

/**
 * Streams `rdb` into the running server at `conn` (see the module comment). Resolves with the keys
 * per logical database once the server has loaded it and is a master again; rejects (and detaches
 * the server with REPLICAOF NO ONE) if the stream, the transfer or the load fails. A stream that
 * is not an RDB the server can read is refused before the server is touched; a failed transfer
 * leaves the server's dataset as it was (a replica only swaps datasets after a complete
 * transfer); a load that fails after the transfer (disk, memory) leaves it empty, as any failed
 * full resync does.
 */
export async function restoreRdb(conn: DatabaseConnection, source: { readonly stdout: Readable; readonly done: Promise<void> }, options: RedisRestoreOptions = {}): Promise<{ keys: Record<string, number>; keysLoaded: number }> {
  const tools = options.tools ?? REDIS_TOOLS;
  const rdb = source.stdout;
  // Until the marker is sent the server only buffers the transfer; it swaps datasets after it.
  // So the marker goes out only once restic has exited successfully: a failed or truncated
  // `restic dump` never replaces the server's data.
  let sourceFailed: Error | undefined;
  source.done.catch((err: unknown) => { sourceFailed = err instanceof Error ? err : new Error(String(err)); });
  const secrets = [conn.password];
  const timeoutMs = options.timeoutMs ?? 30 * 60_000;
  const run = (args: string[], what: string) => runQuery(cli(conn, args, tools), what, secrets);
  const fail = (message: string, cause?: unknown) => new DatabaseRecoveryError(redact(message, secrets), { cause });

  // Refuse an RDB the server cannot read before touching the server: a replica empties its
  // dataset before it loads, so a version it rejects would leave it empty.
  const header = await peek(rdb, 9);
  const version = rdbVersion(header);
  // A short header means the stream already ended: let restic's own error, if any, explain it.
  if (header.length < 9) await source.done.catch(() => undefined);
  if (sourceFailed) throw fail(`reading the snapshot with restic dump failed: ${sourceFailed.message}`, sourceFailed);
  if (version === undefined) throw fail(`the snapshot does not hold a Redis RDB (it starts with ${JSON.stringify(header.toString('latin1'))}); pick a snapshot made by a Redis backup`);
  const serverVersion = parseInfo(await run(['INFO', 'server'], 'INFO server')).get('redis_version') ?? '';
  const readable = maxRdbVersion(serverVersion);
  if (readable === undefined || version > readable) {
    throw fail(`the snapshot holds RDB format ${version}, which the redis server at ${address(conn)} (redis_version ${serverVersion || 'unknown'}) ` +
      `${readable === undefined ? 'may not read' : `cannot read (it reads up to ${readable})`}; recover into a Redis at least as new as the one backed up`);
  }

  const marker = randomBytes(20).toString('hex');
  let socketRef: net.Socket | undefined;
  let reconnected = false;
  let keepalive: NodeJS.Timeout | undefined;
  let transferError: Error | undefined;
  let transferred = false;
  const server = net.createServer((socket) => {
    if (socketRef) {
      // The server connects again only when the transfer or the load failed.
      reconnected = true;
      socket.destroy();
      return;
    }
    socketRef = socket;
    let buffer: Buffer = Buffer.alloc(0);
    let syncing = false;
    socket.on('error', (err) => { transferError ??= err; });
    socket.on('data', (data: Buffer) => {
      const parsed = parseCommands(Buffer.concat([buffer, data]));
      buffer = parsed.rest;
      for (const [name = '', ...args] of parsed.commands) {
        const command = name.toUpperCase();
        if (command === 'PING') socket.write('+PONG\r\n');
        else if (command === 'AUTH') socket.write('+OK\r\n');
        else if (command === 'REPLCONF') {
          // A master never answers ACK/GETACK; it acknowledges the handshake's REPLCONFs.
          const sub = (args[0] ?? '').toUpperCase();
          if (sub !== 'ACK' && sub !== 'GETACK') socket.write('+OK\r\n');
        } else if ((command === 'PSYNC' || command === 'SYNC') && !syncing) {
          syncing = true;
          socket.write(`+FULLRESYNC ${randomBytes(20).toString('hex')} 0\r\n$EOF:${marker}\r\n`);
          rdb.on('error', (err) => { transferError ??= err; socket.destroy(); });
          rdb.on('data', (chunk: Buffer) => { if (!socket.write(chunk)) rdb.pause(); });
          socket.on('drain', () => rdb.resume());
          rdb.on('end', () => {
            source.done.then(() => {
              socket.write(marker, () => { transferred = true; });
              keepalive = setInterval(() => socket.write('*1\r\n$4\r\nPING\r\n'), 5000);
            }, (err: unknown) => {
              transferError ??= err instanceof Error ? err : new Error(String(err));
              socket.destroy();
            });
          });
        } else if (!syncing) socket.write(`-ERR unknown command '${command}'\r\n`);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, options.listenHost ?? '0.0.0.0', () => resolve());
  });
  const listening = server.address();
  const port = typeof listening === 'object' && listening ? listening.port : 0;
  const advertise = options.advertiseHost ?? '127.0.0.1';
  let attached = false;
  try {
    const reply = (await run(['REPLICAOF', advertise, String(port)], `REPLICAOF on the redis server at ${address(conn)}`)).trim();
    if (!/^OK/.test(reply)) throw fail(`the redis server at ${address(conn)} refused REPLICAOF: ${reply}; the restore needs a user allowed to run REPLICAOF and INFO, and Redis not in cluster mode`);
    attached = true;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (sourceFailed && !transferError) transferError = sourceFailed;
      if (reconnected) throw fail(`the redis server at ${address(conn)} did not load the RDB and reconnected to retry; its log says why (e.g. not enough disk or memory)`);
      if (transferError) throw fail(`streaming the RDB to the redis server at ${address(conn)} failed: ${transferError.message}`, transferError);
      if (transferred) {
        const info = parseInfo(await run(['INFO', 'replication'], 'INFO replication'));
        const persistence = parseInfo(await run(['INFO', 'persistence'], 'INFO persistence'));
        if (info.get('master_link_status') === 'up' && info.get('master_sync_in_progress') === '0' && persistence.get('loading') === '0') break;
      }
      if (Date.now() > deadline) {
        throw fail(`the redis server at ${address(conn)} did not ${socketRef ? 'finish loading the RDB' : `connect to the agent at ${advertise}:${port}`} within ${timeoutMs} ms; ` +
          (socketRef ? 'raise the timeout for large datasets' : 'set the advertised host (--redis-advertise-host / POD_IP) to an address the server can reach'));
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const noOne = (await run(['REPLICAOF', 'NO', 'ONE'], 'REPLICAOF NO ONE')).trim();
    attached = false;
    if (!/^OK/.test(noOne)) throw fail(`REPLICAOF NO ONE on the redis server at ${address(conn)} answered ${noOne}`);
    const persistence = parseInfo(await run(['INFO', 'persistence'], 'INFO persistence'));
    const keys = keyspace(parseInfo(await run(['INFO', 'keyspace'], 'INFO keyspace')));
    return { keys, keysLoaded: Number(persistence.get('rdb_last_load_keys_loaded') ?? Number.NaN) };
  } finally {
    if (keepalive) clearInterval(keepalive);
    if (attached) await run(['REPLICAOF', 'NO', 'ONE'], 'REPLICAOF NO ONE').catch(() => undefined);
    socketRef?.destroy();
    // The driver kills restic when its stream is destroyed before the end.
    source.stdout.on('error', () => undefined);
    if (!source.stdout.destroyed) source.stdout.destroy();
    await source.done.catch(() => undefined);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
