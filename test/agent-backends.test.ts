// Each storage backend against a real server on loopback: the target from resticTargetFor drives
// restic (through the agent's restic driver) to init, back up a generated tree, list, restore and
// compare bytes; then wrong credentials must fail without the secret in any error text.
//   S3: versitygw posix gateway; REST: restic's rest-server with htpasswd; SFTP: OpenSSH sshd;
//   Azure Blob: Azurite over HTTPS (see test/support/servers/azurite.ts for how restic reaches it).
// GCS, B2 and Swift have no server here: agent/backends/backends.test.ts checks their mapping.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { resticTargetFor, type SecretData } from '../agent/backends/backends.ts';
import { createRestic } from '../agent/restic/restic.ts';
import { BackendCredentialsError, ResticError } from '../agent/restic/errors.ts';
import type { ResticTarget } from '../agent/restic/target.ts';
import { backend as backendSchema } from '../shared/api/backends.ts';
import { toolPath } from './support/tools.ts';
import { startAzurite, type AzureServer } from './support/servers/azurite.ts';
import { startRestServer, type RestServer } from './support/servers/rest-server.ts';
import { startSshd, type SftpServer } from './support/servers/sshd.ts';
import { startVersitygw, type S3Server } from './support/servers/versitygw.ts';

const restic = toolPath('restic');
const SECRET_NAME = 'storage';
let work: string;

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'stash-backends-test-'));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

/** A small tree with random (incompressible) and text content, an empty file and a nested dir. */
async function generateTree(dir: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>([
    ['random.bin', randomBytes(300_000)],
    ['notes.txt', Buffer.from(`generated ${new Date().toISOString()}\n`.repeat(50))],
    ['empty', Buffer.alloc(0)],
    ['nested/deeper/data.bin', randomBytes(12_345)],
  ]);
  for (const [rel, content] of files) {
    await mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
    await writeFile(path.join(dir, rel), content);
  }
  return files;
}

/** init, backup, snapshots, restore, byte comparison: the whole round trip through one target. */
async function roundTrip(name: string, target: ResticTarget): Promise<void> {
  const base = await mkdtemp(path.join(work, `${name}-`));
  const source = path.join(base, 'source');
  const files = await generateTree(source);
  const driver = createRestic(target, { binary: restic, cacheDir: path.join(base, 'cache') });
  await driver.init();
  assert.equal(await driver.exists(), true, `${name}: repository should exist after init`);
  await driver.init(); // harmless the second time
  const summary = await driver.backupPaths([source], { host: 'host-0', tags: ['stash-backends-test'] });
  assert.equal(summary.totalFilesProcessed, files.size);
  const snapshots = await driver.snapshots({ host: 'host-0', tags: ['stash-backends-test'] });
  assert.equal(snapshots.length, 1);
  assert.equal(snapshots[0]?.id, summary.snapshotId);
  assert.deepEqual(snapshots[0]?.paths, [source]);
  const restored = path.join(base, 'restored');
  await driver.restore(summary.snapshotId, { target: restored });
  for (const [rel, content] of files) {
    const back = await readFile(path.join(restored, source, rel));
    assert.ok(back.equals(content), `${name}: restored ${rel} differs from the original`);
  }
}

/**
 * The target must be refused, and no error text (the driver's message and detail, and restic's own
 * stderr when run directly) may contain any of `secrets`.
 */
interface RefusalExpectations {
  /** What the driver's error message must say (the fix it names). */
  readonly message?: RegExp;
  /**
   * restic's own error when its reader of the backend program's stderr loses the race with that
   * program's exit (restic 0.19's sftp backend): then `refusal` may be missing from its stderr,
   * and the caller checks the refusal on the server's side instead.
   */
  readonly orRaced?: RegExp;
}

async function assertRefused(name: string, target: ResticTarget, refusal: RegExp, secrets: readonly string[], expect: RefusalExpectations = {}): Promise<void> {
  const driver = createRestic(target, { binary: restic, cacheDir: path.join(work, `${name}-refused-cache`) });
  const err = await driver.snapshots().then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof ResticError, `${name}: wrong credentials should fail with a ResticError, got ${String(err)}`);
  if (expect.message) assert.match(err.message, expect.message, `${name}: the driver's message does not name the fix`);
  const raw = await runRaw(target, ['snapshots', '--no-lock']);
  assert.equal(raw.retrying, false);
  assert.notEqual(raw.code, 0, `${name}: restic accepted wrong credentials`);
  const raced = expect.orRaced !== undefined && !refusal.test(raw.stderr) && expect.orRaced.test(raw.stderr);
  if (!raced) assert.match(raw.stderr, refusal, `${name}: restic failed, but not with the expected refusal`);
  assertNoSecret(name, [err.message, err.detail, String(err.stack), raw.stdout, raw.stderr], secrets);
}

/**
 * For errors restic 0.19 does not treat as permanent (S3's SignatureDoesNotMatch: it retries them
 * for up to 15 minutes): restic must report the refusal in its first retry message, which must not
 * contain any of `secrets`; then the run is stopped.
 */
async function assertRefusedWithRetries(name: string, target: ResticTarget, refusal: RegExp, secrets: readonly string[]): Promise<void> {
  const raw = await runRaw(target, ['snapshots', '--no-lock'], { stopOnRetry: true });
  assert.equal(raw.retrying, true, `${name}: expected restic to report a retried error, it exited ${raw.code}: ${raw.stderr}`);
  assert.match(raw.stderr, refusal);
  assertNoSecret(name, [raw.stdout, raw.stderr], secrets);
}

function assertNoSecret(name: string, texts: readonly string[], secrets: readonly string[]): void {
  for (const text of texts) {
    for (const s of secrets) assert.ok(!text.includes(s), `${name}: an error text contains a secret value`);
  }
}

/**
 * restic run directly (not through the driver), files written as the contract says. With
 * `stopOnRetry`, restic is stopped at its first "returned error, retrying" report.
 */
async function runRaw(target: ResticTarget, args: readonly string[], options: { readonly stopOnRetry?: boolean } = {}): Promise<{ code: number | null; stdout: string; stderr: string; retrying: boolean }> {
  const dir = await mkdtemp(path.join(work, 'raw-'));
  const env: Record<string, string> = { ...target.env };
  const flags: string[] = [];
  for (const f of target.files) {
    const p = path.join(dir, f.name);
    await writeFile(p, f.content, { mode: 0o600 });
    if (f.envVar) env[f.envVar] = p;
    if (f.flag) flags.push(f.flag, p);
  }
  const childEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RESTIC_')));
  const child = spawn(restic, ['--repo', target.repository, '--cache-dir', path.join(dir, 'cache'), ...target.args, ...flags, ...args],
    { env: { ...childEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let retrying = false;
  child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
    if (options.stopOnRetry && !retrying && /returned error, retrying after/.test(stderr)) {
      retrying = true;
      child.kill('SIGTERM');
    }
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(killer);
  await rm(dir, { recursive: true, force: true });
  return { code, stdout, stderr, retrying };
}

const target = (backend: unknown, secret: SecretData): ResticTarget => resticTargetFor(backendSchema.parse(backend), secret);
const password = (): string => randomBytes(16).toString('base64url');

async function exists(file: string): Promise<boolean> {
  return access(file).then(() => true, () => false);
}

describe('local (a mounted hostPath / PVC / NFS volume)', () => {
  test('round trip into mountPath/subPath', async () => {
    const mount = await mkdtemp(path.join(work, 'local-mount-'));
    const t = target({ local: { mountPath: mount, subPath: 'demo/app', persistentVolumeClaim: { claimName: 'backups' } }, storageSecretName: SECRET_NAME }, { RESTIC_PASSWORD: password() });
    assert.equal(t.repository, path.join(mount, 'demo/app'));
    await roundTrip('local', t);
    assert.ok(await exists(path.join(mount, 'demo', 'app', 'config')), 'restic config not found below mountPath/subPath');
  });
});

describe('s3 on versitygw', () => {
  let s3: S3Server;
  before(async () => { s3 = await startVersitygw(); });
  after(async () => { await s3?.stop(); });

  test('round trip; the repository lands in the gateway\'s bucket directory', async () => {
    const spec = { s3: { endpoint: s3.endpoint, bucket: 'stash-repo', prefix: 'demo/app', region: 'us-east-1' }, storageSecretName: SECRET_NAME };
    const secret = { RESTIC_PASSWORD: password(), AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey };
    const t = target(spec, secret);
    assert.equal(t.repository, `s3:${s3.endpoint}/stash-repo/demo/app`);
    await roundTrip('s3', t);
    assert.ok(await exists(path.join(s3.dir, 'buckets', 'stash-repo', 'demo', 'app', 'config')), 'restic config object not found in the versitygw bucket directory');
  });

  test('a wrong secret access key is refused without leaking it', async () => {
    const wrong = randomBytes(24).toString('base64url');
    const secret = { RESTIC_PASSWORD: password(), AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: wrong };
    const t = target({ s3: { endpoint: s3.endpoint, bucket: 'stash-repo', prefix: 'demo/app' }, storageSecretName: SECRET_NAME }, secret);
    // restic 0.19 retries SignatureDoesNotMatch (not a permanent error for its s3 backend) for up to 15 min.
    await assertRefusedWithRetries('s3', t, /signature we calculated does not match|SignatureDoesNotMatch/, [wrong, secret.RESTIC_PASSWORD, s3.secretAccessKey]);
    // The driver stops restic at that first retry instead of waiting out restic's 15 minutes.
    const started = Date.now();
    const err = await createRestic(t, { binary: restic, cacheDir: path.join(work, 's3-refused-driver-cache') }).snapshots().then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof BackendCredentialsError, `s3: expected BackendCredentialsError, got ${String(err)}`);
    assert.match(err.message, /AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
    assert.ok(Date.now() - started < 60_000, 'restic was stopped at its first retry');
    assertNoSecret('s3', [err.message, err.detail], [wrong, secret.RESTIC_PASSWORD, s3.secretAccessKey]);
  });
});

describe('rest on rest-server with htpasswd', () => {
  let rest: RestServer;
  before(async () => { rest = await startRestServer(); });
  after(async () => { await rest?.stop(); });

  test('round trip with REST_SERVER_USERNAME / REST_SERVER_PASSWORD', async () => {
    const secret = { RESTIC_PASSWORD: password(), REST_SERVER_USERNAME: rest.username, REST_SERVER_PASSWORD: rest.password };
    const t = target({ rest: { url: `${rest.url}team-a/` }, storageSecretName: SECRET_NAME }, secret);
    assert.ok(!t.repository.includes(rest.password));
    await roundTrip('rest', t);
  });

  test('a wrong password, and no credentials at all, are refused without leaking', async () => {
    const wrong = randomBytes(18).toString('base64url');
    const spec = { rest: { url: `${rest.url}team-a/` }, storageSecretName: SECRET_NAME };
    const restic = password();
    await assertRefused('rest', target(spec, { RESTIC_PASSWORD: restic, REST_SERVER_USERNAME: rest.username, REST_SERVER_PASSWORD: wrong }), /401 Unauthorized/, [wrong, restic, rest.password]);
    await assertRefused('rest-anonymous', target(spec, { RESTIC_PASSWORD: restic }), /401 Unauthorized/, [restic, rest.password]);
  });
});

describe('sftp on OpenSSH sshd', () => {
  let sftp: SftpServer;
  before(async () => { sftp = await startSshd(); });
  after(async () => { await sftp?.stop(); });

  const spec = () => ({ sftp: { host: sftp.host, port: sftp.port, user: sftp.user, path: path.join(sftp.dataDir, 'repo') }, storageSecretName: SECRET_NAME });

  test('round trip with SSH_PRIVATE_KEY and SSH_KNOWN_HOSTS; the repository lands on the server', async () => {
    const t = target(spec(), { RESTIC_PASSWORD: password(), SSH_PRIVATE_KEY: sftp.clientPrivateKey, SSH_KNOWN_HOSTS: sftp.knownHosts });
    await roundTrip('sftp', t);
    assert.ok(await exists(path.join(sftp.dataDir, 'repo', 'config')), 'restic config not found in the sftp server\'s directory');
  });

  test('an unauthorized key, and a wrong host key, are refused without leaking the key', async () => {
    const restic = password();
    const stranger = target(spec(), { RESTIC_PASSWORD: restic, SSH_PRIVATE_KEY: sftp.strangerPrivateKey, SSH_KNOWN_HOSTS: sftp.knownHosts });
    const keyBody = (pem: string) => pem.split('\n').filter((l) => l && !l.startsWith('-----'));
    // restic 0.19 reads ssh's stderr in a goroutine that may lose the race with ssh's exit, so
    // ssh's own reason is sometimes missing from restic's output: sshd's log shows the refusal.
    const orRaced = /unable to start the sftp session/;
    const logSince = async (offset: number) => (await sftp.log()).slice(offset);
    let offset = (await sftp.log()).length;
    await assertRefused('sftp', stranger, /Permission denied \(publickey\)/, [restic, ...keyBody(sftp.strangerPrivateKey), ...keyBody(sftp.clientPrivateKey)],
      { orRaced, message: /SSH_PRIVATE_KEY/ });
    const log = await logSince(offset);
    assert.match(log, new RegExp(`Failed publickey for ${sftp.user} from 127\\.0\\.0\\.1`), 'sshd did not log the refused key');
    assert.doesNotMatch(log, /Accepted publickey/, 'sshd accepted a key it should have refused');
    const otherHost = sftp.knownHosts.replace(/ssh-ed25519 \S+/, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyVhJv0aT9G6b3lJZ1X6m3xQfQh0uTq1x0xW2Hc3Yk9');
    const spoofed = target(spec(), { RESTIC_PASSWORD: restic, SSH_PRIVATE_KEY: sftp.clientPrivateKey, SSH_KNOWN_HOSTS: otherHost });
    offset = (await sftp.log()).length;
    await assertRefused('sftp-host-key', spoofed, /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/, [restic, ...keyBody(sftp.clientPrivateKey)],
      { orRaced, message: /SSH_KNOWN_HOSTS/ });
    // The client gave up before authenticating: sshd never accepted the authorized key either.
    const hostKeyLog = await logSince(offset);
    assert.match(hostKeyLog, /Connection from 127\.0\.0\.1/, 'ssh never reached sshd');
    assert.doesNotMatch(hostKeyLog, /Accepted publickey/, 'ssh authenticated to a server whose host key it should have refused');
  });
});

describe('azure on Azurite (HTTPS, production-style URLs, through a CONNECT proxy)', () => {
  let azure: AzureServer;
  before(async () => { azure = await startAzurite(); });
  after(async () => { await azure?.stop(); });

  /**
   * What the test environment adds to the mapped target: the route to the emulator (HTTPS_PROXY)
   * and an explicit access tier, because restic sends an empty x-ms-access-tier header when none
   * is set, which Azure accepts and Azurite 3.37 rejects (400 InvalidHeaderValue).
   */
  const viaEmulator = (t: ResticTarget): ResticTarget => ({ ...t, env: { ...t.env, ...azure.clientEnv }, args: [...t.args, '-o', 'azure.access-tier=Hot'] });
  const secret = (key: string, restic: string) => ({
    RESTIC_PASSWORD: restic, AZURE_ACCOUNT_NAME: azure.accountName, AZURE_ACCOUNT_KEY: key,
    AZURE_ENDPOINT_SUFFIX: azure.endpointSuffix, CA_CERT_DATA: azure.caCert,
  });

  test('round trip with AZURE_ACCOUNT_NAME / AZURE_ACCOUNT_KEY / AZURE_ENDPOINT_SUFFIX and CA_CERT_DATA', async () => {
    const t = viaEmulator(target({ azure: { container: 'stash-repo', prefix: 'demo/app' }, storageSecretName: SECRET_NAME }, secret(azure.accountKey, password())));
    assert.equal(t.repository, 'azure:stash-repo:/demo/app');
    // restic 0.19's Azure backend treats ContainerNotFound as a transient error and retries it for
    // up to 15 minutes, so the driver's init (which first reads the config) would wait that long on
    // a container that does not exist yet. `restic init` itself creates the container.
    const created = await runRaw(t, ['init']);
    assert.equal(created.code, 0, `restic init on Azurite failed: ${created.stderr}`);
    await roundTrip('azure', t);
  });

  test('a wrong account key is refused without leaking it', async () => {
    const wrong = randomBytes(32).toString('base64');
    const restic = password();
    const t = target({ azure: { container: 'stash-repo', prefix: 'demo/app' }, storageSecretName: SECRET_NAME }, secret(wrong, restic));
    await assertRefused('azure', viaEmulator(t), /AuthorizationFailure|AuthenticationFailed/, [wrong, restic, azure.accountKey]);
  });
});
