export { apiClient, loadKubeConfig, objectApi } from './client.ts';
export {
  AlreadyExistsError, ConflictError, ForbiddenError, GoneError, InvalidError, KubeApiError, KubeConfigError, kubeCall, NotFoundError,
  toKubeError, UnauthorizedError,
} from './errors.ts';
export type { KubeStatus } from './errors.ts';
export { applyObject, describeRef, getObject, mergePatch, patchStatus, pluralOf } from './objects.ts';
export type { ApplyOptions, ObjectRef, PatchOptions, StatusPatchOptions } from './objects.ts';
export { conditionUnchanged, findCondition, isConditionTrue, kubeTime, removeCondition, setCondition } from './conditions.ts';
export type { Condition, ConditionInput, ConditionStatus } from './conditions.ts';
export { emitEvent, eventName, involvedReference, microTime, truncateBytes } from './events.ts';
export type { EventInput, InvolvedObject } from './events.ts';
