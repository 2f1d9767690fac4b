/** Database backup and recovery through restic: the API the agent CLI and the Jobs call. */
export { backupDatabase, recoverDatabase, chooseSnapshots, listDatabases } from './run.ts';
export type { DatabaseBackupOptions, DatabaseRecoveryOptions, DatabaseToolOverrides } from './run.ts';
export { connectionFromAppBinding, connectionFromFlags } from './connection.ts';
export type { DatabaseFlags, SecretLike } from './connection.ts';
export { engineForType, ENGINE_BY_TYPE, ENGINES } from './registry.ts';
export * from './errors.ts';
export type * from './types.ts';
