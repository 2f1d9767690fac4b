/**
 * Finds the tools that scripts/tools.sh builds, building any that are missing (cached by version).
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const found = new Map<string, string>();

/** Absolute path of a tool's binary; builds it through scripts/tools.sh the first time. */
export function toolPath(tool: string): string {
  const known = found.get(tool);
  if (known) return known;
  const out = execFileSync(path.join(repoRoot, 'scripts/tools.sh'), ['ensure', tool], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const binary = out.trim().split('\n').pop() ?? '';
  if (!binary) throw new Error(`scripts/tools.sh ensure ${tool} printed no path`);
  found.set(tool, binary);
  return binary;
}
