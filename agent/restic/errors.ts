/**
 * Typed restic failures. `classifyFailure` maps restic's exit code and its `exit_error` / `error`
 * JSON lines on stderr to one of these, so callers (CLI, status reporting) can say what went
 * wrong and what to do about it. Messages never contain secrets: the driver redacts every value
 * of the target's environment before building one.
 */

/** Base class of every failure the restic driver reports. */
export class ResticError extends Error {
  /** restic's exit code (undefined when restic did not run or was killed by a signal). */
  readonly exitCode: number | undefined;
  /** restic's own message (redacted), for logs. */
  readonly detail: string;
  constructor(message: string, exitCode: number | undefined, detail: string) {
    super(message);
    this.name = new.target.name;
    this.exitCode = exitCode;
    this.detail = detail;
  }
}

export class ResticNotFoundError extends ResticError {}
export class WrongPasswordError extends ResticError {}
export class RepositoryNotFoundError extends ResticError {}
export class RepositoryUnreachableError extends ResticError {}
export class BackendCredentialsError extends ResticError {}
export class SourcePathMissingError extends ResticError {}
export class CommandFailedError extends ResticError {}
export class SnapshotNotFoundError extends ResticError {}
export class ResticCancelledError extends ResticError {}
/** The kernel killed restic because the container ran out of memory (its cgroup's limit). */
export class ResticOutOfMemoryError extends ResticError {}

/** Who holds a lock, as restic reports it. */
export interface LockHolder {
  readonly pid?: number;
  readonly host?: string;
  readonly user?: string;
  readonly createdAt?: string;
  readonly exclusive: boolean;
}

export class RepositoryLockedError extends ResticError {
  readonly holder: LockHolder;
  constructor(message: string, exitCode: number | undefined, detail: string, holder: LockHolder) {
    super(message, exitCode, detail);
    this.holder = holder;
  }
}

/** restic exited 3: a snapshot was saved but some source files could not be read. */
export class IncompleteBackupError extends ResticError {
  readonly snapshotId: string | undefined;
  constructor(message: string, exitCode: number | undefined, detail: string, snapshotId: string | undefined) {
    super(message, exitCode, detail);
    this.snapshotId = snapshotId;
  }
}

/** Parses restic's "repository is already locked [exclusively ]by PID N on HOST by USER ... created at T" text. */
export function parseLockHolder(text: string): LockHolder {
  const m = /already locked (exclusively )?by PID (\d+) on (\S+) by (\S+)/.exec(text);
  const created = /lock was created at ([0-9-]+ [0-9:]+)/.exec(text);
  return {
    exclusive: Boolean(m?.[1]),
    ...(m?.[2] ? { pid: Number(m[2]) } : {}),
    ...(m?.[3] ? { host: m[3] } : {}),
    ...(m?.[4] ? { user: m[4] } : {}),
    ...(created?.[1] ? { createdAt: created[1] } : {}),
  };
}

export interface FailureInput {
  /** What the driver was doing, e.g. `backup`, `restore latest`. */
  readonly operation: string;
  /** restic's repository string (never holds credentials). */
  readonly repository: string;
  readonly exitCode: number | undefined;
  readonly signal?: string | undefined;
  /** The `message` of restic's `exit_error` line, if any. */
  readonly exitMessage?: string | undefined;
  /** Other stderr text (non-JSON lines and `error` messages). */
  readonly stderr: string;
  /** The container's memory cgroup counted an OOM kill during the run (and its limit, if any). */
  readonly outOfMemory?: { readonly limitBytes: number | undefined } | undefined;
}

const unreachable =
  /connection refused|no such host|dial tcp|i\/o timeout|network is unreachable|context deadline exceeded|TLS handshake|x509:|certificate signed by unknown authority|server misbehaving|connection reset|EOF$/im;
const credentials =
  /access ?denied|InvalidAccessKeyId|SignatureDoesNotMatch|\b403\b|\b401\b|Forbidden|Unauthorized|AuthenticationFailed|AuthorizationFailure|invalid_grant|permission denied \(publickey|Authentication failed|bad credentials|The AWS Access Key Id you provided/i;

/** Maps a failed restic run to a typed error with a message that names the cause and the fix. */
export function classifyFailure(input: FailureInput): ResticError {
  const { operation, repository, exitCode } = input;
  const detail = [input.exitMessage, input.stderr].filter(Boolean).join('\n').trim();
  const where = `restic ${operation} on repository ${repository}`;

  if (input.signal === 'SIGKILL' && input.outOfMemory) {
    const limit = input.outOfMemory.limitBytes === undefined ? '' : ` of ${Math.round(input.outOfMemory.limitBytes / 1048576)}Mi`;
    return new ResticOutOfMemoryError(
      `${where} was killed by the kernel: the container ran out of memory (its limit${limit} holds the agent and restic); ` +
      'raise the memory limit of the agent\'s container (a Backup\'s or Recovery\'s containerAttributes.resources.limits.memory; ' +
      '256Mi or more for volumes of tens of thousands of files) and run it again', exitCode, detail);
  }
  if (input.signal) {
    return new ResticCancelledError(`${where} was stopped by ${input.signal}; run it again (stale locks it left are removed automatically)`, exitCode, detail);
  }
  if (exitCode === 130) {
    return new ResticCancelledError(`${where} was cancelled; run it again`, exitCode, detail);
  }
  if (exitCode === 12 || /wrong password or no key found/i.test(detail)) {
    return new WrongPasswordError(
      `${where} failed: wrong password (no key in the repository opens with it); check RESTIC_PASSWORD in the storage Secret or the --password-file`,
      exitCode, detail);
  }
  if (exitCode === 10 || /repository does not exist/i.test(detail)) {
    return new RepositoryNotFoundError(
      `${where} failed: the repository does not exist; create it with \`stash init\` or check the repository location (bucket, prefix, path)`,
      exitCode, detail);
  }
  if (exitCode === 11 || /already locked/i.test(detail)) {
    const holder = parseLockHolder(detail);
    const who = holder.pid !== undefined ? ` by PID ${holder.pid} on ${holder.host ?? '?'} (user ${holder.user ?? '?'}, since ${holder.createdAt ?? '?'})` : '';
    return new RepositoryLockedError(
      `${where} failed: the repository is locked${holder.exclusive ? ' exclusively' : ''}${who}; the lock is live (not stale), so wait for that operation to finish; ` +
        'a lock whose process is gone, or that has not been refreshed for 30 minutes, is removed automatically',
      exitCode, detail, holder);
  }
  if (/all source directories\/files do not exist|does not exist, skipping/i.test(detail) && operation.startsWith('backup')) {
    return new SourcePathMissingError(`${where} failed: a path to back up does not exist; check the target directories and the volume mounts`, exitCode, detail);
  }
  if (/failed to start command|command failed: exit status/i.test(detail)) {
    const m = /command failed: (exit status \d+)|failed to start command: (.*)$/m.exec(detail);
    return new CommandFailedError(
      `${where} failed: the dump command ${m?.[1] ?? m?.[2] ?? 'failed'}; no snapshot was saved; see the command's stderr above and fix the command or its connection settings`,
      exitCode, detail);
  }
  if (/no matching ID found|no snapshot found|invalid id|snapshot .* not found/i.test(detail)) {
    return new SnapshotNotFoundError(`${where} failed: no such snapshot; list them with \`stash snapshots\``, exitCode, detail);
  }
  if (credentials.test(detail)) {
    return credentialsError(where, repository, exitCode, detail);
  }
  if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/i.test(detail)) {
    return new BackendCredentialsError(
      `${where} failed: the sftp server's host key is not the one in SSH_KNOWN_HOSTS; if the server's key really changed, replace SSH_KNOWN_HOSTS in the storage Secret with the output of \`ssh-keyscan -p PORT HOST\``,
      exitCode, detail);
  }
  if (/unable to start the sftp session/i.test(detail)) {
    // restic reads ssh's stderr in a goroutine that can lose the race with ssh's exit, so ssh's
    // own reason ("Permission denied (publickey)", "Host key verification failed") is not always
    // in restic's output: name everything that ends a session before it starts.
    return new BackendCredentialsError(
      `${where} failed: ssh closed the connection before the SFTP session started; check that the server accepts SSH_PRIVATE_KEY for the user in the repository URL, ` +
        'that SSH_KNOWN_HOSTS holds the server\'s host key, and that the server offers the sftp subsystem',
      exitCode, detail);
  }
  if (unreachable.test(detail)) {
    return new RepositoryUnreachableError(
      `${where} failed: the storage backend is unreachable (${firstLine(detail)}); check the endpoint, DNS, network policy and CA certificate`,
      exitCode, detail);
  }
  return new ResticError(`${where} failed with exit code ${exitCode ?? 'none'}: ${firstLine(detail) || 'no message'}`, exitCode, detail);
}

function firstLine(text: string): string {
  const line = text.split('\n').find((l) => l.trim() !== '') ?? '';
  return line.replace(/^Fatal: /, '').slice(0, 300);
}

/** Replaces every secret value in text by `[redacted]`. Values shorter than 4 characters are left alone (too common to mask). */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) {
    if (s.length >= 4) out = out.split(s).join('[redacted]');
  }
  return out;
}

/** The kind of storage backend a restic repository string points at. */
export type BackendKind = 'local' | 's3' | 'gcs' | 'azure' | 'b2' | 'swift' | 'sftp' | 'rest' | 'rclone';

/** `s3:http://...` -> s3, `/srv/repo` -> local (restic's own prefixes). */
export function backendKindOf(repository: string): BackendKind {
  const m = /^([a-z0-9]+):/.exec(repository);
  switch (m?.[1]) {
    case 's3': return 's3';
    case 'gs': return 'gcs';
    case 'azure': return 'azure';
    case 'b2': return 'b2';
    case 'swift': return 'swift';
    case 'sftp': return 'sftp';
    case 'rest': return 'rest';
    case 'rclone': return 'rclone';
    default: return 'local';
  }
}

/** What to check, per backend, when the backend refuses the credentials (keys of the storage Secret). */
export function credentialsHint(kind: BackendKind): string {
  switch (kind) {
    case 's3': return 'check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the storage Secret, that the key is active, and its permissions on the bucket';
    case 'gcs': return 'check GOOGLE_SERVICE_ACCOUNT_JSON_KEY and GOOGLE_PROJECT_ID in the storage Secret and the service account\'s roles on the bucket';
    case 'azure': return 'check AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_KEY (or AZURE_ACCOUNT_SAS, which must allow creating and listing blobs) in the storage Secret, and that the container exists or the key may create it';
    case 'b2': return 'check B2_ACCOUNT_ID and B2_ACCOUNT_KEY in the storage Secret and that the application key may access the bucket';
    case 'swift': return 'check the OS_* (or ST_*) credentials in the storage Secret and the user\'s rights on the container';
    case 'sftp': return 'check SSH_PRIVATE_KEY in the storage Secret and that the server accepts it for the user in the repository URL';
    case 'rest': return 'check REST_SERVER_USERNAME and REST_SERVER_PASSWORD in the storage Secret (the rest-server\'s htpasswd user)';
    case 'rclone': return 'check the rclone remote\'s credentials';
    case 'local': return 'check that the agent may read and write the repository directory';
  }
}

function credentialsError(where: string, repository: string, exitCode: number | undefined, detail: string): BackendCredentialsError {
  return new BackendCredentialsError(`${where} failed: the storage backend rejected the credentials; ${credentialsHint(backendKindOf(repository))}`, exitCode, detail);
}

/** A backend error restic is retrying ("<op> returned error, retrying after <d>: <error>"). */
export interface BackendRetry {
  /** restic's error text (the part after "retrying after <d>:"). */
  readonly error: string;
  /** True when the backend refused the credentials or access: retrying cannot help. */
  readonly fatal: boolean;
}

const retryLine = /returned error, retrying after [^:]*:\s*(.*)$/;
const fatalRetry = new RegExp(
  `${credentials.source}|ContainerNotFound|request signature we calculated does not match|Access Key Id you provided does not exist`, 'i');

/** Recognises one of restic's retry reports on stderr (plain text or a JSON message line). */
export function parseRetryLine(line: string): BackendRetry | undefined {
  let text = line.trim();
  if (text.startsWith('{')) {
    try {
      const m = JSON.parse(text) as { message?: unknown; error?: { message?: unknown } };
      text = typeof m.error?.message === 'string' ? m.error.message : typeof m.message === 'string' ? m.message : text;
    } catch {
      // not JSON after all: use the line as it is
    }
  }
  const m = retryLine.exec(text);
  if (!m) return undefined;
  const error = (m[1] ?? '').trim();
  return { error, fatal: fatalRetry.test(error) };
}

/** The error to stop restic with when a retry says the credentials were refused. */
export function retryCredentialsError(operation: string, repository: string, retry: BackendRetry): BackendCredentialsError {
  return credentialsError(`restic ${operation} on repository ${repository}`, repository, undefined, retry.error);
}

/** The error to stop restic with when the backend kept failing for the whole retry window. */
export function retryWindowError(operation: string, repository: string, windowMs: number, retry: BackendRetry): RepositoryUnreachableError {
  return new RepositoryUnreachableError(
    `restic ${operation} on repository ${repository} failed: the storage backend kept failing for ${Math.round(windowMs / 1000)}s of retries (last error: ${retry.error.slice(0, 300)}); check the endpoint, network and the backend's health`,
    undefined, retry.error);
}
