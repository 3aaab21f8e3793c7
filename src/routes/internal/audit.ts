// GET /v1/audit (admin scope): the newest audit entries first, paged with `before`.
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Audit } from '../../audit.js';
import { Errors } from '../../errors.js';
import { requireScope } from '../../signing/token-service.js';

const AuditQuerySchema = Type.Object(
  {
    count: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$', description: 'entries per page, 1-1000 (default 100)' })),
    before: Type.Optional(Type.String({ pattern: '^[0-9]{1,20}-[0-9]{1,20}$', description: 'the id of the last entry of the previous page' })),
  },
  { additionalProperties: false },
);

export const AuditResponseSchema = Type.Object({
  entries: Type.Array(
    Type.Object(
      {
        id: Type.String(),
        time: Type.String({ format: 'date-time' }),
        event: Type.String({ description: 'sign, key_lifecycle, admin_rotate, admin_revoke, admin_import, admin_reencrypt, auth_lockout' }),
      },
      { additionalProperties: true },
    ),
  ),
  next_before: Type.Union([Type.String(), Type.Null()], { description: 'pass as `before` for the next page; null on the last page' }),
});

export function auditRoutes(audit: Audit) {
  return async function register(app: FastifyInstance): Promise<void> {
    const schema = {
      summary: 'Read the audit trail',
      description: 'Every signature, admin action, key event and authentication lockout of every replica, newest first (scope `admin`).',
      tags: ['audit'],
      querystring: AuditQuerySchema,
    };
    app.get<{ Querystring: { count?: string; before?: string } }>('/v1/audit', { schema }, async (request) => {
      requireScope(request.apiClient, 'admin');
      const count = Number(request.query.count ?? 100);
      if (count < 1 || count > 1000) throw Errors.invalidRequest('count must be between 1 and 1000');
      const entries = await audit.read(count, request.query.before).catch(() => {
        throw Errors.storeUnavailable('the audit stream cannot be read now; the log holds every entry');
      });
      return { entries, next_before: entries.length === count ? entries.at(-1)!.id : null };
    });
  };
}
