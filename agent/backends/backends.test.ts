// Every backend's mapping, checked against restic 0.19's documented repository strings and
// variables (doc/030_preparing_a_new_repo.rst, doc/075_scripting.rst). GCS, B2 and Swift are
// checked only here: no server for them runs on this machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backend as backendSchema, type Backend } from '../../shared/api/backends.ts';
import {
  FILE_NAMES, InvalidBackendError, MissingSecretKeyError, resticTargetFor, SFTP_KEY_FILE_ENV, SFTP_KNOWN_HOSTS_FILE_ENV, type SecretData,
} from './backends.ts';

const PASSWORD = 'repo-pass-9f2c';
const SECRET = 'storage';
const parse = (b: unknown): Backend => backendSchema.parse(b);

/** Asserts `fn` throws a MissingSecretKeyError naming exactly `keys`, without any secret value in it. */
function assertMissing(fn: () => unknown, keys: string[], backend: string, values: SecretData): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MissingSecretKeyError, `expected MissingSecretKeyError, got ${String(err)}`);
    assert.deepEqual(err.keys, keys);
    assert.equal(err.backend, backend);
    assert.equal(err.secretName, SECRET);
    for (const k of keys) assert.match(err.message, new RegExp(`\\b${k}\\b`));
    assert.match(err.message, new RegExp(`"${SECRET}"`));
    for (const v of Object.values(values)) if (v) assert.ok(!err.message.includes(v), 'error message leaks a secret value');
    return true;
  });
}

test('every backend needs RESTIC_PASSWORD', () => {
  assertMissing(() => resticTargetFor(parse({ local: { mountPath: '/repo', hostPath: { path: '/data' } }, storageSecretName: SECRET }), {}), ['RESTIC_PASSWORD'], 'local', {});
  assertMissing(() => resticTargetFor(parse({ gcs: { bucket: 'b' }, storageSecretName: SECRET }), { RESTIC_PASSWORD: '' }), ['RESTIC_PASSWORD'], 'gcs', {});
});

test('local: the repository is mountPath/subPath; the volume source only matters to the pod', () => {
  const t = resticTargetFor(parse({ local: { mountPath: '/stash/repo', subPath: 'ns/app', persistentVolumeClaim: { claimName: 'backups' } }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD });
  assert.deepEqual(t, { repository: '/stash/repo/ns/app', env: { RESTIC_PASSWORD: PASSWORD }, args: [], files: [] });
  const nfs = resticTargetFor(parse({ local: { mountPath: '/mnt/nfs', nfs: { server: 'nfs.example', path: '/export' } }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD });
  assert.equal(nfs.repository, '/mnt/nfs');
  assert.throws(() => resticTargetFor(parse({ local: { mountPath: '/mnt', subPath: 'a/../../etc', hostPath: { path: '/x' } }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD }), InvalidBackendError);
});

test('s3: s3:<endpoint>/<bucket>/<prefix> with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION', () => {
  const data = { RESTIC_PASSWORD: PASSWORD, AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE', AWS_SECRET_ACCESS_KEY: 'wJalr/secret', AWS_SESSION_TOKEN: 'tok' };
  const t = resticTargetFor(parse({ s3: { endpoint: 'http://127.0.0.1:7070/', bucket: 'bkt', prefix: 'demo/app', region: 'eu-west-1' }, storageSecretName: SECRET }), data);
  assert.equal(t.repository, 's3:http://127.0.0.1:7070/bkt/demo/app');
  assert.deepEqual(t.env, { RESTIC_PASSWORD: PASSWORD, AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE', AWS_SECRET_ACCESS_KEY: 'wJalr/secret', AWS_SESSION_TOKEN: 'tok', AWS_DEFAULT_REGION: 'eu-west-1' });
  const aws = resticTargetFor(parse({ s3: { endpoint: 's3.amazonaws.com', bucket: 'bkt' }, storageSecretName: SECRET }), data);
  assert.equal(aws.repository, 's3:s3.amazonaws.com/bkt');
  assert.equal(aws.env.AWS_DEFAULT_REGION, undefined);
  assertMissing(() => resticTargetFor(parse({ s3: { endpoint: 's3.amazonaws.com', bucket: 'b' }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD, AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE' }), ['AWS_SECRET_ACCESS_KEY'], 's3', data);
  assertMissing(() => resticTargetFor(parse({ s3: { endpoint: 's3.amazonaws.com', bucket: 'b' }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD }), ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'], 's3', data);
  assert.throws(() => resticTargetFor(parse({ s3: { endpoint: 'https://u:p@host', bucket: 'b' }, storageSecretName: SECRET }), data), /must not contain credentials/);
});

test('gcs: gs:<bucket>:/<prefix>, GOOGLE_PROJECT_ID and the key JSON as GOOGLE_APPLICATION_CREDENTIALS file', () => {
  const key = JSON.stringify({ type: 'service_account', private_key: '-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n' });
  const t = resticTargetFor(parse({ gcs: { bucket: 'stash-backup-repo', prefix: 'default/deployment/stash-demo' }, storageSecretName: SECRET }),
    { RESTIC_PASSWORD: PASSWORD, GOOGLE_PROJECT_ID: '123123123123', GOOGLE_SERVICE_ACCOUNT_JSON_KEY: key });
  assert.equal(t.repository, 'gs:stash-backup-repo:/default/deployment/stash-demo');
  assert.deepEqual(t.env, { RESTIC_PASSWORD: PASSWORD, GOOGLE_PROJECT_ID: '123123123123' });
  assert.deepEqual(t.files, [{ name: FILE_NAMES.gcsKey, content: key, envVar: 'GOOGLE_APPLICATION_CREDENTIALS' }]);
  assert.equal(resticTargetFor(parse({ gcs: { bucket: 'b' }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD, GOOGLE_PROJECT_ID: '1', GOOGLE_SERVICE_ACCOUNT_JSON_KEY: key }).repository, 'gs:b:/');
  assertMissing(() => resticTargetFor(parse({ gcs: { bucket: 'b' }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD, GOOGLE_PROJECT_ID: '1' }), ['GOOGLE_SERVICE_ACCOUNT_JSON_KEY'], 'gcs', {});
  assert.throws(() => resticTargetFor(parse({ gcs: { bucket: 'b' }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD, GOOGLE_PROJECT_ID: '1', GOOGLE_SERVICE_ACCOUNT_JSON_KEY: 'not-json-s3cr3t' }),
    (err: unknown) => err instanceof InvalidBackendError && !err.message.includes('s3cr3t') && /GOOGLE_SERVICE_ACCOUNT_JSON_KEY/.test(err.message));
});

test('azure: azure:<container>:/<prefix> with AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_KEY or AZURE_ACCOUNT_SAS', () => {
  const spec = parse({ azure: { container: 'stash', prefix: 'ns/app' }, storageSecretName: SECRET });
  const t = resticTargetFor(spec, { RESTIC_PASSWORD: PASSWORD, AZURE_ACCOUNT_NAME: 'acct', AZURE_ACCOUNT_KEY: 'a2V5', AZURE_ENDPOINT_SUFFIX: 'core.chinacloudapi.cn' });
  assert.equal(t.repository, 'azure:stash:/ns/app');
  assert.deepEqual(t.env, { RESTIC_PASSWORD: PASSWORD, AZURE_ACCOUNT_NAME: 'acct', AZURE_ACCOUNT_KEY: 'a2V5', AZURE_ENDPOINT_SUFFIX: 'core.chinacloudapi.cn' });
  const sas = resticTargetFor(spec, { RESTIC_PASSWORD: PASSWORD, AZURE_ACCOUNT_NAME: 'acct', AZURE_ACCOUNT_SAS: 'sv=2024&sig=x' });
  assert.deepEqual(sas.env, { RESTIC_PASSWORD: PASSWORD, AZURE_ACCOUNT_NAME: 'acct', AZURE_ACCOUNT_SAS: 'sv=2024&sig=x' });
  assertMissing(() => resticTargetFor(spec, { RESTIC_PASSWORD: PASSWORD, AZURE_ACCOUNT_NAME: 'acct' }), ['AZURE_ACCOUNT_KEY'], 'azure', {});
  assertMissing(() => resticTargetFor(spec, { RESTIC_PASSWORD: PASSWORD, AZURE_ACCOUNT_KEY: 'k3y' }), ['AZURE_ACCOUNT_NAME'], 'azure', { k: 'k3y' });
});

test('b2: b2:<bucket>:<prefix> with B2_ACCOUNT_ID and B2_ACCOUNT_KEY', () => {
  const data = { RESTIC_PASSWORD: PASSWORD, B2_ACCOUNT_ID: '0012ab', B2_ACCOUNT_KEY: 'K001secret' };
  const t = resticTargetFor(parse({ b2: { bucket: 'bucketname', prefix: 'path/to/repo' }, storageSecretName: SECRET }), data);
  assert.equal(t.repository, 'b2:bucketname:path/to/repo');
  assert.deepEqual(t.env, data);
  assert.equal(resticTargetFor(parse({ b2: { bucket: 'bucketname' }, storageSecretName: SECRET }), data).repository, 'b2:bucketname');
  assertMissing(() => resticTargetFor(parse({ b2: { bucket: 'b' }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD, B2_ACCOUNT_ID: 'id' }), ['B2_ACCOUNT_KEY'], 'b2', data);
});

test('swift: swift:<container>:/<prefix>; OS_* / ST_* copied; one complete auth method required', () => {
  const spec = parse({ swift: { container: 'backups', prefix: 'ns/app' }, storageSecretName: SECRET });
  const keystone = { RESTIC_PASSWORD: PASSWORD, OS_AUTH_URL: 'https://keystone:5000/v3', OS_USERNAME: 'u', OS_PASSWORD: 'p4ss', OS_PROJECT_NAME: 'proj', OS_USER_DOMAIN_NAME: 'Default', OS_PROJECT_DOMAIN_NAME: 'Default', OS_REGION_NAME: 'RegionOne', UNRELATED: 'x' };
  const t = resticTargetFor(spec, keystone);
  assert.equal(t.repository, 'swift:backups:/ns/app');
  const { UNRELATED: _, ...expected } = keystone;
  assert.deepEqual(t.env, expected);
  const v1 = { RESTIC_PASSWORD: PASSWORD, ST_AUTH: 'https://swift/auth/v1.0', ST_USER: 'u', ST_KEY: 'k' };
  assert.deepEqual(resticTargetFor(spec, v1).env, v1);
  const token = { RESTIC_PASSWORD: PASSWORD, OS_STORAGE_URL: 'https://swift/v1/AUTH_x', OS_AUTH_TOKEN: 'tkn' };
  assert.deepEqual(resticTargetFor(spec, token).env, token);
  const appCred = { RESTIC_PASSWORD: PASSWORD, OS_AUTH_URL: 'https://k/v3', OS_APPLICATION_CREDENTIAL_ID: 'id', OS_APPLICATION_CREDENTIAL_SECRET: 's' };
  assert.deepEqual(resticTargetFor(spec, appCred).env, appCred);
  assertMissing(() => resticTargetFor(spec, { RESTIC_PASSWORD: PASSWORD, ST_AUTH: 'https://swift/auth', ST_USER: 'u' }), ['ST_KEY'], 'swift', {});
  assertMissing(() => resticTargetFor(spec, { RESTIC_PASSWORD: PASSWORD, OS_AUTH_URL: 'https://k', OS_USER_ID: 'uid' }), ['OS_PASSWORD'], 'swift', {});
  assertMissing(() => resticTargetFor(spec, { RESTIC_PASSWORD: PASSWORD }), ['OS_AUTH_URL', 'OS_USERNAME', 'OS_PASSWORD'], 'swift', {});
});

test('sftp: sftp://user@host:port/path; key and known_hosts are files ssh finds through ${VAR} in -o sftp.args', () => {
  const key = '-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAsecretkey\n-----END OPENSSH PRIVATE KEY-----';
  const knownHosts = '[127.0.0.1]:2222 ssh-ed25519 AAAAC3Nza';
  const data = { RESTIC_PASSWORD: PASSWORD, SSH_PRIVATE_KEY: key, SSH_KNOWN_HOSTS: knownHosts };
  const spec = parse({ sftp: { host: '127.0.0.1', port: 2222, user: 'backup', path: '/srv/repo' }, storageSecretName: SECRET });
  const t = resticTargetFor(spec, data);
  assert.equal(t.repository, 'sftp://backup@127.0.0.1:2222//srv/repo');
  assert.deepEqual(t.env, { RESTIC_PASSWORD: PASSWORD });
  assert.deepEqual(t.files, [
    { name: FILE_NAMES.sshKey, content: key + '\n', envVar: SFTP_KEY_FILE_ENV },
    { name: FILE_NAMES.knownHosts, content: knownHosts + '\n', envVar: SFTP_KNOWN_HOSTS_FILE_ENV },
  ]);
  assert.equal(t.args.length, 2);
  assert.equal(t.args[0], '-o');
  assert.match(t.args[1] ?? '', /^sftp\.args=-F none .*-o IdentityFile=\$\{STASH_SFTP_KEY_FILE\} .*-o UserKnownHostsFile=\$\{STASH_SFTP_KNOWN_HOSTS_FILE\} .*StrictHostKeyChecking=yes .*BatchMode=yes/);
  assert.ok(!t.args.join(' ').includes('secretkey'));
  const rel = resticTargetFor(parse({ sftp: { host: 'fe80::1', user: 'b', path: 'repo' }, storageSecretName: SECRET }), data);
  assert.equal(rel.repository, 'sftp://b@[fe80::1]/repo');
  assertMissing(() => resticTargetFor(spec, { RESTIC_PASSWORD: PASSWORD, SSH_PRIVATE_KEY: key }), ['SSH_KNOWN_HOSTS'], 'sftp', data);
  assert.throws(() => resticTargetFor(spec, { ...data, SSH_PRIVATE_KEY: 'hunter2' }),
    (err: unknown) => err instanceof InvalidBackendError && !err.message.includes('hunter2'));
});

test('rest: rest:<url> without user info; credentials as RESTIC_REST_USERNAME / RESTIC_REST_PASSWORD', () => {
  const spec = parse({ rest: { url: 'https://backup.example:8000/repo' }, storageSecretName: SECRET });
  const t = resticTargetFor(spec, { RESTIC_PASSWORD: PASSWORD, REST_SERVER_USERNAME: 'stash', REST_SERVER_PASSWORD: 'pw-0xdead' });
  assert.equal(t.repository, 'rest:https://backup.example:8000/repo');
  assert.deepEqual(t.env, { RESTIC_PASSWORD: PASSWORD, RESTIC_REST_USERNAME: 'stash', RESTIC_REST_PASSWORD: 'pw-0xdead' });
  assert.ok(!t.repository.includes('pw-0xdead'));
  assert.deepEqual(resticTargetFor(spec, { RESTIC_PASSWORD: PASSWORD }).env, { RESTIC_PASSWORD: PASSWORD });
  assertMissing(() => resticTargetFor(spec, { RESTIC_PASSWORD: PASSWORD, REST_SERVER_USERNAME: 'stash' }), ['REST_SERVER_PASSWORD'], 'rest', {});
  assert.throws(() => resticTargetFor(parse({ rest: { url: 'https://u:leaked-pw@host/' }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD }),
    (err: unknown) => err instanceof InvalidBackendError && !err.message.includes('leaked-pw') && /REST_SERVER_PASSWORD/.test(err.message));
});

test('CA_CERT_DATA becomes a --cacert file for any backend', () => {
  const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
  const t = resticTargetFor(parse({ rest: { url: 'https://h:8000/' }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD, CA_CERT_DATA: pem });
  assert.deepEqual(t.files, [{ name: FILE_NAMES.caCert, content: pem, flag: '--cacert' }]);
  assert.throws(() => resticTargetFor(parse({ rest: { url: 'https://h:8000/' }, storageSecretName: SECRET }), { RESTIC_PASSWORD: PASSWORD, CA_CERT_DATA: 'garbage' }), /CA_CERT_DATA .*PEM/);
});
