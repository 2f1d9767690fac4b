// What a directory holds, to compare a recovered tree with the original byte for byte.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

/** Every regular file below `root` (relative path, '/'-separated) -> its bytes as base64. */
export async function fileContents(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  async function walk(rel: string): Promise<void> {
    for (const entry of await readdir(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await walk(r);
      else out.set(r, (await readFile(path.join(root, r))).toString('base64'));
    }
  }
  await walk('');
  return out;
}
