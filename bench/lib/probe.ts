// A paced latency probe: GET `url` at a fixed rate over keep-alive connections, for p50/p99 under other load.
import { Agent, request as httpRequest } from 'node:http';
import { quantile } from './procs.js';

export interface Probe {
  requests: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  statuses: Record<string, number>;
  etags: string[];
}

export function probe(url: string, ratePerS: number, durationS: number): Promise<Probe> {
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  const etags: string[] = [];
  let errors = 0;
  let outstanding = 0;
  return new Promise((resolve) => {
    const stopAt = Date.now() + durationS * 1000;
    const finish = () => {
      if (Date.now() < stopAt || outstanding > 0) return;
      agent.destroy();
      latencies.sort((a, b) => a - b);
      resolve({ requests: latencies.length, errors, p50Ms: quantile(latencies, 0.5), p99Ms: quantile(latencies, 0.99), maxMs: latencies[latencies.length - 1] ?? NaN, statuses, etags });
    };
    const fire = () => {
      outstanding += 1;
      const t0 = process.hrtime.bigint();
      const req = httpRequest(url, { agent, timeout: 5000 }, (res) => {
        res.resume();
        res.on('end', () => {
          latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
          const code = String(res.statusCode);
          statuses[code] = (statuses[code] ?? 0) + 1;
          if ((res.statusCode ?? 500) >= 400) errors += 1;
          const etag = String(res.headers.etag ?? '');
          if (etags[etags.length - 1] !== etag) etags.push(etag);
          outstanding -= 1;
          finish();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', () => {
        errors += 1;
        outstanding -= 1;
        finish();
      });
      req.end();
    };
    const timer = setInterval(() => {
      if (Date.now() >= stopAt) {
        clearInterval(timer);
        finish();
        return;
      }
      fire();
    }, 1000 / ratePerS);
  });
}
