// Runs one autocannon load (the fallback when wrk is not installed) in its own process and prints the
// same "BENCH_JSON {...}" line as bench/wrk/bench.lua. Argument: the LoadSpec of bench/lib/load.ts as JSON.
import autocannon from 'autocannon';

const spec = JSON.parse(process.argv[2]);
const paths = spec.paths;
const opts = {
  url: `${spec.base}${paths[0]}`,
  connections: spec.connections,
  duration: spec.durationS,
  method: spec.method ?? 'GET',
  headers: spec.headers ?? {},
  timeout: 5,
  ...(spec.body ? { body: spec.body } : {}),
  ...(paths.length > 1
    ? { requests: [{ setupRequest: (req) => ({ ...req, path: paths[Math.floor(Math.random() * paths.length)] }) }] }
    : {}),
};

const result = await autocannon(opts);
const codes = {};
for (const [code, stat] of Object.entries(result.statusCodeStats ?? {})) codes[code] = stat.count;
const failedStatus = Object.entries(codes)
  .filter(([code]) => Number(code) >= 400)
  .reduce((sum, [, n]) => sum + n, 0);
const seconds = result.duration;
const requests = result.requests.total;
const out = {
  requests,
  seconds,
  rps: requests / seconds,
  p50Ms: result.latency.p50,
  p90Ms: result.latency.p90,
  p99Ms: result.latency.p99,
  maxMs: result.latency.max,
  errors: result.errors + result.timeouts + failedStatus,
  errorDetail: { socket: result.errors - result.timeouts, timeout: result.timeouts, status: failedStatus },
  codes,
};
process.stdout.write(`BENCH_JSON ${JSON.stringify(out)}\n`);
