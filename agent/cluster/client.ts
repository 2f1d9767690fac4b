// The agent's client of handle-trigger's agent protocol (shared/agent-protocol.ts): backup runs and recoveries.
// Every call presents the pod's projected ServiceAccount token (audience `stash`), read from its
// file at each call because the kubelet rotates it.
import { readFile } from 'node:fs/promises';
import type { z } from 'zod';
import {
  AGENT_PATHS, claimedRecovery, claimedRun, errorAnswer, recoveryReportAnswer, renewAnswer, reportAnswer,
} from '../../shared/agent-protocol.ts';
import type {
  ClaimedRecovery, ClaimedRun, ClaimRequest, RecoveryClaimRequest, RecoveryReportAnswer, RecoveryReportRequest, RenewAnswer, RenewRequest, ReportAnswer, ReportRequest,
} from '../../shared/agent-protocol.ts';

export type {
  ClaimedRecovery, ClaimedRun, ClaimRequest, RecoveryClaimRequest, RecoveryOutcome, RecoveryReportAnswer, RecoveryReportRequest, RenewAnswer, RenewRequest,
  ReportAnswer, ReportRequest, RunOutcome,
} from '../../shared/agent-protocol.ts';

/** A call to handle-trigger failed (refused, unreachable, or an answer that makes no sense). */
export class FunctionsCallError extends Error {
  override name = 'FunctionsCallError';
  /** HTTP status, undefined when the function could not be reached. */
  readonly status: number | undefined;
  constructor(message: string, status?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.status = status;
  }
}

/** handle-trigger answered 409: this pod no longer holds the host's lease; stop the work. */
export class LeaseLostError extends Error {
  override name = 'LeaseLostError';
}

/** handle-trigger answered 409 to a recovery call: the Recovery changed (new generation) or is being deleted. */
export class RecoveryChangedError extends Error {
  override name = 'RecoveryChangedError';
}

export interface FunctionsClientOptions {
  /** handle-trigger's URL, e.g. http://handle-trigger.stash.svc (STASH_FUNCTIONS_URL). */
  baseUrl: string;
  /** The projected ServiceAccount token with audience stash (STASH_TOKEN_FILE). */
  tokenFile: string;
  /** Per-call timeout; default 30 s. */
  timeoutMs?: number;
}

export interface FunctionsClient {
  /** A run to do for this host, or undefined when there is none (or another replica holds it). */
  claim(request: ClaimRequest): Promise<ClaimedRun | undefined>;
  /** Extends the lease; throws LeaseLostError when it was lost. */
  renew(request: RenewRequest): Promise<RenewAnswer>;
  /** Sends the outcome; throws LeaseLostError when the run is no longer this pod's. */
  report(request: ReportRequest): Promise<ReportAnswer>;
  /** What to recover for this host, or undefined (204) when it is already recovered (IfNotRecovered). */
  claimRecovery(request: RecoveryClaimRequest): Promise<ClaimedRecovery | undefined>;
  /** Sends a recovery's outcome; throws RecoveryChangedError when the Recovery changed since the claim. */
  reportRecovery(request: RecoveryReportRequest): Promise<RecoveryReportAnswer>;
}

async function readToken(tokenFile: string): Promise<string> {
  let token: string;
  try {
    token = (await readFile(tokenFile, 'utf8')).trim();
  } catch (error) {
    throw new FunctionsCallError(`cannot read the ServiceAccount token at ${tokenFile} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); ` +
      'mount a projected serviceAccountToken volume with audience "stash" there, or set STASH_TOKEN_FILE to its path', undefined, { cause: error });
  }
  if (token === '') throw new FunctionsCallError(`the ServiceAccount token file ${tokenFile} is empty; check the projected volume`);
  return token;
}

export function createFunctionsClient(options: FunctionsClientOptions): FunctionsClient {
  const base = options.baseUrl.replace(/\/+$/, '');
  if (!/^https?:\/\//.test(base)) throw new FunctionsCallError(`functions URL "${options.baseUrl}" must be an http:// or https:// URL; set STASH_FUNCTIONS_URL`);
  const timeoutMs = options.timeoutMs ?? 30_000;

  async function call<S extends z.ZodType>(path: string, body: unknown, answer: S, conflict: (message: string) => Error = (m) => new LeaseLostError(m)): Promise<{ status: number; value: z.output<S> | undefined }> {
    const token = await readToken(options.tokenFile);
    let response: Response;
    try {
      response = await fetch(`${base}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
      throw new FunctionsCallError(`cannot reach handle-trigger at ${base}${path} (${cause}); check STASH_FUNCTIONS_URL and that the function is running`, undefined, { cause: error });
    }
    const text = await response.text();
    if (response.status === 204) return { status: 204, value: undefined };
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text) as unknown;
    } catch {
      json = undefined;
    }
    if (response.status === 200 || response.status === 201) {
      const parsed = answer.safeParse(json);
      if (!parsed.success) {
        throw new FunctionsCallError(`handle-trigger answered ${path} with an unexpected body (${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}); agent and function versions may differ`, response.status);
      }
      return { status: response.status, value: parsed.data };
    }
    const error = errorAnswer.safeParse(json);
    const message = error.success ? error.data.error : `HTTP ${response.status}${text ? `: ${text.slice(0, 200)}` : ''}`;
    if (response.status === 409) throw conflict(message);
    throw new FunctionsCallError(`handle-trigger refused ${path} (${response.status}): ${message}`, response.status);
  }

  return {
    async claim(request) {
      return (await call(AGENT_PATHS.claim, request, claimedRun)).value;
    },
    async renew(request) {
      const { value } = await call(AGENT_PATHS.renew, request, renewAnswer);
      if (value === undefined) throw new FunctionsCallError(`handle-trigger answered ${AGENT_PATHS.renew} without a body`);
      return value;
    },
    async report(request) {
      const { value } = await call(AGENT_PATHS.report, request, reportAnswer);
      if (value === undefined) throw new FunctionsCallError(`handle-trigger answered ${AGENT_PATHS.report} without a body`);
      return value;
    },
    async claimRecovery(request) {
      return (await call(AGENT_PATHS.recoveryClaim, request, claimedRecovery, (m) => new RecoveryChangedError(m))).value;
    },
    async reportRecovery(request) {
      const { value } = await call(AGENT_PATHS.recoveryReport, request, recoveryReportAnswer, (m) => new RecoveryChangedError(m));
      if (value === undefined) throw new FunctionsCallError(`handle-trigger answered ${AGENT_PATHS.recoveryReport} without a body`);
      return value;
    },
  };
}
