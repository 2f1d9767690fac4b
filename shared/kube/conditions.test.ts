import { test } from 'node:test';
import assert from 'node:assert/strict';
import { conditionUnchanged, isConditionTrue, kubeTime, removeCondition, setCondition } from './conditions.ts';
import type { Condition } from './conditions.ts';

const t0 = new Date('2026-11-25T21:00:00.456Z');
const t1 = new Date('2026-11-25T22:30:00.000Z');

test('a new condition is appended with lastTransitionTime = now (seconds precision)', () => {
  const result = setCondition(undefined, { type: 'Ready', status: 'False', reason: 'Pending', message: 'waiting', observedGeneration: 1 }, t0);
  assert.deepEqual(result, [{ type: 'Ready', status: 'False', reason: 'Pending', message: 'waiting', observedGeneration: 1, lastTransitionTime: '2026-11-25T21:00:00Z' }]);
});

test('same status keeps lastTransitionTime but updates reason, message and observedGeneration', () => {
  const before = setCondition([], { type: 'Ready', status: 'False', reason: 'Pending', message: 'waiting', observedGeneration: 1 }, t0);
  const after = setCondition(before, { type: 'Ready', status: 'False', reason: 'RepositoryMissing', message: 'no repo', observedGeneration: 2 }, t1);
  assert.equal(after[0]?.lastTransitionTime, '2026-11-25T21:00:00Z');
  assert.equal(after[0]?.reason, 'RepositoryMissing');
  assert.equal(after[0]?.message, 'no repo');
  assert.equal(after[0]?.observedGeneration, 2);
});

test('a status change moves lastTransitionTime; other conditions and order are kept; input not modified', () => {
  const before: Condition[] = [
    { type: 'Injected', status: 'True', reason: 'Done', message: '', lastTransitionTime: '2026-01-01T00:00:00Z' },
    { type: 'Ready', status: 'False', reason: 'Pending', message: '', lastTransitionTime: '2026-01-01T00:00:00Z' },
  ];
  const copy = structuredClone(before);
  const after = setCondition(before, { type: 'Ready', status: 'True', reason: 'Scheduled', message: 'next run at 22:00' }, t1);
  assert.deepEqual(before, copy);
  assert.deepEqual(after.map((c) => c.type), ['Injected', 'Ready']);
  assert.equal(after[0], before[0]);
  assert.equal(after[1]?.lastTransitionTime, '2026-11-25T22:30:00Z');
  assert.equal(after[1]?.observedGeneration, undefined);
  assert.ok(isConditionTrue(after, 'Ready'));
});

test('removeCondition, conditionUnchanged and kubeTime', () => {
  const list = setCondition([], { type: 'Ready', status: 'True', reason: 'Ok', message: 'fine', observedGeneration: 3 }, t0);
  assert.ok(conditionUnchanged(list, { type: 'Ready', status: 'True', reason: 'Ok', message: 'fine', observedGeneration: 3 }));
  assert.ok(!conditionUnchanged(list, { type: 'Ready', status: 'True', reason: 'Ok', message: 'fine', observedGeneration: 4 }));
  assert.ok(!conditionUnchanged(list, { type: 'Other', status: 'True', reason: 'Ok', message: 'fine' }));
  assert.deepEqual(removeCondition(list, 'Ready'), []);
  assert.equal(kubeTime(t0), '2026-11-25T21:00:00Z');
});
