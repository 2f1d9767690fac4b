import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { forgetArgs, hasKeepRule, RetentionScopeError } from './retention.ts';

const tags = ['stash.appscode.com/namespace=demo', 'stash.appscode.com/backup=b1'];

describe('forgetArgs', () => {
  it('scopes to all identity tags in one --tag flag, the host, and groups by host', () => {
    assert.deepEqual(forgetArgs({ keepLast: 5 }, { tags, host: 'host-0' }), [
      '--tag', 'stash.appscode.com/namespace=demo,stash.appscode.com/backup=b1', '--host', 'host-0', '--group-by', 'host', '--keep-last', '5',
    ]);
  });

  it('maps every keep rule, keep tags, and prune', () => {
    assert.deepEqual(
      forgetArgs({ keepLast: 1, keepHourly: 2, keepDaily: 3, keepWeekly: 4, keepMonthly: 5, keepYearly: 6, keepTags: ['gold', 'x,y'], prune: true }, { tags }),
      ['--tag', tags.join(','), '--group-by', 'host', '--keep-last', '1', '--keep-hourly', '2', '--keep-daily', '3', '--keep-weekly', '4',
        '--keep-monthly', '5', '--keep-yearly', '6', '--keep-tag', 'gold', '--keep-tag', 'x,y', '--prune'],
    );
  });

  it('dry run wins over prune (restic must not prune in a dry run)', () => {
    const args = forgetArgs({ keepDaily: 7, prune: true, dryRun: true }, { tags });
    assert.ok(args?.includes('--dry-run'));
    assert.ok(!args?.includes('--prune'));
  });

  it('treats 0 as "not set" like restic and returns undefined when no rule remains', () => {
    assert.equal(forgetArgs({ keepLast: 0 }, { tags }), undefined);
    assert.equal(forgetArgs({ prune: true }, { tags }), undefined);
    assert.equal(hasKeepRule({ keepLast: 0, keepTags: [] }), false);
    assert.deepEqual(forgetArgs({ keepLast: 0, keepWeekly: 2 }, { tags })?.slice(-2), ['--keep-weekly', '2']);
  });

  it('refuses to run unscoped or with a tag restic would split', () => {
    assert.throws(() => forgetArgs({ keepLast: 1 }, { tags: [] }), RetentionScopeError);
    assert.throws(() => forgetArgs({ keepLast: 1 }, { tags: ['a,b'] }), /must not be empty or contain commas/);
  });
});
