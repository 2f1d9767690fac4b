#!/usr/bin/env node
// Launcher for the `stash` agent CLI: Node 24 runs the TypeScript entry directly (type stripping).
// Node's compile cache (STASH_COMPILE_CACHE_DIR, else NODE_COMPILE_CACHE, else Node's default
// under the temp directory) keeps the compiled modules: a warm start skips type stripping and
// compilation (measured: `stash --help` 0.08 s / 77 MB -> 0.03 s / 53 MB; a backup's node
// process 92 MB -> 55 MB). A cache that cannot be written is simply not used.
// STASH_COMPILE_CACHE_SEED names a cache made when the image was built (scripts/images.ts): it is
// copied into an empty STASH_COMPILE_CACHE_DIR first, because Node uses a cache only where it can
// write (the image's own copy is read-only to a pod's user), so a pod's first start is warm too.
// Node keeps a cache in a directory named for the version, the flags and the user id
// (`v24.21.0-x64-<hash>-<uid>`): the seed, made as root, is copied under the running user's id.
import { cpSync, existsSync, readdirSync } from 'node:fs';
import module from 'node:module';
import path from 'node:path';
import process from 'node:process';

const dir = process.env.STASH_COMPILE_CACHE_DIR || undefined;
const seed = process.env.STASH_COMPILE_CACHE_SEED;
if (dir && seed && existsSync(seed) && !existsSync(dir)) {
  try {
    const uid = process.getuid?.() ?? 0;
    for (const entry of readdirSync(seed)) {
      cpSync(path.join(seed, entry), path.join(dir, entry.replace(/-\d+$/, `-${uid}`)), { recursive: true });
    }
  } catch {
    // an unwritable place: start without the seed
  }
}
module.enableCompileCache?.(dir);
const { runCli } = await import('../cli/main.ts');
await runCli();
