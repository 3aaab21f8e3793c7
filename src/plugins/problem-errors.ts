// Every error leaves as application/problem+json with a stable code; 5xx details go to the log, not the client.
import type { Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply, FastifyRequest, preHandlerHookHandler } from 'fastify';
import { Errors, ServiceError } from '../errors.js';

const FASTIFY_CODES: Record<string, () => ServiceError> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: () => Errors.unsupportedMediaType(),
  FST_ERR_CTP_BODY_TOO_LARGE: () => Errors.payloadTooLarge(),
  FST_ERR_CTP_INVALID_JSON_BODY: () => Errors.invalidJson(),
  FST_ERR_CTP_EMPTY_JSON_BODY: () => Errors.invalidJson('The request body is empty'),
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: () => Errors.invalidRequest('Content-Length does not match the body'),
};

export function toServiceError(err: FastifyError | Error): ServiceError {
  if (err instanceof ServiceError) return err;
  const fastifyError = err as FastifyError;
  if (fastifyError.validation) {
    return Errors.invalidRequest(err.message, {
      errors: fastifyError.validation.map((v) => ({
        path: `${fastifyError.validationContext ?? 'body'}${v.instancePath || ''}`,
        message: v.message ?? 'is invalid',
      })),
    });
  }
  const mapped = fastifyError.code ? FASTIFY_CODES[fastifyError.code] : undefined;
  if (mapped) return mapped();
  if (err instanceof SyntaxError) return Errors.invalidJson();
  const status = fastifyError.statusCode ?? 500;
  if (status >= 400 && status < 500) return new ServiceError('bad_request', status, 'Bad request', err.message);
  return Errors.internal();
}

export function sendProblem(reply: FastifyReply, error: ServiceError): FastifyReply {
  if (error.headers) reply.headers(error.headers);
  return reply.code(error.statusCode).type('application/problem+json').send(error.toProblem());
}

/**
 * `logger`: for an instance made without one (the public port, src/app.ts): its lines carry the request id
 * themselves, as a request's child logger would.
 */
export function registerProblemHandlers(app: FastifyInstance, { preHandler, logger }: { preHandler?: preHandlerHookHandler; logger?: FastifyBaseLogger } = {}): void {
  app.setErrorHandler((err: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const error = toServiceError(err);
    const log = logger ?? request.log;
    const reqId = logger ? { reqId: request.id } : {};
    if (error.statusCode >= 500) log.error({ err, ...reqId }, 'request failed');
    else log.info({ code: error.code, status: error.statusCode, ...reqId }, 'request refused');
    return sendProblem(reply, error);
  });
  app.setNotFoundHandler(preHandler ? { preHandler } : {}, (request, reply) =>
    sendProblem(reply, Errors.notFound(`${request.method} ${request.url.split('?')[0]!.slice(0, 200)} is not a route of this port`)),
  );
}

/**
 * Errors Node raises before Fastify sees a request (oversized headers, a request not complete in time,
 * malformed HTTP): answered as problem+json too, then the connection is closed.
 */
export function sendClientError(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const error =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? Errors.headersTooLarge()
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? Errors.requestTimeout()
        : Errors.malformedRequest();
  this.log.debug({ code: error.code, reason: err.code }, 'client error');
  if (socket.writable) {
    const body = JSON.stringify(error.toProblem());
    socket.write(
      `HTTP/1.1 ${error.statusCode} ${STATUS_CODES[error.statusCode]}\r\nContent-Type: application/problem+json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}
