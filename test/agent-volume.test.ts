/**
 * The agent's volume backup, recovery and retention against the real restic 0.19.1 and a local
 * repository in a temp dir, on a tree the test builds with owners, modes, times and symlinks.
 * Runs as root (chown to other uids/gids).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, lchown, lutimes, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, utimes, writeFile, chown, lstat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { toolPath } from './support/tools.ts';
import { createRestic } from '../agent/restic/restic.ts';
import type { ResticDriver } from '../agent/restic/restic.ts';
import { backupDirectories, recoverDirectories, selectSnapshot } from '../agent/volume/volume.ts';
import { identityTags } from '../agent/volume/identity.ts';
import { forgetArgs } from '../agent/retention/retention.ts';
import { SnapshotNotFoundError } from '../agent/restic/errors.ts';
import { getObject } from '../shared/kube/index.ts';
import { applyYaml, deleteNamespace, freshNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { repoRoot } from './support/tools.ts';
import { runCaptured } from './support/run.ts';
import type { Captured } from './support/run.ts';

interface Entry { type: string; mode: number; uid: number; gid: number; mtimeNs: bigint; size: number; sha?: string; link?: string }

/** Every entry under root (relative path -> metadata), symlinks not followed. */
async function treeOf(root: string): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  async function walk(dir: string, rel: string): Promise<void> {
    for (const name of (await readdir(dir)).sort()) {
      const full = path.join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(full, { bigint: true });
      const e: Entry = {
        type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other',
        mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), mtimeNs: st.mtimeNs, size: st.isFile() ? Number(st.size) : 0,
      };
      if (st.isFile()) e.sha = createHash('sha256').update(await readFile(full)).digest('hex');
      if (st.isSymbolicLink()) e.link = await readlink(full);
      out.set(r, e);
      if (st.isDirectory()) await walk(full, r);
    }
  }
  await walk(root, '');
  return out;
}

function assertSameTree(actual: Map<string, Entry>, expected: Map<string, Entry>): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort());
  for (const [k, e] of expected) {
    const a = actual.get(k);
    // Symlink permission bits are not meaningful on Linux (always 0777); compare the rest.
    assert.deepEqual(a, e, `entry ${k} differs`);
  }
}

const T = (iso: string): Date => new Date(iso);

/** Builds the source tree: owners, modes (incl. setgid dir), times set bottom-up, symlinks. */
async function buildTree(root: string): Promise<void> {
  await mkdir(path.join(root, 'sub/deeper'), { recursive: true });
  await mkdir(path.join(root, 'empty'), { recursive: true });
  await mkdir(path.join(root, 'cache'), { recursive: true });
  await writeFile(path.join(root, 'a.txt'), 'hello\n');
  await writeFile(path.join(root, 'secret.key'), 'k'.repeat(100));
  await writeFile(path.join(root, 'run.sh'), '#!/bin/sh\necho hi\n');
  await writeFile(path.join(root, 'zero'), '');
  await writeFile(path.join(root, 'sub/b.bin'), Buffer.alloc(3 * 1024 * 1024, 7));
  await writeFile(path.join(root, 'sub/deeper/c.txt'), 'deep\n');
  await writeFile(path.join(root, 'cache/junk.tmp'), 'junk');
  await writeFile(path.join(root, 'sub/skip.tmp'), 'junk');
  await symlink('a.txt', path.join(root, 'link-rel'));
  await symlink('/etc/hostname', path.join(root, 'link-abs'));
  await symlink('missing/target', path.join(root, 'sub/dangling'));
  await chmod(path.join(root, 'a.txt'), 0o644);
  await chmod(path.join(root, 'secret.key'), 0o600);
  await chmod(path.join(root, 'run.sh'), 0o755);
  await chmod(path.join(root, 'zero'), 0o444);
  await chmod(path.join(root, 'sub'), 0o2750);
  await chmod(path.join(root, 'empty'), 0o700);
  await chown(path.join(root, 'secret.key'), 1234, 2345);
  await chown(path.join(root, 'sub'), 1001, 1002);
  await chown(path.join(root, 'sub/b.bin'), 65534, 65534);
  await lchown(path.join(root, 'link-rel'), 1234, 2345);
  await utimes(path.join(root, 'a.txt'), T('2020-01-02T03:04:05.123Z'), T('2020-01-02T03:04:05.123Z'));
  await utimes(path.join(root, 'secret.key'), T('2019-05-06T07:08:09Z'), T('2019-05-06T07:08:09Z'));
  await utimes(path.join(root, 'sub/b.bin'), T('2021-12-31T23:59:59Z'), T('2021-12-31T23:59:59Z'));
  await lutimes(path.join(root, 'link-rel'), T('2018-01-01T00:00:00Z'), T('2018-01-01T00:00:00Z'));
  await utimes(path.join(root, 'sub/deeper'), T('2017-03-03T03:03:03Z'), T('2017-03-03T03:03:03Z'));
  await utimes(path.join(root, 'sub'), T('2016-06-06T06:06:06Z'), T('2016-06-06T06:06:06Z'));
  await utimes(path.join(root, 'empty'), T('2015-05-05T05:05:05Z'), T('2015-05-05T05:05:05Z'));
}

describe('volume backup and recovery with real restic', () => {
  let dir: string;
  let src: string;
  let restic: ResticDriver;
  const host = 'host-0';
  const tags = identityTags({ namespace: 'demo', backup: 'vol', kind: 'Deployment', workload: 'web' });

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'stash-agent-volume-'));
    src = path.join(dir, 'src');
    await mkdir(src);
    await writeFile(path.join(dir, 'password'), 'correct horse battery staple\n', { mode: 0o600 });
    restic = createRestic(
      { repository: path.join(dir, 'repo'), env: { RESTIC_PASSWORD_FILE: path.join(dir, 'password') }, args: [], files: [] },
      { binary: toolPath('restic'), cacheDir: path.join(dir, 'cache') },
    );
    await restic.init();
    await restic.init(); // idempotent
    await buildTree(src);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('backs up and recovers an identical tree (content, modes, owners, times, symlinks)', async () => {
    const summary = await backupDirectories(restic, { paths: [src], host, tags });
    assert.match(summary.snapshotId, /^[0-9a-f]{64}$/);
    assert.equal(summary.filesNew, 8); // regular files; symlinks and dirs are not counted
    const snaps = await restic.snapshots({ host, tags });
    assert.equal(snaps.length, 1);
    assert.deepEqual(snaps[0]?.paths, [src]);
    assert.deepEqual([...(snaps[0]?.tags ?? [])].sort(), [...tags].sort());

    const expected = await treeOf(src);
    const out = path.join(dir, 'out-full');
    const r = await recoverDirectories(restic, { snapshot: 'latest', host, tags, target: out, from: src, mode: 'merge' });
    assert.equal(r.snapshot.id, summary.snapshotId);
    assertSameTree(await treeOf(out), expected);

    // restic's own layout: <target>/<absolute source path>
    const layout = path.join(dir, 'out-layout');
    await recoverDirectories(restic, { snapshot: summary.snapshotId.slice(0, 8), target: layout, mode: 'merge' });
    assertSameTree(await treeOf(path.join(layout, src)), expected);
  });

  it('recovers only the selected paths', async () => {
    const out = path.join(dir, 'out-selected');
    await recoverDirectories(restic, { snapshot: 'latest', host, tags, target: out, paths: [path.join(src, 'sub/deeper'), path.join(src, 'a.txt')], mode: 'merge' });
    const tree = await treeOf(path.join(out, src));
    assert.deepEqual([...tree.keys()].sort(), ['a.txt', 'sub', 'sub/deeper', 'sub/deeper/c.txt']);
    assert.equal(tree.get('sub/deeper/c.txt')?.sha, createHash('sha256').update('deep\n').digest('hex'));
  });

  it('merge keeps extra files; rollback (--delete) removes them and undoes changes', async () => {
    const expected = await treeOf(src);
    const merge = path.join(dir, 'out-merge');
    const rollback = path.join(dir, 'out-rollback');
    for (const d of [merge, rollback]) {
      await recoverDirectories(restic, { snapshot: 'latest', host, tags, target: d, from: src, mode: 'merge' });
      await writeFile(path.join(d, 'extra.txt'), 'not in the snapshot');
      await mkdir(path.join(d, 'sub/newdir'));
      await writeFile(path.join(d, 'sub/newdir/x'), 'x');
      await writeFile(path.join(d, 'a.txt'), 'changed after backup');
    }
    await recoverDirectories(restic, { snapshot: 'latest', host, tags, target: merge, from: src, mode: 'merge' });
    const merged = await treeOf(merge);
    assert.ok(merged.has('extra.txt'));
    assert.ok(merged.has('sub/newdir/x'));
    assert.equal(await readFile(path.join(merge, 'a.txt'), 'utf8'), 'hello\n');

    const r = await recoverDirectories(restic, { snapshot: 'latest', host, tags, target: rollback, from: src, mode: 'rollback' });
    assert.ok(r.summary.filesDeleted >= 2);
    assertSameTree(await treeOf(rollback), expected);
  });

  it('in-place rollback (target /, limited to the backed-up path) as a workload recovery does it', async () => {
    const inPlace = path.join(dir, 'inplace/data');
    await mkdir(inPlace, { recursive: true });
    await writeFile(path.join(inPlace, 'keep.txt'), 'v1');
    await writeFile(path.join(dir, 'inplace/sibling.txt'), 'outside the backed-up path');
    const ipTags = identityTags({ namespace: 'demo', backup: 'inplace', kind: 'Deployment', workload: 'web' });
    await backupDirectories(restic, { paths: [inPlace], host, tags: ipTags });
    const expected = await treeOf(inPlace);
    await writeFile(path.join(inPlace, 'keep.txt'), 'v2 written after the backup');
    await writeFile(path.join(inPlace, 'new.txt'), 'not in the snapshot');
    await assert.rejects(recoverDirectories(restic, { snapshot: 'latest', host, tags: ipTags, target: '/', mode: 'rollback' }), /needs the paths to roll back/);
    await recoverDirectories(restic, { snapshot: 'latest', host, tags: ipTags, target: '/', paths: [inPlace], mode: 'rollback' });
    assertSameTree(await treeOf(inPlace), expected);
    assert.equal(await readFile(path.join(dir, 'inplace/sibling.txt'), 'utf8'), 'outside the backed-up path');
  });

  it('honours excludes', async () => {
    const exTags = identityTags({ namespace: 'demo', backup: 'excl', kind: 'Deployment', workload: 'web' });
    const s = await backupDirectories(restic, { paths: [src], host, tags: exTags, excludes: ['*.tmp', path.join(src, 'cache')] });
    const out = path.join(dir, 'out-excl');
    await recoverDirectories(restic, { snapshot: s.snapshotId, target: out, from: src, mode: 'merge' });
    const tree = await treeOf(out);
    assert.ok(!tree.has('cache'));
    assert.ok(!tree.has('sub/skip.tmp'));
    assert.ok(tree.has('sub/b.bin'));
    assert.ok(tree.has('a.txt'));
  });

  it('target files reach restic from a private directory (password as a file); dump streams one file', async () => {
    const viaFile = createRestic(
      { repository: path.join(dir, 'repo'), env: {}, args: [], files: [{ name: 'password', content: 'correct horse battery staple\n', envVar: 'RESTIC_PASSWORD_FILE' }] },
      { binary: toolPath('restic'), cacheDir: path.join(dir, 'cache') },
    );
    const snaps = await viaFile.snapshots({ tags });
    assert.ok(snaps.length >= 1);
    const { stdout, done } = viaFile.dump('latest', path.join(src, 'sub/deeper/c.txt'));
    const chunks: Buffer[] = [];
    for await (const c of stdout) chunks.push(c as Buffer);
    await done;
    assert.equal(Buffer.concat(chunks).toString('utf8'), 'deep\n');
    const leftovers = (await readdir(os.tmpdir())).filter((n) => n.startsWith('stash-restic-'));
    const mine = await Promise.all(leftovers.map(async (n) => (await readFile(path.join(os.tmpdir(), n, 'password'), 'utf8').catch(() => '')) === 'correct horse battery staple\n'));
    assert.ok(!mine.includes(true), 'the private directory is removed after each run');
  });

  it('says clearly when there is no snapshot to recover', async () => {
    await assert.rejects(
      recoverDirectories(restic, { snapshot: 'latest', host, tags: identityTags({ namespace: 'demo', backup: 'never', kind: 'Deployment', workload: 'web' }), target: path.join(dir, 'none'), mode: 'merge' }),
      (e: unknown) => e instanceof SnapshotNotFoundError && /no snapshot for host host-0 and tags .*backup=never/.test(e.message),
    );
    await assert.rejects(selectSnapshot(restic, { snapshot: 'deadbeef' }), SnapshotNotFoundError);
  });
});

describe('retention with real restic', () => {
  let dir: string;
  let restic: ResticDriver;
  const resticBin = toolPath('restic');
  const mine = identityTags({ namespace: 'demo', backup: 'mine', kind: 'StatefulSet', workload: 'db' });
  const other = identityTags({ namespace: 'demo', backup: 'other', kind: 'StatefulSet', workload: 'db' });
  const ids = new Map<string, string>();

  /** One snapshot at a given local time (restic --time), created with restic itself. */
  function snap(label: string, time: string, hostName: string, tagList: readonly string[]): void {
    const out = execFileSync(resticBin, ['--json', '--repo', path.join(dir, 'repo'), '--cache-dir', path.join(dir, 'cache'), 'backup', '--time', time, '--host', hostName,
      ...tagList.flatMap((t) => ['--tag', t]), path.join(dir, 'data')], { env: { ...process.env, RESTIC_PASSWORD_FILE: path.join(dir, 'password') }, encoding: 'utf8' });
    const summary = out.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { message_type: string; snapshot_id?: string })
      .find((m) => m.message_type === 'summary');
    assert.ok(summary?.snapshot_id);
    ids.set(label, summary.snapshot_id);
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'stash-agent-retention-'));
    await mkdir(path.join(dir, 'data'));
    await writeFile(path.join(dir, 'data/f'), 'data');
    await writeFile(path.join(dir, 'password'), 'pw-retention\n', { mode: 0o600 });
    restic = createRestic({ repository: path.join(dir, 'repo'), env: { RESTIC_PASSWORD_FILE: path.join(dir, 'password') }, args: [], files: [] },
      { binary: resticBin, cacheDir: path.join(dir, 'cache') });
    await restic.init();
    snap('d1-10', '2026-01-01 10:00:00', 'host-0', mine);
    snap('d1-12', '2026-01-01 12:00:00', 'host-0', mine);
    snap('d2-10', '2026-01-02 10:00:00', 'host-0', mine);
    snap('d3-09', '2026-01-03 09:00:00', 'host-0', mine);
    snap('d3-18', '2026-01-03 18:00:00', 'host-0', [...mine, 'gold']);
    snap('d4-08', '2026-01-04 08:00:00', 'host-0', mine);
    snap('h1-old', '2025-06-01 10:00:00', 'host-1', mine); // same Backup, other replica
    snap('other-old', '2025-01-01 10:00:00', 'host-0', other); // another Backup
    snap('other-new', '2026-01-05 10:00:00', 'host-0', other);
    snap('ns-only', '2025-01-01 10:00:00', 'host-0', mine.slice(0, 1)); // carries only the namespace tag
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('dry run reports without removing', async () => {
    const args = forgetArgs({ keepLast: 1, dryRun: true }, { tags: mine, host: 'host-0' });
    assert.ok(args);
    const groups = await restic.forget(args);
    assert.equal(groups.flatMap((g) => g.remove).length, 5);
    assert.equal((await restic.snapshots()).length, 10);
  });

  it('keeps exactly what the policy says and never touches other Backups, replicas or partial tag matches', async () => {
    const args = forgetArgs({ keepDaily: 2, keepTags: ['gold'], prune: true }, { tags: mine, host: 'host-0' });
    assert.ok(args);
    const groups = await restic.forget(args);
    // keepDaily 2 -> newest per day of the 2 newest days: d4-08, d3-18; keep-tag gold -> d3-18.
    const want = new Set(['d4-08', 'd3-18'].map((l) => ids.get(l)));
    assert.deepEqual(new Set(groups.flatMap((g) => g.keep.map((s) => s.id))), want);
    assert.deepEqual(new Set(groups.flatMap((g) => g.remove.map((s) => s.id))), new Set(['d1-10', 'd1-12', 'd2-10', 'd3-09'].map((l) => ids.get(l))));
    const left = new Set((await restic.snapshots()).map((s) => s.id));
    assert.deepEqual(left, new Set(['d4-08', 'd3-18', 'h1-old', 'other-old', 'other-new', 'ns-only'].map((l) => ids.get(l))));
    const check = await restic.check();
    assert.equal(check.numErrors, 0);
  });
});

describe('in-cluster mode against the real kube-apiserver', () => {
  let cluster: Cluster;
  let ns: string;
  let dir: string;
  let src: string;

  function stash(args: readonly string[]): Promise<Captured> {
    return runCaptured(process.execPath, [path.join(repoRoot, 'agent/bin/stash.js'), ...args],
      { ...process.env, KUBECONFIG: cluster.kubeconfigPath, NAMESPACE: ns, STASH_RESTIC: toolPath('restic'), STASH_CACHE_DIR: path.join(dir, 'cache'), POD_NAME: 'web-6c9f-x2x4z' });
  }
  const status = async (kind: string, name: string): Promise<Record<string, unknown>> =>
    ((await getObject(cluster.kc, { apiVersion: 'stash.appscode.com/v1alpha2', kind, namespace: ns, name })) as { status?: Record<string, unknown> } | undefined)?.status ?? {};

  before(async () => {
    cluster = await useCluster();
    ns = await freshNamespace(cluster, 'agent-volume');
    dir = await mkdtemp(path.join(os.tmpdir(), 'stash-agent-cluster-'));
    src = path.join(dir, 'source/data');
    await mkdir(src, { recursive: true });
    await buildTree(src);
    await applyYaml(cluster, `
apiVersion: v1
kind: Secret
metadata: {name: local-secret}
stringData: {RESTIC_PASSWORD: cluster-test-password}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Repository
metadata: {name: local-repo}
spec:
  backend:
    storageSecretName: local-secret
    local: {mountPath: ${dir}, subPath: repo, hostPath: {path: ${dir}}}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Backup
metadata: {name: web-backup}
spec:
  schedule: '@hourly'
  backupAgent: stash-volume-backup
  repository: {name: local-repo}
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  targetDirectories: [${src}]
  excludes: ['*.tmp']
  retentionPolicy: {keepLast: 1, prune: true}
---
apiVersion: stash.appscode.com/v1alpha2
kind: Recovery
metadata: {name: web-recovery}
spec:
  repository: {name: local-repo}
  recoveryAgent: stash-volume-recovery
  paths: [${src}]
  recoverTo:
    volume: {mountPath: ${path.join(dir, 'recovered')}, hostPath: {path: ${path.join(dir, 'recovered')}}}
`, ns);
  });
  after(async () => {
    await deleteNamespace(cluster, ns);
    await rm(dir, { recursive: true, force: true });
  });

  it('recover --recovery-name (the direct-API recovery path) restores a snapshot the Backup took, and records it in the Recovery status', async () => {
    // Backups in a cluster go through handle-trigger (test/agent-incluster.test.ts); here the
    // snapshot is taken with the standalone CLI under the Backup's identity tags and host.
    const repo = path.join(dir, 'repo');
    const passwordFile = path.join(dir, 'password');
    await writeFile(passwordFile, 'cluster-test-password', { mode: 0o600 });
    const standalone = ['--repo', repo, '--password-file', passwordFile, '--json'];
    assert.equal((await stash(['init', ...standalone])).code, 0);
    const tags = identityTags({ namespace: ns, backup: 'web-backup', kind: 'Deployment', workload: 'web' }).flatMap((t) => ['--tag', t]);
    const backup = await stash(['backup', ...standalone, '--host', 'host-0', ...tags, '--exclude', '*.tmp', src]);
    assert.equal(backup.code, 0, backup.stderr);
    const snapshotId = (JSON.parse(backup.stdout.trim().split('\n').at(-1) ?? '{}') as { snapshotId: string }).snapshotId;

    const rec = await stash(['recover', '--recovery-name=web-recovery', '--json', `--metrics-dir=${path.join(dir, 'metrics', 'recovery.prom')}`]);
    assert.equal(rec.code, 0, rec.stderr);
    const recovered = await treeOf(path.join(dir, 'recovered'));
    assert.ok(!recovered.has('sub/skip.tmp'), 'excluded at backup time');
    const expected = await treeOf(src);
    for (const k of ['a.txt', 'secret.key', 'sub/b.bin', 'link-rel', 'sub/deeper/c.txt']) assert.deepEqual(recovered.get(k), expected.get(k), k);
    const rs = await status('Recovery', 'web-recovery');
    const hosts = rs.recoveredHosts as { host: string; phase: string; snapshotId: string }[];
    assert.equal(hosts.length, 1);
    assert.deepEqual([hosts[0]?.host, hosts[0]?.phase, hosts[0]?.snapshotId], ['host-0', 'Succeeded', snapshotId]);
    // --metrics-dir given as a file path, as the design's templates write it.
    const metrics = await readFile(path.join(dir, 'metrics', 'recovery.prom'), 'utf8');
    assert.match(metrics, /stash_recovery_success\{[^}]*recovery="web-recovery"[^}]*\} 1/);
  });

  it('backup --backup-name without handle-trigger\'s URL fails naming STASH_FUNCTIONS_URL, and reads nothing from the API', async () => {
    const r = await stash(['backup', '--backup-name=web-backup']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /STASH_FUNCTIONS_URL is not set/);
  });
});
