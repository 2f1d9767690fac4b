// The HTTP answers of handle-trigger that are not events: the agent protocol (claim, renew,
// report; recovery claim and report, recovery.ts) and the trigger endpoint for people and CI. JSON in, JSON out, status codes that mean
// something to the caller (see shared/agent-protocol.ts).
import express from 'express';
import type { NextFunction, Request, Response, Router } from 'express';
import type { z } from 'zod';
import { dnsLabelName, dnsSubdomainName } from '../../shared/api/index.ts';
import { KubeApiError } from '../../shared/kube/index.ts';
import { servesNamespace } from '../../shared/runtime/index.ts';
import { authenticateAgent, authorizeTriggerCreation, HttpError } from './auth.ts';
import { claim, createManualTrigger, renew, report } from './handler.ts';
import type { HandlerConfig } from './handler.ts';
import { claimRecovery, reportRecovery } from './recovery.ts';
import {
  AGENT_PATHS, claimRequest, describeIssues, recoveryClaimRequest, recoveryReportRequest, renewRequest, reportRequest,
} from '../../shared/agent-protocol.ts';

export const TRIGGER_PATH = '/v1/namespaces/:namespace/backups/:name/trigger';

function parseBody<S extends z.ZodType>(schema: S, body: unknown, path: string): z.output<S> {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, `the body of POST ${path} must be a JSON object; send Content-Type: application/json`, '(body)');
  }
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const { message, field } = describeIssues(result.error);
  throw new HttpError(400, `the body of POST ${path} is invalid: ${message}`, field);
}

function sendError(cfg: HandlerConfig, req: Request, res: Response, error: unknown): void {
  if (error instanceof HttpError) {
    if (error.status >= 500) cfg.log.error({ path: req.path, status: error.status, reason: error.message }, 'request failed');
    else cfg.log.info({ path: req.path, status: error.status, reason: error.message }, 'request refused');
    res.status(error.status).json({ error: error.message, ...(error.field ? { field: error.field } : {}) });
    return;
  }
  if (error instanceof KubeApiError) {
    const status = error.code === 429 || error.code >= 500 ? 503 : 500;
    cfg.log.error({ path: req.path, code: error.code, reason: error.message }, 'a Kubernetes API call failed while serving a request');
    res.status(status).json({ error: `handle-trigger could not complete the request: ${error.message}`, retry: true });
    return;
  }
  cfg.log.error({ err: error, path: req.path }, 'unexpected failure while serving a request');
  res.status(500).json({ error: 'internal error in handle-trigger; see its logs and retry', retry: true });
}

/**
 * A request about a namespace this handle-trigger does not serve (STASH_NAMESPACES) is answered
 * 404: another installation serves it, and answering here would act outside this one's scope.
 */
function requireServed(cfg: HandlerConfig, namespace: string, what: string): void {
  if (!servesNamespace(cfg.namespaces, namespace)) {
    throw new HttpError(404, `${what} is in namespace ${namespace}, which this handle-trigger does not serve (STASH_NAMESPACES=${(cfg.namespaces ?? []).join(',')}): ` +
      'call the handle-trigger of the installation that serves it, or add the namespace to STASH_NAMESPACES', 'namespace');
  }
}

/** Express router for the agent protocol and the trigger endpoint. */
export function protocolRouter(cfg: HandlerConfig): Router {
  const router = express.Router();
  const json = express.json({ limit: '64kb', type: () => true });

  const route = (path: string, serve: (req: Request, res: Response) => Promise<void>): void => {
    router.post(path, json, async (req, res) => {
      try {
        await serve(req, res);
      } catch (error) {
        sendError(cfg, req, res, error);
      }
    });
  };

  route(AGENT_PATHS.claim, async (req, res) => {
    const agent = await authenticateAgent(cfg.kc, req.headers.authorization);
    requireServed(cfg, agent.namespace, `the agent's Pod ${agent.podName}`);
    const run = await claim(cfg, agent, parseBody(claimRequest, req.body, AGENT_PATHS.claim));
    if (run === undefined) res.status(204).end();
    else res.status(200).json(run);
  });

  route(AGENT_PATHS.renew, async (req, res) => {
    const agent = await authenticateAgent(cfg.kc, req.headers.authorization);
    requireServed(cfg, agent.namespace, `the agent's Pod ${agent.podName}`);
    res.status(200).json(await renew(cfg, agent, parseBody(renewRequest, req.body, AGENT_PATHS.renew)));
  });

  route(AGENT_PATHS.report, async (req, res) => {
    const agent = await authenticateAgent(cfg.kc, req.headers.authorization);
    requireServed(cfg, agent.namespace, `the agent's Pod ${agent.podName}`);
    res.status(200).json(await report(cfg, agent, parseBody(reportRequest, req.body, AGENT_PATHS.report)));
  });

  route(AGENT_PATHS.recoveryClaim, async (req, res) => {
    const agent = await authenticateAgent(cfg.kc, req.headers.authorization);
    requireServed(cfg, agent.namespace, `the agent's Pod ${agent.podName}`);
    const claimed = await claimRecovery(cfg, agent, parseBody(recoveryClaimRequest, req.body, AGENT_PATHS.recoveryClaim));
    if (claimed === undefined) res.status(204).end();
    else res.status(200).json(claimed);
  });

  route(AGENT_PATHS.recoveryReport, async (req, res) => {
    const agent = await authenticateAgent(cfg.kc, req.headers.authorization);
    requireServed(cfg, agent.namespace, `the agent's Pod ${agent.podName}`);
    res.status(200).json(await reportRecovery(cfg, agent, parseBody(recoveryReportRequest, req.body, AGENT_PATHS.recoveryReport)));
  });

  route(TRIGGER_PATH, async (req, res) => {
    const namespace = dnsLabelName('namespace').safeParse(req.params.namespace);
    const name = dnsSubdomainName('backup name').safeParse(req.params.name);
    if (!namespace.success) throw new HttpError(400, `the URL's namespace is invalid: ${namespace.error.issues[0]?.message ?? ''}`, 'namespace');
    if (!name.success) throw new HttpError(400, `the URL's backup name is invalid: ${name.error.issues[0]?.message ?? ''}`, 'name');
    requireServed(cfg, namespace.data, `Backup ${name.data}`);
    const user = await authorizeTriggerCreation(cfg.kc, req.headers.authorization, namespace.data);
    const created = await createManualTrigger(cfg, namespace.data, name.data, user.username);
    cfg.log.info({ namespace: namespace.data, backup: name.data, trigger: created, user: user.username }, 'manual run created');
    res.status(201).json({ namespace: namespace.data, name: created });
  });

  // body-parser failures (malformed JSON, too large) reach here.
  router.use((error: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(error);
      return;
    }
    const status = typeof error === 'object' && error !== null && 'status' in error && typeof error.status === 'number' ? error.status : 500;
    if (status === 413) {
      res.status(413).json({ error: 'the request body is larger than 64 KiB; send a smaller body' });
      return;
    }
    if (status >= 400 && status < 500) {
      res.status(400).json({ error: `the request body is not valid JSON; send a JSON object with Content-Type: application/json`, field: '(body)' });
      return;
    }
    sendError(cfg, req, res, error);
  });
  return router;
}
