// Backup schedules: 5-field cron, @hourly-style aliases and `@every <Go duration>`, with an
// optional IANA time zone (a separate field, or a `CRON_TZ=<zone> ` prefix). Pure functions:
// every replica of a stateless function computes the same ticks.
import { CronExpressionParser } from 'cron-parser';

export const SCHEDULE_ALIASES: Readonly<Record<string, string>> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};

/** Smallest `@every` interval Stash accepts. */
export const MIN_EVERY_MS = 60_000;

/**
 * The shape of a schedule, as a regular expression valid in both JavaScript and Go RE2: the CRD
 * uses it as the OpenAPI `pattern` of `schedule`, zod as a first check before `parseSchedule`.
 */
export const SCHEDULE_SHAPE_PATTERN =
  '^((CRON_)?TZ=\\S+\\s+)?(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every\\s+([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+|[^@\\s]\\S*(\\s+\\S+){4})$';
export const SCHEDULE_SHAPE = new RegExp(SCHEDULE_SHAPE_PATTERN);
/** IANA zone name shape (checked for existence by `isValidTimeZone`). */
export const TIMEZONE_SHAPE_PATTERN = '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$';

export interface CronSchedule {
  readonly kind: 'cron';
  /** The text as written. */
  readonly text: string;
  /** 5-field expression, aliases expanded. */
  readonly expression: string;
  /** IANA zone; undefined means UTC. */
  readonly timezone: string | undefined;
}
export interface EverySchedule {
  readonly kind: 'every';
  readonly text: string;
  readonly intervalMs: number;
  /** Kept for display: `@every` ticks are absolute instants, the zone does not move them. */
  readonly timezone: string | undefined;
}
export type Schedule = CronSchedule | EverySchedule;

export type ScheduleProblem =
  | 'empty'
  | 'bad-alias'
  | 'bad-duration'
  | 'interval-too-short'
  | 'field-count'
  | 'bad-cron'
  | 'bad-timezone'
  | 'timezone-conflict';

export class ScheduleError extends Error {
  readonly problem: ScheduleProblem;
  readonly text: string;
  constructor(problem: ScheduleProblem, text: string, message: string) {
    super(message);
    this.name = 'ScheduleError';
    this.problem = problem;
    this.text = text;
  }
}

export type ScheduleResult = { ok: true; schedule: Schedule } | { ok: false; error: ScheduleError };

const FIX = 'use 5-field cron ("0 3 * * *"), an alias (@hourly, @daily, @weekly, @monthly, @yearly) or "@every <duration>" (e.g. @every 1h30m)';

export function isValidTimeZone(zone: string): boolean {
  if (!new RegExp(TIMEZONE_SHAPE_PATTERN).test(zone)) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

const UNIT_MS: Readonly<Record<string, number>> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parse a Go duration (`1h`, `30m`, `1h30m`, `1.5h`) to milliseconds; undefined when malformed. */
export function parseGoDuration(text: string): number | undefined {
  const whole = /^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$/;
  if (!whole.test(text)) return undefined;
  let total = 0;
  for (const m of text.matchAll(/([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)/g)) {
    total += Number(m[1]) * (UNIT_MS[m[2] ?? ''] ?? Number.NaN);
  }
  return Number.isFinite(total) ? Math.round(total) : undefined;
}

function fail(problem: ScheduleProblem, text: string, message: string): ScheduleResult {
  return { ok: false, error: new ScheduleError(problem, text, message) };
}

/** Parse a schedule; `timezone` is the separate time-zone field, if any. */
export function parseSchedule(text: string, timezone?: string): ScheduleResult {
  let rest = text.trim();
  if (rest === '') return fail('empty', text, `schedule is empty: ${FIX}`);
  let zone = timezone;
  const prefix = /^(?:CRON_)?TZ=(\S+)\s+/.exec(rest);
  if (prefix !== null) {
    const prefixed = prefix[1] ?? '';
    if (timezone !== undefined && timezone !== prefixed) {
      return fail('timezone-conflict', text, `schedule "${text}" names time zone ${prefixed} but timezone is ${timezone}: set the zone in one place`);
    }
    zone = prefixed;
    rest = rest.slice(prefix[0].length);
  }
  if (zone !== undefined && !isValidTimeZone(zone)) {
    return fail('bad-timezone', text, `time zone "${zone}" is not an IANA time zone name: use e.g. UTC, Europe/Berlin or America/New_York`);
  }
  if (rest.startsWith('@every')) {
    const spec = rest.slice('@every'.length).trim();
    const ms = parseGoDuration(spec);
    if (ms === undefined || !/^@every\s/.test(rest)) {
      return fail('bad-duration', text, `schedule "${text}": "${spec}" is not a duration: write @every 1h, @every 30m or @every 1h30m`);
    }
    if (ms < MIN_EVERY_MS) {
      return fail('interval-too-short', text, `schedule "${text}": the interval must be at least 1m`);
    }
    return { ok: true, schedule: { kind: 'every', text, intervalMs: ms, timezone: zone } };
  }
  let expression: string;
  if (rest.startsWith('@')) {
    const alias = SCHEDULE_ALIASES[rest];
    if (alias === undefined) return fail('bad-alias', text, `schedule "${text}": unknown alias ${rest}: ${FIX}`);
    expression = alias;
  } else {
    const fields = rest.split(/\s+/);
    if (fields.length !== 5) {
      return fail('field-count', text, `schedule "${text}" has ${fields.length} fields, cron needs 5 (minute hour day-of-month month day-of-week): ${FIX}`);
    }
    expression = fields.join(' ');
  }
  try {
    CronExpressionParser.parse(expression, { tz: zone ?? 'UTC', currentDate: new Date(0) }).next();
  } catch (err) {
    return fail('bad-cron', text, `schedule "${text}" is not valid cron (${(err as Error).message}): ${FIX}`);
  }
  return { ok: true, schedule: { kind: 'cron', text, expression, timezone: zone } };
}

/** Parse or throw the ScheduleError. */
export function mustParseSchedule(text: string, timezone?: string): Schedule {
  const r = parseSchedule(text, timezone);
  if (!r.ok) throw r.error;
  return r.schedule;
}

/** The first tick strictly after `date`. */
export function nextRunAfter(schedule: Schedule, date: Date): Date {
  if (schedule.kind === 'every') {
    const i = schedule.intervalMs;
    return new Date(Math.floor(date.getTime() / i) * i + i);
  }
  return CronExpressionParser.parse(schedule.expression, { currentDate: date, tz: schedule.timezone ?? 'UTC' }).next().toDate();
}

/** The last tick at or before `date` (`@every` ticks are anchored at the Unix epoch). */
export function previousRunAtOrBefore(schedule: Schedule, date: Date): Date {
  if (schedule.kind === 'every') {
    const i = schedule.intervalMs;
    return new Date(Math.floor(date.getTime() / i) * i);
  }
  // cron ticks fall on whole minutes; prev() is strictly before its start, so start 1 ms later.
  return CronExpressionParser.parse(schedule.expression, { currentDate: new Date(date.getTime() + 1), tz: schedule.timezone ?? 'UTC' }).prev().toDate();
}
