// The `stash` launcher (agent/bin/stash.js) as a person or a pod starts it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runCaptured } from './support/run.ts';
import { repoRoot } from './support/tools.ts';

const stash = path.join(repoRoot, 'agent/bin/stash.js');

async function filesBelow(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) if (entry.isFile()) out.push(path.join(entry.parentPath, entry.name));
  return out;
}

test('the launcher keeps its compiled modules in STASH_COMPILE_CACHE_DIR, and a start from that cache behaves the same', async () => {
  const cache = await mkdtemp(path.join(os.tmpdir(), 'stash-compile-cache-'));
  try {
    const env: NodeJS.ProcessEnv = { ...process.env, STASH_COMPILE_CACHE_DIR: cache };
    delete env.NODE_COMPILE_CACHE;
    delete env.NODE_DISABLE_COMPILE_CACHE;
    assert.deepEqual(await filesBelow(cache), []);
    const cold = await runCaptured(process.execPath, [stash, '--help'], env);
    assert.equal(cold.code, 0, cold.stderr);
    assert.match(cold.stdout, /stash backup/);
    const cached = await filesBelow(cache);
    assert.ok(cached.length > 0, 'the first start wrote the compile cache');
    const warm = await runCaptured(process.execPath, [stash, '--help'], env);
    assert.equal(warm.code, 0, warm.stderr);
    assert.equal(warm.stdout, cold.stdout, 'the same help from the cache');
    // A cache directory that cannot be made (a file on its path) is not an error: the agent starts without it.
    const unwritable = await runCaptured(process.execPath, [stash, '--help'], { ...env, STASH_COMPILE_CACHE_DIR: path.join(stash, 'cache') });
    assert.equal(unwritable.code, 0, unwritable.stderr);
    assert.equal(unwritable.stdout, cold.stdout);
  } finally {
    await rm(cache, { recursive: true, force: true });
  }
});

test('a seed cache (STASH_COMPILE_CACHE_SEED, made when the image is built) is copied into an empty STASH_COMPILE_CACHE_DIR and used; a missing or unusable seed is not an error', async () => {
  const base = await mkdtemp(path.join(os.tmpdir(), 'stash-compile-seed-'));
  try {
    const env: NodeJS.ProcessEnv = { ...process.env, STASH_COMPILE_CACHE_DIR: path.join(base, 'seed') };
    delete env.NODE_COMPILE_CACHE;
    delete env.NODE_DISABLE_COMPILE_CACHE;
    const seeding = await runCaptured(process.execPath, [stash, '--help'], env);
    assert.equal(seeding.code, 0, seeding.stderr);
    const seedFiles = (await filesBelow(path.join(base, 'seed'))).map((f) => path.relative(path.join(base, 'seed'), f)).sort();
    assert.ok(seedFiles.length > 0);

    const seeded = await runCaptured(process.execPath, [stash, '--help'], { ...env, STASH_COMPILE_CACHE_DIR: path.join(base, 'pod'), STASH_COMPILE_CACHE_SEED: path.join(base, 'seed') });
    assert.equal(seeded.code, 0, seeded.stderr);
    assert.equal(seeded.stdout, seeding.stdout);
    const copied = (await filesBelow(path.join(base, 'pod'))).map((f) => path.relative(path.join(base, 'pod'), f)).sort();
    assert.deepEqual(copied, seedFiles, 'the seed was copied, and the start found nothing more to compile');

    // Another user (a pod's runAsUser): Node names the cache directory for the user id, so the seed is copied under it and used.
    await chmod(base, 0o755);
    const asNobody = path.join(base, 'nobody');
    await mkdir(asNobody, { mode: 0o777 });
    await chmod(asNobody, 0o777);
    const other = await runCaptured('runuser', ['-u', 'nobody', '--', process.execPath, stash, '--help'],
      { ...env, STASH_COMPILE_CACHE_DIR: path.join(asNobody, 'cache'), STASH_COMPILE_CACHE_SEED: path.join(base, 'seed') });
    assert.equal(other.code, 0, other.stderr);
    assert.equal(other.stdout, seeding.stdout);
    const otherFiles = (await filesBelow(path.join(asNobody, 'cache'))).map((f) => path.relative(path.join(asNobody, 'cache'), f)).sort();
    assert.deepEqual(otherFiles, seedFiles.map((f) => f.replace(/^([^/]*)-0\//, '$1-65534/')), 'copied under uid 65534, and nothing more compiled');

    const noSeed = await runCaptured(process.execPath, [stash, '--help'], { ...env, STASH_COMPILE_CACHE_DIR: path.join(base, 'fresh'), STASH_COMPILE_CACHE_SEED: path.join(base, 'absent') });
    assert.equal(noSeed.code, 0, noSeed.stderr);
    assert.equal(noSeed.stdout, seeding.stdout);
    const unwritable = await runCaptured(process.execPath, [stash, '--help'], { ...env, STASH_COMPILE_CACHE_DIR: path.join(stash, 'cache'), STASH_COMPILE_CACHE_SEED: path.join(base, 'seed') });
    assert.equal(unwritable.code, 0, unwritable.stderr);
    assert.equal(unwritable.stdout, seeding.stdout);
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});
