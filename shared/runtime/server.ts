// The server every Stash function runs in: CloudEvents (Knative), cron-connector (OpenFaaS) and
// plain JSON calls in, one typed Invocation to the function's handler, 202 with an empty body out.
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import type { Express, NextFunction, Request, RequestHandler, Response } from 'express';
import { pino } from 'pino';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { InvalidRequestError, PermanentError, TransientError } from './errors.ts';
import { parseEventRequest, parseHttpRequest } from './invocation.ts';
import type { HttpRoutes, Invocation, RawRequest } from './invocation.ts';

export interface HandlerContext {
  /** Child logger carrying function, eventId/requestId, kind, namespace, name. */
  log: Logger;
  /** The CloudEvent id, or a fresh id for cron-connector and HTTP calls. */
  requestId: string;
}

export type Handler<R extends HttpRoutes, P> = (invocation: Invocation<R, P>, ctx: HandlerContext) => Promise<void> | void;

export interface FunctionServerOptions<R extends HttpRoutes, P> {
  /** The function's name, in every log line. */
  name: string;
  handle: Handler<R, P>;
  /** Plain JSON routes (POST <path>) and the zod schema of each body, e.g. {'/invoke': objectRefSchema}. */
  routes?: R;
  /** Schema for the data of PingSource events; without it data is passed through as decoded. */
  pingData?: z.ZodType<P>;
  logger?: Logger;
  /** Largest accepted body (bytes or an express size string). Default '1mb'. */
  bodyLimit?: number | string;
  /** Express routers of the function's own (e.g. a protocol with its own answers), mounted before the 404/405 catch-all. */
  routers?: readonly RequestHandler[];
}

export interface ListenOptions {
  host?: string;
  /** Install SIGTERM/SIGINT handlers that drain and exit the process. Default true. */
  handleSignals?: boolean;
  /** How long in-flight requests may take to finish after a signal before exiting anyway. Default 30 s. */
  drainTimeoutMs?: number;
}

export interface RunningServer {
  server: Server;
  port: number;
  url: string;
  /** Stop accepting, let in-flight requests finish, then resolve. */
  close(): Promise<void>;
}

export interface FunctionServer {
  app: Express;
  listen(port: number, options?: ListenOptions): Promise<RunningServer>;
}

const EVENT_PATH = '/';

function errorBody(message: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { error: message, ...extra };
}

function logFields<R extends HttpRoutes, P>(invocation: Invocation<R, P>): Record<string, unknown> {
  switch (invocation.source) {
    case 'apiserver':
      return { eventId: invocation.eventId, eventType: `${invocation.mode}.${invocation.action}`, kind: invocation.ref.kind, namespace: invocation.ref.namespace, name: invocation.ref.name };
    case 'ping':
      return { eventId: invocation.eventId, pingSource: `${invocation.pingSource.namespace}/${invocation.pingSource.name}` };
    case 'cron-connector':
      return { trigger: 'cron-connector' };
    case 'http': {
      const body: unknown = invocation.body;
      const fields: Record<string, unknown> = { path: invocation.path };
      if (body !== null && typeof body === 'object') {
        for (const key of ['kind', 'namespace', 'name'] as const) {
          const value = (body as Record<string, unknown>)[key];
          if (typeof value === 'string') fields[key] = value;
        }
      }
      return fields;
    }
  }
}

export function createFunctionServer<R extends HttpRoutes = Record<never, z.ZodType>, P = unknown>(
  options: FunctionServerOptions<R, P>,
): FunctionServer {
  const log = (options.logger ?? pino({ level: process.env.LOG_LEVEL ?? 'info' })).child({ function: options.name });
  const routes: HttpRoutes = options.routes ?? {};
  let draining = false;

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.get('/healthz', (_req, res) => { res.status(200).json({ status: 'ok' }); });
  app.get('/readyz', (_req, res) => {
    if (draining) res.status(503).json({ status: 'shutting down' });
    else res.status(200).json({ status: 'ready' });
  });

  const rawBody = express.raw({ type: () => true, limit: options.bodyLimit ?? '1mb' });

  async function run(req: Request, res: Response, parse: (raw: RawRequest) => Invocation<R, P>): Promise<void> {
    const raw: RawRequest = { headers: req.headers, body: Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0) };
    let invocation: Invocation<R, P>;
    try {
      invocation = parse(raw);
    } catch (error) {
      if (error instanceof InvalidRequestError) {
        log.warn({ path: req.path, field: error.field, reason: error.message }, 'rejected malformed request');
        res.status(400).json(errorBody(error.message, { field: error.field }));
        return;
      }
      throw error;
    }
    const requestId = 'eventId' in invocation ? invocation.eventId : randomUUID();
    const ctx: HandlerContext = { log: log.child({ requestId, ...logFields(invocation) }), requestId };
    const started = Date.now();
    try {
      await options.handle(invocation, ctx);
    } catch (error) {
      respondToHandlerError(error, res, ctx);
      return;
    }
    ctx.log.info({ ms: Date.now() - started }, 'handled');
    // Knative Broker rule: a reply must be empty or a CloudEvent (filter_handler.go writeResponse).
    res.status(202).end();
  }

  app.post(EVENT_PATH, rawBody, async (req, res) => {
    await run(req, res, (raw) => parseEventRequest(raw, options.pingData));
  });

  for (const [path, schema] of Object.entries(routes)) {
    app.post(path, rawBody, async (req, res) => {
      await run(req, res, (raw) => parseHttpRequest<R>(raw, path, schema));
    });
  }

  for (const router of options.routers ?? []) app.use(router);

  app.use((req: Request, res: Response) => {
    const known = [EVENT_PATH, ...Object.keys(routes)];
    const status = known.includes(req.path) ? 405 : 404;
    res.status(status).json(errorBody(status === 405
      ? `${req.method} is not supported on ${req.path}; use POST`
      : `no route ${req.path}; POST events to ${EVENT_PATH}${Object.keys(routes).length ? ` or JSON to ${Object.keys(routes).join(', ')}` : ''}`));
  });

  // Express 5 passes body-parser failures and rejected promises here.
  app.use((error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const status = typeof error === 'object' && error !== null && 'status' in error && typeof error.status === 'number' ? error.status : 500;
    if (status === 413) {
      res.status(413).json(errorBody(`request body is larger than the limit of ${String(options.bodyLimit ?? '1mb')}; send a smaller body or raise bodyLimit`));
      return;
    }
    if (status >= 400 && status < 500) {
      const type = typeof error === 'object' && error !== null && 'type' in error ? String(error.type) : 'bad request';
      res.status(status).json(errorBody(`request could not be read (${type})`));
      return;
    }
    log.error({ err: error, path: req.path }, 'unexpected failure while serving a request');
    res.status(500).json(errorBody('internal error; see the function logs'));
  });

  function respondToHandlerError(error: unknown, res: Response, ctx: HandlerContext): void {
    if (error instanceof PermanentError) {
      ctx.log.error({ reason: error.message }, 'permanent failure: not retried');
      res.status(422).json(errorBody(error.message, { requestId: ctx.requestId, retry: false }));
      return;
    }
    if (error instanceof TransientError) {
      ctx.log.warn({ reason: error.message }, 'transient failure: will be retried');
      if (error.retryAfterSeconds !== undefined) res.set('Retry-After', String(Math.ceil(error.retryAfterSeconds)));
      res.status(503).json(errorBody(error.message, { requestId: ctx.requestId, retry: true }));
      return;
    }
    ctx.log.error({ err: error }, 'handler failed: will be retried');
    res.status(500).json(errorBody('handler failed; the request will be retried (details are in the function logs)', { requestId: ctx.requestId, retry: true }));
  }

  async function listen(port: number, listenOptions: ListenOptions = {}): Promise<RunningServer> {
    const server = app.listen(port, listenOptions.host ?? '0.0.0.0');
    await new Promise<void>((resolve, reject) => {
      server.once('listening', resolve);
      server.once('error', reject);
    });
    const address = server.address() as AddressInfo;
    const host = listenOptions.host ?? '127.0.0.1';
    let closing: Promise<void> | undefined;
    const close = (): Promise<void> => {
      closing ??= new Promise<void>((resolve, reject) => {
        draining = true;
        // close() stops accepting, closes idle keep-alive sockets, and waits for in-flight requests.
        // Connections that finish their request after this point go idle (keep-alive) and would
        // hold close() until the keep-alive timeout: keep closing idle ones until done.
        const sweep = setInterval(() => { server.closeIdleConnections(); }, 50);
        server.close((error) => {
          clearInterval(sweep);
          if (error) reject(error);
          else resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    };
    if (listenOptions.handleSignals ?? true) {
      const onSignal = (signal: NodeJS.Signals): void => {
        log.info({ signal }, 'draining in-flight requests before exit');
        const timeout = setTimeout(() => {
          log.error({ drainTimeoutMs: listenOptions.drainTimeoutMs ?? 30_000 }, 'in-flight requests did not finish in time; exiting');
          process.exit(1);
        }, listenOptions.drainTimeoutMs ?? 30_000);
        timeout.unref();
        close().then(() => { log.info('drained; exiting'); process.exit(0); }, (error: unknown) => {
          log.error({ err: error }, 'closing the server failed; exiting');
          process.exit(1);
        });
      };
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
    }
    log.info({ port: address.port }, 'listening');
    return { server, port: address.port, url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${address.port}`, close };
  }

  return { app, listen };
}
