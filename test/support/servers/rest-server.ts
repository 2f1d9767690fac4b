/**
 * A real restic REST server (github.com/restic/rest-server) on loopback, serving a temp dir, with
 * an htpasswd file so requests without the right credentials are refused.
 * Built by scripts/tools.sh ensure rest-server.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { toolPath } from '../tools.ts';
import { freePort, startProcess, tempDir, waitReady } from './process.ts';

export interface RestServer {
  /** e.g. `http://127.0.0.1:41234/` */
  readonly url: string;
  readonly username: string;
  readonly password: string;
  stop(): Promise<void>;
}

export async function startRestServer(): Promise<RestServer> {
  const binary = toolPath('rest-server');
  const dir = await tempDir('rest-server');
  const data = path.join(dir, 'data');
  await mkdir(data);
  const port = await freePort();
  const username = 'stash';
  const password = randomBytes(18).toString('base64url');
  // rest-server accepts {SHA} (and bcrypt) htpasswd entries: {SHA} = base64(sha1(password)).
  const htpasswd = path.join(dir, '.htpasswd');
  await writeFile(htpasswd, `${username}:{SHA}${createHash('sha1').update(password).digest('base64')}\n`, { mode: 0o600 });
  const server = await startProcess('rest-server', binary, [
    '--path', data, '--listen', `127.0.0.1:${port}`, '--htpasswd-file', htpasswd,
  ], { logFile: path.join(dir, 'rest-server.log') });
  const url = `http://127.0.0.1:${port}/`;
  // Without credentials the server answers 401: that proves both that it is up and that auth is on.
  await waitReady(server, `rest-server on 127.0.0.1:${port}`, async () => (await fetch(url)).status === 401);
  return {
    url, username, password,
    async stop() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
