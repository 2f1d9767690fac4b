/**
 * A real Azure Blob endpoint for restic: Azurite (Microsoft's emulator, npm `azurite`) over HTTPS.
 *
 * restic 0.19's Azure backend always dials `https://<account>.blob.<AZURE_ENDPOINT_SUFFIX>/<container>`
 * (internal/backend/azure/azure.go) and has no endpoint or port option. So:
 *  - Azurite serves HTTPS with a certificate made here for `*.blob.<suffix>`; restic trusts it
 *    through `--cacert` (the target's CA_CERT_DATA file);
 *  - Azurite's production-style URL mode takes the account from the host name's first label;
 *  - the host name resolves nowhere, so restic reaches Azurite through a loopback HTTP CONNECT
 *    proxy (`HTTPS_PROXY`, which restic's transport honours via http.ProxyFromEnvironment) that
 *    forwards only `*.blob.<suffix>:443` to Azurite's port. TLS runs end to end through it.
 * The account and key are generated per run (AZURITE_ACCOUNTS), so wrong keys are really refused.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../tools.ts';
import { acceptsConnections, freePort, startProcess, tempDir, waitReady } from './process.ts';

const run = promisify(execFile);

export interface AzureServer {
  readonly accountName: string;
  /** Base64 account key (what a Secret's AZURE_ACCOUNT_KEY holds). */
  readonly accountKey: string;
  /** What a Secret's AZURE_ENDPOINT_SUFFIX holds. */
  readonly endpointSuffix: string;
  /** PEM certificate restic must trust (what a Secret's CA_CERT_DATA holds). */
  readonly caCert: string;
  /** Environment restic needs to reach the emulator: HTTPS_PROXY pointing at the loopback proxy. */
  readonly clientEnv: Readonly<Record<string, string>>;
  stop(): Promise<void>;
}

export const AZURITE_ENDPOINT_SUFFIX = 'azurite.stash.test';

export async function startAzurite(): Promise<AzureServer> {
  const dir = await tempDir('azurite');
  const workspace = path.join(dir, 'workspace');
  await mkdir(workspace);
  const suffix = AZURITE_ENDPOINT_SUFFIX;
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-keyout', keyFile, '-out', certFile, '-subj', '/CN=stash-azurite-test',
    '-addext', `subjectAltName=DNS:*.blob.${suffix}`, '-addext', 'basicConstraints=critical,CA:TRUE',
  ]);
  const accountName = `stash${randomBytes(4).toString('hex')}`;
  const accountKey = randomBytes(32).toString('base64');
  const port = await freePort();
  const server = await startProcess('azurite-blob', process.execPath, [
    path.join(repoRoot, 'node_modules/azurite/dist/src/blob/main.js'),
    '--blobHost', '127.0.0.1', '--blobPort', String(port), '--location', workspace,
    '--cert', certFile, '--key', keyFile, '--disableTelemetry',
  ], { logFile: path.join(dir, 'azurite.log'), cwd: dir, env: { AZURITE_ACCOUNTS: `${accountName}:${accountKey}` } });
  await waitReady(server, `azurite-blob on 127.0.0.1:${port}`, () => acceptsConnections(port));

  const proxy = await startConnectProxy(`.blob.${suffix}`, port);
  return {
    accountName, accountKey, endpointSuffix: suffix,
    caCert: await readFile(certFile, 'utf8'),
    clientEnv: { HTTPS_PROXY: `http://127.0.0.1:${proxy.port}`, NO_PROXY: '' },
    async stop() {
      await proxy.close();
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** An HTTP CONNECT proxy on loopback that tunnels `*<hostSuffix>:443` to 127.0.0.1:targetPort and refuses anything else. */
async function startConnectProxy(hostSuffix: string, targetPort: number): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const proxy = http.createServer((_req, res) => {
    res.writeHead(405).end('only CONNECT is served here\n');
  });
  proxy.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    const [host, port] = (req.url ?? '').split(':');
    if (!host?.endsWith(hostSuffix) || port !== '443') {
      client.end('HTTP/1.1 403 Forbidden\r\n\r\n');
      return;
    }
    const upstream = net.connect({ host: '127.0.0.1', port: targetPort }, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.once('close', () => sockets.delete(upstream));
    upstream.once('error', () => client.destroy());
    client.once('error', () => upstream.destroy());
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  const address = proxy.address();
  if (address === null || typeof address === 'string') throw new Error('the CONNECT proxy for Azurite has no TCP address');
  return {
    port: address.port,
    async close() {
      for (const s of sockets) s.destroy();
      proxy.close();
      await once(proxy, 'close');
    },
  };
}
