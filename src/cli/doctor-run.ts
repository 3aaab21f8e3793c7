// `jwks-signer doctor`: fetches what consumers fetch (the JWKS URL, the issuer's discovery document, a real token
// request with a fresh assertion) and the service's internal view, and runs the checks of doctor.ts on them.
import { JwksSignerError, type JwksSignerClient, type KeySetDescription } from '../client.js';
import { isTokenResponse, TokenRequestError } from '../oauth/token-request.js';
import {
  type Check,
  checkCacheHeaders,
  checkClock,
  checkDiscovery,
  checkJwksKeys,
  checkJwksResponse,
  type ClockReadings,
  type DoctorReport,
  matchServiceView,
  publicationLeadSeconds,
  report,
} from './doctor.js';
import { dateOffsetSeconds, discover, type Fetched, fetchOutside } from './outside.js';
import { type GrantName, requestToken } from './token.js';

/** Read this much of a JWKS at most, enough to tell how far over the size limit it is. */
const JWKS_READ_BYTES = 1024 * 1024;

export interface DoctorInput {
  jwksUrl: string;
  issuer?: string;
  clientId?: string;
  audience?: string;
  keySet?: string;
  subject?: string;
  grant: GrantName;
  scope?: string;
  parameters: Record<string, string>;
  timeoutMs: number;
}

const check = (id: string, status: Check['status'], detail: string): Check => ({ id, status, detail });

async function serviceView(client: JwksSignerClient | undefined, keySet: string | undefined): Promise<{ sets?: KeySetDescription[]; skipped?: Check }> {
  if (!client) return { skipped: check('jwks.matches_service', 'skip', 'no API token (--token or JWKS_SIGNER_TOKEN): the internal view was not read') };
  try {
    return { sets: (await client.keys.list(keySet === undefined ? {} : { key_set: keySet })).key_sets };
  } catch (err) {
    if (!(err instanceof JwksSignerError)) throw err;
    if (err.code === 'unknown_key_set') return { skipped: check('jwks.matches_service', 'fail', `${err.code}: ${err.message}`) };
    return { skipped: check('jwks.matches_service', 'skip', `the internal view was not read (${err.code}: ${err.message}); it needs the admin scope`) };
  }
}

async function jwksChecks(input: DoctorInput, client: JwksSignerClient | undefined) {
  const checks: Check[] = [];
  let fetched: Fetched;
  try {
    fetched = await fetchOutside(input.jwksUrl, { timeoutMs: input.timeoutMs, maxBytes: JWKS_READ_BYTES });
  } catch (err) {
    checks.push(check('jwks.status', 'fail', (err as Error).message));
    return { checks, kids: undefined, set: undefined, clock: undefined };
  }
  const response = checkJwksResponse(fetched);
  checks.push(...response.checks);
  const clock = dateOffsetSeconds(fetched);
  if (!response.readable) return { checks, kids: undefined, set: undefined, clock };

  const keys = await checkJwksKeys(fetched.body);
  checks.push(...keys.checks);
  const view = await serviceView(client, input.keySet);
  let set: KeySetDescription | undefined;
  let exact = false;
  if (view.sets) {
    const matched = matchServiceView(keys.kids, view.sets, input.keySet);
    checks.push(matched.check);
    set = matched.set;
    exact = matched.check.status === 'ok';
  } else checks.push(view.skipped!);
  checks.push(...checkCacheHeaders(fetched.headers, set === undefined ? undefined : publicationLeadSeconds(set)));
  return { checks, kids: keys.kids, set: exact ? set : undefined, clock };
}

async function issuerChecks(input: DoctorInput & { issuer: string }, client: JwksSignerClient | undefined, context: { kids?: string[]; set?: KeySetDescription; clock: ClockReadings }) {
  const checks: Check[] = [];
  let discovery;
  try {
    discovery = await discover(input.issuer, input.timeoutMs);
  } catch (err) {
    checks.push(check('issuer.discovery', 'fail', (err as Error).message));
    return checks;
  }
  const issuerOffset = dateOffsetSeconds(discovery.fetched);
  if (issuerOffset !== undefined) context.clock.issuer = issuerOffset;
  checks.push(...checkDiscovery({ issuer: input.issuer, url: discovery.url, document: discovery.document, ...(context.set ? { alg: context.set.alg } : {}) }));
  const tokenEndpoint = discovery.document.token_endpoint;
  if (typeof tokenEndpoint !== 'string') return checks;
  if (input.clientId === undefined) {
    checks.push(check('issuer.token_request', 'skip', 'no --client-id: no token request made'));
    return checks;
  }
  if (!client) {
    checks.push(check('issuer.token_request', 'skip', 'no API token: no assertion signed'));
    return checks;
  }
  const keySet = input.keySet ?? context.set?.key_set;
  try {
    const outcome = await requestToken(client, {
      tokenEndpoint,
      issuer: typeof discovery.document.issuer === 'string' ? discovery.document.issuer : input.issuer,
      clientId: input.clientId,
      grant: input.grant,
      ...(input.scope === undefined ? {} : { scope: input.scope }),
      parameters: input.parameters,
      ...(input.audience === undefined ? {} : { audience: input.audience }),
      ...(keySet === undefined ? {} : { keySet }),
      ...(input.subject === undefined ? {} : { subject: input.subject }),
      timeoutMs: input.timeoutMs,
      ...(context.kids === undefined ? {} : { jwks: { url: input.jwksUrl, kids: context.kids } }),
    });
    Object.assign(context.clock, outcome.clock);
    const { answer } = outcome;
    if (isTokenResponse(answer)) {
      const { token_type: type, expires_in: expires, scope } = answer.json;
      checks.push(check('issuer.token_request', 'ok', `${input.grant} grant: a ${String(type ?? 'token')} access token${expires === undefined ? '' : ` for ${String(expires)} s`}${scope === undefined ? '' : ` (scope ${String(scope)})`}; assertion kid ${outcome.kid}`));
    } else {
      const error = answer.json?.error;
      const description = answer.json?.error_description;
      const said = typeof error === 'string' ? `${error}${typeof description === 'string' ? `: ${description}` : ''}` : `a body of type ${answer.contentType || 'unknown'}`;
      checks.push(check('issuer.token_request', 'fail', `HTTP ${answer.status}, ${said} (assertion kid ${outcome.kid})`));
    }
    checks.push(...(outcome.diagnosis ?? []));
  } catch (err) {
    if (err instanceof JwksSignerError) checks.push(check('issuer.assertion', 'fail', `the service did not sign: ${err.code}: ${err.message}`));
    else if (err instanceof TokenRequestError) checks.push(check('issuer.token_request', 'fail', `${err.code}: ${err.message}`));
    else throw err;
  }
  return checks;
}

export async function runDoctor(input: DoctorInput, client: JwksSignerClient | undefined): Promise<DoctorReport> {
  const jwks = await jwksChecks(input, client);
  const clock: ClockReadings = jwks.clock === undefined ? {} : { jwks: jwks.clock };
  const checks = [...jwks.checks];
  const context = { ...(jwks.kids ? { kids: jwks.kids } : {}), ...(jwks.set ? { set: jwks.set } : {}), clock };
  const issuer = input.issuer === undefined ? [] : await issuerChecks({ ...input, issuer: input.issuer }, client, context);
  const diagnosis = issuer.filter((c) => c.id.startsWith('diagnosis.'));
  checks.push(...issuer.filter((c) => !c.id.startsWith('diagnosis.')), checkClock('clock.skew', clock), ...diagnosis);
  return report(checks);
}
