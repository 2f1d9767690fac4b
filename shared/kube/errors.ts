// Typed errors for Kubernetes API failures. @kubernetes/client-node 2.x throws ApiException whose
// .body is the response text (a JSON metav1.Status, as a string) and whose message also embeds the
// response headers: never pass that message on; build one from the Status instead.
import { ApiException } from '@kubernetes/client-node';

/** What a Status body says (apimachinery metav1.Status). */
export interface KubeStatus {
  code: number;
  reason: string;
  message: string;
}

export class KubeApiError extends Error {
  override name = 'KubeApiError';
  readonly code: number;
  readonly reason: string;

  constructor(message: string, status: KubeStatus, options?: { cause?: unknown }) {
    super(message, options);
    this.code = status.code;
    this.reason = status.reason;
  }
}

export class NotFoundError extends KubeApiError { override name = 'NotFoundError'; }
/** 409 reason AlreadyExists: create of a name that exists. */
export class AlreadyExistsError extends KubeApiError { override name = 'AlreadyExistsError'; }
/** 409 reason Conflict: stale resourceVersion, or a server-side apply field conflict without force. */
export class ConflictError extends KubeApiError { override name = 'ConflictError'; }
export class ForbiddenError extends KubeApiError { override name = 'ForbiddenError'; }
export class UnauthorizedError extends KubeApiError { override name = 'UnauthorizedError'; }
/** 422: the object failed validation (the message names the fields). */
export class InvalidError extends KubeApiError { override name = 'InvalidError'; }
/** 410: a watch or list continue token expired; relist. */
export class GoneError extends KubeApiError { override name = 'GoneError'; }

export class KubeConfigError extends Error { override name = 'KubeConfigError'; }

function parseStatus(code: number, body: unknown): KubeStatus {
  let parsed: unknown = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body) as unknown;
    } catch {
      parsed = undefined;
    }
  }
  const status = (parsed !== null && typeof parsed === 'object' ? parsed : {}) as Record<string, unknown>;
  return {
    code: typeof status.code === 'number' ? status.code : code,
    reason: typeof status.reason === 'string' ? status.reason : 'Unknown',
    message: typeof status.message === 'string' ? status.message : `HTTP ${code}`,
  };
}

const hints: Record<number, string> = {
  401: 'check the kubeconfig or ServiceAccount token',
  403: 'grant the function\'s ServiceAccount this verb on this resource (Role/ClusterRole)',
  404: 'check that the object, its namespace and its CRD exist',
  409: 're-read the object and retry',
  410: 'relist and retry',
  422: 'fix the fields named above',
  429: 'retry later',
};

/**
 * The typed error for an apiserver answer with status `code` and body `body` (a metav1.Status,
 * as text or parsed): `get Backup demo/x failed: backups.stash.appscode.com "x" not found (404
 * NotFound); check ...`.
 */
export function statusError(code: number, body: unknown, action: string, cause?: unknown): KubeApiError {
  const status = parseStatus(code, body);
  const hint = hints[status.code];
  const message = `${action} failed: ${status.message} (${status.code} ${status.reason})${hint ? `; ${hint}` : ''}`;
  const options = cause === undefined ? undefined : { cause };
  switch (status.code) {
    case 401: return new UnauthorizedError(message, status, options);
    case 403: return new ForbiddenError(message, status, options);
    case 404: return new NotFoundError(message, status, options);
    case 409: return status.reason === 'AlreadyExists' ? new AlreadyExistsError(message, status, options) : new ConflictError(message, status, options);
    case 410: return new GoneError(message, status, options);
    case 422: return new InvalidError(message, status, options);
    default: return new KubeApiError(message, status, options);
  }
}

/**
 * Converts what a client-node call threw into a typed error (statusError); anything that is not
 * an ApiException (network failure, bug) is returned unchanged.
 */
export function toKubeError(error: unknown, action: string): unknown {
  if (!(error instanceof ApiException)) return error;
  return statusError(error.code, error.body, action, error);
}

/** Runs a client-node call, converting its failure with toKubeError. */
export async function kubeCall<T>(action: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw toKubeError(error, action);
  }
}
