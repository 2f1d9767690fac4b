// The snapshot identity (restic tags and --host) lives in shared/snapshot-identity.ts: the agent and
// handle-trigger both need it and must not import each other's folders.
export * from '../../shared/snapshot-identity.ts';
