// The agent's --json output in a log (a pod's, or a process's): one JSON object per line.

/** The JSON lines of a log, skipping anything else. */
export function jsonLines(text: string): Record<string, unknown>[] {
  return text.split('\n').filter((l) => l.startsWith('{')).flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

/** The last `{"type":"result", ...}` line of a log. */
export function resultLine(text: string): Record<string, unknown> | undefined {
  return jsonLines(text).filter((l) => l.type === 'result').at(-1);
}
