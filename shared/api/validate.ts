// Validate any Stash object by its kind, with errors that name the field and the fix.
import type { z } from 'zod';
import { describeParseIssues, formatPath } from './common.ts';
import { KINDS } from './kinds.ts';

export { describeParseIssues, formatPath };

export interface FieldIssue {
  /** Dotted path as the apiserver prints it: spec.backend.gcs.bucket, spec.containers[0].name */
  path: string;
  message: string;
}

export class InvalidObjectError extends Error {
  readonly issues: FieldIssue[];
  constructor(kind: string, name: string | undefined, issues: FieldIssue[]) {
    super(`${kind} ${name ?? '(unnamed)'} is invalid: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
    this.name = 'InvalidObjectError';
    this.issues = issues;
  }
}

export type ValidationResult = { ok: true; value: unknown } | { ok: false; issues: FieldIssue[] };

/** Validate an object of any Stash kind (chosen by its `kind`). */
export function validateObject(obj: unknown): ValidationResult {
  const kind = typeof obj === 'object' && obj !== null ? (obj as { kind?: unknown }).kind : undefined;
  const info = KINDS.find((k) => k.kind === kind);
  if (info === undefined) {
    return { ok: false, issues: [{ path: 'kind', message: `kind must be one of ${KINDS.map((k) => k.kind).join(', ')}` }] };
  }
  const r = info.schema.safeParse(obj);
  if (r.success) return { ok: true, value: r.data };
  return { ok: false, issues: r.error.issues.map((i: z.core.$ZodIssue) => ({ path: formatPath(i.path), message: i.message })) };
}

/** Parse with a kind's schema or throw InvalidObjectError. */
export function parseObject<S extends z.ZodType>(schema: S, kind: string, obj: unknown): z.output<S> {
  const r = schema.safeParse(obj);
  if (r.success) return r.data;
  const name = (obj as { metadata?: { name?: string } } | null)?.metadata?.name;
  throw new InvalidObjectError(kind, name, r.error.issues.map((i) => ({ path: formatPath(i.path), message: i.message })));
}
