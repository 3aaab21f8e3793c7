// What every outbound fetch of the service and the CLI needs: a body read up to a bound, and a failed fetch told
// apart as a timeout or a network error (with the underlying cause, which undici hides behind "fetch failed").

/** Reads at most maxBytes + 1 bytes of the body, then stops reading; `truncated` tells whether there was more. */
export async function readBounded(response: Response, maxBytes: number): Promise<{ body: Buffer; truncated: boolean }> {
  if (!response.body) return { body: Buffer.alloc(0), truncated: false };
  const chunks: Buffer[] = [];
  let size = 0;
  const reader = response.body.getReader();
  while (size <= maxBytes) {
    const { done, value } = await reader.read();
    if (done) return { body: Buffer.concat(chunks), truncated: false };
    chunks.push(Buffer.from(value));
    size += value.byteLength;
  }
  await reader.cancel().catch(() => undefined);
  return { body: Buffer.concat(chunks).subarray(0, maxBytes + 1), truncated: true };
}

/** Why a fetch threw: its AbortSignal.timeout fired, or the connection failed (`reason` says how). */
export function fetchFailure(err: unknown): { code: 'timeout' | 'network_error'; reason: string } {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return { code: 'timeout', reason: err.message };
  return { code: 'network_error', reason: ((err as Error).cause as Error | undefined)?.message ?? (err as Error).message };
}
