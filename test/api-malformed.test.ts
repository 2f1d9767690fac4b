// Parity: every malformed manifest in test/fixtures/malformed/ is rejected by the real apiserver
// (422, naming the field given in its `# expect-field:` line) and by the zod schema (an issue at the
// same path). A fixture marked `# expect-status: 400` is one the apiserver cannot even decode (a
// label value that is a map): it answers 400 naming the field's Go name, and zod reports an issue
// at or under the field.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { dryRunCreate } from '../shared/api/dry-run.ts';
import { validateObject } from '../shared/api/validate.ts';
import { deleteNamespace, freshNamespace, useCluster, type Cluster } from './support/cluster.ts';

const dir = path.join(import.meta.dirname, 'fixtures', 'malformed');
const files = readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort();

function expectedField(text: string, file: string): string {
  const m = /^# expect-field: (\S+)$/m.exec(text);
  if (m?.[1] === undefined) throw new Error(`${file}: add a "# expect-field: <path>" line naming the field that must be reported`);
  return m[1];
}

describe('malformed manifests', () => {
  let cluster: Cluster;
  let namespace: string;
  before(async () => {
    cluster = await useCluster();
    namespace = await freshNamespace(cluster, 'api-malformed');
  });
  after(async () => {
    if (namespace !== undefined) await deleteNamespace(cluster, namespace);
  });

  it('has at least 40 cases (422) covering all seven kinds', () => {
    const unprocessable = files.filter((f) => !readFileSync(path.join(dir, f), 'utf8').includes('# expect-status: 400'));
    assert.ok(unprocessable.length >= 40, `only ${unprocessable.length} malformed fixtures the apiserver answers with 422`);
    const kinds = new Set(files.map((f) => (parse(readFileSync(path.join(dir, f), 'utf8')) as { kind: string }).kind));
    assert.deepEqual([...kinds].sort(), ['AgentTemplate', 'AppBinding', 'Backup', 'BackupTemplate', 'BackupTrigger', 'Recovery', 'Repository']);
  });

  for (const file of files) {
    it(file, async () => {
      const text = readFileSync(path.join(dir, file), 'utf8');
      const field = expectedField(text, file);
      const status = Number(/^# expect-status: (\d+)$/m.exec(text)?.[1] ?? '422');
      const obj = parse(text) as Record<string, unknown>;

      const zod = validateObject(obj);
      assert.equal(zod.ok, false, `zod accepted ${file}`);
      if (zod.ok) return;
      const named = (p: string) => p === field || (status === 400 && p.startsWith(`${field}.`));
      assert.ok(zod.issues.some((i) => named(i.path)), `zod issues do not name ${field}: ${JSON.stringify(zod.issues)}`);

      const server = await dryRunCreate(cluster.kc, obj, namespace);
      assert.equal(server.status, status, `apiserver answered ${server.status} for ${file}: ${server.message}`);
      if (status === 400) {
        const last = field.split('.').pop() ?? field;
        assert.ok(server.message.includes(`.${last}`), `apiserver message does not name ${last}: ${server.message}`);
        return;
      }
      assert.ok(server.causes.some((c) => c.field === field), `apiserver causes do not name ${field}: ${JSON.stringify(server.causes)}`);
      assert.ok(server.message.includes(field), `apiserver message does not name ${field}: ${server.message}`);
    });
  }
});
