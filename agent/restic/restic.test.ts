import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRestic } from './restic.ts';
import { ResticError, ResticNotFoundError } from './errors.ts';

const target = { repository: '/nonexistent/repo', env: { RESTIC_PASSWORD: 'pw-value' }, args: [], files: [] };

describe('createRestic without a usable binary', () => {
  it('says which binary is missing and how to fix it', async () => {
    const restic = createRestic(target, { binary: '/nonexistent/restic' });
    await assert.rejects(restic.snapshots(), (e: unknown) => e instanceof ResticNotFoundError && /set \$STASH_RESTIC/.test(e.message));
  });
  it('rejects tags restic would split and file names that escape the private directory before running anything', async () => {
    const restic = createRestic(target, { binary: '/nonexistent/restic' });
    await assert.rejects(restic.backupPaths(['/x'], { host: 'h', tags: ['a,b'] }), (e: unknown) => e instanceof ResticError && /commas/.test(e.message));
    const bad = createRestic({ ...target, files: [{ name: '../evil', content: 'x', envVar: 'X' }] }, { binary: '/nonexistent/restic' });
    await assert.rejects(bad.snapshots(), /must be a plain file name/);
  });
});
