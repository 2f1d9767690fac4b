#!/usr/bin/env node
// Launcher for the `stash` agent CLI: Node 24 runs the TypeScript entry directly (type stripping).
import { runCli } from '../cli/main.ts';

await runCli();
