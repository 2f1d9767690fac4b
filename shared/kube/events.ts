// Kubernetes Events (events.k8s.io/v1) for transitions a person wants to hear about.
//
// Functions are stateless and may scale to zero, so client-go's in-memory event correlation does
// not apply. Instead the Event's name is derived from what it says (object, type, reason, note,
// action, controller): the same Event again is an AlreadyExists on create, and then its series
// count is raised instead of a new object being written. The apiserver's event TTL (1 h by
// default) ends a series; the next occurrence starts a new one.
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import type { EventsV1Event, KubeConfig, KubernetesObject, V1ObjectReference } from '@kubernetes/client-node';
import { AlreadyExistsError, ConflictError } from './errors.ts';
import { kubeRequest, resourcePath } from './http.ts';
import { describeRef } from './objects.ts';
import type { ObjectRef } from './objects.ts';

export interface EventInput {
  type: 'Normal' | 'Warning';
  /** CamelCase, why the action was taken (BackupSucceeded, SidecarInjected); at most 128 bytes. */
  reason: string;
  /** For people; must not contain secrets; cut to 1 KiB. */
  message: string;
  /** What was done or failed (Inject, Backup, Restore); at most 128 bytes. */
  action: string;
  /** A second object involved (e.g. the Job a Backup launched). */
  related?: ObjectRef & { uid?: string };
}

export type InvolvedObject = (ObjectRef & { uid?: string }) | KubernetesObject;

// Limits from k8s.io/kubernetes v1.34 pkg/apis/core/validation/events.go.
const NOTE_LIMIT = 1024;
const FIELD_LIMIT = 128;

/** Cuts a string to at most `limit` UTF-8 bytes without splitting a character. */
export function truncateBytes(text: string, limit: number): string {
  if (Buffer.byteLength(text) <= limit) return text;
  let out = '';
  let bytes = 0;
  const ellipsis = '…';
  const budget = limit - Buffer.byteLength(ellipsis);
  for (const char of text) {
    const size = Buffer.byteLength(char);
    if (bytes + size > budget) break;
    out += char;
    bytes += size;
  }
  return out + ellipsis;
}

export function involvedReference(object: InvolvedObject): V1ObjectReference {
  if ('metadata' in object && object.metadata !== undefined) {
    const reference: V1ObjectReference = { apiVersion: object.apiVersion, kind: object.kind, name: object.metadata.name };
    if (object.metadata.namespace) reference.namespace = object.metadata.namespace;
    if (object.metadata.uid) reference.uid = object.metadata.uid;
    return reference;
  }
  const ref = object as ObjectRef & { uid?: string };
  const reference: V1ObjectReference = { apiVersion: ref.apiVersion, kind: ref.kind, name: ref.name };
  if (ref.namespace) reference.namespace = ref.namespace;
  if (ref.uid) reference.uid = ref.uid;
  return reference;
}

/** The deterministic Event name: `<object name>.<16 hex of a hash of what the Event says>`. */
export function eventName(regarding: V1ObjectReference, event: EventInput, reportingController: string): string {
  const hash = createHash('sha256')
    .update(JSON.stringify([regarding.uid ?? '', regarding.apiVersion, regarding.kind, regarding.namespace ?? '', regarding.name,
      event.type, event.reason, event.action, event.message, reportingController]))
    .digest('hex')
    .slice(0, 16);
  const base = (regarding.name ?? 'object').slice(0, 200).replace(/\.+$/, '');
  return `${base}.${hash}`;
}

/** MicroTime with the six fraction digits apimachinery's RFC3339Micro parser requires. */
export function microTime(date: Date): string {
  return `${date.toISOString().slice(0, -1)}000Z`;
}

/**
 * Records an Event about `involvedObject`, or raises the series count of the same Event
 * (same type, reason, message, action and controller). Returns the stored Event.
 */
export async function emitEvent(
  kc: KubeConfig, involvedObject: InvolvedObject, event: EventInput, reportingController: string, now: Date = new Date(),
): Promise<EventsV1Event> {
  const regarding = involvedReference(involvedObject);
  const namespace = regarding.namespace ?? 'default';
  const name = eventName(regarding, event, reportingController);
  const what = `record Event ${event.reason} for ${describeRef({ apiVersion: regarding.apiVersion ?? '', kind: regarding.kind ?? '', namespace, name: regarding.name ?? '' })}`;
  const body: EventsV1Event = {
    apiVersion: 'events.k8s.io/v1',
    kind: 'Event',
    metadata: { name, namespace },
    eventTime: microTime(now) as unknown as EventsV1Event['eventTime'], // JSON on the wire
    type: event.type,
    reason: truncateBytes(event.reason, FIELD_LIMIT),
    note: truncateBytes(event.message, NOTE_LIMIT),
    action: truncateBytes(event.action, FIELD_LIMIT),
    regarding,
    reportingController,
    reportingInstance: truncateBytes(`${reportingController}-${hostname()}`, FIELD_LIMIT),
  };
  if (event.related) body.related = involvedReference(event.related);
  const path = resourcePath('events.k8s.io/v1', 'events', { namespace });
  try {
    return await kubeRequest<EventsV1Event>(kc, what, 'POST', path, { body });
  } catch (error) {
    if (!(error instanceof AlreadyExistsError)) throw error;
  }
  // The same Event exists: count one more occurrence. resourceVersion guards against a racing
  // emitter; retry a few times on Conflict.
  for (let attempt = 0; ; attempt++) {
    const existing = await kubeRequest<EventsV1Event>(kc, what, 'GET', `${path}/${encodeURIComponent(name)}`);
    const count = Math.max(existing.series?.count ?? 1, 1) + 1;
    const patch = { metadata: { resourceVersion: existing.metadata?.resourceVersion }, series: { count, lastObservedTime: microTime(now) } };
    try {
      return await kubeRequest<EventsV1Event>(kc, what, 'PATCH', `${path}/${encodeURIComponent(name)}`, { body: patch, contentType: 'application/merge-patch+json' });
    } catch (error) {
      if (!(error instanceof ConflictError) || attempt >= 4) throw error;
    }
  }
}
