import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CHECK_INTERVAL_MS, checkDue } from './agent-protocol.ts';

test('a repository check is due when never done, unreadable, or a day old', () => {
  const now = new Date('2026-11-25T12:00:00Z');
  assert.equal(checkDue(undefined, now), true);
  assert.equal(checkDue('not a time', now), true);
  assert.equal(checkDue(new Date(now.getTime() - CHECK_INTERVAL_MS).toISOString(), now), true);
  assert.equal(checkDue(new Date(now.getTime() - CHECK_INTERVAL_MS + 60_000).toISOString(), now), false);
});
