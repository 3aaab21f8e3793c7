// One token request as the CLI makes it: a fresh assertion from the service, the POST to the token endpoint,
// and, on invalid_client, the diagnosis of the usual causes. Shared by `token` and `doctor`.
import { decodeJwt, decodeProtectedHeader } from 'jose';
import type { JwksSignerClient } from '../client.js';
import { type GrantType, JWT_BEARER_GRANT, postTokenRequest, type TokenEndpointAnswer, tokenRequestForm } from '../oauth/token-request.js';
import { type Check, type ClockReadings, diagnoseInvalidClient } from './doctor.js';

/** The --grant names: the RFC 6749 grants, and jwt-bearer for RFC 7523's JWT bearer grant. */
export const GRANT_NAMES = ['client_credentials', 'password', 'refresh_token', 'authorization_code', 'jwt-bearer'] as const;
export type GrantName = (typeof GRANT_NAMES)[number];

export const grantType = (name: GrantName): GrantType => (name === 'jwt-bearer' ? JWT_BEARER_GRANT : name);

export interface TokenAttempt {
  tokenEndpoint: string;
  issuer?: string;
  clientId: string;
  grant: GrantName;
  scope?: string;
  parameters: Record<string, string>;
  /** aud of the assertion; the token endpoint by default. */
  audience?: string;
  keySet?: string;
  subject?: string;
  timeoutMs: number;
  /** A JWKS to look the assertion's kid up in when the answer is invalid_client. */
  jwks?: { url: string; kids: string[] };
}

export interface TokenOutcome {
  answer: TokenEndpointAnswer;
  kid: string;
  aud: unknown;
  clock: ClockReadings;
  /** Set when the answer is an invalid_client error. */
  diagnosis?: Check[];
}

/** Throws TokenRequestError('invalid_grant_parameters') when the grant lacks a parameter: call before signing anything. */
export function validateGrant(attempt: Pick<TokenAttempt, 'grant' | 'clientId' | 'parameters'>): void {
  const parameters = attempt.grant === 'jwt-bearer' ? { assertion: 'to be signed', ...attempt.parameters } : attempt.parameters;
  tokenRequestForm({ grantType: grantType(attempt.grant), clientId: attempt.clientId, parameters });
}

async function sign(client: JwksSignerClient, attempt: TokenAttempt, audience: string): Promise<string> {
  const keySet = attempt.keySet === undefined ? {} : { key_set: attempt.keySet };
  if (attempt.grant === 'jwt-bearer') {
    const claims = { iss: attempt.clientId, sub: attempt.subject ?? attempt.clientId, aud: audience };
    return (await client.jwt({ claims, ...keySet })).jwt;
  }
  const subject = attempt.subject === undefined ? {} : { subject: attempt.subject };
  return (await client.assertion({ client_id: attempt.clientId, audience, ...keySet, ...subject })).client_assertion;
}

/** Signs through the service and performs the request; throws JwksSignerError (service) or TokenRequestError (endpoint). */
export async function requestToken(client: JwksSignerClient, attempt: TokenAttempt): Promise<TokenOutcome> {
  const audience = attempt.audience ?? attempt.tokenEndpoint;
  const signStarted = Date.now();
  const token = await sign(client, attempt, audience);
  const signedAt = (signStarted + Date.now()) / 2;
  const { kid } = decodeProtectedHeader(token);
  const { aud, iat } = decodeJwt(token);

  const jwtBearer = attempt.grant === 'jwt-bearer';
  const form = tokenRequestForm({
    grantType: grantType(attempt.grant),
    clientId: attempt.clientId,
    ...(jwtBearer ? {} : { clientAssertion: token }),
    ...(attempt.scope === undefined ? {} : { scope: attempt.scope }),
    parameters: jwtBearer ? { ...attempt.parameters, assertion: token } : attempt.parameters,
  });
  let serverDate: number | undefined;
  let postedAt = 0;
  const fetchReadingDate: typeof fetch = async (input, init) => {
    const started = Date.now();
    const response = await fetch(input, init);
    postedAt = (started + Date.now()) / 2;
    const date = Date.parse(response.headers.get('date') ?? '');
    if (!Number.isNaN(date)) serverDate = date + 500;
    return response;
  };
  const answer = await postTokenRequest({ endpoint: attempt.tokenEndpoint, form, timeoutMs: attempt.timeoutMs, fetch: fetchReadingDate });
  const clock: ClockReadings = {};
  if (iat !== undefined) clock.service = (iat * 1000 + 500 - signedAt) / 1000;
  if (serverDate !== undefined) clock.issuer = (serverDate - postedAt) / 1000;

  const outcome: TokenOutcome = { answer, kid: kid ?? '(none)', aud, clock };
  if (answer.json?.error === 'invalid_client') {
    outcome.diagnosis = diagnoseInvalidClient({
      clientId: attempt.clientId,
      aud,
      kid: kid ?? '(none)',
      tokenEndpoint: attempt.tokenEndpoint,
      ...(attempt.issuer === undefined ? {} : { issuer: attempt.issuer }),
      ...(attempt.jwks === undefined ? {} : { jwks: attempt.jwks }),
      clock,
    });
  }
  return outcome;
}
