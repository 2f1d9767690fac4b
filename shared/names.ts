// Object names Stash derives from other names, within Kubernetes' length limits. Pure.
import { createHash } from 'node:crypto';

export function hash8(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

/** `text`, or cut to `limit` with `-<8 hex>` so that different long texts stay different. */
export function fitName(text: string, limit: number): string {
  if (text.length <= limit) return text;
  return `${text.slice(0, limit - 9).replace(/[-._]+$/, '')}-${hash8(text)}`;
}
