/**
 * How a snapshot says whose it is. Every snapshot Stash takes for a Backup carries these restic
 * tags, and retention and "latest" selection filter on all of them, so two Backups sharing a
 * repository never see each other's snapshots:
 *
 *   stash.appscode.com/namespace=<namespace of the Backup>
 *   stash.appscode.com/backup=<Backup name>
 *   stash.appscode.com/kind=<targetRef.kind>          (Deployment, StatefulSet, AppBinding...)
 *   stash.appscode.com/workload=<targetRef.name>
 *
 * restic's `--host` tells replicas apart: `host-0` for Deployment-like workloads (one replica
 * backs up), `host-<ordinal>` for StatefulSet pods, the node name for DaemonSet pods, `host-0`
 * for a database (AppBinding) backup.
 */
export const TAG_PREFIX = 'stash.appscode.com';

export interface BackupIdentity {
  readonly namespace: string;
  readonly backup: string;
  readonly kind: string;
  readonly workload: string;
}

export class IdentityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IdentityError';
  }
}

/** The restic tags that identify a Backup's snapshots (order is fixed). */
export function identityTags(id: BackupIdentity): string[] {
  const parts: [string, string][] = [['namespace', id.namespace], ['backup', id.backup], ['kind', id.kind], ['workload', id.workload]];
  return parts.map(([k, v]) => {
    if (!v || /[,\s]/.test(v)) throw new IdentityError(`snapshot identity ${k} "${v}" must be non-empty without commas or spaces`);
    return `${TAG_PREFIX}/${k}=${v}`;
  });
}

/** Reads an identity back from a snapshot's tags; undefined when a tag is missing. */
export function identityFromTags(tags: readonly string[]): BackupIdentity | undefined {
  const get = (k: string): string | undefined => tags.find((t) => t.startsWith(`${TAG_PREFIX}/${k}=`))?.slice(TAG_PREFIX.length + k.length + 2);
  const namespace = get('namespace');
  const backup = get('backup');
  const kind = get('kind');
  const workload = get('workload');
  return namespace && backup && kind && workload ? { namespace, backup, kind, workload } : undefined;
}

/**
 * restic --host for the replica running the agent. `podName` is the pod's name (its hostname),
 * `nodeName` the node's (downward API), both optional for kinds that do not use them.
 */
export function replicaHost(kind: string, podName?: string, nodeName?: string): string {
  switch (kind) {
    case 'StatefulSet': {
      const m = /-(\d+)$/.exec(podName ?? '');
      if (!m) throw new IdentityError(`StatefulSet pod name "${podName ?? ''}" has no ordinal suffix; set POD_NAME from the downward API (metadata.name)`);
      return `host-${m[1]}`;
    }
    case 'DaemonSet':
      if (!nodeName) throw new IdentityError('a DaemonSet backup needs the node name; set NODE_NAME from the downward API (spec.nodeName)');
      return nodeName;
    default:
      return 'host-0';
  }
}
