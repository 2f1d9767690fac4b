import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { memoryCgroup } from './cgroup.ts';

const MiB = 1024 * 1024;

function withCgroup(files: Record<string, string>, check: (root: string) => void): void {
  const root = mkdtempSync(path.join(os.tmpdir(), 'stash-cgroup-'));
  try {
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
      writeFileSync(path.join(root, name), text);
    }
    check(root);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

test('cgroup v2: memory.events counts the OOM kills, memory.max is the limit ("max": none)', () => {
  withCgroup({ 'memory.events': 'low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n', 'memory.max': `${128 * MiB}\n` }, (root) => {
    assert.equal(memoryCgroup(root).oomKills(), 1);
    assert.equal(memoryCgroup(root).limit(), 128 * MiB);
  });
  withCgroup({ 'memory.events': 'oom 0\noom_kill 0\n', 'memory.max': 'max\n' }, (root) => {
    assert.equal(memoryCgroup(root).oomKills(), 0);
    assert.equal(memoryCgroup(root).limit(), undefined);
  });
});

test('cgroup v1: memory.oom_control counts the OOM kills, memory.limit_in_bytes is the limit (2^63 rounded: none)', () => {
  withCgroup({ 'memory/memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 2\n', 'memory/memory.limit_in_bytes': `${256 * MiB}\n` }, (root) => {
    assert.equal(memoryCgroup(root).oomKills(), 2);
    assert.equal(memoryCgroup(root).limit(), 256 * MiB);
  });
  withCgroup({ 'memory/memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\n', 'memory/memory.limit_in_bytes': '9223372036854771712\n' }, (root) => {
    assert.equal(memoryCgroup(root).oomKills(), undefined, 'a kernel that does not count');
    assert.equal(memoryCgroup(root).limit(), undefined);
  });
});

test('no memory cgroup: nothing known', () => {
  withCgroup({}, (root) => {
    assert.equal(memoryCgroup(root).oomKills(), undefined);
    assert.equal(memoryCgroup(root).limit(), undefined);
  });
});
