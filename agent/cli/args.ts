/**
 * Command-line parsing for `stash` (node:util parseArgs, strict): one table of options per
 * subcommand, and errors that name the flag.
 */
import { parseArgs } from 'node:util';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

type OptionSpec = { type: 'string' | 'boolean'; multiple?: boolean; short?: string };
type Options = Record<string, OptionSpec>;

const repoOptions = {
  repo: { type: 'string' },
  'password-file': { type: 'string' },
  'cache-dir': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} satisfies Options;

/** Flags the in-cluster commands accept (the AgentTemplates pass them). */
const clusterOptions = {
  'backup-name': { type: 'string' },
  'recovery-name': { type: 'string' },
  'pushgateway-url': { type: 'string' },
  'metrics-dir': { type: 'string' },
  'enable-status-subresource': { type: 'string' },
  'enable-analytics': { type: 'string' },
} satisfies Options;

/** Standalone database flags (agent/db connectionFromFlags); the password never as a flag. */
const databaseOptions = {
  'db-type': { type: 'string' },
  'db-host': { type: 'string' },
  'db-port': { type: 'string' },
  'db-user': { type: 'string' },
  'db-password-file': { type: 'string' },
  'db-password-env': { type: 'string' },
  database: { type: 'string', multiple: true },
} satisfies Options;

const keepOptions = {
  'keep-last': { type: 'string' },
  'keep-hourly': { type: 'string' },
  'keep-daily': { type: 'string' },
  'keep-weekly': { type: 'string' },
  'keep-monthly': { type: 'string' },
  'keep-yearly': { type: 'string' },
  'keep-tag': { type: 'string', multiple: true },
  prune: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
} satisfies Options;

const filterOptions = {
  host: { type: 'string' },
  tag: { type: 'string', multiple: true },
} satisfies Options;

export const commandOptions = {
  init: { ...repoOptions, ...clusterOptions },
  backup: { ...repoOptions, ...clusterOptions, ...filterOptions, ...databaseOptions, exclude: { type: 'string', multiple: true } },
  recover: {
    ...repoOptions, ...clusterOptions, ...filterOptions, ...databaseOptions,
    snapshot: { type: 'string' },
    target: { type: 'string' },
    include: { type: 'string', multiple: true },
    from: { type: 'string' },
    delete: { type: 'boolean' },
  },
  snapshots: { ...repoOptions, ...filterOptions },
  forget: { ...repoOptions, ...filterOptions, ...keepOptions },
  check: { ...repoOptions, 'read-data': { type: 'boolean' } },
  unlock: { ...repoOptions },
  'update-repo-status': { ...repoOptions, ...clusterOptions },
  'update-recovery-status': { ...repoOptions, ...clusterOptions },
} satisfies Record<string, Options>;

export type Command = keyof typeof commandOptions;

export function isCommand(name: string): name is Command {
  return Object.hasOwn(commandOptions, name);
}

export interface Parsed {
  readonly values: Readonly<Record<string, string | boolean | string[] | undefined>>;
  readonly positionals: readonly string[];
}

const noPositionals: ReadonlySet<Command> = new Set<Command>(['init', 'recover', 'snapshots', 'forget', 'check', 'unlock', 'update-repo-status', 'update-recovery-status']);

export function parseCommand(command: Command, args: readonly string[]): Parsed {
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options: commandOptions[command], strict: true, allowPositionals: true });
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new UsageError(`${msg.replace(/\. To specify a positional argument.*$/s, '')}; see \`stash ${command} --help\``);
  }
  if (noPositionals.has(command) && parsed.positionals.length > 0) {
    throw new UsageError(`unexpected argument "${parsed.positionals[0]}"; this command takes only flags, see \`stash ${command} --help\``);
  }
  return { values: parsed.values as Parsed['values'], positionals: parsed.positionals };
}

export function str(p: Parsed, flag: string): string | undefined {
  const v = p.values[flag];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new UsageError(`--${flag} takes a value`);
  if (v.trim() === '') throw new UsageError(`--${flag} must not be empty`);
  return v;
}

export function required(p: Parsed, flag: string, what: string): string {
  const v = str(p, flag);
  if (v === undefined) throw new UsageError(`--${flag} is required: ${what}`);
  return v;
}

export function list(p: Parsed, flag: string): string[] {
  const v = p.values[flag];
  return Array.isArray(v) ? v : [];
}

export function bool(p: Parsed, flag: string): boolean {
  return p.values[flag] === true;
}

/** A non-negative whole number flag (`--keep-last 5`); undefined when absent. */
export function count(p: Parsed, flag: string): number | undefined {
  const v = str(p, flag);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${flag} must be a whole number >= 0, got "${v}"`);
  return Number(v);
}

/** `true`/`false` flag values the AgentTemplates pass as strings (`--enable-status-subresource=true`). */
export function boolString(p: Parsed, flag: string, fallback: boolean): boolean {
  const v = str(p, flag);
  if (v === undefined) return fallback;
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new UsageError(`--${flag} must be true or false, got "${v}"`);
}

export const usage: Record<Command | 'stash', string> = {
  stash: `stash: Stash's backup agent (drives restic)

Standalone (people, tests):
  stash init      --repo R --password-file F
  stash backup    --repo R --password-file F [--host H] [--tag T]... [--exclude P]... PATH...
  stash recover   --repo R --password-file F --snapshot latest|ID --target DIR [--include PATH]... [--from DIR] [--delete] [--host H] [--tag T]...
  stash snapshots --repo R --password-file F [--host H] [--tag T]...
  stash forget    --repo R --password-file F [--host H] --tag T... --keep-last N ... [--keep-tag T]... [--prune] [--dry-run]
  stash check     --repo R --password-file F [--read-data]
  stash unlock    --repo R --password-file F     (removes stale locks only)
  stash backup    --repo R --password-file F --db-type postgres|mariadb|mysql|redis --db-host H [--db-port P] [--db-user U]
                  [--db-password-file F | --db-password-env NAME] [--database D]... [--host H] [--tag T]...
  stash recover   --repo R --password-file F --db-type ... --db-host H ... [--snapshot latest|ID] [--host H] [--tag T]...
  (the database password comes from a file or an environment variable, default $DB_PASSWORD; never a flag)
In a cluster (no Kubernetes API rights: the agent claims runs from and reports to handle-trigger at
$STASH_FUNCTIONS_URL with the token in $STASH_TOKEN_FILE; the storage Secret is read from the files
in $STASH_REPOSITORY_SECRET_DIR; namespace from $NAMESPACE, host from $STASH_HOST):
  stash backup --backup-name=B [--pushgateway-url=U] [--metrics-dir=D|FILE]
      sidecar: claims runs until SIGTERM; database Job ($TRIGGER_NAME set, connection from $DB_TYPE,
      $DB_HOST, $DB_PORT, $DB_USER, $DB_PASSWORD): one run, exit 0 on success or nothing to do.
      The repository is created when missing. A Job writes metrics to /tmp/metrics.txt by default.
  stash init --backup-name=B
      checks the storage Secret files (RESTIC_PASSWORD) and the token; no API call, no claim;
      the backup step creates the repository.
  stash update-repo-status --backup-name=B [--pushgateway-url=U] [--metrics-dir=D|FILE]
      the status was reported by the backup step; pushes the backup step's metrics file to the
      Pushgateway when --pushgateway-url is given.
  stash recover --recovery-name=R [--pushgateway-url=U] [--metrics-dir=D|FILE]
      (or $RECOVERY_NAME) claims the Recovery from handle-trigger for its host ($STASH_SNAPSHOT_HOST,
      else $STASH_HOST, else the pod's own host as handle-trigger tells it), restores into the
      volume / the workload's paths / the database (connection from $DB_TYPE, $DB_HOST, $DB_PORT,
      $DB_USER, $DB_PASSWORD) and reports; exit 0 at once when the host is already recovered
      (IfNotRecovered), non-zero when the recovery failed.
  stash update-recovery-status --recovery-name=R
      the recover step reported the outcome; nothing to update.
  Without a token file (no $STASH_TOKEN_FILE, nothing at the default path) recovery falls back to
  reading the Recovery, Repository, Secrets and AppBinding from the Kubernetes API ($KUBECONFIG or
  in-cluster config) and patching the Recovery status itself: that fallback NEEDS A ROLE (get
  recoveries, repositories, secrets, appbindings; patch recoveries/status; create events).
--metrics-dir takes a directory or a file path (--metrics-dir=/tmp/metrics.txt); an empty
--pushgateway-url (from an empty $(PUSH_GATEWAY_URL)) means none.
Every command takes --json: progress as JSON lines, then one {"type":"result"} object.
restic is $STASH_RESTIC or restic on PATH; --cache-dir sets restic's cache.`,
  init: 'stash init --repo R --password-file F [--json]   |   stash init --backup-name=B   (in a cluster: checks the storage Secret files and the token; backup creates the repository)',
  backup: 'stash backup --repo R --password-file F [--host H] [--tag T]... [--exclude P]... [--json] PATH...   |   ' +
    'stash backup --repo R --password-file F --db-type T --db-host H [--db-port P] [--db-user U] [--db-password-file F | --db-password-env NAME] [--database D]... [--json]   |   ' +
    'stash backup --backup-name=B [--pushgateway-url=U] [--metrics-dir=D|FILE]   (in a cluster: claims runs from handle-trigger, see stash --help)',
  recover: 'stash recover --repo R --password-file F --snapshot latest|ID --target DIR [--include PATH]... [--from DIR] [--delete] [--host H] [--tag T]... [--json]   |   ' +
    'stash recover --repo R --password-file F --db-type T --db-host H [--db-port P] [--db-user U] [--db-password-file F | --db-password-env NAME] [--snapshot latest|ID] [--json]   |   ' +
    'stash recover --recovery-name=R [--pushgateway-url=U] [--metrics-dir=D|FILE]   (in a cluster: claims the Recovery from handle-trigger, recovers, reports; ' +
    'without a token file it falls back to the Kubernetes API and needs a Role, see stash --help)',
  snapshots: 'stash snapshots --repo R --password-file F [--host H] [--tag T]... [--json]',
  forget: 'stash forget --repo R --password-file F --tag T... [--host H] [--keep-last N] [--keep-hourly N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--keep-yearly N] [--keep-tag T]... [--prune] [--dry-run] [--json]',
  check: 'stash check --repo R --password-file F [--read-data] [--json]',
  unlock: 'stash unlock --repo R --password-file F [--json]',
  'update-repo-status': 'stash update-repo-status --backup-name=B [--pushgateway-url=U] [--metrics-dir=D|FILE]   (pushes the backup step\'s metrics file; the status was reported by the backup step)',
  'update-recovery-status': 'stash update-recovery-status --recovery-name=R   (in a cluster: the recover step reported, nothing to update; ' +
    'without a token file it reads the Recovery from the Kubernetes API and needs a Role)',
};
