// Running a program to completion and keeping what it printed.
import { spawn } from 'node:child_process';

export interface Captured {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `command args` with `env` (the whole environment) and resolves with its exit code and output. */
export function runCaptured(command: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<Captured> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
