// The doctor's checks as pure functions of what was fetched: what a consumer of the JWKS URL and the
// authorization server will see, and why a token request was refused with invalid_client.
import { createPublicKey } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { KeySetDescription } from '../client.js';
import { formatDuration } from '../lib/duration.js';
import type { Fetched } from './outside.js';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface Check {
  id: string;
  status: CheckStatus;
  detail: string;
}

export const LIMITS = {
  /** nimbus-jose-jwt refuses JWKS larger than 50 KiB, the smallest cap among the consumers we know. */
  jwksMaxBytes: 51_200,
  jwksWarnMs: 1_000,
  jwksFailMs: 5_000,
  /** Clock offsets: past 30 s, servers with a small tolerance (oidc-provider: 15 s) start refusing. */
  skewWarnSeconds: 30,
  /** Past 120 s, twice the default assertion lifetime, an assertion signed now is expired or not yet valid at the server. */
  skewFailSeconds: 120,
  /** Without a known pre-publish period: consumers such as Keycloak cache for up to 24 h anyway. */
  maxAgeWarnSeconds: 86_400,
} as const;

const check = (id: string, status: CheckStatus, detail: string): Check => ({ id, status, detail });

export type JwksResponse = Omit<Fetched, 'localMidpointMs'>;

/** Status, redirect, time, size and content type; answers whether the body is worth reading as a JWKS. */
export function checkJwksResponse(response: JwksResponse): { checks: Check[]; readable: boolean } {
  const checks: Check[] = [];
  const location = response.headers.get('location');
  const redirected = response.status >= 300 && response.status < 400;
  checks.push(
    redirected
      ? check('jwks.redirect', 'fail', `HTTP ${response.status} to ${location ?? '(no Location)'}: consumers such as Acumatica, jose and jwks-rsa do not follow redirects; register the final URL or fix the load balancer`)
      : check('jwks.redirect', 'ok', 'no redirect'),
  );
  checks.push(
    response.status === 200
      ? check('jwks.status', 'ok', `HTTP 200 from ${response.url}`)
      : check('jwks.status', 'fail', `HTTP ${response.status} from ${response.url}: consumers need 200`),
  );
  const ms = Math.round(response.elapsedMs);
  checks.push(
    ms > LIMITS.jwksFailMs
      ? check('jwks.time', 'fail', `${ms} ms: over ${LIMITS.jwksFailMs} ms, consumers time out (nimbus: 500 ms, oidc-provider: 2.5 s)`)
      : ms > LIMITS.jwksWarnMs
        ? check('jwks.time', 'warn', `${ms} ms: over ${LIMITS.jwksWarnMs} ms; Acumatica fetches the JWKS on every token request`)
        : check('jwks.time', 'ok', `${ms} ms`),
  );
  if (response.status !== 200) return { checks, readable: false };
  const size = response.body.length;
  const tooLarge = response.truncated || size > LIMITS.jwksMaxBytes;
  checks.push(
    tooLarge
      ? check('jwks.size', 'fail', `${response.truncated ? 'more than ' : ''}${size} bytes: over ${LIMITS.jwksMaxBytes} bytes, consumers such as nimbus refuse it`)
      : check('jwks.size', 'ok', `${size} bytes (limit ${LIMITS.jwksMaxBytes})`),
  );
  const type = (response.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  checks.push(
    type === 'application/json' || type === 'application/jwk-set+json'
      ? check('jwks.content_type', 'ok', type)
      : check('jwks.content_type', 'fail', `"${type || '(none)'}": expected application/json or application/jwk-set+json (an HTML page means the URL reaches something else)`),
  );
  return { checks, readable: !tooLarge };
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const REQUIRED_MEMBERS: Record<string, string[]> = { RSA: ['n', 'e'], EC: ['crv', 'x', 'y'], OKP: ['crv', 'x'] };

function keyProblems(key: Record<string, unknown>): { fail: string[]; warn: string[] } {
  const fail: string[] = [];
  const warn: string[] = [];
  const kty = key.kty;
  if (typeof kty !== 'string') fail.push('no kty');
  else if (!(kty in REQUIRED_MEMBERS)) fail.push(`kty ${kty} is not an asymmetric key type`);
  if (typeof key.kid !== 'string' || key.kid === '') fail.push('no kid');
  const secret = PRIVATE_MEMBERS.filter((member) => member in key);
  if (secret.length > 0) fail.push(`private member${secret.length > 1 ? 's' : ''} ${secret.join(', ')} published`);
  if (key.use !== undefined && key.use !== 'sig') fail.push(`use "${String(key.use)}" (Microsoft and others skip keys whose use is not sig)`);
  if (key.use === undefined && key.key_ops === undefined) warn.push('neither use nor key_ops (Keycloak ignores keys without use)');
  if (typeof key.alg !== 'string') warn.push('no alg (PyJWT then assumes RS256)');
  if (typeof kty === 'string' && kty in REQUIRED_MEMBERS) {
    const missing = REQUIRED_MEMBERS[kty]!.filter((member) => typeof key[member] !== 'string');
    if (missing.length > 0) fail.push(`missing ${missing.join(', ')}`);
    else if (secret.length === 0) {
      try {
        const publicKey = createPublicKey({ key: key as JWK & Record<string, string>, format: 'jwk' });
        const bits = publicKey.asymmetricKeyDetails?.modulusLength;
        if (bits !== undefined && bits < 2048) fail.push(`RSA key of ${bits} bits (at least 2048)`);
      } catch (err) {
        fail.push(`not a readable public key (${(err as Error).message})`);
      }
    }
  }
  return { fail, warn };
}

export interface JwksKeysResult {
  checks: Check[];
  /** The kids of the keys, in order (keys without a kid left out). */
  kids: string[];
}

/** valid_jwks, unique_kids, kid_thumbprints of a JWKS body. */
export async function checkJwksKeys(body: Buffer): Promise<JwksKeysResult> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return { checks: [check('jwks.valid_jwks', 'fail', 'the body is not JSON')], kids: [] };
  }
  const keys = (parsed as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) return { checks: [check('jwks.valid_jwks', 'fail', 'not a JWK set: no "keys" array')], kids: [] };
  if (keys.length === 0) return { checks: [check('jwks.valid_jwks', 'fail', 'the set is empty (jwks-rsa and others fail on an empty set)')], kids: [] };
  const failures: string[] = [];
  const warnings: string[] = [];
  const kids: string[] = [];
  keys.forEach((key: unknown, index) => {
    if (typeof key !== 'object' || key === null || Array.isArray(key)) {
      failures.push(`key ${index}: not an object`);
      return;
    }
    const jwk = key as Record<string, unknown>;
    const name = typeof jwk.kid === 'string' ? `key ${jwk.kid}` : `key ${index}`;
    if (typeof jwk.kid === 'string') kids.push(jwk.kid);
    const { fail, warn } = keyProblems(jwk);
    failures.push(...fail.map((problem) => `${name}: ${problem}`));
    warnings.push(...warn.map((problem) => `${name}: ${problem}`));
  });
  const checks: Check[] = [];
  if (failures.length > 0) checks.push(check('jwks.valid_jwks', 'fail', [...failures, ...warnings].join('; ')));
  else if (warnings.length > 0) checks.push(check('jwks.valid_jwks', 'warn', warnings.join('; ')));
  else checks.push(check('jwks.valid_jwks', 'ok', `${keys.length} public signing key${keys.length > 1 ? 's' : ''}`));

  const duplicates = [...new Set(kids.filter((kid, i) => kids.indexOf(kid) !== i))];
  checks.push(
    duplicates.length > 0
      ? check('jwks.unique_kids', 'fail', `duplicate kid ${duplicates.join(', ')}: Microsoft.IdentityModel (Acumatica) then tries only one of them`)
      : check('jwks.unique_kids', 'ok', `${kids.length} distinct kids`),
  );

  const notThumbprints: string[] = [];
  for (const key of keys as Array<Record<string, unknown>>) {
    if (typeof key?.kid !== 'string' || failures.some((failure) => failure.startsWith(`key ${key.kid}:`))) continue;
    const thumbprint = await calculateJwkThumbprint(key as JWK, 'sha256').catch(() => undefined);
    if (thumbprint !== key.kid) notThumbprints.push(key.kid);
  }
  checks.push(
    notThumbprints.length > 0
      ? check('jwks.kid_thumbprints', 'warn', `kid ${notThumbprints.join(', ')} is not the key's RFC 7638 thumbprint, as jwks-signer's kids are: is this URL served by jwks-signer?`)
      : check('jwks.kid_thumbprints', 'ok', 'every kid is its key\'s RFC 7638 thumbprint'),
  );
  return { checks, kids };
}

/** Seconds a new key is published before it signs, as far as the service's view tells: its next key's lead time. */
export function publicationLeadSeconds(set: KeySetDescription): number | undefined {
  const next = set.keys.find((key) => key.state === 'next');
  if (!next || set.next_rotation_at === undefined) return undefined;
  return (Date.parse(set.next_rotation_at) - Date.parse(next.created_at)) / 1000;
}

const lead = (seconds: number) => formatDuration(Math.floor(seconds) * 1000);

/** cache_headers (max-age against the key set's lead time) and etag. */
export function checkCacheHeaders(headers: Headers, leadSeconds: number | undefined): Check[] {
  const control = headers.get('cache-control');
  const directives = new Map(
    (control ?? '')
      .split(',')
      .map((part) => part.trim().toLowerCase())
      .filter(Boolean)
      .map((part) => {
        const [name, value] = part.split('=', 2) as [string, string | undefined];
        return [name.trim(), value?.trim().replace(/^"|"$/g, '')];
      }),
  );
  const maxAge = directives.get('max-age');
  const checks: Check[] = [];
  if (directives.has('no-store') || directives.has('no-cache')) {
    checks.push(check('jwks.cache_headers', 'warn', `Cache-Control "${control}": consumers refetch on every use`));
  } else if (maxAge === undefined || !/^\d+$/.test(maxAge)) {
    checks.push(check('jwks.cache_headers', 'warn', `no max-age in Cache-Control (${control ?? 'absent'}): consumers fall back to their own default, up to 12-24 h (step-ca, Keycloak)`));
  } else if (leadSeconds !== undefined && Number(maxAge) > leadSeconds) {
    checks.push(check('jwks.cache_headers', 'fail', `max-age=${maxAge} is longer than the ${lead(leadSeconds)} a new key is published before it signs: a consumer caching that long misses it`));
  } else if (leadSeconds === undefined && Number(maxAge) > LIMITS.maxAgeWarnSeconds) {
    checks.push(check('jwks.cache_headers', 'warn', `max-age=${maxAge} is over 24 h (the key set's pre-publish period is unknown without the internal view)`));
  } else {
    checks.push(check('jwks.cache_headers', 'ok', `max-age=${maxAge}${leadSeconds !== undefined ? ` (a new key is published ${lead(leadSeconds)} before it signs)` : ''}`));
  }
  const etag = headers.get('etag');
  checks.push(etag ? check('jwks.etag', 'ok', etag) : check('jwks.etag', 'warn', 'no ETag: consumers cannot revalidate with If-None-Match (304)'));
  return checks;
}

export const PUBLISHED_STATES = new Set(['next', 'active', 'retired']);

/** Which key set of the service's internal view the public JWKS serves, exactly. */
export function matchServiceView(publicKids: string[], sets: KeySetDescription[], keySet?: string): { check: Check; set?: KeySetDescription } {
  const published = (set: KeySetDescription) => set.keys.filter((key) => PUBLISHED_STATES.has(key.state)).map((key) => key.kid);
  const difference = (set: KeySetDescription) => {
    const service = published(set);
    return { missing: service.filter((kid) => !publicKids.includes(kid)), extra: publicKids.filter((kid) => !service.includes(kid)) };
  };
  const describe = (set: KeySetDescription) => {
    const { missing, extra } = difference(set);
    return [
      missing.length > 0 ? `not served but published by key set ${set.key_set}: ${missing.join(', ')}` : '',
      extra.length > 0 ? `served but not published by key set ${set.key_set}: ${extra.join(', ')}` : '',
    ].filter(Boolean).join('; ');
  };
  const candidates = keySet === undefined ? sets : sets.filter((set) => set.key_set === keySet);
  if (keySet !== undefined && candidates.length === 0) {
    return { check: check('jwks.matches_service', 'fail', `the service has no key set "${keySet}" (it has ${sets.map((s) => s.key_set).join(', ') || 'none'})`) };
  }
  const exact = candidates.find((set) => { const { missing, extra } = difference(set); return missing.length === 0 && extra.length === 0; });
  if (exact) return { check: check('jwks.matches_service', 'ok', `serves exactly the published keys of key set ${exact.key_set} (active ${exact.active_kid})`), set: exact };
  const overlap = (set: KeySetDescription) => published(set).filter((kid) => publicKids.includes(kid)).length;
  const closest = [...candidates].sort((a, b) => overlap(b) - overlap(a))[0];
  if (!closest || overlap(closest) === 0) {
    return { check: check('jwks.matches_service', 'fail', `no key set of the service publishes these keys: the URL serves another deployment or key set`) };
  }
  return { check: check('jwks.matches_service', 'fail', `the URL does not serve what the service publishes (${describe(closest)}): a stale cache, or another deployment`), set: closest };
}

const stringList = (value: unknown) => (Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : undefined);

/** issuer.discovery, issuer.auth_methods, issuer.signing_algs; `alg` is the key set's algorithm when known. */
export function checkDiscovery(input: { issuer: string; url: string; document: Record<string, unknown>; alg?: string }): Check[] {
  const { document } = input;
  const checks: Check[] = [];
  const tokenEndpoint = document.token_endpoint;
  if (typeof tokenEndpoint !== 'string') {
    checks.push(check('issuer.discovery', 'fail', `${input.url} names no token_endpoint`));
    return checks;
  }
  checks.push(
    document.issuer === input.issuer
      ? check('issuer.discovery', 'ok', `${input.url}: token endpoint ${tokenEndpoint}`)
      : check('issuer.discovery', 'warn', `${input.url} names issuer ${JSON.stringify(document.issuer)}, not ${input.issuer}: use that value exactly (token endpoint ${tokenEndpoint})`),
  );
  const methods = stringList(document.token_endpoint_auth_methods_supported);
  checks.push(
    methods === undefined
      ? check('issuer.auth_methods', 'warn', 'token_endpoint_auth_methods_supported is absent (its default is client_secret_basic only)')
      : methods.includes('private_key_jwt')
        ? check('issuer.auth_methods', 'ok', 'private_key_jwt is supported')
        : check('issuer.auth_methods', 'warn', `private_key_jwt is not among ${methods.join(', ')}`),
  );
  const algs = stringList(document.token_endpoint_auth_signing_alg_values_supported);
  checks.push(
    input.alg === undefined
      ? check('issuer.signing_algs', 'skip', 'the key set\'s algorithm is unknown')
      : algs === undefined
        ? check('issuer.signing_algs', 'warn', `token_endpoint_auth_signing_alg_values_supported is absent: ${input.alg} may or may not be accepted`)
        : algs.includes(input.alg)
          ? check('issuer.signing_algs', 'ok', `${input.alg} is supported`)
          : check('issuer.signing_algs', 'fail', `${input.alg} is not among ${algs.join(', ')}: use a key set with one of those`),
  );
  return checks;
}

export interface ClockReadings {
  /** The service's signing clock: an assertion's iat minus the local time it was signed at (s). */
  service?: number;
  /** The authorization server's Date headers against the local clock (s). */
  issuer?: number;
  /** The JWKS server's Date header against the local clock (s). */
  jwks?: number;
}

function skewStatus(seconds: number): CheckStatus {
  const size = Math.abs(seconds);
  return size > LIMITS.skewFailSeconds ? 'fail' : size > LIMITS.skewWarnSeconds ? 'warn' : 'ok';
}

function signed(seconds: number): string {
  const whole = Math.round(seconds);
  return `${whole > 0 ? '+' : whole < 0 ? '-' : ''}${Math.abs(whole)} s`;
}

/** The skew that matters is the signer's clock against the authorization server's; the others are reported. */
export function checkClock(id: string, readings: ClockReadings): Check {
  const parts = Object.entries(readings)
    .filter((entry): entry is [string, number] => entry[1] !== undefined)
    .map(([source, seconds]) => `${source} ${signed(seconds)}`);
  if (parts.length === 0) return check(id, 'skip', 'no clock readings');
  const relative = readings.service !== undefined && readings.issuer !== undefined ? readings.service - readings.issuer : undefined;
  const worst = Math.max(...Object.values(readings).filter((v): v is number => v !== undefined).map(Math.abs), relative === undefined ? 0 : Math.abs(relative));
  const status = skewStatus(worst);
  const thresholds = `warn over ${LIMITS.skewWarnSeconds} s, fail over ${LIMITS.skewFailSeconds} s`;
  const against = relative !== undefined ? `; signer against authorization server ${signed(relative)}` : '';
  return check(id, status, `offsets from the local clock: ${parts.join(', ')}${against} (${thresholds})`);
}

const ACUMATICA_CLIENT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}@\S+$/i;

/** Acumatica (IdentityServer under /identity) client ids have the form GUID@Tenant. */
export function checkClientIdForm(id: string, clientId: string, tokenEndpoint: string): Check {
  if (!/\/identity(\/|$)/i.test(new URL(tokenEndpoint).pathname)) return check(id, 'skip', 'not an Acumatica-like (/identity) server');
  return ACUMATICA_CLIENT_ID.test(clientId)
    ? check(id, 'ok', 'client_id has the form GUID@Tenant')
    : check(id, 'warn', `client_id "${clientId}" is not of the form GUID@Tenant that Acumatica (SM303010) gives`);
}

function audienceVariant(aud: string, target: string): string | undefined {
  const strip = (s: string) => s.replace(/\/+$/, '');
  if (strip(aud) === strip(target)) return 'a trailing slash';
  const scheme = (s: string) => s.replace(/^https?:\/\//i, '');
  if (scheme(aud) === scheme(target)) return 'the scheme (http/https)';
  if (aud.toLowerCase() === target.toLowerCase()) return 'letter case';
  if (strip(scheme(aud)).toLowerCase() === strip(scheme(target)).toLowerCase()) return 'scheme, case or a trailing slash';
  return undefined;
}

/** Whether the assertion's aud is what the server compares it with: the token endpoint or the issuer, exactly. */
export function checkAudience(id: string, aud: unknown, tokenEndpoint: string, issuer?: string): Check {
  const values = typeof aud === 'string' ? [aud] : stringList(aud) ?? [];
  if (values.length === 0) return check(id, 'fail', 'the assertion has no aud');
  if (values.includes(tokenEndpoint)) return check(id, 'ok', `aud is the token endpoint ${tokenEndpoint} (a server in RFC 7523bis strict mode wants the issuer instead)`);
  if (issuer !== undefined && values.includes(issuer)) return check(id, 'ok', `aud is the issuer ${issuer} (IdentityServer4 accepts only the token endpoint ${tokenEndpoint})`);
  for (const value of values) {
    for (const target of [tokenEndpoint, ...(issuer === undefined ? [] : [issuer])]) {
      const variant = audienceVariant(value, target);
      if (variant) return check(id, 'fail', `aud "${value}" differs from "${target}" by ${variant}: servers compare aud exactly`);
    }
  }
  return check(id, issuer === undefined ? 'warn' : 'fail', `aud ${JSON.stringify(aud)} is neither the token endpoint ${tokenEndpoint}${issuer === undefined ? '' : ` nor the issuer ${issuer}`}`);
}

export interface InvalidClientFacts {
  clientId: string;
  /** The assertion's aud claim and header kid. */
  aud: unknown;
  kid: string;
  tokenEndpoint: string;
  issuer?: string;
  /** The JWKS URL checked and its kids, when one was read. */
  jwks?: { url: string; kids: string[] };
  clock: ClockReadings;
}

function strictHint(facts: InvalidClientFacts): string {
  if (facts.issuer === undefined || facts.aud !== facts.tokenEndpoint) return '';
  return `; or the server wants aud = the issuer (RFC 7523bis strict mode): try --audience ${facts.issuer}`;
}

/** The usual causes of invalid_client, each a check: audience, kid, clock, client_id form, and the registered JWKS URL. */
export function diagnoseInvalidClient(facts: InvalidClientFacts): Check[] {
  const checks = [
    checkAudience('diagnosis.audience', facts.aud, facts.tokenEndpoint, facts.issuer),
    facts.jwks === undefined
      ? check('diagnosis.kid', 'skip', `kid ${facts.kid}: no JWKS URL given to look it up in`)
      : facts.jwks.kids.includes(facts.kid)
        ? check('diagnosis.kid', 'ok', `kid ${facts.kid} is served at ${facts.jwks.url}`)
        : check('diagnosis.kid', 'fail', `kid ${facts.kid} of the assertion is not served at ${facts.jwks.url}: that URL serves another deployment or key set`),
    checkClock('diagnosis.clock', facts.clock),
    checkClientIdForm('diagnosis.client_id_form', facts.clientId, facts.tokenEndpoint),
  ];
  const explained = checks.some((c) => c.status === 'fail' || c.status === 'warn');
  checks.push(
    explained
      ? check('diagnosis.jwks_uri', 'skip', 'the JWKS URL registered at the server cannot be read from outside')
      : check('diagnosis.jwks_uri', 'warn', `none of the usual causes found: check that client ${facts.clientId} is registered for private_key_jwt with ${facts.jwks ? `the JWKS URL ${facts.jwks.url}` : 'this service\'s JWKS URL'} (it cannot be read from outside), and that the server can reach it${strictHint(facts)}`),
  );
  return checks;
}

/** The one-line hint for an invalid_client: the first failing diagnosis, else the first warning. */
export function invalidClientHint(diagnosis: Check[]): string {
  const cause = diagnosis.find((c) => c.status === 'fail') ?? diagnosis.find((c) => c.status === 'warn');
  return cause ? `${cause.id}: ${cause.detail}` : 'no cause found';
}

export interface DoctorReport {
  ok: boolean;
  checks: Check[];
}

export const report = (checks: Check[]): DoctorReport => ({ ok: !checks.some((c) => c.status === 'fail'), checks });

const LABELS: Record<CheckStatus, string> = { ok: 'ok', warn: 'WARN', fail: 'FAIL', skip: 'skip' };

export function formatReport({ ok, checks }: DoctorReport): string {
  const width = Math.max(...checks.map((c) => c.id.length));
  const lines = checks.map((c) => `${LABELS[c.status].padEnd(4)}  ${c.id.padEnd(width)}  ${c.detail}`);
  const count = (status: CheckStatus) => checks.filter((c) => c.status === status).length;
  lines.push('', `${ok ? 'ok' : 'FAILED'}: ${count('ok')} ok, ${count('warn')} warnings, ${count('fail')} failed, ${count('skip')} skipped`);
  return lines.join('\n');
}
