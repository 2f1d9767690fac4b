/**
 * A real SFTP server: Debian's OpenSSH sshd run as a process of its own (not the system sshd) with
 * its own config, host key and authorized_keys, listening on a loopback port, serving
 * `internal-sftp` to the current user with key authentication only.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { acceptsConnections, freePort, startProcess, tempDir, waitReady } from './process.ts';

const run = promisify(execFile);
const SSHD = '/usr/sbin/sshd';

export interface SftpServer {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  /** An empty directory the user may write to: the repository goes below it. */
  readonly dataDir: string;
  /** OpenSSH private key authorized on the server (what a Secret's SSH_PRIVATE_KEY holds). */
  readonly clientPrivateKey: string;
  /** A known_hosts line for this server (what a Secret's SSH_KNOWN_HOSTS holds). */
  readonly knownHosts: string;
  /** Another valid private key that the server does not authorize. */
  readonly strangerPrivateKey: string;
  /** What sshd has logged so far (LogLevel VERBOSE: connections, accepted and failed keys). */
  log(): Promise<string>;
  stop(): Promise<void>;
}

async function keygen(file: string): Promise<{ privateKey: string; publicKey: string }> {
  // -N '' is an empty passphrase, not a secret: the key itself is written to a 0600 file.
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'stash-test', '-f', file]);
  return { privateKey: await readFile(file, 'utf8'), publicKey: (await readFile(`${file}.pub`, 'utf8')).trim() };
}

export async function startSshd(): Promise<SftpServer> {
  const dir = await tempDir('sshd');
  const dataDir = path.join(dir, 'data');
  await mkdir(dataDir);
  const [hostKey, client, stranger] = await Promise.all([
    keygen(path.join(dir, 'host_ed25519')), keygen(path.join(dir, 'client_ed25519')), keygen(path.join(dir, 'stranger_ed25519')),
  ]);
  await writeFile(path.join(dir, 'authorized_keys'), client.publicKey + '\n', { mode: 0o600 });
  const user = os.userInfo().username;
  const port = await freePort();
  const config = [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${path.join(dir, 'host_ed25519')}`,
    `PidFile ${path.join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
    'StrictModes no', // the key files live below /tmp, which is world-writable
    'UsePAM no',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PubkeyAuthentication yes',
    'PermitRootLogin prohibit-password',
    `AllowUsers ${user}`,
    'Subsystem sftp internal-sftp',
    'LogLevel VERBOSE',
  ].join('\n') + '\n';
  const configFile = path.join(dir, 'sshd_config');
  await writeFile(configFile, config);
  if (process.getuid?.() === 0) {
    // sshd running as root insists on its privilege-separation directory (what systemd's
    // RuntimeDirectory=sshd creates for the system sshd); creating it changes nothing else.
    await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  }
  const logFile = path.join(dir, 'sshd.log');
  const server = await startProcess('sshd', SSHD, ['-D', '-e', '-f', configFile], { logFile });
  await waitReady(server, `sshd on 127.0.0.1:${port}`, () => acceptsConnections(port));
  const hostPublic = hostKey.publicKey.split(' ').slice(0, 2).join(' ');
  return {
    host: '127.0.0.1', port, user, dataDir,
    clientPrivateKey: client.privateKey,
    strangerPrivateKey: stranger.privateKey,
    knownHosts: `[127.0.0.1]:${port} ${hostPublic}\n`,
    log: () => readFile(logFile, 'utf8'),
    async stop() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
