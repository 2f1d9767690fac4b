// Typed errors a handler throws to choose how the caller (Knative, OpenFaaS, a person) reacts.
//
// Knative's dispatcher retries 5xx, 404, 408, 409 and 429 and gives up on every other 4xx
// (knative.dev/eventing v0.49.2 pkg/kncloudevents/retries.go, SelectiveRetry), sending the
// event to the dead-letter sink if one is set. So:
//   PermanentError -> 422: retrying cannot help (the object is invalid, a referenced kind is
//                     unsupported); the handler should already have said why in status/Events.
//   TransientError -> 503 (+ Retry-After): try again later (a lock is held, a Job still runs).
//   anything else  -> 500: retried; the message is logged, never sent back.
// Messages of these two classes are sent to the caller, so they must never contain secrets.

export class PermanentError extends Error {
  override name = 'PermanentError';
}

export class TransientError extends Error {
  override name = 'TransientError';
  readonly retryAfterSeconds: number | undefined;

  constructor(message: string, options?: { retryAfterSeconds?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}

/** The request itself is malformed (bad JSON, missing ce-* header, data failing its schema): 400. */
export class InvalidRequestError extends Error {
  override name = 'InvalidRequestError';
  readonly field: string | undefined;

  constructor(message: string, field?: string) {
    super(message);
    this.field = field;
  }
}
