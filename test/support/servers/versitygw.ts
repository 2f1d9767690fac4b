/**
 * A real S3 server: versitygw (Apache-2.0) serving its posix backend from a temp dir on loopback.
 * Built by scripts/tools.sh ensure versitygw.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { toolPath } from '../tools.ts';
import { acceptsConnections, freePort, startProcess, tempDir, waitReady } from './process.ts';

export interface S3Server {
  /** e.g. `http://127.0.0.1:41234` */
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly dir: string;
  stop(): Promise<void>;
}

export async function startVersitygw(): Promise<S3Server> {
  const binary = toolPath('versitygw');
  const dir = await tempDir('versitygw');
  const root = path.join(dir, 'buckets');
  const sidecar = path.join(dir, 'meta'); // metadata in files, so the temp dir needs no xattr support
  await mkdir(root);
  await mkdir(sidecar);
  const port = await freePort();
  const accessKeyId = `stash${randomBytes(6).toString('hex')}`;
  const secretAccessKey = randomBytes(24).toString('base64url');
  const server = await startProcess('versitygw', binary, ['--port', `127.0.0.1:${port}`, 'posix', '--sidecar', sidecar, root], {
    logFile: path.join(dir, 'versitygw.log'),
    env: { ROOT_ACCESS_KEY_ID: accessKeyId, ROOT_SECRET_ACCESS_KEY: secretAccessKey },
  });
  await waitReady(server, `versitygw on 127.0.0.1:${port}`, () => acceptsConnections(port));
  return {
    endpoint: `http://127.0.0.1:${port}`, accessKeyId, secretAccessKey, dir,
    async stop() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
