/**
 * Retention: maps a Backup's retentionPolicy (shared/api RetentionPolicy) to `restic forget` flags,
 * scoped so that forget only ever sees this Backup's own snapshots.
 *
 * Scope: `--tag <t1>,<t2>,...` (one flag, so a snapshot must carry *all* the Backup's identity
 * tags; see shared/snapshot-identity.ts) and, when given, `--host <host>` (the replica running the
 * backup forgets only its own snapshots). `--group-by host` makes every replica's snapshots one
 * group, so a change of targetDirectories (which changes the snapshot paths) does not start a new
 * group that would keep old-path snapshots forever, and each replica keeps its own N.
 *
 * restic treats a count of 0 as "rule not set"; so does this mapping (the flag is omitted).
 * A policy with no keep rule maps to `undefined`: nothing is forgotten (restic would refuse anyway).
 */
import type { RetentionPolicy } from '../../shared/api/common.ts';

export interface RetentionScope {
  /** The Backup's identity tags; all of them must be on a snapshot for forget to consider it. */
  readonly tags: readonly string[];
  /** Only this host's snapshots (a replica). */
  readonly host?: string;
}

export class RetentionScopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RetentionScopeError';
  }
}

const keepFlags = [
  ['keepLast', '--keep-last'],
  ['keepHourly', '--keep-hourly'],
  ['keepDaily', '--keep-daily'],
  ['keepWeekly', '--keep-weekly'],
  ['keepMonthly', '--keep-monthly'],
  ['keepYearly', '--keep-yearly'],
] as const;

/** True when the policy asks restic to keep something by some rule (and so may remove the rest). */
export function hasKeepRule(policy: RetentionPolicy): boolean {
  return keepFlags.some(([k]) => (policy[k] ?? 0) > 0) || (policy.keepTags?.length ?? 0) > 0;
}

/**
 * `restic forget` arguments (without the `forget` word) for `policy`, limited to `scope`.
 * Returns undefined when the policy has no keep rule.
 */
export function forgetArgs(policy: RetentionPolicy, scope: RetentionScope): string[] | undefined {
  if (scope.tags.length === 0) {
    throw new RetentionScopeError('retention needs the Backup\'s identity tags to scope restic forget; without them it could remove other Backups\' snapshots');
  }
  for (const t of scope.tags) {
    if (!/^[^,\s]+$/.test(t)) throw new RetentionScopeError(`retention scope tag "${t}" must not be empty or contain commas or spaces`);
  }
  if (!hasKeepRule(policy)) return undefined;
  const args: string[] = ['--tag', scope.tags.join(',')];
  if (scope.host) args.push('--host', scope.host);
  args.push('--group-by', 'host');
  for (const [key, flag] of keepFlags) {
    const n = policy[key];
    if (n !== undefined && n > 0) {
      if (!Number.isInteger(n)) throw new RetentionScopeError(`retentionPolicy.${key} must be a whole number, got ${n}`);
      args.push(flag, String(n));
    }
  }
  for (const t of policy.keepTags ?? []) args.push('--keep-tag', t);
  if (policy.dryRun) args.push('--dry-run');
  else if (policy.prune) args.push('--prune');
  return args;
}
