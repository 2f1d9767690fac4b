/**
 * In-cluster recovery (`stash recover --recovery-name=R`, `stash update-recovery-status`).
 *
 * Two paths, chosen by runRecoveryCommand:
 * - THE PROTOCOL PATH (recovery-protocol.ts), whenever the projected token file exists
 *   ($STASH_TOKEN_FILE, default /var/run/secrets/stash/token): the agent claims the Recovery from
 *   handle-trigger, recovers, and reports; it needs no API rights. Every pod run-recovery renders
 *   (a recovery Job, a workload's init container) has the token, so this is the path in a cluster.
 * - THE DIRECT-API FALLBACK (recovery-direct.ts, loaded only then), when there is no token file
 *   (or only the default path exists while neither $STASH_TOKEN_FILE nor $STASH_FUNCTIONS_URL is
 *   set, i.e. nothing says this is a Stash agent pod): for running the agent by hand with a
 *   kubeconfig. It needs a Role and @kubernetes/client-node, which a pod's agent never loads (it
 *   would add about 90 MB to every agent, and pods have memory limits).
 */
import { stat } from 'node:fs/promises';
import type { Command, Parsed } from './args.ts';
import { DEFAULT_TOKEN_FILE } from './agent-env.ts';
import type { ClusterContext } from './incluster.ts';
import { runRecoveryProtocol } from './recovery-protocol.ts';

async function exists(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

/**
 * The protocol path when the token file exists (see the head of this file); the direct-API
 * fallback otherwise. The default token path alone does not count when neither $STASH_TOKEN_FILE
 * nor $STASH_FUNCTIONS_URL is set (a pod Stash renders always sets both).
 */
export async function useRecoveryProtocol(env: ClusterContext['io']['env']): Promise<string | undefined> {
  const named = env.STASH_TOKEN_FILE?.trim();
  if (!named && !env.STASH_FUNCTIONS_URL?.trim()) return undefined;
  const tokenFile = named || DEFAULT_TOKEN_FILE;
  return (await exists(tokenFile)) ? tokenFile : undefined;
}

export async function runRecoveryCommand(command: Extract<Command, 'recover' | 'update-recovery-status'>, p: Parsed, ctx: ClusterContext): Promise<void> {
  const tokenFile = await useRecoveryProtocol(ctx.io.env);
  if (tokenFile !== undefined) return runRecoveryProtocol(command, p, ctx, tokenFile);
  ctx.logger.info({ tokenFile: ctx.io.env.STASH_TOKEN_FILE ?? DEFAULT_TOKEN_FILE }, 'no agent token: recovering through the Kubernetes API directly (needs a Role)');
  const { runDirectRecovery } = await import('./recovery-direct.ts');
  return runDirectRecovery(command, p, ctx);
}
