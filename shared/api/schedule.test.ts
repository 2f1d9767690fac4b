import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  MIN_EVERY_MS, SCHEDULE_SHAPE, mustParseSchedule, nextRunAfter, parseGoDuration, parseSchedule, previousRunAtOrBefore,
  type ScheduleProblem,
} from './schedule.ts';

describe('parseSchedule accepts', () => {
  const table: [string, string | undefined, string, number | string][] = [
    ['0 3 * * *', undefined, 'cron', '0 3 * * *'],
    ['*/15 * * * 1-5', undefined, 'cron', '*/15 * * * 1-5'],
    ['  0   3 * *   *  ', undefined, 'cron', '0 3 * * *'],
    ['@hourly', undefined, 'cron', '0 * * * *'],
    ['@daily', undefined, 'cron', '0 0 * * *'],
    ['@midnight', undefined, 'cron', '0 0 * * *'],
    ['@weekly', undefined, 'cron', '0 0 * * 0'],
    ['@monthly', undefined, 'cron', '0 0 1 * *'],
    ['@yearly', undefined, 'cron', '0 0 1 1 *'],
    ['@annually', 'Europe/Berlin', 'cron', '0 0 1 1 *'],
    ['CRON_TZ=Asia/Tokyo 30 2 * * *', undefined, 'cron', '30 2 * * *'],
    ['@every 1h', undefined, 'every', 3_600_000],
    ['@every 30m', undefined, 'every', 1_800_000],
    ['@every 1h30m', undefined, 'every', 5_400_000],
    ['@every 1.5h', undefined, 'every', 5_400_000],
    ['@every 90s', undefined, 'every', 90_000],
    ['@every 1m', undefined, 'every', 60_000],
  ];
  for (const [text, tz, kind, detail] of table) {
    it(`${JSON.stringify(text)}${tz === undefined ? '' : ` in ${tz}`}`, () => {
      const r = parseSchedule(text, tz);
      assert.ok(r.ok, r.ok ? '' : r.error.message);
      assert.equal(r.schedule.kind, kind);
      assert.equal(r.schedule.kind === 'cron' ? r.schedule.expression : r.schedule.intervalMs, detail);
      assert.ok(SCHEDULE_SHAPE.test(text.trim()), 'the CRD pattern must accept what parseSchedule accepts');
    });
  }
});

describe('parseSchedule rejects, naming the problem', () => {
  const table: [string, string | undefined, ScheduleProblem, RegExp][] = [
    ['', undefined, 'empty', /empty/],
    ['every hour', undefined, 'field-count', /2 fields, cron needs 5/],
    ['0 3 * *', undefined, 'field-count', /4 fields/],
    ['0 0 3 * * *', undefined, 'field-count', /6 fields/],
    ['61 * * * *', undefined, 'bad-cron', /not valid cron/],
    ['@fortnightly', undefined, 'bad-alias', /unknown alias @fortnightly/],
    ['@every', undefined, 'bad-duration', /not a duration/],
    ['@every 1 hour', undefined, 'bad-duration', /not a duration/],
    ['@every 1d', undefined, 'bad-duration', /not a duration/],
    ['@every 30s', undefined, 'interval-too-short', /at least 1m/],
    ['@every 59999ms', undefined, 'interval-too-short', /at least 1m/],
    ['0 3 * * *', 'Mars/Olympus', 'bad-timezone', /not an IANA time zone/],
    ['CRON_TZ=Nowhere/Land 0 3 * * *', undefined, 'bad-timezone', /Nowhere\/Land/],
    ['CRON_TZ=UTC 0 3 * * *', 'Europe/Berlin', 'timezone-conflict', /one place/],
  ];
  for (const [text, tz, problem, message] of table) {
    it(`${JSON.stringify(text)} -> ${problem}`, () => {
      const r = parseSchedule(text, tz);
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.equal(r.error.problem, problem);
      assert.match(r.error.message, message);
      assert.equal(r.error.name, 'ScheduleError');
    });
  }
  it('mustParseSchedule throws the ScheduleError', () => {
    assert.throws(() => mustParseSchedule('@every 10s'), { name: 'ScheduleError', problem: 'interval-too-short' });
  });
});

describe('parseGoDuration', () => {
  it('reads Go durations', () => {
    assert.equal(parseGoDuration('1h2m3s'), 3_723_000);
    assert.equal(parseGoDuration('250ms'), 250);
    assert.equal(parseGoDuration('1.5m'), 90_000);
    assert.equal(parseGoDuration('1x'), undefined);
    assert.equal(parseGoDuration(''), undefined);
    assert.equal(MIN_EVERY_MS, 60_000);
  });
});

describe('nextRunAfter / previousRunAtOrBefore', () => {
  const d = (s: string) => new Date(s);
  const table: [string, string | undefined, string, string, string][] = [
    // schedule, zone, at, previous-at-or-before, next-after
    ['0 3 * * *', undefined, '2026-01-01T03:00:00Z', '2026-01-01T03:00:00.000Z', '2026-01-02T03:00:00.000Z'],
    ['0 3 * * *', undefined, '2026-01-01T02:59:59.999Z', '2025-12-31T03:00:00.000Z', '2026-01-01T03:00:00.000Z'],
    ['0 3 * * *', undefined, '2026-01-01T03:00:00.500Z', '2026-01-01T03:00:00.000Z', '2026-01-02T03:00:00.000Z'],
    ['0 3 * * *', 'Europe/Berlin', '2026-01-01T12:00:00Z', '2026-01-01T02:00:00.000Z', '2026-01-02T02:00:00.000Z'],
    ['0 3 * * *', 'Europe/Berlin', '2026-07-01T12:00:00Z', '2026-07-01T01:00:00.000Z', '2026-07-02T01:00:00.000Z'],
    ['CRON_TZ=America/New_York 0 0 * * *', undefined, '2026-01-01T12:00:00Z', '2026-01-01T05:00:00.000Z', '2026-01-02T05:00:00.000Z'],
    ['@hourly', undefined, '2026-03-04T10:20:00Z', '2026-03-04T10:00:00.000Z', '2026-03-04T11:00:00.000Z'],
    ['@monthly', undefined, '2026-03-04T10:20:00Z', '2026-03-01T00:00:00.000Z', '2026-04-01T00:00:00.000Z'],
    ['@weekly', undefined, '2026-03-04T10:20:00Z', '2026-03-01T00:00:00.000Z', '2026-03-08T00:00:00.000Z'],
    ['@every 1h', undefined, '2026-03-04T10:20:00Z', '2026-03-04T10:00:00.000Z', '2026-03-04T11:00:00.000Z'],
    ['@every 1h', undefined, '2026-03-04T10:00:00Z', '2026-03-04T10:00:00.000Z', '2026-03-04T11:00:00.000Z'],
    ['@every 1h', 'Asia/Kolkata', '2026-03-04T10:20:00Z', '2026-03-04T10:00:00.000Z', '2026-03-04T11:00:00.000Z'],
    // 7 minutes do not divide a day: ticks are still anchored at the epoch, identical on every replica.
    ['@every 7m', undefined, '1970-01-01T00:15:00Z', '1970-01-01T00:14:00.000Z', '1970-01-01T00:21:00.000Z'],
    ['@every 1h30m', undefined, '1970-01-01T02:00:00Z', '1970-01-01T01:30:00.000Z', '1970-01-01T03:00:00.000Z'],
  ];
  for (const [text, tz, at, prev, next] of table) {
    it(`${text}${tz === undefined ? '' : ` (${tz})`} at ${at}`, () => {
      const s = mustParseSchedule(text, tz);
      assert.equal(previousRunAtOrBefore(s, d(at)).toISOString(), prev);
      assert.equal(nextRunAfter(s, d(at)).toISOString(), next);
    });
  }
  it('handles the spring-forward gap in a time zone', () => {
    // 2026-03-29 02:30 does not exist in Europe/Berlin; the tick after 01:00 UTC must be a real instant after it.
    const s = mustParseSchedule('30 2 * * *', 'Europe/Berlin');
    const n = nextRunAfter(s, d('2026-03-28T12:00:00Z'));
    assert.ok(n.getTime() > d('2026-03-28T12:00:00Z').getTime());
    assert.ok(n.getTime() <= d('2026-03-30T00:30:00Z').getTime(), n.toISOString());
  });
  it('next is strictly after and previous is at or before, over many instants', () => {
    for (const text of ['*/5 * * * *', '@every 45m', '@daily']) {
      const s = mustParseSchedule(text);
      for (let t = 0; t < 50; t++) {
        const at = new Date(Date.UTC(2026, 0, 1) + t * 3_456_789);
        const p = previousRunAtOrBefore(s, at);
        const n = nextRunAfter(s, at);
        assert.ok(p.getTime() <= at.getTime() && n.getTime() > at.getTime(), `${text} at ${at.toISOString()}`);
        assert.equal(nextRunAfter(s, p).getTime() >= n.getTime(), true);
      }
    }
  });
});
