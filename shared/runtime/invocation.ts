// Turns one HTTP request (a Knative CloudEvent, an OpenFaaS cron-connector call or a plain JSON
// call) into one typed Invocation. Pure: no I/O, so every format is unit-tested from fixtures.
//
// Formats reproduced from knative.dev/eventing v0.49.2 (knative-v1.22.2); see fixtures/README.md.
import type { IncomingHttpHeaders } from 'node:http';
import { HTTP } from 'cloudevents';
import { z } from 'zod';
import { InvalidRequestError, PermanentError } from './errors.ts';

export type ApiServerAction = 'add' | 'update' | 'delete';

/** What a Reference-mode event carries (corev1.ObjectReference; namespace absent when cluster-scoped). */
export interface ObjectRef {
  apiVersion: string;
  kind: string;
  namespace?: string;
  name: string;
}

export interface ApiServerInvocation {
  source: 'apiserver';
  /** 'ref': data was {kind, namespace, name, apiVersion}; 'resource': data was the whole object. */
  mode: 'ref' | 'resource';
  action: ApiServerAction;
  ref: ObjectRef;
  /** The object as the adapter saw it (Resource mode only). Handlers still re-read it. */
  object?: Record<string, unknown>;
  eventId: string;
  /** ce-source: the apiserver URL the adapter talks to (rest.Config.Host). */
  eventSource: string;
  time?: string;
}

export interface PingInvocation<P = unknown> {
  source: 'ping';
  /** The PingSource that fired, from ce-source /apis/v1/namespaces/<ns>/pingsources/<name>. */
  pingSource: { namespace: string; name: string };
  /** The PingSource's data/dataBase64, parsed (JSON content types) and validated; undefined if empty. */
  data: P;
  eventId: string;
  time?: string;
}

export interface CronConnectorInvocation {
  source: 'cron-connector';
}

export type HttpRoutes = Record<string, z.ZodType>;

export type HttpInvocation<R extends HttpRoutes> = {
  [P in keyof R & string]: { source: 'http'; path: P; body: z.output<R[P]> };
}[keyof R & string];

export type Invocation<R extends HttpRoutes = Record<never, z.ZodType>, P = unknown> =
  | ApiServerInvocation
  | PingInvocation<P>
  | CronConnectorInvocation
  | HttpInvocation<R>;

export interface RawRequest {
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export const API_SERVER_REF_TYPE = /^dev\.knative\.apiserver\.ref\.(add|update|delete)$/;
export const API_SERVER_RESOURCE_TYPE = /^dev\.knative\.apiserver\.resource\.(add|update|delete)$/;
export const PING_TYPE = 'dev.knative.sources.ping';
const PING_SOURCE = /^\/apis\/v1\/namespaces\/([^/]+)\/pingsources\/([^/]+)$/;

const nonEmpty = z.string().min(1);

/** Reference-mode data: events.go getRef (corev1.ObjectReference, omitempty fields). */
export const objectRefSchema = z.object({
  apiVersion: nonEmpty,
  kind: nonEmpty,
  namespace: nonEmpty.optional(),
  name: nonEmpty,
});

/**
 * `POST /invoke` of the functions that act on objects: the object an event is about, by hand
 * ({"kind":"Backup","namespace":"demo","name":"x"}; no namespace for a cluster-scoped kind).
 */
export const invokeObjectSchema = z.object({
  apiVersion: nonEmpty.optional(),
  kind: nonEmpty,
  namespace: nonEmpty.optional(),
  name: nonEmpty,
});

/** A plain HTTP call naming one namespaced object: {"kind":"Backup","namespace":"demo","name":"x"}. */
export const invokeRefSchema = z.object({
  apiVersion: nonEmpty.optional(),
  kind: nonEmpty,
  namespace: nonEmpty,
  name: nonEmpty,
});

/** Resource-mode data: the whole unstructured object. */
const resourceSchema = z.looseObject({
  apiVersion: nonEmpty,
  kind: nonEmpty,
  metadata: z.looseObject({ name: nonEmpty, namespace: nonEmpty.optional() }),
});

/** "data.metadata.name: expected string, received undefined; ..." */
export function describeZodError(error: z.ZodError, prefix: string): { message: string; field: string } {
  const parts = error.issues.map((issue) => {
    const path = [prefix, ...issue.path.map(String)].filter((p) => p !== '').join('.');
    return `${path || '(root)'}: ${issue.message}`;
  });
  const first = error.issues[0];
  const field = [prefix, ...(first?.path.map(String) ?? [])].filter((p) => p !== '').join('.');
  return { message: parts.join('; '), field: field || '(root)' };
}

export function parseWith<S extends z.ZodType>(schema: S, value: unknown, prefix: string, what: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const { message, field } = describeZodError(result.error, prefix);
  throw new InvalidRequestError(`${what} failed validation: ${message}`, field);
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function mediaType(contentType: string | undefined): string | undefined {
  return contentType?.split(';')[0]?.trim().toLowerCase() || undefined;
}

function isJsonMediaType(type: string | undefined): boolean {
  return type === 'application/json' || type === 'text/json' || (type?.endsWith('+json') ?? false);
}

export function isCloudEventRequest(headers: IncomingHttpHeaders): boolean {
  const type = mediaType(header(headers, 'content-type'));
  return header(headers, 'ce-specversion') !== undefined || header(headers, 'ce-id') !== undefined ||
    (type?.startsWith('application/cloudevents') ?? false);
}

export function isCronConnectorRequest(headers: IncomingHttpHeaders): boolean {
  return header(headers, 'x-connector')?.toLowerCase() === 'cron-connector';
}

function parseJson(text: string, what: string, fix: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    // V8 quotes the input in some messages ('Unexpected token ..., "<input>" is not valid JSON'):
    // keep only the position, so a body never comes back in a response or a log line.
    const reason = (error as Error).message.replace(/,? ".*" is not valid JSON$/s, '');
    throw new InvalidRequestError(`${what} is not valid JSON (${reason}); ${fix}`, 'body');
  }
}

/** Decodes event data by its content type: JSON -> value, text/* -> string, else bytes. */
function decodeData(body: Buffer, contentType: string | undefined): unknown {
  if (body.length === 0) return undefined;
  const type = mediaType(contentType);
  if (isJsonMediaType(type)) {
    return parseJson(body.toString('utf8'), `CloudEvent data (content-type ${type})`,
      'send JSON data or change the content type');
  }
  if (type?.startsWith('text/')) return body.toString('utf8');
  return body;
}

interface EventParts {
  id: string;
  source: string;
  type: string;
  time?: string;
  data: unknown;
}

const binaryHeaders = z.object({
  'ce-specversion': z.literal('1.0', { error: 'must be "1.0"' }),
  'ce-id': nonEmpty,
  'ce-source': nonEmpty,
  'ce-type': nonEmpty,
});

const structuredEnvelope = z.looseObject({
  specversion: z.literal('1.0', { error: 'must be "1.0"' }),
  id: nonEmpty,
  source: nonEmpty,
  type: nonEmpty,
});

function readBinary(request: RawRequest): EventParts {
  const present: Record<string, string | undefined> = {};
  for (const name of ['ce-specversion', 'ce-id', 'ce-source', 'ce-type']) present[name] = header(request.headers, name);
  const result = binaryHeaders.safeParse(present);
  if (!result.success) {
    const issue = result.error.issues[0];
    const name = String(issue?.path[0] ?? 'ce-*');
    throw new InvalidRequestError(
      `binary-mode CloudEvent header ${name} ${present[name] === undefined ? 'is missing' : `is invalid (${issue?.message})`}; ` +
        'send ce-specversion: 1.0, ce-id, ce-source and ce-type', name);
  }
  const data = decodeData(request.body, header(request.headers, 'content-type'));
  // cloudevents' HTTP.toEvent reads the attributes and ce-* extensions; the body is decoded above
  // because its JSON parser quotes non-JSON text instead of failing.
  const event = toEvent(request.headers, '');
  // toEvent defaults a missing time to "now": report only what the sender set.
  return { id: event.id, source: event.source, type: event.type, time: header(request.headers, 'ce-time'), data };
}

function readStructured(request: RawRequest): EventParts {
  const type = mediaType(header(request.headers, 'content-type'));
  if (type?.startsWith('application/cloudevents-batch')) {
    throw new InvalidRequestError('batched CloudEvents are not supported; send one event per request', 'content-type');
  }
  if (type !== 'application/cloudevents+json') {
    throw new InvalidRequestError(`structured CloudEvent content type ${type} is not supported; use application/cloudevents+json`, 'content-type');
  }
  const envelope = parseJson(request.body.toString('utf8'), 'structured CloudEvent body', 'send a JSON CloudEvent envelope');
  const parsed = structuredEnvelope.safeParse(envelope);
  if (!parsed.success) {
    const { message, field } = describeZodError(parsed.error, '');
    throw new InvalidRequestError(`structured CloudEvent is invalid: ${message}; send specversion "1.0", id, source and type`, field);
  }
  const fields = parsed.data as Record<string, unknown>;
  let data: unknown = fields.data;
  if (data === undefined && typeof fields.data_base64 === 'string') {
    data = decodeData(Buffer.from(fields.data_base64, 'base64'), typeof fields.datacontenttype === 'string' ? fields.datacontenttype : undefined);
  }
  const event = toEvent(request.headers, { ...fields, data: undefined, data_base64: undefined });
  return { id: event.id, source: event.source, type: event.type, time: typeof fields.time === 'string' ? fields.time : undefined, data };
}

function toEvent(headers: IncomingHttpHeaders, body: unknown): { id: string; source: string; type: string; time?: string } {
  try {
    const event = HTTP.toEvent({ headers, body });
    if (Array.isArray(event)) throw new Error('batch');
    return event;
  } catch (error) {
    throw new InvalidRequestError(`not a valid CloudEvent: ${(error as Error).message}`, 'body');
  }
}

export interface ParseOptions<R extends HttpRoutes, P> {
  routes?: R;
  pingData?: z.ZodType<P>;
}

/** Parses a request to the event path ("/"): a CloudEvent or a cron-connector call. */
export function parseEventRequest<P = unknown>(request: RawRequest, pingData?: z.ZodType<P>):
  ApiServerInvocation | PingInvocation<P> | CronConnectorInvocation {
  if (!isCloudEventRequest(request.headers)) {
    if (isCronConnectorRequest(request.headers)) return { source: 'cron-connector' };
    throw new InvalidRequestError(
      'request is neither a CloudEvent (no ce-specversion/ce-id header, content type not application/cloudevents+json) ' +
        'nor an OpenFaaS cron-connector call (no X-Connector: cron-connector header); plain JSON calls go to the function\'s HTTP routes',
      'headers');
  }
  const structured = mediaType(header(request.headers, 'content-type'))?.startsWith('application/cloudevents') ?? false;
  const event = structured ? readStructured(request) : readBinary(request);
  return invocationFromEvent(event, pingData);
}

function invocationFromEvent<P>(event: EventParts, pingData?: z.ZodType<P>): ApiServerInvocation | PingInvocation<P> {
  const refMatch = API_SERVER_REF_TYPE.exec(event.type);
  if (refMatch) {
    const ref = parseWith(objectRefSchema, event.data, 'data', `ApiServerSource Reference event ${event.type} data`);
    return { source: 'apiserver', mode: 'ref', action: refMatch[1] as ApiServerAction, ref, ...common(event) };
  }
  const resourceMatch = API_SERVER_RESOURCE_TYPE.exec(event.type);
  if (resourceMatch) {
    const object = parseWith(resourceSchema, event.data, 'data', `ApiServerSource Resource event ${event.type} data`);
    const ref: ObjectRef = { apiVersion: object.apiVersion, kind: object.kind, name: object.metadata.name };
    if (object.metadata.namespace !== undefined) ref.namespace = object.metadata.namespace;
    return { source: 'apiserver', mode: 'resource', action: resourceMatch[1] as ApiServerAction, ref, object, ...common(event) };
  }
  if (event.type === PING_TYPE) {
    const match = PING_SOURCE.exec(event.source);
    if (!match?.[1] || !match[2]) {
      throw new InvalidRequestError(
        `PingSource event source ${JSON.stringify(event.source)} is not /apis/v1/namespaces/<namespace>/pingsources/<name>`, 'ce-source');
    }
    const data = pingData ? parseWith(pingData, event.data, 'data', 'PingSource event data') : (event.data as P);
    const invocation: PingInvocation<P> = { source: 'ping', pingSource: { namespace: match[1], name: match[2] }, data, eventId: event.id };
    if (event.time !== undefined) invocation.time = event.time;
    return invocation;
  }
  throw new InvalidRequestError(
    `CloudEvent type ${JSON.stringify(event.type)} is not handled; expected dev.knative.apiserver.{ref,resource}.{add,update,delete} ` +
      `or ${PING_TYPE}: fix the Trigger filter or the source`, 'type');
}

function common(event: EventParts): { eventId: string; eventSource: string; time?: string } {
  return event.time === undefined ? { eventId: event.id, eventSource: event.source } : { eventId: event.id, eventSource: event.source, time: event.time };
}

/** Parses a plain JSON call to one of the function's HTTP routes. */
export function parseHttpRequest<R extends HttpRoutes>(request: RawRequest, path: keyof R & string, schema: z.ZodType): HttpInvocation<R> {
  const type = mediaType(header(request.headers, 'content-type'));
  if (!isJsonMediaType(type)) {
    throw new InvalidRequestError(`content type ${type ?? '(none)'} is not supported on ${path}; send application/json`, 'content-type');
  }
  const value = parseJson(request.body.toString('utf8'), 'request body', `send a JSON object to ${path}`);
  const body: unknown = parseWith(schema, value, 'body', `request body for ${path}`);
  return { source: 'http', path, body } as HttpInvocation<R>;
}

/** What an ApiServerSource event or a `POST /invoke` call names: {kind, namespace?, name}. */
export type NamedObject = z.output<typeof invokeObjectSchema>;

/**
 * The object an event (or `POST /invoke` call) is about, when `functionName` handles its kind;
 * a PermanentError (the event is not retried) naming the kinds it handles otherwise.
 */
export function handledObject(invocation: ApiServerInvocation | { source: 'http'; body: NamedObject }, functionName: string, kinds: readonly string[]): NamedObject {
  const ref = invocation.source === 'apiserver' ? invocation.ref : invocation.body;
  if (!kinds.includes(ref.kind)) {
    throw new PermanentError(`${functionName} handles events about ${kinds.join(', ')}, not ${ref.kind}: fix the ApiServerSource or Trigger filter`);
  }
  return ref;
}
