/**
 * Maps a Repository's `spec.backend` plus the data of its storage Secret to a {@link ResticTarget}:
 * restic's repository string (never with credentials), its environment, non-secret flags and the
 * files it needs (CA bundle, GCS key, SSH key). Pure: no I/O, so every backend is unit-tested.
 *
 * Variable names follow restic 0.19's documentation ("Preparing a new repository" and
 * "Environment variables", doc/030_preparing_a_new_repo.rst and doc/075_scripting.rst).
 */
import path from 'node:path';
import { backendKind, type Backend, type BackendKind } from '../../shared/api/backends.ts';
import type { ResticTarget } from '../restic/target.ts';

/** The storage Secret's data, already decoded (one UTF-8 string per key). */
export type SecretData = Readonly<Record<string, string | undefined>>;

/** Variables through which ssh finds the sftp key and known_hosts files the driver wrote. */
export const SFTP_KEY_FILE_ENV = 'STASH_SFTP_KEY_FILE';
export const SFTP_KNOWN_HOSTS_FILE_ENV = 'STASH_SFTP_KNOWN_HOSTS_FILE';

/** A key the backend needs is missing (or empty) in the storage Secret. Never carries a value. */
export class MissingSecretKeyError extends Error {
  override readonly name = 'MissingSecretKeyError';
  readonly secretName: string;
  readonly keys: readonly string[];
  readonly backend: BackendKind;
  constructor(secretName: string, keys: readonly string[], backend: BackendKind, hint = '') {
    super(
      `storage Secret "${secretName}" lacks ${keys.length === 1 ? 'key' : 'keys'} ${keys.join(', ')} needed by the ${backend} backend: ` +
        `add ${keys.length === 1 ? 'it' : 'them'} to the Secret${hint ? ` (${hint})` : ''}`,
    );
    this.secretName = secretName;
    this.keys = keys;
    this.backend = backend;
  }
}

/** The backend spec or a Secret value cannot be turned into a restic target. Never carries a secret. */
export class InvalidBackendError extends Error {
  override readonly name = 'InvalidBackendError';
  readonly backend: BackendKind | undefined;
  readonly field: string;
  constructor(backend: BackendKind | undefined, field: string, problem: string) {
    super(`backend${backend ? ` ${backend}` : ''}: ${field} ${problem}`);
    this.backend = backend;
    this.field = field;
  }
}

type File = ResticTarget['files'][number];

/** Secret keys every backend may use, besides its own. */
export const COMMON_SECRET_KEYS = ['RESTIC_PASSWORD', 'CA_CERT_DATA'] as const;

/** The OpenStack Swift variables restic 0.19 reads (doc/075_scripting.rst), copied from the Secret when present. */
export const SWIFT_ENV_KEYS = [
  'OS_AUTH_URL', 'OS_REGION_NAME', 'OS_USERNAME', 'OS_USER_ID', 'OS_PASSWORD', 'OS_TENANT_ID', 'OS_TENANT_NAME',
  'OS_USER_DOMAIN_NAME', 'OS_USER_DOMAIN_ID', 'OS_PROJECT_NAME', 'OS_PROJECT_DOMAIN_NAME', 'OS_PROJECT_DOMAIN_ID',
  'OS_TRUST_ID', 'OS_APPLICATION_CREDENTIAL_ID', 'OS_APPLICATION_CREDENTIAL_NAME', 'OS_APPLICATION_CREDENTIAL_SECRET',
  'OS_STORAGE_URL', 'OS_AUTH_TOKEN', 'ST_AUTH', 'ST_USER', 'ST_KEY', 'SWIFT_DEFAULT_CONTAINER_POLICY',
] as const;

/** Names of the files a target may carry (relative to the driver's private directory). */
export const FILE_NAMES = {
  caCert: 'ca-cert.pem',
  gcsKey: 'gcs-service-account.json',
  sshKey: 'ssh-private-key',
  knownHosts: 'ssh-known-hosts',
} as const;

/**
 * The restic target for a backend. Throws {@link MissingSecretKeyError} when the Secret lacks a
 * key, {@link InvalidBackendError} when the spec or a value cannot be used.
 */
export function resticTargetFor(backend: Backend, secretData: SecretData): ResticTarget {
  const kind = backendKind(backend);
  const secret = new SecretReader(backend.storageSecretName, kind, secretData);
  const env: Record<string, string> = { RESTIC_PASSWORD: secret.required('RESTIC_PASSWORD') };
  const args: string[] = [];
  const files: File[] = [];
  const caCert = secret.optional('CA_CERT_DATA');
  if (caCert !== undefined) {
    if (!caCert.includes('-----BEGIN CERTIFICATE-----')) {
      throw new InvalidBackendError(kind, `Secret "${backend.storageSecretName}" key CA_CERT_DATA`, 'is not a PEM certificate bundle: store the CA certificate(s) in PEM form');
    }
    files.push({ name: FILE_NAMES.caCert, content: caCert, flag: '--cacert' });
  }
  const repository = repositoryAndCredentials(backend, kind, secret, env, args, files);
  return { repository, env, args, files };
}

function repositoryAndCredentials(
  b: Backend, kind: BackendKind, secret: SecretReader, env: Record<string, string>, args: string[], files: File[],
): string {
  switch (kind) {
    case 'local': {
      const local = defined(b.local, kind);
      const dir = local.subPath ? path.posix.join(local.mountPath, local.subPath) : local.mountPath;
      if (path.posix.relative(local.mountPath, dir).startsWith('..')) throw new InvalidBackendError(kind, 'local.subPath', 'must stay inside mountPath (no "..")');
      return dir;
    }
    case 's3': {
      const s3 = defined(b.s3, kind);
      const [keyId, secretKey] = secret.requiredAll(['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']);
      env.AWS_ACCESS_KEY_ID = keyId;
      env.AWS_SECRET_ACCESS_KEY = secretKey;
      secret.copyIfPresent(env, 'AWS_SESSION_TOKEN');
      if (s3.region) env.AWS_DEFAULT_REGION = s3.region;
      const endpoint = s3.endpoint.replace(/\/+$/, '');
      if (/^[a-z]+:\/\/[^/]*@/i.test(endpoint)) throw new InvalidBackendError(kind, 's3.endpoint', 'must not contain credentials: put them in the storage Secret');
      if (/^[a-z]+:\/\//i.test(endpoint) && !/^https?:\/\//i.test(endpoint)) throw new InvalidBackendError(kind, 's3.endpoint', 'must be a host name or an http:// or https:// URL');
      return `s3:${endpoint}/${s3.bucket}${prefixPath('/', s3.prefix)}`;
    }
    case 'gcs': {
      const gcs = defined(b.gcs, kind);
      const key = secret.required('GOOGLE_SERVICE_ACCOUNT_JSON_KEY', 'the service account key JSON');
      if (!isJsonObject(key)) {
        throw new InvalidBackendError(kind, `Secret "${b.storageSecretName}" key GOOGLE_SERVICE_ACCOUNT_JSON_KEY`, 'is not a JSON object: store the service account key file as downloaded from Google Cloud');
      }
      files.push({ name: FILE_NAMES.gcsKey, content: key, envVar: 'GOOGLE_APPLICATION_CREDENTIALS' });
      env.GOOGLE_PROJECT_ID = secret.required('GOOGLE_PROJECT_ID');
      return `gs:${gcs.bucket}:/${trimSlashes(gcs.prefix)}`;
    }
    case 'azure': {
      const azure = defined(b.azure, kind);
      env.AZURE_ACCOUNT_NAME = secret.required('AZURE_ACCOUNT_NAME');
      const key = secret.optional('AZURE_ACCOUNT_KEY');
      const sas = secret.optional('AZURE_ACCOUNT_SAS');
      if (key !== undefined) env.AZURE_ACCOUNT_KEY = key;
      else if (sas !== undefined) env.AZURE_ACCOUNT_SAS = sas;
      else throw new MissingSecretKeyError(b.storageSecretName, ['AZURE_ACCOUNT_KEY'], kind, 'or AZURE_ACCOUNT_SAS for a shared access signature');
      // Sovereign clouds (core.chinacloudapi.cn, ...) and emulators: restic builds https://<account>.blob.<suffix>.
      secret.copyIfPresent(env, 'AZURE_ENDPOINT_SUFFIX');
      return `azure:${azure.container}:/${trimSlashes(azure.prefix)}`;
    }
    case 'b2': {
      const b2 = defined(b.b2, kind);
      [env.B2_ACCOUNT_ID, env.B2_ACCOUNT_KEY] = secret.requiredAll(['B2_ACCOUNT_ID', 'B2_ACCOUNT_KEY']);
      const prefix = trimSlashes(b2.prefix);
      return prefix ? `b2:${b2.bucket}:${prefix}` : `b2:${b2.bucket}`;
    }
    case 'swift': {
      const swift = defined(b.swift, kind);
      for (const key of SWIFT_ENV_KEYS) secret.copyIfPresent(env, key);
      requireSwiftAuth(secret, env, kind);
      return `swift:${swift.container}:/${trimSlashes(swift.prefix)}`;
    }
    case 'sftp': {
      const sftp = defined(b.sftp, kind);
      const [privateKey, knownHosts] = secret.requiredAll(['SSH_PRIVATE_KEY', 'SSH_KNOWN_HOSTS'], 'SSH_KNOWN_HOSTS holds the server\'s host key lines, e.g. from `ssh-keyscan -p PORT HOST`');
      if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(privateKey)) {
        throw new InvalidBackendError(kind, `Secret "${b.storageSecretName}" key SSH_PRIVATE_KEY`, 'is not a PEM/OpenSSH private key: store the key file (e.g. id_ed25519) without a passphrase');
      }
      if (!/^[A-Za-z0-9._-]+$/.test(sftp.user)) throw new InvalidBackendError(kind, 'sftp.user', 'must be a plain user name (letters, digits, ".", "_", "-")');
      // The driver writes each file where it likes and puts its path in the named variable; ssh
      // (started by restic, inheriting its environment) expands ${VAR} in IdentityFile and
      // UserKnownHostsFile itself (ssh_config(5), OpenSSH >= 8.4), so no path is fixed here.
      files.push({ name: FILE_NAMES.sshKey, content: withNewline(privateKey), envVar: SFTP_KEY_FILE_ENV });
      files.push({ name: FILE_NAMES.knownHosts, content: withNewline(knownHosts), envVar: SFTP_KNOWN_HOSTS_FILE_ENV });
      const sshArgs = [
        '-F', 'none', // ignore ~/.ssh/config and /etc/ssh/ssh_config: everything is said here
        '-o', `IdentityFile=\${${SFTP_KEY_FILE_ENV}}`,
        '-o', 'IdentitiesOnly=yes',
        '-o', `UserKnownHostsFile=\${${SFTP_KNOWN_HOSTS_FILE_ENV}}`,
        '-o', 'GlobalKnownHostsFile=/dev/null',
        '-o', 'StrictHostKeyChecking=yes',
        '-o', 'BatchMode=yes', // never prompt for a password or passphrase: fail instead
        '-o', 'ServerAliveInterval=30',
      ];
      args.push('-o', `sftp.args=${sshArgs.join(' ')}`);
      const host = sftp.host.includes(':') && !sftp.host.startsWith('[') ? `[${sftp.host}]` : sftp.host;
      // sftp://user@host:port/relative (to the login's home) or sftp://user@host:port//absolute
      return `sftp://${sftp.user}@${host}${sftp.port ? `:${sftp.port}` : ''}/${sftp.path}`;
    }
    case 'rest': {
      const rest = defined(b.rest, kind);
      let url: URL;
      try {
        url = new URL(rest.url);
      } catch {
        throw new InvalidBackendError(kind, 'rest.url', 'is not a valid URL: use e.g. https://backup.example:8000/repo');
      }
      if (url.username || url.password) {
        throw new InvalidBackendError(kind, 'rest.url', 'must not contain credentials: put REST_SERVER_USERNAME and REST_SERVER_PASSWORD in the storage Secret');
      }
      // restic 0.19 reads RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD when the URL has no user info,
      // so the password never appears in the repository string restic prints.
      const user = secret.optional('REST_SERVER_USERNAME');
      const password = secret.optional('REST_SERVER_PASSWORD');
      if (user !== undefined || password !== undefined) {
        [env.RESTIC_REST_USERNAME, env.RESTIC_REST_PASSWORD] = secret.requiredAll(['REST_SERVER_USERNAME', 'REST_SERVER_PASSWORD'], 'set both or neither');
      }
      return `rest:${url.href}`;
    }
  }
}

/** Swift needs one complete way to authenticate (doc/030_preparing_a_new_repo.rst, "OpenStack Swift"). */
function requireSwiftAuth(secret: SecretReader, env: Record<string, string>, kind: BackendKind): void {
  const has = (k: string) => env[k] !== undefined;
  const complete =
    (has('ST_AUTH') && has('ST_USER') && has('ST_KEY')) ||
    (has('OS_STORAGE_URL') && has('OS_AUTH_TOKEN')) ||
    (has('OS_AUTH_URL') && (has('OS_USERNAME') || has('OS_USER_ID')) && has('OS_PASSWORD')) ||
    (has('OS_AUTH_URL') && (has('OS_APPLICATION_CREDENTIAL_ID') || has('OS_APPLICATION_CREDENTIAL_NAME')) && has('OS_APPLICATION_CREDENTIAL_SECRET'));
  if (complete) return;
  const missing = has('ST_AUTH') || has('ST_USER') || has('ST_KEY')
    ? ['ST_AUTH', 'ST_USER', 'ST_KEY'].filter((k) => !has(k))
    : has('OS_STORAGE_URL') || has('OS_AUTH_TOKEN')
      ? ['OS_STORAGE_URL', 'OS_AUTH_TOKEN'].filter((k) => !has(k))
      : has('OS_APPLICATION_CREDENTIAL_SECRET')
        ? ['OS_AUTH_URL', 'OS_APPLICATION_CREDENTIAL_ID'].filter((k) => !has(k))
        : ['OS_AUTH_URL', 'OS_USERNAME', 'OS_PASSWORD'].filter((k) => !has(k) && !(k === 'OS_USERNAME' && has('OS_USER_ID')));
  throw new MissingSecretKeyError(secret.name, missing, kind,
    'Swift needs one of: OS_AUTH_URL+OS_USERNAME+OS_PASSWORD (keystone), OS_AUTH_URL+OS_APPLICATION_CREDENTIAL_ID+OS_APPLICATION_CREDENTIAL_SECRET, ST_AUTH+ST_USER+ST_KEY (v1), OS_STORAGE_URL+OS_AUTH_TOKEN');
}

/** Reads the Secret; every error names the Secret and key, never the value. */
class SecretReader {
  readonly name: string;
  readonly #kind: BackendKind;
  readonly #data: SecretData;
  constructor(name: string, kind: BackendKind, data: SecretData) {
    this.name = name;
    this.#kind = kind;
    this.#data = data;
  }
  optional(key: string): string | undefined {
    const value = Object.hasOwn(this.#data, key) ? this.#data[key] : undefined;
    return value === undefined || value === '' ? undefined : value;
  }
  required(key: string, hint = ''): string {
    const [value] = this.requiredAll([key], hint);
    return value;
  }
  /** All keys, or one error naming every missing one. */
  requiredAll<const K extends readonly string[]>(keys: K, hint = ''): { [I in keyof K]: string } {
    const missing = keys.filter((k) => this.optional(k) === undefined);
    if (missing.length > 0) throw new MissingSecretKeyError(this.name, missing, this.#kind, hint);
    return keys.map((k) => this.optional(k) as string) as { [I in keyof K]: string };
  }
  copyIfPresent(env: Record<string, string>, key: string): void {
    const value = this.optional(key);
    if (value !== undefined) env[key] = value;
  }
}

function defined<T>(value: T | undefined, kind: BackendKind): T {
  if (value === undefined) throw new InvalidBackendError(kind, kind, 'is not set');
  return value;
}

function trimSlashes(prefix: string | undefined): string {
  return (prefix ?? '').replace(/^\/+|\/+$/g, '');
}

function prefixPath(separator: string, prefix: string | undefined): string {
  const p = trimSlashes(prefix);
  return p ? `${separator}${p}` : '';
}

function withNewline(text: string): string {
  return text.endsWith('\n') ? text : text + '\n';
}

function isJsonObject(text: string): boolean {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value);
  } catch {
    return false;
  }
}
