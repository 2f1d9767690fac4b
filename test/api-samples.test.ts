// Every sample manifest of the design (normalised only where Kubernetes rejects it, see
// docs/design-samples.md) is accepted by the real apiserver and by the zod schemas; the shipped
// default AgentTemplates too.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { parseDefaultBackupAnnotations } from '../shared/api/backup-template.ts';
import { objectMeta } from '../shared/api/common.ts';
import { dryRunCreate } from '../shared/api/dry-run.ts';
import { KINDS } from '../shared/api/kinds.ts';
import { validateObject } from '../shared/api/validate.ts';
import { deleteNamespace, freshNamespace, useCluster, type Cluster } from './support/cluster.ts';

/**
 * Cluster-scoped objects (AgentTemplate, BackupTemplate) share one name space with every other test
 * on the shared control plane; a dry-run create of a taken name answers 409, not a verdict on the
 * schema. They are checked under a unique name (the name is not what is being validated).
 */
const suffix = randomBytes(3).toString('hex');
function underUniqueName<T>(obj: T): T {
  const o = obj as { kind?: string; metadata?: { name?: string } };
  if (o.kind !== 'AgentTemplate' && o.kind !== 'BackupTemplate') return obj;
  return { ...o, metadata: { ...o.metadata, name: `${o.metadata?.name ?? 'x'}-${suffix}` } } as T;
}

const dir = path.join(import.meta.dirname, 'fixtures', 'design-samples');
const files = readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort();
const defaultsFile = path.join(import.meta.dirname, '..', 'shared', 'api', 'defaults', 'agent-templates.yaml');

describe('design samples', () => {
  let cluster: Cluster;
  let namespace: string;
  before(async () => {
    cluster = await useCluster();
    namespace = await freshNamespace(cluster, 'api-samples');
  });
  after(async () => {
    if (namespace !== undefined) await deleteNamespace(cluster, namespace);
  });

  it('covers every sample of the design (17) and every Stash kind', () => {
    assert.equal(files.length, 17);
    const kinds = new Set(files.map((f) => (parse(readFileSync(path.join(dir, f), 'utf8')) as { kind: string }).kind));
    for (const k of KINDS) assert.ok(kinds.has(k.kind), `no design sample of ${k.kind}`);
  });

  for (const file of files) {
    it(file, async () => {
      const obj = parse(readFileSync(path.join(dir, file), 'utf8')) as { kind: string; metadata: { annotations?: Record<string, string> } };
      if (KINDS.some((k) => k.kind === obj.kind)) {
        const zod = validateObject(obj);
        assert.ok(zod.ok, `zod rejects ${file}: ${zod.ok ? '' : JSON.stringify(zod.issues)}`);
      } else {
        // A workload opting into default backup: its metadata and annotations are ours to read.
        assert.ok(objectMeta.safeParse(obj.metadata).success);
        const request = parseDefaultBackupAnnotations(obj.metadata.annotations);
        assert.deepEqual(request, { enabled: true, template: 'volume-backup-template', targetDirectories: ['/source/data'] });
      }
      const server = await dryRunCreate(cluster.kc, underUniqueName(obj), namespace);
      assert.equal(server.status, 201, `apiserver rejects ${file}: ${server.status} ${server.message}`);
    });
  }

  it('the default AgentTemplates are valid for zod and for the apiserver', async () => {
    const docs = parseAllDocuments(readFileSync(defaultsFile, 'utf8')).map((d) => d.toJS() as Record<string, unknown>);
    assert.ok(docs.length >= 8);
    for (const doc of docs) {
      const zod = validateObject(doc);
      assert.ok(zod.ok, `zod rejects ${JSON.stringify(doc.metadata)}: ${zod.ok ? '' : JSON.stringify(zod.issues)}`);
      const server = await dryRunCreate(cluster.kc, underUniqueName(doc), namespace);
      assert.equal(server.status, 201, `apiserver rejects ${JSON.stringify(doc.metadata)}: ${server.message}`);
    }
  });
});
