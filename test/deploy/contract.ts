// Shared by the deployment tests: docs/CONTRACT.md's environment table and tool lookup.
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { delimiter, dirname, join, resolve } from 'node:path';
import { homedir } from 'node:os';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface ContractEnv {
  names: Set<string>;
  patterns: RegExp[];
  defaults: Map<string, string>;
}

// Rows of the "Environment variables" table: `| NAME | default | meaning |`; `<NAME>` is a wildcard.
export function readContractEnv(): ContractEnv {
  const text = readFileSync(join(repoRoot, 'docs/CONTRACT.md'), 'utf8');
  const names = new Set<string>();
  const patterns: RegExp[] = [];
  const defaults = new Map<string, string>();
  for (const line of text.split('\n')) {
    const cells = line.split('|').map((cell) => cell.trim());
    const name = cells[1];
    if (cells.length < 4 || name === undefined || !/^[A-Z][A-Z0-9_]*(<[A-Z]+>)?$/.test(name)) continue;
    if (name.includes('<')) {
      patterns.push(new RegExp(`^${name.replace(/<[A-Z]+>/, '[A-Z0-9_]+')}$`));
    } else {
      names.add(name);
      defaults.set(name, cells[2] ?? '');
    }
  }
  return { names, patterns, defaults };
}

export function isContractEnvName(contract: ContractEnv, name: string): boolean {
  return contract.names.has(name) || contract.patterns.some((pattern) => pattern.test(name));
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

// A tool on PATH, else in ~/go/bin, $(go env GOBIN) or $(go env GOPATH)/bin, where .ci/install-tools.sh puts it.
export function findTool(name: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  dirs.push(join(homedir(), 'go', 'bin'));
  const goenv = spawnSync('go', ['env', 'GOBIN', 'GOPATH'], { encoding: 'utf8' });
  if (goenv.status === 0) {
    const [gobin, gopath] = goenv.stdout.split('\n').map((line) => line.trim());
    if (gobin) dirs.push(gobin);
    if (gopath) dirs.push(join(gopath, 'bin'));
  }
  return dirs.map((dir) => join(dir, name)).find(isExecutableFile);
}

// Skip only where the tool is missing on a developer's machine; in CI a missing tool is a failure.
export function missingToolSkip(tool: string, found: string | undefined): string | false {
  if (found) return false;
  const message = `${tool} not found on PATH, in ~/go/bin or in $(go env GOPATH)/bin: run .ci/install-tools.sh`;
  if (process.env.CI) throw new Error(message);
  return message;
}
