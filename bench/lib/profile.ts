// Summaries of a V8 .cpuprofile (node --cpu-prof): self time by component and by function, and inclusive
// time of the service's own functions, with the compiled positions mapped back to src/*.ts.
import { existsSync, readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileRow {
  name: string;
  ms: number;
  share: number;
}

export interface ProfileSummary {
  file: string;
  /** True when only the samples taken during the measured load were kept (start-up excluded). */
  windowed: boolean;
  totalMs: number;
  busyMs: number;
  byComponent: ProfileRow[];
  topSelf: ProfileRow[];
  serviceInclusive: ProfileRow[];
  /** Inclusive time of frames in packages and the service (not node: internals), the biggest first. */
  topInclusive: ProfileRow[];
}

// ---- source maps (VLQ "mappings" of tsc's .js.map), enough to map a position back to src ----
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
type Segment = [genCol: number, source: number, line: number, col: number];
const mapCache = new Map<string, { sources: string[]; lines: Segment[][] } | null>();

function decodeMappings(mappings: string): Segment[][] {
  const lines: Segment[][] = [];
  let source = 0;
  let line = 0;
  let col = 0;
  for (const lineText of mappings.split(';')) {
    const segments: Segment[] = [];
    let genCol = 0;
    for (const seg of lineText.split(',')) {
      if (!seg) continue;
      const values: number[] = [];
      let value = 0;
      let shift = 0;
      for (const ch of seg) {
        const digit = B64.indexOf(ch);
        value += (digit & 31) << shift;
        if (digit & 32) shift += 5;
        else {
          values.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      genCol += values[0] ?? 0;
      if (values.length >= 4) {
        source += values[1]!;
        line += values[2]!;
        col += values[3]!;
        segments.push([genCol, source, line, col]);
      }
    }
    lines.push(segments);
  }
  return lines;
}

/** "src/x.ts:line" for a compiled position (0-based line and column), or undefined. */
function mapToSource(url: string, line: number, column: number, repoRoot: string): string | undefined {
  if (!url.startsWith('file://')) return undefined;
  const path = fileURLToPath(url);
  let map = mapCache.get(path);
  if (map === undefined) {
    map = null;
    if (existsSync(`${path}.map`)) {
      const raw = JSON.parse(readFileSync(`${path}.map`, 'utf8')) as { sources: string[]; sourceRoot?: string; mappings: string };
      const base = new URL('.', url);
      map = { sources: raw.sources.map((s) => relative(repoRoot, fileURLToPath(new URL(s, base)))), lines: decodeMappings(raw.mappings) };
    }
    mapCache.set(path, map);
  }
  if (!map) return undefined;
  const segments = map.lines[line] ?? [];
  let best: Segment | undefined;
  for (const seg of segments) {
    if (seg[0] <= column) best = seg;
    else break;
  }
  best ??= segments[0];
  return best ? `${map.sources[best[1]]}:${best[2] + 1}` : undefined;
}

function component(frame: CallFrame, repoRoot: string): string {
  const { url, functionName } = frame;
  if (!url) {
    if (functionName.startsWith('(')) return functionName; // (garbage collector), (program), (idle)
    return 'V8/native builtins';
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith('node:')) {
    const path = url.slice(5).replace(/^internal\//, '');
    return `node:${path.split('/')[0]!.replace(/\.js$/, '').replace(/^(_http|http).*/, 'http').replace(/^(streams|stream).*/, 'stream')}`;
  }
  if (url.startsWith('file://')) {
    const path = relative(repoRoot, fileURLToPath(url));
    if (path.includes('/dist/')) return `service (${path.slice(path.indexOf('/dist/') + 6).replace(/\.js$/, '.ts')})`;
    return path;
  }
  return url;
}

/**
 * `window`: CLOCK_MONOTONIC microseconds (process.hrtime in the harness; V8 stamps its samples with the same
 * clock on Linux) between which samples count, to leave out start-up and shutdown.
 */
export function summarizeProfile(file: string, repoRoot: string, window?: { fromUs: number; toUs: number }, top = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const collect = (from: number, to: number) => {
    const out = new Map<number, number>();
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      t += profile.timeDeltas[i] ?? 0;
      if (t < from || t > to) continue;
      const delta = profile.timeDeltas[i + 1] ?? 0;
      out.set(profile.samples[i]!, (out.get(profile.samples[i]!) ?? 0) + delta);
    }
    return out;
  };
  let self = window ? collect(window.fromUs, window.toUs) : collect(-Infinity, Infinity);
  const windowed = window !== undefined && [...self.values()].reduce((a, b) => a + b, 0) > 0.5 * (window.toUs - window.fromUs);
  if (!windowed) self = collect(-Infinity, Infinity);
  const label = (frame: CallFrame) => {
    const where = mapToSource(frame.url, frame.lineNumber, frame.columnNumber, repoRoot);
    const plain = frame.url ? `${frame.url.replace(/^file:\/\/.*\/node_modules\//, '').replace(/^file:\/\//, '')}:${frame.lineNumber + 1}` : '';
    return `${frame.functionName || '(anonymous)'}${where ? ` (${where})` : plain ? ` (${plain})` : ''}`;
  };
  let totalUs = 0;
  let idleUs = 0;
  const comp = new Map<string, number>();
  const fn = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const anyInclusive = new Map<string, number>();
  for (const [id, us] of self) {
    const node = byId.get(id)!;
    totalUs += us;
    if (node.callFrame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const c = component(node.callFrame, repoRoot);
    comp.set(c, (comp.get(c) ?? 0) + us);
    const l = label(node.callFrame);
    fn.set(l, (fn.get(l) ?? 0) + us);
    // Inclusive time: each distinct frame on the stack is counted once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const frame = byId.get(cur)!.callFrame;
      if (!frame.url.startsWith('file://')) continue;
      const key = label(frame);
      if (seen.has(key)) continue;
      seen.add(key);
      anyInclusive.set(key, (anyInclusive.get(key) ?? 0) + us);
      if (frame.url.includes('/dist/') && !frame.url.includes('/node_modules/')) inclusive.set(key, (inclusive.get(key) ?? 0) + us);
    }
  }
  const busyUs = totalUs - idleUs;
  const rows = (m: Map<string, number>, n: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, us]) => ({ name, ms: us / 1000, share: busyUs > 0 ? us / busyUs : 0 }));
  return {
    file,
    windowed,
    totalMs: totalUs / 1000,
    busyMs: busyUs / 1000,
    byComponent: rows(comp, 12),
    topSelf: rows(fn, top),
    serviceInclusive: rows(inclusive, 10),
    topInclusive: rows(anyInclusive, 25),
  };
}
