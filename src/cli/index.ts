#!/usr/bin/env node
// Entry point of the `jwks-signer` command (package bin).
import { run } from './program.js';

process.exitCode = await run(process.argv.slice(2));
