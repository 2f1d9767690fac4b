/**
 * In-cluster mode, the pure part: what the agent reads from the environment the pod spec gives it
 * (inject-sidecar's and launch-db-job's plans), from the storage Secret files, and how a run's
 * result becomes the protocol's outcome. No I/O here, so every case is unit-tested.
 */
import path from 'node:path';
import { SECRET_PATH, TOKEN_FILE } from '../../shared/agent-pod.ts';
import type { ClaimedRun, RunOutcome } from '../../shared/agent-protocol.ts';
import type { DatabaseFlags } from '../db/index.ts';
import { identityFromTags } from '../volume/identity.ts';
import type { BackupSummary } from '../restic/types.ts';
import { UsageError } from './args.ts';

/** Where the storage Secret is mounted when STASH_REPOSITORY_SECRET_DIR is not set. */
export const DEFAULT_SECRET_DIR = SECRET_PATH;
/** Where the projected token (audience stash) is mounted when STASH_TOKEN_FILE is not set. */
export const DEFAULT_TOKEN_FILE = TOKEN_FILE;
/**
 * A database Job's backup container writes its metrics here when no --metrics-dir is given: the
 * Job's shared emptyDir, where `update-repo-status --metrics-dir=/tmp/metrics.txt` reads them.
 */
export const DEFAULT_JOB_METRICS_FILE = '/tmp/metrics.txt';

export class AgentConfigError extends Error {
  override name = 'AgentConfigError';
}

type Env = Readonly<Record<string, string | undefined>>;

const set = (v: string | undefined): string | undefined => (v === undefined || v.trim() === '' ? undefined : v.trim());

export interface AgentSettings {
  readonly namespace: string;
  readonly backup: string;
  /** restic host / lease host: STASH_HOST, default host-0. */
  readonly host: string;
  /** STASH_FUNCTIONS_URL; only `backup` needs it (checked there). */
  readonly functionsUrl: string | undefined;
  readonly tokenFile: string;
  readonly secretDir: string;
  /** Set in a database Job (launch-db-job): the run this Job exists for. */
  readonly trigger: string | undefined;
}

/** The settings of a backup agent; `backupFlag` is --backup-name (else $BACKUP_NAME). */
export function agentSettings(env: Env, backupFlag: string | undefined): AgentSettings {
  const namespace = set(env.NAMESPACE);
  if (!namespace) throw new AgentConfigError('$NAMESPACE is not set: the pod spec must set it (the Stash sidecar and database Job do); set it to the Backup\'s namespace');
  const backup = set(backupFlag) ?? set(env.BACKUP_NAME);
  if (!backup) throw new UsageError('--backup-name is required (or $BACKUP_NAME): the Backup this agent serves');
  const functionsUrl = set(env.STASH_FUNCTIONS_URL);
  if (functionsUrl !== undefined && !/^https?:\/\//.test(functionsUrl)) throw new AgentConfigError(`$STASH_FUNCTIONS_URL "${functionsUrl}" must be an http:// or https:// URL`);
  return {
    namespace,
    backup,
    host: set(env.STASH_HOST) ?? 'host-0',
    functionsUrl,
    tokenFile: set(env.STASH_TOKEN_FILE) ?? DEFAULT_TOKEN_FILE,
    secretDir: set(env.STASH_REPOSITORY_SECRET_DIR) ?? DEFAULT_SECRET_DIR,
    trigger: set(env.TRIGGER_NAME),
  };
}

/**
 * A URL flag the templates fill from an env var that may be empty (`--pushgateway-url=$(PUSH_GATEWAY_URL)`):
 * empty means not given.
 */
export function optionalUrl(value: string | boolean | string[] | undefined, flag: string): string | undefined {
  if (typeof value !== 'string' || value.trim() === '') return undefined;
  if (!/^https?:\/\//.test(value)) throw new UsageError(`--${flag} must be an http:// or https:// URL, got "${value}"`);
  return value.trim();
}

/**
 * --metrics-dir names a directory (the file is `defaultFileName` in it) or, as the design's
 * templates write it (`--metrics-dir=/tmp/metrics.txt`), the file itself. `isDirectory` is what
 * the path is on disk (undefined when it does not exist): an existing directory or a path ending
 * in "/" is a directory; a path whose last part has an extension is a file; else a directory.
 */
export function metricsLocation(arg: string, defaultFileName: string, isDirectory: boolean | undefined): { dir: string; fileName: string } {
  if (isDirectory === true || arg.endsWith('/')) return { dir: arg, fileName: defaultFileName };
  if (isDirectory === false || path.extname(arg) !== '') return { dir: path.dirname(arg), fileName: path.basename(arg) };
  return { dir: arg, fileName: defaultFileName };
}

/** A database Job's connection settings from launch-db-job's env (DB_TYPE, DB_HOST, DB_PORT, DB_USER, DB_PASSWORD). */
export function databaseFlagsFromEnv(env: Env, databases: readonly string[]): DatabaseFlags {
  const type = set(env.DB_TYPE);
  const host = set(env.DB_HOST);
  if (!type) throw new AgentConfigError('$DB_TYPE is not set: a database run needs the AppBinding\'s type; launch-db-job sets it from spec.type of the AppBinding');
  if (!host) throw new AgentConfigError('$DB_HOST is not set: a database run needs the server\'s host; launch-db-job sets it from the AppBinding\'s clientConfig');
  const portText = set(env.DB_PORT);
  let port: number | undefined;
  if (portText !== undefined) {
    if (!/^\d+$/.test(portText)) throw new AgentConfigError(`$DB_PORT "${portText}" is not a TCP port; fix the AppBinding's clientConfig`);
    port = Number(portText);
  }
  const user = set(env.DB_USER);
  return { type, host, ...(port !== undefined ? { port } : {}), ...(user ? { user } : {}), passwordEnv: 'DB_PASSWORD', databases: [...databases] };
}

/** The storage Secret as the kubelet mounts it: one file per key; `..data` and other dot entries are the kubelet's. */
export function secretKeysFrom(entries: readonly { name: string; content: string }[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of entries) if (!e.name.startsWith('.')) out[e.name] = e.content;
  return out;
}

/** The metrics `target` label: `<kind>/<workload>` from the run's identity tags. */
export function targetLabel(run: Pick<ClaimedRun, 'targetKind' | 'tags' | 'backup'>): string {
  const id = identityFromTags(run.tags);
  return `${run.targetKind.toLowerCase()}/${id?.workload ?? run.backup}`;
}

export interface RunFacts {
  readonly snapshotId: string;
  readonly bytesAdded: number;
  readonly files: number;
  readonly repository?: { readonly snapshotCount: number; readonly totalSize: number; readonly integrity?: 'True' | 'False' | 'Unknown' } | undefined;
}

/** The Succeeded outcome of a run. */
export function succeeded(facts: RunFacts): RunOutcome {
  return {
    phase: 'Succeeded',
    ...(facts.snapshotId ? { snapshotId: facts.snapshotId } : {}),
    bytes: Math.max(0, Math.round(facts.bytesAdded)),
    files: Math.max(0, Math.round(facts.files)),
    ...(facts.repository ? {
      repository: {
        snapshotCount: facts.repository.snapshotCount,
        totalSize: facts.repository.totalSize,
        ...(facts.repository.integrity ? { integrity: facts.repository.integrity } : {}),
      },
    } : {}),
  };
}

/** Facts of a volume run from restic's summary. */
export function volumeFacts(summary: BackupSummary): Pick<RunFacts, 'snapshotId' | 'bytesAdded' | 'files'> {
  return { snapshotId: summary.snapshotId, bytesAdded: summary.dataAdded, files: summary.totalFilesProcessed };
}
