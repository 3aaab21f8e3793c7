// Baseline: node:crypto's callback sign() with the service's own key and a signing input of the same size,
// `inFlight` calls kept outstanding, on libuv's thread pool (UV_THREADPOOL_SIZE, as the service, default 4).
// Arguments: JSON {keyFile, alg, input, inFlight, durationS}. Prints "BENCH_JSON {...}".
import { constants, createPrivateKey, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';

const { keyFile, alg, input, inFlight, durationS } = JSON.parse(process.argv[2]);
const key = createPrivateKey(readFileSync(keyFile));
const PARAMS = {
  RS256: ['sha256', {}],
  PS256: ['sha256', { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }],
  ES256: ['sha256', { dsaEncoding: 'ieee-p1363' }],
  EdDSA: [null, {}],
};
const [digest, options] = PARAMS[alg];
const data = Buffer.from(input);

let done = 0;
let stopAt = 0;
let outstanding = 0;
const started = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
await new Promise((resolve, reject) => {
  const fire = () => {
    outstanding += 1;
    sign(digest, data, { key, ...options }, (err) => {
      outstanding -= 1;
      if (err) return reject(err);
      done += 1;
      if (Date.now() < stopAt) fire();
      else if (outstanding === 0) resolve();
    });
  };
  stopAt = Date.now() + durationS * 1000;
  for (let i = 0; i < inFlight; i++) fire();
});
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
const cpu = process.cpuUsage(cpu0);
process.stdout.write(`BENCH_JSON ${JSON.stringify({ ops: done, seconds, rate: done / seconds, cpuMicros: cpu.user + cpu.system })}\n`);
