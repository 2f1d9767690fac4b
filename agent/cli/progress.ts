/**
 * Human-readable progress: "[0:12] 45.2%  1234 / 5000 files  1.20 GiB / 2.60 GiB  98.3 MiB/s  ETA 0:14".
 * Pure formatting plus a small printer that redraws one line on a terminal and prints a line every
 * few seconds otherwise (logs).
 */
import type { ResticProgress } from '../restic/types.ts';

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBytes(n: number): string {
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export function formatProgress(p: ResticProgress): string {
  const parts: string[] = [];
  if (p.secondsElapsed !== undefined) parts.push(`[${formatDuration(p.secondsElapsed)}]`);
  parts.push(`${(p.percentDone * 100).toFixed(1)}%`);
  if (p.filesDone !== undefined || p.totalFiles !== undefined) parts.push(`${p.filesDone ?? 0} / ${p.totalFiles ?? '?'} files`);
  if (p.bytesDone !== undefined || p.totalBytes !== undefined) {
    parts.push(`${formatBytes(p.bytesDone ?? 0)} / ${p.totalBytes !== undefined ? formatBytes(p.totalBytes) : '?'}`);
  }
  if (p.bytesDone !== undefined && p.secondsElapsed) parts.push(`${formatBytes(p.bytesDone / p.secondsElapsed)}/s`);
  const eta = p.secondsRemaining ?? etaFromRate(p);
  if (eta !== undefined && p.percentDone < 1) parts.push(`ETA ${formatDuration(eta)}`);
  return parts.join('  ');
}

function etaFromRate(p: ResticProgress): number | undefined {
  if (!p.secondsElapsed || !p.bytesDone || p.totalBytes === undefined) return undefined;
  const rate = p.bytesDone / p.secondsElapsed;
  return rate > 0 ? (p.totalBytes - p.bytesDone) / rate : undefined;
}

export interface ProgressSink {
  write(text: string): unknown;
}

/** Redraws on a terminal; otherwise prints at most one line per `intervalMs` (first after `intervalMs`). */
export function progressPrinter(out: ProgressSink, isTTY: boolean, intervalMs = 5000, now: () => number = Date.now): {
  update(p: ResticProgress): void;
  done(): void;
} {
  const start = now();
  let last = start;
  let drawn = false;
  return {
    update(p) {
      const line = formatProgress(p);
      if (isTTY) {
        out.write(`\r${line}\x1b[K`);
        drawn = true;
      } else if (now() - last >= intervalMs) {
        out.write(`${line}\n`);
        last = now();
      }
    },
    done() {
      if (drawn) out.write('\n');
      drawn = false;
    },
  };
}
