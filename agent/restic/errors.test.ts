import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  BackendCredentialsError, backendKindOf, classifyFailure, credentialsHint, parseRetryLine, retryCredentialsError, retryWindowError, RepositoryUnreachableError,
  ResticCancelledError, ResticOutOfMemoryError,
} from './errors.ts';

describe('backend retries', () => {
  it('recognises restic\'s retry reports, plain and as JSON lines', () => {
    const plain = parseRetryLine('Load(<config/0000000000>, 0, 0) returned error, retrying after 720.911ms: The request signature we calculated does not match the signature you provided.');
    assert.deepEqual(plain, { error: 'The request signature we calculated does not match the signature you provided.', fatal: true });
    const json = parseRetryLine(JSON.stringify({ message_type: 'error', error: { message: 'List(lock) returned error, retrying after 1.2s: unexpected HTTP response (401): 401 Unauthorized' } }));
    assert.equal(json?.fatal, true);
    assert.equal(parseRetryLine('Save(<data/ab>) returned error, retrying after 2s: dial tcp 10.0.0.1:9000: connect: connection refused')?.fatal, false);
    assert.equal(parseRetryLine('Fatal: wrong password or no key found'), undefined);
    assert.equal(parseRetryLine('Stat(<config>) returned error, retrying after 1s: ContainerNotFound: The specified container does not exist.')?.fatal, true);
    assert.equal(parseRetryLine('returned error, retrying after 1s: InvalidAccessKeyId: The Access Key Id you provided does not exist in our records.')?.fatal, true);
  });
  it('the credentials error names the keys of that backend', () => {
    const retry = { error: 'AuthenticationFailed', fatal: true };
    const azure = retryCredentialsError('snapshots', 'azure:stash-repo:/demo', retry);
    assert.ok(azure instanceof BackendCredentialsError);
    assert.match(azure.message, /AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_KEY/);
    assert.doesNotMatch(azure.message, /AWS_/);
    assert.match(retryCredentialsError('init', 'rest:http://127.0.0.1:8000/', retry).message, /REST_SERVER_USERNAME and REST_SERVER_PASSWORD/);
    assert.match(classifyFailure({ operation: 'snapshots', repository: 's3:http://127.0.0.1:7070/b', exitCode: 1, stderr: 'Access Denied' }).message, /AWS_SECRET_ACCESS_KEY/);
    const window = retryWindowError('backup', 's3:http://x/b', 30_000, { error: 'connection refused', fatal: false });
    assert.ok(window instanceof RepositoryUnreachableError);
    assert.match(window.message, /30s of retries \(last error: connection refused\)/);
  });
  it('backend kinds from restic repository strings', () => {
    assert.deepEqual(['s3:http://h/b', 'gs:b:/p', 'azure:c:/p', 'b2:b:p', 'swift:c:/p', 'sftp:u@h:/p', 'rest:http://h/', '/srv/repo'].map(backendKindOf),
      ['s3', 'gcs', 'azure', 'b2', 'swift', 'sftp', 'rest', 'local']);
    for (const k of ['s3', 'gcs', 'azure', 'b2', 'swift', 'sftp', 'rest', 'rclone', 'local'] as const) assert.ok(credentialsHint(k).length > 20);
  });
  it('sftp: ssh\'s refusals, and restic\'s session error without ssh\'s reason, name the Secret keys to check', () => {
    const repository = 'sftp://root@127.0.0.1:2222//srv/repo';
    const classify = (stderr: string) => classifyFailure({ operation: 'snapshots', repository, exitCode: 1, stderr });
    const denied = classify('subprocess ssh: root@127.0.0.1: Permission denied (publickey).\nFatal: unable to open repository at sftp://root@127.0.0.1:2222//srv/repo: unable to start the sftp session, error: EOF');
    assert.ok(denied instanceof BackendCredentialsError);
    assert.match(denied.message, /SSH_PRIVATE_KEY/);
    const hostKey = classify('subprocess ssh: Host key verification failed.\nFatal: unable to open repository at sftp://x: unable to start the sftp session, error: EOF');
    assert.ok(hostKey instanceof BackendCredentialsError);
    assert.match(hostKey.message, /host key is not the one in SSH_KNOWN_HOSTS.*ssh-keyscan/);
    // restic's stderr reader lost the race with ssh's exit: only restic's own line is left.
    const raced = classify('Fatal: unable to open repository at sftp://root@127.0.0.1:2222//srv/repo: unable to start the sftp session, error: error receiving version packet from server: error reading packet length: 0 of 4: read |0: file already closed');
    assert.ok(raced instanceof BackendCredentialsError);
    assert.match(raced.message, /ssh closed the connection before the SFTP session started.*SSH_PRIVATE_KEY.*SSH_KNOWN_HOSTS/);
  });
});

describe('a restic killed for lack of memory', () => {
  const base = { operation: 'backup', repository: '/repo', exitCode: undefined, signal: 'SIGKILL', stderr: '' };
  it('names the container\'s limit and the field that raises it when the cgroup counted an OOM kill', () => {
    const err = classifyFailure({ ...base, outOfMemory: { limitBytes: 128 * 1048576 } });
    assert.ok(err instanceof ResticOutOfMemoryError);
    assert.match(err.message, /^restic backup on repository \/repo was killed by the kernel: the container ran out of memory \(its limit of 128Mi/);
    assert.match(err.message, /containerAttributes\.resources\.limits\.memory/);
    assert.match(classifyFailure({ ...base, outOfMemory: { limitBytes: undefined } }).message, /ran out of memory \(its limit holds/);
  });
  it('is a cancellation when nothing says memory (a person\'s SIGKILL), and for other signals', () => {
    assert.ok(classifyFailure(base) instanceof ResticCancelledError);
    assert.ok(classifyFailure({ ...base, signal: 'SIGTERM', outOfMemory: { limitBytes: 1 } }) instanceof ResticCancelledError);
  });
});
