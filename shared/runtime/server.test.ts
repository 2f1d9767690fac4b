// Starts the real function server on an ephemeral port and replays Knative's exact requests
// (fixtures/knative.json, produced by Knative's own code: fixtures/README.md) and malformed ones.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { z } from 'zod';
import { createFunctionServer, invokeRefSchema, PermanentError, TransientError } from './index.ts';
import type { HandlerContext, Invocation, RunningServer } from './index.ts';

interface KnativeFixture { name: string; headers: Record<string, string[]>; body: string }
interface MalformedFixture {
  name: string; path: string; headers: Record<string, string>; body: string; status: number; message: string; field?: string; mustNotContain?: string;
}

const fixtureDir = new URL('./fixtures/', import.meta.url);
const knative = JSON.parse(readFileSync(new URL('knative.json', fixtureDir), 'utf8')) as KnativeFixture[];
const malformed = JSON.parse(readFileSync(new URL('malformed.json', fixtureDir), 'utf8')) as MalformedFixture[];

function fixture(name: string): { headers: Record<string, string>; body: string } {
  const found = knative.find((f) => f.name === name);
  assert.ok(found, `fixture ${name} exists in fixtures/knative.json`);
  const headers: Record<string, string> = {};
  for (const [key, values] of Object.entries(found.headers)) headers[key] = values.join(', ');
  return { headers, body: found.body };
}

const routes = { '/invoke': invokeRefSchema };
type Seen = { invocation: Invocation<typeof routes>; ctx: HandlerContext };
let seen: Seen[] = [];
let behaviour: (invocation: Invocation<typeof routes>) => Promise<void> = () => Promise.resolve();
const logLines: Record<string, unknown>[] = [];
const logStream = new Writable({
  write(chunk: Buffer, _enc, done) {
    for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) logLines.push(JSON.parse(line) as Record<string, unknown>);
    done();
  },
});

const fn = createFunctionServer({
  name: 'test-fn',
  routes,
  bodyLimit: 4096,
  logger: pino({ level: 'debug' }, logStream),
  handle: async (invocation, ctx) => {
    seen.push({ invocation, ctx });
    await behaviour(invocation);
  },
});
let running: RunningServer;

before(async () => { running = await fn.listen(0, { host: '127.0.0.1', handleSignals: false }); });
after(async () => { await running.close(); });

async function post(path: string, headers: Record<string, string>, body: string): Promise<{ status: number; text: string; headers: Headers }> {
  const response = await fetch(`${running.url}${path}`, { method: 'POST', headers, body: body === '' ? null : body });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

function reset(): void {
  seen = [];
  behaviour = () => Promise.resolve();
}

test('ApiServerSource Reference-mode add event from Knative: 202, empty body, typed invocation', async () => {
  reset();
  const { headers, body } = fixture('apiserver-ref-add');
  const response = await post('/', headers, body);
  assert.equal(response.status, 202);
  assert.equal(response.text, '');
  assert.equal(seen.length, 1);
  assert.deepEqual(seen[0]?.invocation, {
    source: 'apiserver', mode: 'ref', action: 'add',
    ref: { apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Backup', namespace: 'demo', name: 'x' },
    eventId: '0b0e3f5e-5a3b-4a59-9a0e-8f1f0c6b1a11', eventSource: 'https://10.96.0.1:443', time: '2026-11-25T21:00:00.123456789Z',
  });
  const line = logLines.find((l) => l.msg === 'handled' && l.eventId === '0b0e3f5e-5a3b-4a59-9a0e-8f1f0c6b1a11');
  assert.ok(line, 'the handled line is logged with the event id');
  assert.equal(line.kind, 'Backup');
  assert.equal(line.namespace, 'demo');
  assert.equal(line.name, 'x');
  assert.equal(line.function, 'test-fn');
});

test('Reference-mode delete and Resource-mode update events', async () => {
  reset();
  let fx = fixture('apiserver-ref-delete');
  assert.equal((await post('/', fx.headers, fx.body)).status, 202);
  fx = fixture('apiserver-resource-update');
  const response = await post('/', fx.headers, fx.body);
  assert.equal(response.status, 202);
  assert.equal(response.text, '');
  const [del, update] = seen.map((s) => s.invocation);
  assert.equal(del?.source === 'apiserver' && del.action, 'delete');
  assert.ok(update?.source === 'apiserver');
  assert.equal(update.mode, 'resource');
  assert.equal(update.action, 'update');
  assert.deepEqual(update.ref, { apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Backup', namespace: 'demo', name: 'x' });
  assert.deepEqual((update.object as { spec: unknown }).spec, { schedule: '@hourly' });
});

test('structured-mode event gives the same invocation as binary mode', async () => {
  reset();
  const structured = fixture('apiserver-ref-add-structured');
  assert.match(structured.headers['Content-Type'] ?? '', /^application\/cloudevents\+json/);
  assert.equal((await post('/', structured.headers, structured.body)).status, 202);
  const binary = fixture('apiserver-ref-add');
  assert.equal((await post('/', binary.headers, binary.body)).status, 202);
  assert.deepEqual(seen[0]?.invocation, seen[1]?.invocation);
});

test('PingSource events with JSON data and with no data', async () => {
  reset();
  let fx = fixture('ping-json');
  assert.equal((await post('/', fx.headers, fx.body)).status, 202);
  fx = fixture('ping-empty');
  assert.equal(fx.body, '');
  assert.equal((await post('/', fx.headers, fx.body)).status, 202);
  const [withData, empty] = seen.map((s) => s.invocation);
  assert.ok(withData?.source === 'ping' && empty?.source === 'ping');
  assert.deepEqual(withData.pingSource, { namespace: 'stash-system', name: 'sweep' });
  assert.deepEqual(withData.data, { sweep: 'all' });
  assert.equal(empty.data, undefined);
});

test('OpenFaaS cron-connector call', async () => {
  reset();
  const response = await post('/', { 'X-Connector': 'cron-connector' }, '');
  assert.equal(response.status, 202);
  assert.equal(response.text, '');
  assert.deepEqual(seen[0]?.invocation, { source: 'cron-connector' });
  assert.match(seen[0]?.ctx.requestId ?? '', /^[0-9a-f-]{36}$/);
});

test('plain HTTP JSON invocation on the function\'s route', async () => {
  reset();
  const response = await post('/invoke', { 'Content-Type': 'application/json' }, '{"kind":"Backup","namespace":"demo","name":"x","apiVersion":"stash.appscode.com/v1alpha2"}');
  assert.equal(response.status, 202);
  assert.deepEqual(seen[0]?.invocation, {
    source: 'http', path: '/invoke', body: { kind: 'Backup', namespace: 'demo', name: 'x', apiVersion: 'stash.appscode.com/v1alpha2' },
  });
});

for (const bad of malformed) {
  test(`malformed: ${bad.name} -> ${bad.status}`, async () => {
    reset();
    const response = await post(bad.path, bad.headers, bad.body);
    assert.equal(response.status, bad.status);
    const body = JSON.parse(response.text) as { error: string; field?: string };
    assert.ok(body.error.includes(bad.message), `"${body.error}" should contain "${bad.message}"`);
    if (bad.field !== undefined) assert.equal(body.field, bad.field);
    if (bad.mustNotContain !== undefined) assert.ok(!response.text.includes(bad.mustNotContain), 'the body is not echoed');
    assert.equal(seen.length, 0, 'the handler is not called');
  });
}

test('handler throwing an unexpected error -> 500 without its message or stack', async () => {
  reset();
  behaviour = () => Promise.reject(new Error('password=hunter2 leaked'));
  const fx = fixture('apiserver-ref-add');
  const response = await post('/', fx.headers, fx.body);
  assert.equal(response.status, 500);
  assert.ok(!response.text.includes('hunter2'));
  assert.ok(!response.text.includes('server.ts'));
  assert.match(response.text, /will be retried/);
});

test('PermanentError -> 422 (Knative does not retry), TransientError -> 503 with Retry-After', async () => {
  reset();
  const fx = fixture('apiserver-ref-add');
  behaviour = () => Promise.reject(new PermanentError('Backup demo/x names no repository: set spec.repository'));
  let response = await post('/', fx.headers, fx.body);
  assert.equal(response.status, 422);
  assert.deepEqual(JSON.parse(response.text), {
    error: 'Backup demo/x names no repository: set spec.repository', requestId: '0b0e3f5e-5a3b-4a59-9a0e-8f1f0c6b1a11', retry: false,
  });
  behaviour = () => Promise.reject(new TransientError('repository is locked', { retryAfterSeconds: 30 }));
  response = await post('/', fx.headers, fx.body);
  assert.equal(response.status, 503);
  assert.equal(response.headers.get('retry-after'), '30');
});

test('body over the limit -> 413', async () => {
  reset();
  const response = await post('/invoke', { 'Content-Type': 'application/json' }, JSON.stringify({ kind: 'x'.repeat(5000) }));
  assert.equal(response.status, 413);
  assert.match(response.text, /larger than the limit of 4096/);
  assert.equal(seen.length, 0);
});

test('health endpoints and unknown routes', async () => {
  assert.equal((await fetch(`${running.url}/healthz`)).status, 200);
  assert.equal((await fetch(`${running.url}/readyz`)).status, 200);
  assert.equal((await fetch(`${running.url}/`)).status, 405);
  assert.equal((await fetch(`${running.url}/nope`, { method: 'POST' })).status, 404);
});

test('close() finishes the in-flight request, then stops accepting', async () => {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => { release = resolve; });
  const own = createFunctionServer({ name: 'drain', logger: pino({ level: 'silent' }), handle: () => gate });
  const server = await own.listen(0, { host: '127.0.0.1', handleSignals: false });
  const inFlight = fetch(`${server.url}/`, { method: 'POST', headers: { 'X-Connector': 'cron-connector' } });
  await new Promise((resolve) => setTimeout(resolve, 100));
  const closed = server.close();
  let closedYet = false;
  void closed.then(() => { closedYet = true; });
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(closedYet, false, 'close waits for the in-flight request');
  release();
  const response = await inFlight;
  assert.equal(response.status, 202);
  await closed;
  await assert.rejects(fetch(`${server.url}/healthz`));
});

test('SIGTERM drains the in-flight request and exits 0', async () => {
  const child = spawn(process.execPath, [new URL('./fixtures/sigterm-server.ts', import.meta.url).pathname], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  child.stdout.setEncoding('utf8');
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (chunk: string) => {
      output += chunk;
      const match = /PORT=(\d+)/.exec(output);
      if (match?.[1]) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`child exited early with ${code}: ${output}`)));
  });
  const inFlight = fetch(`http://127.0.0.1:${port}/`, { method: 'POST', headers: { 'X-Connector': 'cron-connector' } });
  await new Promise((resolve) => setTimeout(resolve, 150));
  child.kill('SIGTERM');
  const response = await inFlight;
  assert.equal(response.status, 202);
  const [code] = await once(child, 'exit') as [number | null];
  assert.equal(code, 0);
  assert.match(output, /drained; exiting/);
});

test('handler context logger carries the request fields', () => {
  // Checked through the log lines above: every handler log line has function and requestId.
  const handled = logLines.filter((l) => l.msg === 'handled');
  assert.ok(handled.length > 0);
  for (const line of handled) {
    assert.equal(line.function, 'test-fn');
    assert.equal(typeof line.requestId, 'string');
  }
  assert.ok(z.string().safeParse(handled[0]?.requestId).success);
});
