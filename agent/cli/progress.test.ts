import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatBytes, formatDuration, formatProgress, progressPrinter } from './progress.ts';

describe('progress formatting', () => {
  it('formats bytes and durations', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.50 KiB');
    assert.equal(formatBytes(50 * 1024 * 1024), '50.0 MiB');
    assert.equal(formatBytes(300 * 1024 ** 3), '300 GiB');
    assert.equal(formatDuration(75), '1:15');
    assert.equal(formatDuration(3725), '1:02:05');
  });
  it('shows files, bytes, rate and ETA', () => {
    const line = formatProgress({ percentDone: 0.25, filesDone: 10, totalFiles: 40, bytesDone: 100 * 1024 * 1024, totalBytes: 400 * 1024 * 1024, secondsElapsed: 10, secondsRemaining: 30 });
    assert.equal(line, '[0:10]  25.0%  10 / 40 files  100 MiB / 400 MiB  10.0 MiB/s  ETA 0:30');
  });
  it('derives ETA from the rate when restic gives none', () => {
    const line = formatProgress({ percentDone: 0.5, bytesDone: 1000, totalBytes: 2000, secondsElapsed: 4 });
    assert.match(line, /ETA 0:04$/);
  });
  it('prints at most one line per interval when not a terminal', () => {
    let t = 0;
    const lines: string[] = [];
    const p = progressPrinter({ write: (s: string) => lines.push(s) }, false, 5000, () => t);
    p.update({ percentDone: 0.1 });
    t = 6000;
    p.update({ percentDone: 0.2 });
    t = 7000;
    p.update({ percentDone: 0.3 });
    assert.deepEqual(lines, ['20.0%\n']);
  });
});
