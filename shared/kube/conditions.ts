// metav1.Condition handling, as apimachinery's meta.SetStatusCondition does it: pure, so a
// handler computes the whole new conditions list from the object it just read.

export type ConditionStatus = 'True' | 'False' | 'Unknown';

/** metav1.Condition: reason is CamelCase, message is for people. */
export interface Condition {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  observedGeneration?: number;
  /** RFC 3339, seconds precision (metav1.Time). */
  lastTransitionTime: string;
}

export type ConditionInput = Omit<Condition, 'lastTransitionTime'>;

/** metav1.Time serializes with seconds precision: 2026-11-25T21:00:00Z. */
export function kubeTime(date: Date): string {
  return `${date.toISOString().slice(0, 19)}Z`;
}

/**
 * Returns a new list with `condition` set. lastTransitionTime changes only when the status
 * changes (or the condition is new); reason, message and observedGeneration are always updated.
 * Order is kept; a new type is appended. The input list is not modified.
 */
export function setCondition(conditions: readonly Condition[] | undefined, condition: ConditionInput, now: Date): Condition[] {
  const list = conditions ?? [];
  const index = list.findIndex((c) => c.type === condition.type);
  const existing = index >= 0 ? list[index] : undefined;
  const next: Condition = {
    type: condition.type,
    status: condition.status,
    reason: condition.reason,
    message: condition.message,
    lastTransitionTime: existing && existing.status === condition.status ? existing.lastTransitionTime : kubeTime(now),
  };
  if (condition.observedGeneration !== undefined) next.observedGeneration = condition.observedGeneration;
  if (!existing) return [...list, next];
  return list.map((c, i) => (i === index ? next : c));
}

export function findCondition(conditions: readonly Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

export function isConditionTrue(conditions: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(conditions, type)?.status === 'True';
}

/** Returns a new list without conditions of `type`. */
export function removeCondition(conditions: readonly Condition[] | undefined, type: string): Condition[] {
  return (conditions ?? []).filter((c) => c.type !== type);
}

/** True when setting `condition` would change nothing (so the status write can be skipped). */
export function conditionUnchanged(conditions: readonly Condition[] | undefined, condition: ConditionInput): boolean {
  const existing = findCondition(conditions, condition.type);
  return existing !== undefined && existing.status === condition.status && existing.reason === condition.reason &&
    existing.message === condition.message && existing.observedGeneration === condition.observedGeneration;
}
