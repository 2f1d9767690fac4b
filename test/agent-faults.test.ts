/**
 * Fault cases of the agent, through the real `stash` CLI (node agent/bin/stash.js) and restic
 * 0.19.1 on a local repository: each gives a clear error and a non-zero exit; an agent killed
 * with SIGKILL mid-backup leaves no half snapshot, its stale lock is removed by the next run, a
 * live lock is never removed, and `restic check` stays clean.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { repoRoot, toolPath } from './support/tools.ts';
import { createRestic } from '../agent/restic/restic.ts';
import type { ResticDriver } from '../agent/restic/restic.ts';
import { CommandFailedError, RepositoryLockedError } from '../agent/restic/errors.ts';

const stashBin = path.join(repoRoot, 'agent/bin/stash.js');
const node = process.execPath;

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

function stash(args: readonly string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(node, [stashBin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

function resultOf(run: Run): Record<string, unknown> {
  const line = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).find((m) => m.type === 'result');
  assert.ok(line, `no result line in ${run.stdout}`);
  return line;
}

describe('agent faults through the CLI', () => {
  let dir: string;
  let repo: string;
  let pw: string;
  let env: Record<string, string>;
  let restic: ResticDriver;
  let data: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'stash-agent-faults-'));
    repo = path.join(dir, 'repo');
    pw = path.join(dir, 'password');
    data = path.join(dir, 'data');
    await writeFile(pw, 'faults-password\n', { mode: 0o600 });
    await writeFile(path.join(dir, 'wrong'), 'not-the-password\n', { mode: 0o600 });
    env = { STASH_RESTIC: toolPath('restic'), XDG_CACHE_HOME: path.join(dir, 'xdg') };
    restic = createRestic({ repository: repo, env: { RESTIC_PASSWORD_FILE: pw }, args: [], files: [] }, { binary: toolPath('restic'), cacheDir: path.join(dir, 'xdg/restic') });
    await mkdir(data);
    // ~480 MB of incompressible data in 48 files: long enough to kill restic mid-flight.
    for (let i = 0; i < 48; i++) await writeFile(path.join(data, `blob-${i}`), randomBytes(10 * 1024 * 1024));
    const init = await stash(['init', '--repo', repo, '--password-file', pw, '--json'], env);
    assert.equal(init.code, 0, init.stderr);
    assert.equal(resultOf(init).created, true);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('wrong password: exit 12 and says so', async () => {
    const r = await stash(['snapshots', '--repo', repo, '--password-file', path.join(dir, 'wrong'), '--json'], env);
    assert.equal(r.code, 12);
    assert.match(r.stderr, /wrong password/);
    const res = resultOf(r);
    assert.equal(res.ok, false);
    assert.equal((res.error as { kind: string }).kind, 'WrongPasswordError');
    assert.ok(!r.stderr.includes('not-the-password') && !r.stdout.includes('not-the-password'));
  });

  it('repository missing: exit 10 and points at stash init', async () => {
    const r = await stash(['backup', '--repo', path.join(dir, 'nowhere'), '--password-file', pw, data], env);
    assert.equal(r.code, 10);
    assert.match(r.stderr, /repository does not exist; create it with `stash init`/);
  });

  it('target path missing: non-zero exit naming the path, no snapshot', async () => {
    const missing = path.join(dir, 'not-mounted');
    const r = await stash(['backup', '--repo', repo, '--password-file', pw, data, missing], env);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(`backup path ${missing} cannot be read (ENOENT)`), r.stderr);
    assert.equal((await restic.snapshots()).length, 0);
  });

  it('flags are validated by name', async () => {
    const r = await stash(['recover', '--repo', repo, '--password-file', pw, '--target', path.join(dir, 'x')], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--snapshot is required/);
    const r2 = await stash(['forget', '--repo', repo, '--password-file', pw, '--tag', 'a', '--keep-last', 'five'], env);
    assert.equal(r2.code, 2);
    assert.match(r2.stderr, /--keep-last must be a whole number/);
  });

  it('a dump command gets its own env through restic (never argv); a dump stream destroyed early kills restic', async () => {
    // A repository of its own: the other cases count the snapshots of the shared one.
    const restic = createRestic({ repository: path.join(dir, 'repo-dump'), env: { RESTIC_PASSWORD_FILE: pw }, args: [], files: [] }, { binary: toolPath('restic'), cacheDir: path.join(dir, 'xdg/restic') });
    await restic.init();
    const secret = `env-only-${randomBytes(6).toString('hex')}`;
    const small = await restic.backupCommand(['sh', '-c', 'printf %s "$STASH_DUMP_SECRET"'], { host: 'env-test', tags: ['env-test'], filename: 'secret.txt', env: { STASH_DUMP_SECRET: secret } });
    const smallDump = restic.dump(small.snapshotId, '/secret.txt');
    const chunks: Buffer[] = [];
    for await (const c of smallDump.stdout) chunks.push(c as Buffer);
    await smallDump.done;
    assert.equal(Buffer.concat(chunks).toString('utf8'), secret);

    // 200 MB: far more than the pipe holds, so restic would block forever on a stream nobody reads.
    const big = await restic.backupCommand(['head', '-c', String(200 * 1024 * 1024), '/dev/urandom'], { host: 'env-test', tags: ['env-test'], filename: 'big.bin' });
    const dump = restic.dump(big.snapshotId, '/big.bin');
    await new Promise<void>((resolve) => dump.stdout.once('data', () => resolve()));
    const started = Date.now();
    dump.stdout.destroy();
    await dump.done;
    assert.ok(Date.now() - started < 15_000, 'restic stopped soon after the stream was destroyed');
    assert.equal(await restic.countLocks(), 0, 'the killed restic dump removed its lock');
  });

  it('a failing dump command saves no snapshot and says which exit status', async () => {
    await assert.rejects(
      restic.backupCommand(['sh', '-c', 'echo partial-dump; exit 3'], { host: 'host-0', tags: ['db'], filename: 'dump.sql' }),
      (e: unknown) => e instanceof CommandFailedError && /exit status 3; no snapshot was saved/.test(e.message),
    );
    assert.equal((await restic.snapshots()).length, 0);
  });

  it('SIGKILL mid-backup: no half snapshot; the next backup succeeds; the stale lock is removed; check is clean', async () => {
    // The agent and its restic in their own process group, killed together as a container is.
    const child = spawn(node, [stashBin, 'backup', '--repo', repo, '--password-file', pw, '--json', '--tag', 'killed', data],
      { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const progressSeen = await new Promise<Record<string, unknown>>((resolve, reject) => {
      let buf = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => {
        buf += c;
        for (const line of buf.split('\n').slice(0, -1)) {
          const m = JSON.parse(line) as Record<string, unknown>;
          if (m.type === 'progress' && typeof m.bytesDone === 'number' && m.bytesDone > 0) resolve(m);
          if (m.type === 'result') reject(new Error(`backup finished before it could be killed: ${line}`));
        }
        buf = buf.slice(buf.lastIndexOf('\n') + 1);
      });
      child.on('close', () => reject(new Error('backup exited before any progress')));
    });
    assert.ok((progressSeen.percentDone as number) < 1);
    assert.ok(child.pid);
    const closed = new Promise((resolve) => child.on('close', resolve));
    process.kill(-child.pid, 'SIGKILL');
    await closed;

    assert.equal((await restic.snapshots()).length, 0, 'a killed backup must not leave a snapshot');
    assert.ok((await readdir(path.join(repo, 'locks'))).length >= 1, 'the killed restic leaves its lock behind');

    const next = await stash(['backup', '--repo', repo, '--password-file', pw, '--json', '--tag', 'after-kill', data], env);
    assert.equal(next.code, 0, next.stderr);
    const result = resultOf(next);
    assert.match(result.snapshotId as string, /^[0-9a-f]{64}$/);
    assert.ok(next.stdout.split('\n').some((l) => l.includes('"type":"progress"')), 'JSON progress lines are printed');

    // check needs an exclusive lock: the stale lock blocks it until the agent removes it.
    const check = await stash(['check', '--repo', repo, '--password-file', pw, '--json'], env);
    assert.equal(check.code, 0, check.stderr);
    assert.equal((resultOf(check).summary as { numErrors: number }).numErrors, 0);
    assert.equal((await readdir(path.join(repo, 'locks'))).length, 0, 'the stale lock is gone');
    const snaps = await restic.snapshots();
    assert.equal(snaps.length, 1);
    assert.deepEqual(snaps[0]?.tags, ['after-kill']);
  });

  it('a live lock is never removed: exit 11 naming the holder', async () => {
    // A live restic holding a lock: a backup whose command sleeps.
    const holder = spawn(toolPath('restic'), ['--repo', repo, '--cache-dir', path.join(dir, 'holder-cache'), 'backup', '--stdin-from-command', '--', 'sleep', '60'],
      { env: { ...process.env, RESTIC_PASSWORD_FILE: pw }, stdio: 'ignore' });
    try {
      const deadline = Date.now() + 20_000;
      while ((await readdir(path.join(repo, 'locks'))).length === 0) {
        assert.ok(Date.now() < deadline, 'the holder never took its lock');
        await new Promise((r) => setTimeout(r, 100));
      }
      const r = await stash(['check', '--repo', repo, '--password-file', pw, '--json'], env);
      assert.equal(r.code, 11);
      assert.ok(r.stderr.includes(`locked by PID ${holder.pid}`), r.stderr);
      assert.match(r.stderr, /the lock is live \(not stale\)/);
      const res = resultOf(r);
      assert.equal((res.error as { lockHolder: { pid: number } }).lockHolder.pid, holder.pid);
      assert.equal((await readdir(path.join(repo, 'locks'))).length, 1, 'the live lock is still there');
      await assert.rejects(restic.check(), RepositoryLockedError);
    } finally {
      const gone = new Promise((resolve) => holder.on('close', resolve));
      holder.kill('SIGTERM');
      await gone;
    }
    const check = await restic.check();
    assert.equal(check.numErrors, 0);
  });
  it('SIGTERM mid-backup cancels cleanly: exit 130, no snapshot, no lock left behind', async () => {
    const before = (await restic.snapshots()).length;
    // New data, so restic must read and upload everything again (it skips files unchanged since the parent snapshot).
    for (let i = 0; i < 48; i++) await writeFile(path.join(data, `blob-${i}`), randomBytes(10 * 1024 * 1024));
    const child = spawn(node, [stashBin, 'backup', '--repo', repo, '--password-file', pw, '--json', '--tag', 'terminated', data],
      { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => {
        buf += c;
        if (buf.includes('"type":"progress"')) resolve();
        if (buf.includes('"type":"result"')) reject(new Error(`backup finished before SIGTERM: ${buf}`));
      });
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 130, stderr);
    assert.match(stderr, /cancelled|stopped/);
    assert.equal((await restic.snapshots()).length, before);
    assert.equal((await readdir(path.join(repo, 'locks'))).length, 0);
  });
  it('a damaged repository: check --read-data fails naming the repair commands', async () => {
    const small = path.join(dir, 'small-repo');
    const init = await stash(['init', '--repo', small, '--password-file', pw], env);
    assert.equal(init.code, 0, init.stderr);
    await writeFile(path.join(dir, 'one.bin'), randomBytes(64 * 1024));
    const b = await stash(['backup', '--repo', small, '--password-file', pw, path.join(dir, 'one.bin')], env);
    assert.equal(b.code, 0, b.stderr);
    const packDirs = await readdir(path.join(small, 'data'));
    const packs = (await Promise.all(packDirs.map(async (d) => (await readdir(path.join(small, 'data', d))).map((f) => path.join(small, 'data', d, f))))).flat();
    assert.ok(packs.length > 0);
    for (const pack of packs) {
      const fh = await open(pack, 'r+');
      await fh.write(Buffer.from('garbage!'), 0, 8, 100);
      await fh.close();
    }
    const r = await stash(['check', '--repo', small, '--password-file', pw, '--read-data', '--json'], env);
    assert.equal(r.code, 1);
    assert.equal((resultOf(r).error as { kind: string }).kind, 'RepositoryDamagedError');
    assert.match(r.stderr, /found \d+ error\(s\).*restic repair/);
  });
});
