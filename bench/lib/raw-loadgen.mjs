// A minimal HTTP/1.1 load generator on raw sockets, for what wrk and autocannon cannot do: HEAD (both wait
// for a body that never comes and count 0 requests) and, in autocannon's place, Connection: close.
// Closed loop: each of `connections` sockets sends one request, waits for the whole response, repeats; with
// Connection: close, each request opens a new connection (latency includes the connect).
// Argument: the LoadSpec of bench/lib/load.ts as JSON. Prints the same "BENCH_JSON {...}" line as wrk's script.
import { connect } from 'node:net';

const spec = JSON.parse(process.argv[2]);
const url = new URL(spec.base);
const method = spec.method ?? 'GET';
const headers = Object.entries(spec.headers ?? {});
const close = headers.some(([name, value]) => name.toLowerCase() === 'connection' && value.toLowerCase() === 'close');
const body = spec.body ? Buffer.from(spec.body) : undefined;
const requests = spec.paths.map((path) =>
  Buffer.from(
    `${method} ${path} HTTP/1.1\r\nHost: ${url.host}\r\n` +
      headers.map(([n, v]) => `${n}: ${v}\r\n`).join('') +
      (body ? `Content-Length: ${body.length}\r\n` : '') +
      '\r\n' +
      (body ? body.toString() : ''),
  ),
);
const pick = () => requests[requests.length === 1 ? 0 : Math.floor(Math.random() * requests.length)];

const latencies = [];
const codes = {};
const errors = { connect: 0, read: 0, write: 0, status: 0, timeout: 0 };
let stopAt = 0;
let open = 0;

function run() {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    stopAt = Date.now() + spec.durationS * 1000;
    const finish = () => {
      if (--open === 0) resolve(Number(process.hrtime.bigint() - started) / 1e9);
    };
    for (let i = 0; i < spec.connections; i++) {
      open += 1;
      loop(finish);
    }
  });
}

function loop(finish) {
  let buf = Buffer.alloc(0);
  let t0 = process.hrtime.bigint();
  let done = false;
  const socket = connect({ host: url.hostname, port: Number(url.port), noDelay: true });
  socket.setTimeout(5000, () => {
    errors.timeout += 1;
    socket.destroy();
  });
  const next = () => {
    if (Date.now() >= stopAt) {
      done = true;
      socket.destroy();
      finish();
      return;
    }
    if (close) {
      done = true;
      socket.destroy();
      loop(finish);
      return;
    }
    t0 = process.hrtime.bigint();
    socket.write(pick());
  };
  socket.on('connect', () => socket.write(pick()));
  socket.on('data', (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1');
      const status = Number(head.slice(9, 12));
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      const bodyLength = method === 'HEAD' || status === 304 || status === 204 ? 0 : length ? Number(length[1]) : 0;
      const total = end + 4 + bodyLength;
      if (buf.length < total) return;
      buf = buf.subarray(total);
      latencies.push(Number(process.hrtime.bigint() - t0) / 1000);
      codes[status] = (codes[status] ?? 0) + 1;
      if (status >= 400) errors.status += 1;
      next();
      if (done) return;
    }
  });
  socket.on('error', (err) => {
    if (done) return;
    done = true;
    if (err.code === 'ECONNREFUSED' || err.code === 'EADDRNOTAVAIL') errors.connect += 1;
    else errors.read += 1;
    socket.destroy();
    if (Date.now() < stopAt) setTimeout(() => loop(finish), 10);
    else finish();
  });
  socket.on('close', () => {
    if (done) return;
    done = true;
    // The server closed a connection that was not meant to close.
    errors.read += 1;
    if (Date.now() < stopAt) loop(finish);
    else finish();
  });
}

const seconds = await run();
latencies.sort((a, b) => a - b);
const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)] : 0);
const out = {
  requests: latencies.length,
  seconds,
  rps: latencies.length / seconds,
  p50Ms: pct(50) / 1000,
  p90Ms: pct(90) / 1000,
  p99Ms: pct(99) / 1000,
  maxMs: (latencies[latencies.length - 1] ?? 0) / 1000,
  errors: Object.values(errors).reduce((a, b) => a + b, 0),
  errorDetail: errors,
  codes,
};
process.stdout.write(`BENCH_JSON ${JSON.stringify(out)}\n`);
