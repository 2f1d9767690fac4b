/**
 * Runs one command and reports its wall time and the peak resident memory of its whole process
 * tree (the command and every descendant, summed at each sample), as one JSON line on stdout:
 *   node scripts/bench/measure.ts [--stdout FILE] -- COMMAND ARGS...
 *   {"wallSeconds":..,"peakTreeRssMB":..,"peakByName":{"node":..,"restic":..},"exitCode":0}
 * The tree is sampled from /proc every 50 ms (VmRSS); a process living less than that may be
 * missed, which only matters for short helpers. The command's stdout goes to FILE (default
 * /dev/null), its stderr is passed through.
 */
import { spawn } from 'node:child_process';
import { openSync, readdirSync, readFileSync } from 'node:fs';

const argv = process.argv.slice(2);
let outFile = '/dev/null';
if (argv[0] === '--stdout') {
  outFile = argv[1] ?? '/dev/null';
  argv.splice(0, 2);
}
if (argv[0] === '--') argv.shift();
const [cmd, ...args] = argv;
if (!cmd) {
  process.stderr.write('usage: node scripts/bench/measure.ts [--stdout FILE] -- COMMAND ARGS...\n');
  process.exit(2);
}

const labels = new Map<string, string>();
/** A readable label: the program's file name, and for node the script it runs. */
function label(pid: string, comm: string): string {
  const key = `${pid}:${comm}`;
  let l = labels.get(key);
  if (l === undefined) {
    try {
      const parts = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').filter((x) => x !== '');
      const base = (x: string | undefined): string => (x ?? '').split('/').pop() ?? '';
      const prog = base(parts[0]) || comm;
      const script = parts.slice(1).find((a) => !a.startsWith('-'));
      l = prog === 'node' && script ? `node ${base(script)}` : prog;
    } catch {
      l = comm;
    }
    labels.set(key, l);
  }
  return l;
}

function readProc(pid: string): { ppid: number; name: string; rssKb: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const close = stat.lastIndexOf(')');
    const name = label(pid, stat.slice(stat.indexOf('(') + 1, close));
    const fields = stat.slice(close + 2).split(' ');
    const ppid = Number(fields[1]);
    const rssPages = Number(fields[21]);
    return { ppid, name, rssKb: rssPages * 4 };
  } catch {
    return undefined;
  }
}

function treeRss(root: number): { total: number; byName: Map<string, number> } {
  const children = new Map<number, number[]>();
  const info = new Map<number, { name: string; rssKb: number }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const p = readProc(entry);
    if (!p) continue;
    const pid = Number(entry);
    info.set(pid, p);
    const list = children.get(p.ppid);
    if (list) list.push(pid);
    else children.set(p.ppid, [pid]);
  }
  let total = 0;
  const byName = new Map<string, number>();
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop() as number;
    const p = info.get(pid);
    if (p) {
      total += p.rssKb;
      byName.set(p.name, (byName.get(p.name) ?? 0) + p.rssKb);
    }
    stack.push(...(children.get(pid) ?? []));
  }
  return { total, byName };
}

const start = process.hrtime.bigint();
const child = spawn(cmd, args, { stdio: ['ignore', openSync(outFile, 'w'), 'inherit'] });
let peak = 0;
const peakByName = new Map<string, number>();
const sample = (): void => {
  if (child.pid === undefined) return;
  const { total, byName } = treeRss(child.pid);
  if (total > peak) peak = total;
  for (const [n, kb] of byName) if (kb > (peakByName.get(n) ?? 0)) peakByName.set(n, kb);
};
const timer = setInterval(sample, 50);
child.on('exit', (code, signal) => {
  const wall = Number(process.hrtime.bigint() - start) / 1e9;
  clearInterval(timer);
  const mb = (kb: number): number => Math.round(kb / 102.4) / 10;
  process.stdout.write(`${JSON.stringify({
    wallSeconds: Math.round(wall * 1000) / 1000,
    peakTreeRssMB: mb(peak),
    peakByName: Object.fromEntries([...peakByName].map(([n, kb]) => [n, mb(kb)])),
    exitCode: code ?? -1,
    ...(signal ? { signal } : {}),
  })}\n`);
  process.exitCode = code ?? 1;
});
