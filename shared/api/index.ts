// The Stash API: zod schemas (source of the TypeScript types and of the CRDs) and helpers.
export * from './common.ts';
export * from './backends.ts';
export * from './schedule.ts';
export * from './schedule-fields.ts';
export * from './repository.ts';
export * from './backup.ts';
export * from './recovery.ts';
export * from './backup-trigger.ts';
export * from './backup-template.ts';
export * from './agent-template.ts';
export * from './app-binding.ts';
export * from './kinds.ts';
export * from './validate.ts';
