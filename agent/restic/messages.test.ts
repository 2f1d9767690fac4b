import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseForget, parseLine, parseSnapshots, splitStderr, toBackupSummary, toProgress, toRestoreSummary } from './messages.ts';
import {
  BackendCredentialsError, classifyFailure, CommandFailedError, parseLockHolder, redact, RepositoryLockedError, RepositoryNotFoundError,
  RepositoryUnreachableError, ResticCancelledError, ResticError, SourcePathMissingError, WrongPasswordError,
} from './errors.ts';

// Lines as restic 0.19.1 prints them (captured from the real binary).
const summaryLine = '{"message_type":"summary","files_new":1,"files_changed":0,"files_unmodified":0,"dirs_new":1,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":1,"tree_blobs":2,"data_added":705,"data_added_packed":664,"total_files_processed":1,"total_bytes_processed":3,"total_duration":1.317142192,"backup_start":"2026-11-25T21:17:06.464713378Z","backup_end":"2026-11-25T21:17:07.78185556Z","snapshot_id":"0a68e5e74f1ffeded9e9c4c3799bd6ef01ad7925dfa34e0db120b178ca6c1b94"}';
const statusLine = '{"message_type":"status","seconds_elapsed":3,"seconds_remaining":9,"percent_done":0.25,"total_files":40,"files_done":10,"total_bytes":4000,"bytes_done":1000,"current_files":["/a"]}';
const lockMessage = 'unable to create lock in backend: repository is already locked exclusively by PID 28083 on vm by root (UID 0, GID 0)\nlock was created at 2026-11-25 21:17:49 (3.011219324s ago)\nstorage ID 58c3f74c\nthe `unlock` command can be used to remove stale locks';

describe('restic JSON messages', () => {
  it('parses status into progress and the summary', () => {
    const status = parseLine(statusLine);
    assert.ok(status);
    assert.deepEqual(toProgress(status), { percentDone: 0.25, totalFiles: 40, filesDone: 10, totalBytes: 4000, bytesDone: 1000, secondsElapsed: 3, secondsRemaining: 9 });
    assert.equal(toBackupSummary(status), undefined);
    const summary = parseLine(summaryLine);
    assert.ok(summary);
    assert.deepEqual(toBackupSummary(summary), {
      snapshotId: '0a68e5e74f1ffeded9e9c4c3799bd6ef01ad7925dfa34e0db120b178ca6c1b94', filesNew: 1, filesChanged: 0, filesUnmodified: 0,
      dataAdded: 705, totalFilesProcessed: 1, totalBytesProcessed: 3, durationSeconds: 1.317142192,
    });
  });
  it('reads restore status and summary fields', () => {
    const m = parseLine('{"message_type":"status","seconds_elapsed":1,"percent_done":0.5,"total_files":4,"files_restored":2,"total_bytes":10,"bytes_restored":5}');
    assert.ok(m);
    assert.deepEqual(toProgress(m), { percentDone: 0.5, totalFiles: 4, filesDone: 2, totalBytes: 10, bytesDone: 5, secondsElapsed: 1 });
    const s = parseLine('{"message_type":"summary","total_files":4,"files_restored":4,"files_deleted":2,"total_bytes":3,"bytes_restored":3}');
    assert.ok(s);
    assert.deepEqual(toRestoreSummary(s), { totalFiles: 4, filesRestored: 4, filesSkipped: 0, filesDeleted: 2, totalBytes: 3, bytesRestored: 3, secondsElapsed: 0 });
  });
  it('ignores text lines and broken JSON', () => {
    assert.equal(parseLine('/nonexist does not exist, skipping'), undefined);
    assert.equal(parseLine('{"message_type":'), undefined);
  });
  it('parses snapshots and forget documents', () => {
    const snaps = parseSnapshots('[{"time":"2026-11-25T21:17:06Z","tree":"f3","paths":["/d"],"hostname":"h1","username":"root","tags":["a=b"],"id":"0a68e5e7aa","short_id":"0a68e5e7"}]\n');
    assert.deepEqual(snaps, [{ id: '0a68e5e7aa', shortId: '0a68e5e7', time: '2026-11-25T21:17:06Z', hostname: 'h1', paths: ['/d'], tags: ['a=b'] }]);
    const groups = parseForget('[{"tags":null,"host":"h1","paths":null,"keep":[{"id":"aa","time":"t"}],"remove":[{"id":"bb","time":"t"}],"reasons":[]}]\nremove 1 snapshots:\n');
    assert.equal(groups.length, 1);
    assert.deepEqual(groups[0]?.keep.map((s) => s.id), ['aa']);
    assert.deepEqual(groups[0]?.remove.map((s) => s.id), ['bb']);
  });
  it('splits stderr into the exit_error and the rest', () => {
    const s = splitStderr('subprocess sh: oops\n{"message_type":"error","error":{"message":"failed to save /db.sql: Fatal: command failed: exit status 3"},"during":"archival","item":"/db.sql"}\n{"message_type":"exit_error","code":1,"message":"Fatal: unable to save snapshot"}\n');
    assert.equal(s.exitCode, 1);
    assert.equal(s.exitMessage, 'Fatal: unable to save snapshot');
    assert.equal(s.other, 'subprocess sh: oops\n/db.sql: failed to save /db.sql: Fatal: command failed: exit status 3');
  });
});

describe('classifyFailure', () => {
  const base = { operation: 'backup', repository: '/repo', stderr: '' };
  it('maps restic exit codes', () => {
    assert.ok(classifyFailure({ ...base, exitCode: 12, exitMessage: 'Fatal: wrong password or no key found' }) instanceof WrongPasswordError);
    assert.ok(classifyFailure({ ...base, exitCode: 10, exitMessage: 'Fatal: repository does not exist: unable to open config file' }) instanceof RepositoryNotFoundError);
    assert.ok(classifyFailure({ ...base, exitCode: 130 }) instanceof ResticCancelledError);
    assert.ok(classifyFailure({ ...base, exitCode: undefined, signal: 'SIGKILL' }) instanceof ResticCancelledError);
  });
  it('names the lock holder', () => {
    const e = classifyFailure({ ...base, exitCode: 11, exitMessage: lockMessage });
    assert.ok(e instanceof RepositoryLockedError);
    assert.deepEqual(e.holder, { exclusive: true, pid: 28083, host: 'vm', user: 'root', createdAt: '2026-11-25 21:17:49' });
    assert.match(e.message, /locked exclusively by PID 28083 on vm/);
    assert.deepEqual(parseLockHolder('repository is already locked by PID 7 on pod-1 by stash (UID 1, GID 1)'), { exclusive: false, pid: 7, host: 'pod-1', user: 'stash' });
  });
  it('recognises missing sources, failed dump commands, rejected credentials and unreachable backends', () => {
    assert.ok(classifyFailure({ ...base, exitCode: 1, exitMessage: 'Fatal: all source directories/files do not exist', stderr: '/x does not exist, skipping' }) instanceof SourcePathMissingError);
    const cmd = classifyFailure({ ...base, operation: 'backup --stdin-from-command', exitCode: 1, exitMessage: 'Fatal: unable to save snapshot: failed to save /db.sql: Fatal: command failed: exit status 3' });
    assert.ok(cmd instanceof CommandFailedError);
    assert.match(cmd.message, /exit status 3; no snapshot was saved/);
    assert.ok(classifyFailure({ ...base, exitCode: 1, exitMessage: 'Fatal: unable to open config file: Stat: The Access Key Id you provided does not exist in our records. (InvalidAccessKeyId)' }) instanceof BackendCredentialsError);
    assert.ok(classifyFailure({ ...base, exitCode: 1, exitMessage: 'Fatal: unable to open config file: Stat: Get "http://127.0.0.1:1/b/?location=": dial tcp 127.0.0.1:1: connect: connection refused' }) instanceof RepositoryUnreachableError);
    const other = classifyFailure({ ...base, exitCode: 1, exitMessage: 'Fatal: something new' });
    assert.equal(other.constructor, ResticError);
    assert.match(other.message, /exit code 1: something new/);
  });
  it('redacts secrets', () => {
    assert.equal(redact('key=s3cr3tvalue here', ['s3cr3tvalue', 'ab']), 'key=[redacted] here');
  });
});
