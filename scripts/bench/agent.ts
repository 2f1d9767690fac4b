/**
 * Benchmark 1 (issue 3): the agent against bare restic on the same data, side by side.
 * Run through scripts/bench/agent.sh (which prepares the data); prints a table and writes the raw
 * figures as JSON to $BENCH_DIR/agent-results.json.
 *
 * Every figure is a whole command measured by scripts/bench/measure.ts (wall time from spawn to
 * exit, peak RSS summed over the process tree), repeated BENCH_REPS times (default 3), agent and
 * bare restic alternating which goes first; the 1-minute load average is read before each one.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const benchDir = process.env.BENCH_DIR ?? '/tmp/stash-bench';
const reps = Number(process.env.BENCH_REPS ?? 3);
const restic = process.env.STASH_RESTIC ?? 'restic';
const tree = path.join(benchDir, 'tree');
const repoPassword = path.join(benchDir, 'repo-password');
const pgPasswordFile = path.join(benchDir, 'pg', 'password');
const pgPort = process.env.BENCH_PG_PORT ?? '55432';
const only = (process.env.BENCH_ONLY ?? 'files,db').split(',');
const databases = (process.env.BENCH_DBS ?? 'bench35,bench70,blobs').split(',');
const node = process.execPath;
const stash = path.join(repoRoot, 'agent/bin/stash.js');
const measureTs = path.join(repoRoot, 'scripts/bench/measure.ts');
const dbAgent = path.join(repoRoot, 'scripts/bench/db-agent.ts');

interface Measured {
  wallSeconds: number;
  peakTreeRssMB: number;
  peakByName: Record<string, number>;
  exitCode: number;
  load: number;
}

const env: NodeJS.ProcessEnv = { ...process.env, STASH_RESTIC: restic, RESTIC_PASSWORD_FILE: repoPassword, RESTIC_PROGRESS_FPS: '2' };
const pgEnv: NodeJS.ProcessEnv = { ...env, PGPASSWORD: readFileSync(pgPasswordFile, 'utf8').trim(), PGPASSFILE: '/dev/null' };

function load1(): number {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

function measure(argv: string[], e: NodeJS.ProcessEnv = env): Measured {
  // Flush the previous step's dirty pages first (a restore writes 1.3 GB), so no run pays for another's writeback.
  execFileSync('sync');
  const load = load1();
  const r = spawnSync(node, [measureTs, '--', ...argv], { env: e, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
  const m = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Omit<Measured, 'load'>;
  if (m.exitCode !== 0) throw new Error(`${argv.join(' ')} exited ${m.exitCode}`);
  return { ...m, load };
}

function freshRepo(name: string): string {
  const repo = path.join(benchDir, name);
  rmSync(repo, { recursive: true, force: true });
  execFileSync(restic, ['init', '--repo', repo, '-q'], { env, stdio: 'ignore' });
  return repo;
}


type Side = 'agent' | 'bare' | 'driver';
const results: Record<string, { agent: Measured[]; bare: Measured[]; driver?: Measured[]; extra?: Record<string, unknown> }> = {};
function record(key: string, side: Side, m: Measured): void {
  results[key] ??= { agent: [], bare: [] };
  (results[key][side] ??= []).push(m);
  process.stderr.write(`  ${key} ${side}: ${m.wallSeconds.toFixed(2)} s, ${m.peakTreeRssMB} MB ${JSON.stringify(m.peakByName)} (load ${m.load})\n`);
}

function files(): void {
  // The tree (1.3 GB) and the databases stay in the page cache (23 GB RAM): every run reads warm data.
  for (let i = 0; i < reps; i++) {
    process.stderr.write(`files, repetition ${i + 1}/${reps}\n`);
    const order: ('agent' | 'bare')[] = i % 2 === 0 ? ['agent', 'bare'] : ['bare', 'agent'];
    const repos = { agent: freshRepo('repo-agent'), bare: freshRepo('repo-bare') };
    const backup = (side: 'agent' | 'bare'): Measured => side === 'agent'
      ? measure([node, stash, 'backup', '--repo', repos.agent, '--password-file', repoPassword, '--json', tree])
      : measure([restic, '--json', '--repo', repos.bare, 'backup', '--host', 'host-0', '--', tree]);
    for (const side of order) record('first backup', side, backup(side));
    for (const side of order) record('unchanged re-backup', side, backup(side));
    for (const side of order) {
      const target = path.join(benchDir, `restore-${side}`);
      rmSync(target, { recursive: true, force: true });
      record('restore', side, side === 'agent'
        ? measure([node, stash, 'recover', '--repo', repos.agent, '--password-file', repoPassword, '--json', '--snapshot', 'latest', '--target', target])
        : measure([restic, '--json', '--repo', repos.bare, 'restore', '--target', target, '--', 'latest']));
      rmSync(target, { recursive: true, force: true });
    }
  }
  rmSync(path.join(benchDir, 'repo-agent'), { recursive: true, force: true });
  rmSync(path.join(benchDir, 'repo-bare'), { recursive: true, force: true });
}

function db(): void {
  for (const database of databases) {
    const dump = ['pg_dump', '-h', '127.0.0.1', '-p', pgPort, '-U', 'postgres', '-d', `dbname='${database}'`, '--create', '--clean', '--if-exists'];
    const size = Number(execFileSync('bash', ['-c', `${dump.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ')} | wc -c`], { env: pgEnv, encoding: 'utf8' }).trim());
    const key = `db ${database}`;
    results[key] = { agent: [], bare: [], extra: { dumpBytes: size, dumpOnly: [] as Measured[] } };
    for (let i = 0; i < reps; i++) {
      process.stderr.write(`${key} (${(size / 1e6).toFixed(0)} MB of SQL), repetition ${i + 1}/${reps}\n`);
      const m = measure(dump, pgEnv);
      (results[key].extra?.dumpOnly as Measured[]).push(m);
      process.stderr.write(`  ${key} pg_dump > /dev/null: ${m.wallSeconds.toFixed(2)} s, ${m.peakTreeRssMB} MB (load ${m.load})\n`);
      const sides: Side[] = ['agent', 'bare', 'driver'];
      const order = [...sides.slice(i % 3), ...sides.slice(0, i % 3)];
      for (const side of order) {
        const repo = freshRepo(`repo-db-${side}`);
        const argv = side === 'agent'
          ? [node, stash, 'backup', '--repo', repo, '--password-file', repoPassword, '--json', '--db-type', 'postgres', '--db-host', '127.0.0.1',
            '--db-port', pgPort, '--db-user', 'postgres', '--db-password-file', pgPasswordFile, '--database', database]
          : side === 'driver'
            ? [node, dbAgent, repo, repoPassword, '127.0.0.1', pgPort, pgPasswordFile, database]
            : [restic, '--json', '--repo', repo, 'backup', '--host', 'host-0', '--stdin-filename', 'postgres.sql', '--stdin-from-command', '--', ...dump];
        record(key, side, measure(argv, side === 'bare' ? pgEnv : env));
        rmSync(repo, { recursive: true, force: true });
      }
    }
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};
const spread = (xs: number[]): string => `${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)}`;
const fmt = (xs: number[], digits = 2): string => `${median(xs).toFixed(digits)} (${spread(xs)})`;

const started = new Date();
const machine = { nproc: os.availableParallelism(), memGB: Math.round(os.totalmem() / 1e9), node: process.version, restic: execFileSync(restic, ['version'], { encoding: 'utf8' }).trim() };
if (only.includes('files')) files();
if (only.includes('db')) db();

const rows: string[][] = [['measurement', 'agent s', 'restic s', 'overhead', 'agent MB', 'restic MB', 'RSS over', 'load']];
for (const [key, r] of Object.entries(results)) {
  const a = r.agent.map((m) => m.wallSeconds);
  const b = r.bare.map((m) => m.wallSeconds);
  const am = r.agent.map((m) => m.peakTreeRssMB);
  const bm = r.bare.map((m) => m.peakTreeRssMB);
  const loads = [...r.agent, ...r.bare].map((m) => m.load);
  rows.push([key, fmt(a), fmt(b), `${((median(a) / median(b) - 1) * 100).toFixed(1)} %`, fmt(am, 0), fmt(bm, 0), `${(median(am) - median(bm)).toFixed(0)} MB`, spread(loads)]);
  if (r.driver) {
    const c = r.driver.map((m) => m.wallSeconds);
    const cm = r.driver.map((m) => m.peakTreeRssMB);
    rows.push([`  ${key}, agent/db driver (no CLI)`, fmt(c), '', `${((median(c) / median(b) - 1) * 100).toFixed(1)} %`, fmt(cm, 0), '', `${(median(cm) - median(bm)).toFixed(0)} MB`, '']);
  }
  const dumpOnly = r.extra?.dumpOnly as Measured[] | undefined;
  if (dumpOnly) {
    const d = dumpOnly.map((m) => m.wallSeconds);
    const mb = (r.extra?.dumpBytes as number) / 1e6;
    rows.push([`  ${key}: ${mb.toFixed(0)} MB SQL; pg_dump alone ${fmt(d)} s = ${(mb / median(d)).toFixed(0)} MB/s`,
      `${(mb / median(a)).toFixed(0)} MB/s`, `${(mb / median(b)).toFixed(0)} MB/s`,
      `${(median(d) / median(a)).toFixed(2)}x / ${(median(d) / median(b)).toFixed(2)}x of pg_dump${r.driver ? ` (driver ${(median(d) / median(r.driver.map((m) => m.wallSeconds))).toFixed(2)}x)` : ''}`, '', '', '', '']);
  }
}
const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
const table = rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')).join('\n');
process.stdout.write(`${JSON.stringify(machine)}  started ${started.toISOString()}, finished ${new Date().toISOString()}\n${table}\n`);
writeFileSync(path.join(benchDir, 'agent-results.json'), JSON.stringify({ machine, started, results }, null, 1));
