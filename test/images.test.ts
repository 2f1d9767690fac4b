// scripts/images.ts: the OCI image archives the test node imports. What `ctr images import` and a
// runtime rely on, checked on the archives themselves: the index names the image as containerd
// normalizes it, every blob's digest is the sha256 of its bytes, the config's diff_ids are the
// (uncompressed) layers, a layer's root directory is 0755, the same inputs give the same digests,
// and the functions image runs as a non-root user (its Knative Services require it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { repoRoot } from './support/tools.ts';

interface Descriptor { mediaType: string; digest: string; size: number; annotations?: Record<string, string> }

function build(...names: string[]): Map<string, string> {
  const out = execFileSync(process.execPath, [path.join(repoRoot, 'scripts/images.ts'), 'build', ...names], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 20 });
  return new Map(out.trim().split('\n').map((l) => l.split(' ') as [string, string]));
}

function member(archive: string, name: string): Buffer {
  return execFileSync('tar', ['-xOf', archive, name], { maxBuffer: 1 << 30 });
}

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');
const blob = (archive: string, digest: string): Buffer => member(archive, `./blobs/sha256/${digest.replace(/^sha256:/, '')}`);

function manifestOf(archive: string): { index: { manifests: Descriptor[] }; manifest: { config: Descriptor; layers: Descriptor[] }; manifestDigest: string } {
  const index = JSON.parse(member(archive, './index.json').toString('utf8')) as { manifests: Descriptor[] };
  const [entry] = index.manifests;
  assert.ok(entry, `${archive}: the index lists a manifest`);
  const bytes = blob(archive, entry.digest);
  assert.equal(`sha256:${sha256(bytes)}`, entry.digest, 'the manifest blob matches its digest');
  assert.equal(bytes.length, entry.size);
  return { index, manifest: JSON.parse(bytes.toString('utf8')) as { config: Descriptor; layers: Descriptor[] }, manifestDigest: entry.digest };
}

test('each archive is an OCI layout containerd imports under the normalized name, with every digest the sha256 of its blob', { timeout: 120_000 }, () => {
  const archives = build('stash-pause', 'busybox');
  assert.deepEqual([...archives.keys()], ['stash-pause:0.1.0', 'busybox:latest']);
  for (const [ref, archive] of archives) {
    assert.deepEqual(JSON.parse(member(archive, './oci-layout').toString('utf8')), { imageLayoutVersion: '1.0.0' });
    const { index, manifest } = manifestOf(archive);
    assert.equal(index.manifests[0]?.annotations?.['io.containerd.image.name'], `docker.io/library/${ref}`);
    const configBytes = blob(archive, manifest.config.digest);
    assert.equal(`sha256:${sha256(configBytes)}`, manifest.config.digest);
    const config = JSON.parse(configBytes.toString('utf8')) as { os: string; architecture: string; rootfs: { diff_ids: string[] } };
    assert.equal(config.os, 'linux');
    assert.equal(config.architecture, 'amd64');
    assert.deepEqual(config.rootfs.diff_ids, manifest.layers.map((l) => l.digest), 'uncompressed layers: diff_id = digest');
    for (const layer of manifest.layers) {
      const bytes = blob(archive, layer.digest);
      assert.equal(`sha256:${sha256(bytes)}`, layer.digest, `${ref}: layer ${layer.digest}`);
      assert.equal(bytes.length, layer.size);
      const root = execFileSync('tar', ['-tv'], { input: bytes }).toString().split('\n')[0] ?? '';
      assert.match(root, /^drwxr-xr-x .* \.\/$/, `${ref}: the layer's root directory (the image's /) is 0755: ${root}`);
    }
  }
  const pause = archives.get('stash-pause:0.1.0') ?? '';
  const pauseConfig = JSON.parse(blob(pause, manifestOf(pause).manifest.config.digest).toString('utf8')) as { config: { Entrypoint: string[] } };
  assert.deepEqual(pauseConfig.config.Entrypoint, ['/pause']);
});

test('the same inputs give the same image (deterministic layers and manifest)', { timeout: 120_000 }, () => {
  const first = manifestOf(build('busybox').get('busybox:latest') ?? '').manifestDigest;
  const second = manifestOf(build('busybox').get('busybox:latest') ?? '').manifestDigest;
  assert.equal(second, first);
});

test('the functions image runs as nobody, with node and functions/main.ts as its entrypoint', { timeout: 180_000 }, () => {
  const archive = build('stash-functions').get('stash-functions:0.1.0') ?? '';
  const { manifest } = manifestOf(archive);
  const config = JSON.parse(blob(archive, manifest.config.digest).toString('utf8')) as { config: { User?: string; Entrypoint: string[] } };
  assert.equal(config.config.User, '65534:65534');
  assert.deepEqual(config.config.Entrypoint, ['/usr/local/bin/node', '/opt/stash/functions/main.ts']);
});
