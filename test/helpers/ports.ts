// Free loopback ports for tests and the benchmark (bench/lib/procs.ts).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/**
 * A loopback port that is free now, and that the kernel will not hand to a later listen(0) of this or another
 * test: it is picked below the ephemeral range (ip_local_port_range), which listen(0) draws from. A port taken
 * from that range and closed at once could go to the next server started on port 0 (an oidc-provider, a fake
 * token endpoint) before the test binds it.
 * `withOffset`: port + withOffset must be free and below that range too (a Redis Cluster node also listens on
 * its port + 10000, the cluster bus; inside the ephemeral range an outgoing connection can hold it).
 */
export async function freePort({ withOffset = 0 } = {}): Promise<number> {
  const lowestEphemeral = ephemeralRangeStart();
  const floor = 10_000;
  const top = lowestEphemeral - withOffset;
  for (let attempt = 0; attempt < 50 && top > floor; attempt++) {
    const candidate = floor + Math.floor(Math.random() * (top - floor));
    const ports = withOffset ? [candidate, candidate + withOffset] : [candidate];
    // Not one this process was already given (it may not be bound yet).
    if (ports.some((p) => handedOut.has(p))) continue;
    if (!(await canListen(candidate)) || (withOffset && !(await canListen(candidate + withOffset)))) continue;
    for (const p of ports) handedOut.add(p);
    return candidate;
  }
  if (withOffset) throw new Error(`no free loopback port p with p + ${withOffset} also free below the ephemeral range (${lowestEphemeral})`);
  return listenOnce(0);
}

const handedOut = new Set<number>();

function ephemeralRangeStart(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 0;
  } catch {
    return 0;
  }
}

function canListen(port: number): Promise<boolean> {
  return listenOnce(port).then(
    () => true,
    () => false,
  );
}

function listenOnce(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
