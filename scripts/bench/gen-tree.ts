/**
 * Generates the benchmark's file tree (deterministic: a seeded PRNG, so every run and every
 * machine gets the same tree): `node scripts/bench/gen-tree.ts <dir>`.
 *
 * Shape (about 1.3 GB in 50,000 files, 2,500 directories, depth 3):
 *  - 60 % of files are "text": lines of words from a 2,000-word vocabulary plus numbers (log
 *    files, source-like, CSV-like); they compress about 3-4x with zstd.
 *  - 40 % are "binary": random bytes (like compressed media, archives); incompressible.
 *  - Sizes are log-uniform: 90 % between 512 B and 32 KB (~350 MB), 9.95 % between 32 KB and
 *    256 KB (~550 MB), 0.05 % between 1 MB and 20 MB, plus 10 files of 20-40 MB (~450 MB
 *    together): many small files, a good part of the bytes in a few large ones, as home
 *    directories and application volumes usually look.
 * Writes a marker file `.complete` last; reruns on a complete tree do nothing.
 */
import { createCipheriv } from 'node:crypto';
import { mkdir, writeFile, stat } from 'node:fs/promises';
import path from 'node:path';

const rootArg = process.argv[2];
if (!rootArg) {
  process.stderr.write('usage: node scripts/bench/gen-tree.ts <dir>\n');
  process.exit(2);
}
const root: string = rootArg;
const FILES = Number(process.env.BENCH_FILES ?? 50_000);
const marker = path.join(root, '.complete');

// mulberry32: small, fast, seeded.
let seed = 0x5eed1234;
function rand(): number {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const logUniform = (lo: number, hi: number): number => Math.round(Math.exp(Math.log(lo) + rand() * (Math.log(hi) - Math.log(lo))));

const syllables = ['ka', 'to', 'ri', 'an', 'el', 'mo', 'su', 'pe', 'lo', 'ver', 'tra', 'ing', 'ion', 'st', 'qu', 'ba', 'ne', 'di', 'or', 'um'];
const words: string[] = [];
for (let i = 0; i < 2000; i++) {
  let w = '';
  const n = 1 + Math.floor(rand() * 4);
  for (let j = 0; j < n; j++) w += syllables[Math.floor(rand() * syllables.length)];
  words.push(w);
}

function textBlock(size: number): Buffer {
  const parts: string[] = [];
  let len = 0;
  while (len < size) {
    const lineWords = 4 + Math.floor(rand() * 12);
    let line = `${Math.floor(rand() * 1e9)} `;
    for (let i = 0; i < lineWords; i++) line += `${words[Math.floor(Math.pow(rand(), 2) * words.length)]} `;
    line += '\n';
    parts.push(line);
    len += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, size);
}

// Incompressible bytes: an AES-128-CTR key stream with a fixed key (fast and reproducible).
const keystream = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0));
function randomBlock(size: number): Buffer {
  return keystream.update(Buffer.alloc(size));
}

async function main(): Promise<void> {
  if (await stat(marker).then(() => true, () => false)) {
    process.stdout.write(`${root}: complete already\n`);
    return;
  }
  let total = 0;
  const dirs: string[] = [];
  for (let a = 0; a < 25; a++) for (let b = 0; b < 10; b++) for (let c = 0; c < 10; c++) dirs.push(path.join(root, `d${a}`, `s${b}`, `t${c}`));
  for (const d of dirs) await mkdir(d, { recursive: true });
  for (let i = 0; i < FILES; i++) {
    const r = rand();
    let size: number;
    if (i % 5000 === 17) size = logUniform(20 << 20, 40 << 20);
    else if (r < 0.9) size = logUniform(512, 32 << 10);
    else if (r < 0.9995) size = logUniform(32 << 10, 256 << 10);
    else size = logUniform(1 << 20, 20 << 20);
    const text = rand() < 0.6;
    const dir = dirs[i % dirs.length] ?? root;
    const name = path.join(dir, `f${i}.${text ? 'txt' : 'bin'}`);
    await writeFile(name, text ? textBlock(size) : randomBlock(size));
    total += size;
  }
  await writeFile(marker, `${FILES} files, ${total} bytes\n`);
  process.stdout.write(`${root}: ${FILES} files, ${(total / 1e9).toFixed(2)} GB\n`);
}
await main();
