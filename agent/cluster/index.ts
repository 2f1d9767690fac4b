// The agent's side of the functions' agent protocol: a client, one run under a lease, the sidecar loop.
export { createFunctionsClient, FunctionsCallError, LeaseLostError, RecoveryChangedError } from './client.ts';
export type {
  ClaimedRecovery, ClaimedRun, ClaimRequest, FunctionsClient, FunctionsClientOptions, RecoveryClaimRequest, RecoveryOutcome, RecoveryReportAnswer,
  RecoveryReportRequest, RenewAnswer, RenewRequest, ReportAnswer, ReportRequest, RunOutcome,
} from './client.ts';
export { runClaimedRun, sidecarLoop } from './run.ts';
export type { AgentLog, RunOptions, RunResult, RunTarget, RunWork, SidecarLoopOptions } from './run.ts';
