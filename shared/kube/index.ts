export { loadKubeConfig } from './client.ts';
export {
  AlreadyExistsError, ConflictError, ForbiddenError, GoneError, InvalidError, KubeApiError, KubeConfigError, kubeCall, NotFoundError,
  statusError, toKubeError, UnauthorizedError,
} from './errors.ts';
export type { KubeStatus } from './errors.ts';
export {
  applyObject, createObject, deleteObject, describeRef, getObject, getObjectOnce, listInNamespaces, listObjects, mergePatch, patchStatus, pluralOf, replaceObject,
} from './objects.ts';
export type { ApplyOptions, DeleteOptions, ListOptions, ObjectRef, PatchOptions, ReadCache, StatusPatchOptions } from './objects.ts';
export { kubeRequest, kubeRequestRaw, resourcePath } from './http.ts';
export type { Query, RawAnswer, RequestOptions } from './http.ts';
export { conditionUnchanged, findCondition, isConditionTrue, kubeTime, removeCondition, setCondition } from './conditions.ts';
export type { Condition, ConditionInput, ConditionStatus } from './conditions.ts';
export { emitEvent, eventName, involvedReference, microTime, truncateBytes } from './events.ts';
export type { EventInput, InvolvedObject } from './events.ts';
export { retryOnConflict } from './retry.ts';
