// Write shared/api/crds/<plural>.<group>.yaml from the zod schemas (npm run gen:crds).
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateCrds } from '../shared/api/crd-gen.ts';

const dir = join(import.meta.dirname, '..', 'shared', 'api', 'crds');
mkdirSync(dir, { recursive: true });
const crds = generateCrds();
for (const f of readdirSync(dir)) if (f.endsWith('.yaml') && !crds.has(f)) rmSync(join(dir, f));
for (const [file, text] of crds) writeFileSync(join(dir, file), text);
console.log(`wrote ${crds.size} CRDs to ${dir}`);
