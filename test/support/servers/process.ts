/**
 * Starting and stopping the storage servers the integration tests run: each a real process on
 * loopback, its output in a log file, stopped (SIGTERM, then SIGKILL) when the test is done.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, open, readFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly logFile: string;
  /** Set when the process could not be started at all. */
  readonly spawnError: Error | undefined;
  /** Stops the process and waits for it to exit. Harmless when it already did. */
  stop(): Promise<void>;
}

/** A fresh private temp directory for one server. */
export function tempDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), `stash-${prefix}-`));
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('could not read the port of a probe listener on 127.0.0.1');
  return address.port;
}

/**
 * Spawns `command args` with stdout and stderr appended to `logFile`. Secrets go in `env`, never in
 * `args` (which `ps` shows).
 */
export async function startProcess(name: string, command: string, args: readonly string[], options: {
  readonly logFile: string; readonly cwd?: string; readonly env?: Readonly<Record<string, string>>;
}): Promise<ServerProcess> {
  const log = await open(options.logFile, 'a');
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', log.fd, log.fd],
  });
  let spawnError: Error | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (err) => { spawnError = err; resolve(); }); // e.g. ENOENT: the binary is missing
  });
  await log.close();
  return {
    child,
    logFile: options.logFile,
    get spawnError() { return spawnError; },
    async stop() {
      if (spawnError || child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killed = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killed);
    },
  };
}

/** Waits until `ready()` is true; fails early, with the log's tail, if the process exits. */
export async function waitReady(server: ServerProcess, what: string, ready: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (server.spawnError) throw new Error(`${what} could not be started: ${server.spawnError.message}; is it installed?`);
    if (server.child.exitCode !== null || server.child.signalCode !== null) {
      throw new Error(`${what} exited (${server.child.exitCode ?? server.child.signalCode}) before it was ready; its log ${server.logFile} ends:\n${await logTail(server.logFile)}`);
    }
    if (await ready().catch(() => false)) return;
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`${what} was not ready after ${timeoutMs} ms; its log ${server.logFile} ends:\n${await logTail(server.logFile)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** True once something accepts TCP connections on 127.0.0.1:port. */
export function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

export async function logTail(file: string, lines = 20): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-lines).join('\n');
}
