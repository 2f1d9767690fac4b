// The design's sample manifests (test/fixtures/design-samples/, normalized only where Kubernetes
// rejects them), as plain objects a test edits before applying.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { repoRoot } from './tools.ts';

export type Sample = Record<string, unknown> & { metadata: Record<string, unknown>; spec: Record<string, unknown> };

export const designSamplesDir = path.join(repoRoot, 'test/fixtures/design-samples');

/** A fresh copy of a design sample; `namespace` replaces the namespace it names. */
export function designSample(file: string, namespace?: string): Sample {
  const object = parse(readFileSync(path.join(designSamplesDir, file), 'utf8')) as Sample;
  if (namespace !== undefined) object.metadata.namespace = namespace;
  return object;
}
