// The public JWKS: served from memory with strong ETags, 304s and cache headers; no store round trip.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Errors } from '../../errors.js';
import type { JwksContentType } from '../../keys/jwks.js';
import { sendProblem } from '../../plugins/problem-errors.js';
import type { JwksSource, PublicJwksView, PublicSettings } from '../../public-server.js';

/** True when an If-None-Match list names this ETag (weak comparison, RFC 9110 section 13.1.2). */
export function matchesEtag(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === '*') return true;
  return header.split(',').some((candidate) => candidate.trim().replace(/^W\//, '') === etag);
}

export function cacheControl(jwks: PublicSettings['jwks'], view: PublicJwksView): string {
  // A consumer that caches the set longer than a new key's pre-publish period could miss that key when it
  // starts signing, so the advertised lifetimes are capped at a quarter of the period.
  const cap = view.prepublishPeriodMs / 4;
  const seconds = (ms: number) => Math.floor(Math.min(ms, cap) / 1000);
  return `public, max-age=${seconds(jwks.maxAgeMs)}, stale-while-revalidate=${seconds(jwks.staleWhileRevalidateMs)}, stale-if-error=${Math.floor(jwks.staleIfErrorMs / 1000)}`;
}

/** Header lists in `writeHead`'s flat form: [name, value, name, value, ...]. */
type HeaderList = string[];

interface ResponseHeaders {
  generation: number;
  /** 304: no Content-Type or Content-Length. */
  notModified: Record<JwksContentType, HeaderList>;
  ok: Record<JwksContentType, HeaderList>;
}

/** `count`: the port's response counter (a hijacked reply skips the onSend hook that counts the others). */
export function jwksRoutes(settings: Pick<PublicSettings, 'jwks' | 'keySets' | 'defaultKeySet'>, source: JwksSource, count: (route: string, status: number) => void) {
  const known = new Set(settings.keySets);
  // One header list per (set, generation, content type), built when the set changes, sent with one writeHead.
  const headersBySet = new Map<string, ResponseHeaders>();

  function headersFor(set: string, view: PublicJwksView): ResponseHeaders {
    let headers = headersBySet.get(set);
    if (headers?.generation === view.generation) return headers;
    const forType = (type: JwksContentType): HeaderList => [
      'cache-control', cacheControl(settings.jwks, view),
      'etag', view.etags[type],
      'last-modified', view.lastModified,
      'access-control-allow-origin', '*',
      'access-control-expose-headers', 'ETag, Last-Modified',
      'vary', 'Accept',
    ];
    const length = String(Buffer.byteLength(view.body));
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
    const view = source.view(set);
    if (!view) {
      if (!known.has(set)) return sendProblem(reply, Errors.unknownKeySet(`key set "${set}" does not exist`));
      return sendProblem(reply, Errors.noActiveKey(`key set "${set}" is not loaded yet`, { headers: { 'retry-after': '1' } }));
    }
    const accept = request.headers.accept;
    const type: JwksContentType =
      accept !== undefined && accept.includes('application/jwk-set+json') ? 'application/jwk-set+json' : (settings.jwks.contentType as JwksContentType);
    const headers = headersFor(set, view);
    const notModified = matchesEtag(request.headers['if-none-match'], view.etags[type]);
    reply.hijack();
    if (notModified) reply.raw.writeHead(304, headers.notModified[type]).end();
    else reply.raw.writeHead(200, headers.ok[type]).end(view.body);
    count(route, notModified ? 304 : 200);
    return undefined;
  }

  return async function register(app: FastifyInstance): Promise<void> {
    app.get('/.well-known/jwks.json', (request, reply) => send(request, reply, settings.defaultKeySet, '/.well-known/jwks.json'));
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
