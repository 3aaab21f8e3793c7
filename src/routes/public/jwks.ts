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

interface ResponseHeaders {
  generation: number;
  /** 304: no Content-Type. */
  notModified: Record<JwksContentType, Record<string, string>>;
  ok: Record<JwksContentType, Record<string, string>>;
}

export function jwksRoutes(settings: Pick<PublicSettings, 'jwks' | 'keySets' | 'defaultKeySet'>, source: JwksSource) {
  const known = new Set(settings.keySets);
  // One header object per (set, generation, content type), built when the set changes, sent with one call.
  const headersBySet = new Map<string, ResponseHeaders>();

  function headersFor(set: string, view: PublicJwksView): ResponseHeaders {
    let headers = headersBySet.get(set);
    if (headers?.generation === view.generation) return headers;
    const forType = (type: JwksContentType) => ({
      'cache-control': cacheControl(settings.jwks, view),
      etag: view.etags[type],
      'last-modified': view.lastModified,
      'access-control-allow-origin': '*',
      'access-control-expose-headers': 'ETag, Last-Modified',
      vary: 'Accept',
    });
    const json = 'application/json';
    const jwkSet = 'application/jwk-set+json';
    headers = {
      generation: view.generation,
      notModified: { [json]: forType(json), [jwkSet]: forType(jwkSet) },
      ok: { [json]: { ...forType(json), 'content-type': json }, [jwkSet]: { ...forType(jwkSet), 'content-type': jwkSet } },
    };
    headersBySet.set(set, headers);
    return headers;
  }

  function send(request: FastifyRequest, reply: FastifyReply, set: string): FastifyReply {
    const view = source.view(set);
    if (!view) {
      if (!known.has(set)) return sendProblem(reply, Errors.unknownKeySet(`key set "${set}" does not exist`));
      return sendProblem(reply, Errors.noActiveKey(`key set "${set}" is not loaded yet`, { headers: { 'retry-after': '1' } }));
    }
    const accept = request.headers.accept;
    const type: JwksContentType =
      accept !== undefined && accept.includes('application/jwk-set+json') ? 'application/jwk-set+json' : (settings.jwks.contentType as JwksContentType);
    const headers = headersFor(set, view);
    if (matchesEtag(request.headers['if-none-match'], view.etags[type])) return reply.code(304).headers(headers.notModified[type]).send();
    return reply.headers(headers.ok[type]).send(view.body);
  }

  return async function register(app: FastifyInstance): Promise<void> {
    app.get('/.well-known/jwks.json', (request, reply) => send(request, reply, settings.defaultKeySet));
    app.get<{ Params: { file: string } }>('/jwks/:file', (request, reply) => {
      const { file } = request.params;
      if (!file.endsWith('.json')) return sendProblem(reply, Errors.notFound('key sets are served at /jwks/{set}.json'));
      return send(request, reply, file.slice(0, -'.json'.length));
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
