// What the agent's container memory cgroup says, to tell a restic killed for lack of memory from
// one killed by a person: the kernel counts its OOM kills per cgroup (v2 memory.events, v1
// memory.oom_control: `oom_kill N`). Outside a cgroup with a memory controller both are undefined.
import { readFileSync } from 'node:fs';

const MiB = 1024 * 1024;
/** Above this a cgroup limit means "none" (cgroup v1 writes 2^63 rounded to pages). */
const UNLIMITED = 1024 * 1024 * MiB;

function read(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

export interface MemoryCgroup {
  /** How many processes the kernel has killed in this cgroup for lack of memory. */
  oomKills(): number | undefined;
  /** The memory limit in bytes, or undefined for none. */
  limit(): number | undefined;
}

export function memoryCgroup(root = '/sys/fs/cgroup'): MemoryCgroup {
  return {
    oomKills() {
      const text = read(`${root}/memory.events`) ?? read(`${root}/memory/memory.oom_control`);
      const m = text === undefined ? null : /^oom_kill (\d+)$/m.exec(text);
      return m?.[1] === undefined ? undefined : Number(m[1]);
    },
    limit() {
      const text = (read(`${root}/memory.max`) ?? read(`${root}/memory/memory.limit_in_bytes`))?.trim();
      const bytes = Number(text);
      return text !== undefined && Number.isFinite(bytes) && bytes > 0 && bytes < UNLIMITED ? bytes : undefined;
    },
  };
}
