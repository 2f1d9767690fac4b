// The `stash` launcher (agent/bin/stash.js) as a person or a pod starts it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
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
