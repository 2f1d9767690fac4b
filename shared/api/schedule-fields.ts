// zod fields for `schedule` and `timezone`, shared by Backup and BackupTemplate.
import { z } from 'zod';
import type { CrossFieldRule } from './common.ts';
import { isValidTimeZone, parseSchedule, SCHEDULE_SHAPE, TIMEZONE_SHAPE_PATTERN } from './schedule.ts';

export const scheduleField = () =>
  z.string()
    .max(256)
    .regex(SCHEDULE_SHAPE, {
      error: (iss) => `schedule "${String(iss.input)}" is not a schedule: use 5-field cron ("0 3 * * *"), an alias (@hourly, @daily, @weekly, @monthly, @yearly) or "@every <duration>" (e.g. @every 1h)`,
    })
    .superRefine((text, ctx) => {
      const r = parseSchedule(text);
      if (!r.ok) ctx.addIssue({ code: 'custom', message: r.error.message, input: text });
    })
    .meta({ description: 'cron (5 fields), @hourly/@daily/@weekly/@monthly/@yearly, or @every <duration> (>= 1m, ticks anchored at the Unix epoch); an optional CRON_TZ=<zone> prefix' });

export const timezoneField = () =>
  z.string()
    .max(64)
    .regex(new RegExp(TIMEZONE_SHAPE_PATTERN), { error: (iss) => `timezone "${String(iss.input)}" is not an IANA time zone name such as UTC or Europe/Berlin` })
    .refine(isValidTimeZone, { error: (iss) => `timezone "${String(iss.input)}" is not a known IANA time zone: use e.g. UTC, Europe/Berlin or America/New_York` })
    .meta({ description: 'IANA time zone for cron schedules (default UTC)' });

/** The time zone lives in one place: `timezone` or a CRON_TZ= prefix of `schedule`. */
export const oneTimezoneRule: CrossFieldRule<{ schedule?: string | undefined; timezone?: string | undefined }> = {
  cel: "!(has(self.timezone) && has(self.schedule) && (self.schedule.startsWith('CRON_TZ=') || self.schedule.startsWith('TZ=')))",
  message: 'set the time zone either in timezone or as a CRON_TZ= prefix of schedule, not both',
  field: 'timezone',
  check: (v) => !(v.timezone !== undefined && v.schedule !== undefined && /^(CRON_)?TZ=/.test(v.schedule)),
};
