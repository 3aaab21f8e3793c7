// The public JWKS: served from memory with strong ETags, 304s and cache headers; no store round trip.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../../config.js';
import { Errors } from '../../errors.js';
import type { KeyManager, KeySetView } from '../../keys/key-manager.js';
import type { JwksContentType } from '../../keys/jwks.js';
import type { Metrics } from '../../metrics.js';
import { sendProblem } from '../../plugins/problem-errors.js';

/** True when an If-None-Match list names this ETag (weak comparison, RFC 9110 section 13.1.2). */
export function matchesEtag(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === '*') return true;
  return header.split(',').some((candidate) => candidate.trim().replace(/^W\//, '') === etag);
}

export function cacheControl(config: Config, view: KeySetView): string {
  // A consumer that caches the set longer than a new key's pre-publish period could miss that key when it
  // starts signing, so the advertised lifetimes are capped at a quarter of the period.
  const cap = view.config.prepublishPeriodMs / 4;
  const seconds = (ms: number) => Math.floor(Math.min(ms, cap) / 1000);
  return `public, max-age=${seconds(config.jwks.maxAgeMs)}, stale-while-revalidate=${seconds(config.jwks.staleWhileRevalidateMs)}, stale-if-error=${Math.floor(config.jwks.staleIfErrorMs / 1000)}`;
}

/** Header lists in `writeHead`'s flat form: [name, value, name, value, ...]. */
type HeaderList = string[];

interface ResponseHeaders {
  generation: number;
  /** 304: no Content-Type or Content-Length. */
  notModified: Record<JwksContentType, HeaderList>;
  ok: Record<JwksContentType, HeaderList>;
}

export function jwksRoutes(config: Config, keys: KeyManager, metrics: Pick<Metrics, 'request'>) {
  // One header object per (set, generation, content type), built when the set changes, sent with one call.
  const headersBySet = new Map<string, ResponseHeaders>();

  function headersFor(set: string, view: KeySetView): ResponseHeaders {
    let headers = headersBySet.get(set);
    if (headers?.generation === view.generation) return headers;
    const forType = (type: JwksContentType): HeaderList => [
      'cache-control', cacheControl(config, view),
      'etag', view.jwks.etags[type],
      'last-modified', view.jwks.lastModified,
      'access-control-allow-origin', '*',
      'access-control-expose-headers', 'ETag, Last-Modified',
      'vary', 'Accept',
    ];
    const length = String(Buffer.byteLength(view.jwks.body));
    const json = 'application/json';
    const jwkSet = 'application/jwk-set+json';
    headers = {
      generation: view.generation,
      notModified: { [json]: forType(json), [jwkSet]: forType(jwkSet) },
      ok: {
        [json]: [...forType(json), 'content-type', json, 'content-length', length],
        [jwkSet]: [...forType(jwkSet), 'content-type', jwkSet, 'content-length', length],
      },
    };
    headersBySet.set(set, headers);
    return headers;
  }

  // The answer is a precomputed body with precomputed headers, so it is written directly: Fastify's reply
  // pipeline (header object, onSend hooks, content length) cost ~7 µs per request, a fifth of the route
  // (bench/NOTES.md). Routing, the rate limit (onRequest) and error answers still go through Fastify; onSend
  // does not run for a hijacked reply, so the response is counted here. HEAD: Node sends no body itself.
  function send(request: FastifyRequest, reply: FastifyReply, set: string, route: string): FastifyReply | undefined {
    const view = keys.view(set);
    if (!view) {
      if (!config.keySets.has(set)) return sendProblem(reply, Errors.unknownKeySet(`key set "${set}" does not exist`));
      return sendProblem(reply, Errors.noActiveKey(`key set "${set}" is not loaded yet`, { headers: { 'retry-after': '1' } }));
    }
    const accept = request.headers.accept;
    const type: JwksContentType =
      accept !== undefined && accept.includes('application/jwk-set+json') ? 'application/jwk-set+json' : (config.jwks.contentType as JwksContentType);
    const headers = headersFor(set, view);
    const notModified = matchesEtag(request.headers['if-none-match'], view.jwks.etags[type]);
    reply.hijack();
    if (notModified) reply.raw.writeHead(304, headers.notModified[type]).end();
    else reply.raw.writeHead(200, headers.ok[type]).end(view.jwks.body);
    metrics.request('public', route, notModified ? 304 : 200);
    return undefined;
  }

  return async function register(app: FastifyInstance): Promise<void> {
    app.get('/.well-known/jwks.json', (request, reply) => send(request, reply, config.defaultKeySet, '/.well-known/jwks.json'));
    app.get<{ Params: { file: string } }>('/jwks/:file', (request, reply) => {
      const { file } = request.params;
      if (!file.endsWith('.json')) return sendProblem(reply, Errors.notFound('key sets are served at /jwks/{set}.json'));
      return send(request, reply, file.slice(0, -'.json'.length), '/jwks/:file');
    });
    app.options('/*', { config: { rateLimit: false } }, (_request, reply) =>
      reply
        .code(204)
        .headers({
          'access-control-allow-origin': '*',
          'access-control-allow-methods': 'GET, HEAD, OPTIONS',
          'access-control-allow-headers': 'If-None-Match, Accept',
          'access-control-max-age': '86400',
        })
        .send(),
    );
  };
}
