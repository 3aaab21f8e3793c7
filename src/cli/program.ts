// The jwks-signer command: `serve` runs the service; `keys`, `assertion` and `token` call a running service's internal
// API; `doctor` checks the service from the outside, as its consumers see it.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { text } from 'node:stream/consumers';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { createClient, type ImportRequest, JwksSignerError, type JwksSignerClient } from '../client.js';
import { GRANT_PARAMETERS, isTokenResponse, TokenRequestError } from '../oauth/token-request.js';
import { checkJwksKeys, formatReport, invalidClientHint } from './doctor.js';
import { runDoctor } from './doctor-run.js';
import { keySet } from './format.js';
import { DiscoveryError, discover, fetchOutside, OutsideFetchError } from './outside.js';
import { GRANT_NAMES, type GrantName, grantType, requestToken, validateGrant } from './token.js';

export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

class UsageError extends Error {}
/** The command failed and has said why: exit 1 with nothing more printed. */
class Failed extends Error {}

interface GlobalOptions {
  url: string;
  token?: string;
  json?: boolean;
}

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

function seconds(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('a whole number of seconds is expected');
  return Number(value);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function httpUrl(value: string, option: string): string {
  try {
    const url = new URL(value);
    // Kept as given: issuers and audiences are compared character for character.
    if (url.protocol === 'https:' || url.protocol === 'http:') return value;
  } catch {
    // reported below
  }
  throw new UsageError(`${option} "${value}" is not an http(s) URL`);
}

interface GrantOptions {
  grant: GrantName;
  param: string[];
  passwordStdin?: boolean;
  timeout: number;
}

/** --param name=value, then JWKS_SIGNER_PARAM_<NAME> for the grant's own parameters, then --password-stdin. */
async function grantParameters(options: GrantOptions): Promise<Record<string, string>> {
  const parameters: Record<string, string> = {};
  for (const pair of options.param) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new UsageError(`--param "${pair}" is not name=value`);
    parameters[pair.slice(0, at)] = pair.slice(at + 1);
  }
  for (const name of GRANT_PARAMETERS[grantType(options.grant)]) {
    const fromEnv = process.env[`JWKS_SIGNER_PARAM_${name.toUpperCase()}`];
    if (parameters[name] === undefined && fromEnv) parameters[name] = fromEnv;
  }
  if (options.passwordStdin) parameters.password = (await text(process.stdin)).replace(/\r?\n$/, '');
  return parameters;
}

function checkGrant(clientId: string, options: GrantOptions, parameters: Record<string, string>): void {
  try {
    validateGrant({ grant: options.grant, clientId, parameters });
  } catch (err) {
    if (err instanceof TokenRequestError) throw new UsageError(`${err.message} (--param name=value, or JWKS_SIGNER_PARAM_<NAME>)`);
    throw err;
  }
}

function grantOptions(command: Command): Command {
  return command
    .addOption(new Option('--grant <grant>', 'the grant type').choices(GRANT_NAMES).default('client_credentials'))
    .option('--scope <scope>', 'the scope to ask for')
    .option('--param <name=value>', "a grant parameter (username, refresh_token, code, redirect_uri, code_verifier...); repeatable. Secrets: JWKS_SIGNER_PARAM_<NAME> or --password-stdin", collect, [])
    .option('--password-stdin', "read the password grant's password from stdin")
    .option('--audience <aud>', 'aud of the assertion (default: the token endpoint)')
    .option('--key-set <name>', 'the key set to sign with')
    .option('--subject <sub>', 'sub, when it differs from the client id')
    .option('--timeout <seconds>', 'time limit of each request', seconds, 10);
}

const print = (text: string) => void process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
const printJson = (value: unknown) => print(JSON.stringify(value, null, 2));

function connect(command: Command): { client: JwksSignerClient; json: boolean } {
  const { url, token, json } = command.optsWithGlobals<GlobalOptions>();
  if (!token) throw new UsageError('an API token is required: set JWKS_SIGNER_TOKEN (or pass --token)');
  try {
    return { client: createClient({ url, token }), json: json === true };
  } catch {
    throw new UsageError(`--url "${url}" is not a URL`);
  }
}

async function readInput(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new UsageError(`cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export function createProgram(): Command {
  const program = new Command('jwks-signer')
    .description('JWKS publisher and JWT signer: run the service, or administer a running one through its internal API')
    .version(version())
    .exitOverride()
    .addOption(new Option('--url <url>', "the internal API's base URL").env('JWKS_SIGNER_URL').default('http://localhost:8081'))
    .addOption(new Option('--token <token>', 'API token (prefer the variable: arguments are visible to other users)').env('JWKS_SIGNER_TOKEN'))
    .option('--json', 'print JSON, for scripts');

  program
    .command('serve')
    .description('run the service, configured by environment variables (as `node dist/server.js`)')
    .action(async () => {
      await import('../server.js');
    });

  const keys = program.command('keys').description('administer the keys (scope admin)');

  keys
    .command('list')
    .description('list the key sets with their keys, states and timestamps')
    .option('--key-set <name>', 'only this key set')
    .action(async (options: { keySet?: string }, command: Command) => {
      const { client, json } = connect(command);
      const result = await client.keys.list(options.keySet === undefined ? {} : { key_set: options.keySet });
      if (json) return printJson(result);
      print(result.key_sets.map(keySet).join('\n') || 'no key set');
    });

  keys
    .command('rotate')
    .description('make the next key active')
    .option('--key-set <name>', 'the key set (default: the default set)')
    .option('--force', 'rotate although the next key has been published for less than the pre-publish period')
    .option('--if-active-kid <kid>', 'rotate only if this key is still the active one (safe to retry)')
    .action(async (options: { keySet?: string; force?: boolean; ifActiveKid?: string }, command: Command) => {
      const { client, json } = connect(command);
      const result = await client.keys.rotate({
        ...(options.keySet !== undefined ? { key_set: options.keySet } : {}),
        ...(options.force ? { force: true } : {}),
        ...(options.ifActiveKid !== undefined ? { if_active_kid: options.ifActiveKid } : {}),
      });
      if (json) return printJson(result);
      print(result.rotated ? `rotated key set ${result.key_set}: ${result.events.join(', ')}` : `key set ${result.key_set} unchanged: ${options.ifActiveKid} is no longer the active key`);
      print(`\n${keySet(result)}`);
    });

  keys
    .command('revoke')
    .description('remove a key from the JWKS at once; it never signs again')
    .argument('<kid>', 'the key id')
    .option('--key-set <name>', 'the key set (default: the one holding the key)')
    // Kids are base64url thumbprints: one in 64 starts with "-", which must be read as the kid, not an option.
    .allowUnknownOption()
    .action(async (kid: string, options: { keySet?: string }, command: Command) => {
      const { client, json } = connect(command);
      const result = await client.keys.revoke(kid, options.keySet === undefined ? {} : { key_set: options.keySet });
      if (json) return printJson(result);
      print(result.revoked ? `revoked in key set ${result.key_set}: ${result.events.join(', ')}` : `${kid} was already revoked`);
      print(`\n${keySet(result)}`);
    });

  keys
    .command('import')
    .description('add an existing private key: a PEM file (PKCS#8, PKCS#1, SEC1) or a PKCS#12 file')
    .argument('<file>', 'the key file')
    .addOption(new Option('--password <password>', 'password of an encrypted key or of the PKCS#12 file').env('JWKS_SIGNER_KEY_PASSWORD'))
    .option('--certificate <file>', "the key's PEM certificate, if consumers hold it (x5t values stay valid)")
    .option('--next', 'import as the next key instead of the active one')
    .option('--key-set <name>', 'the key set (default: the default set)')
    .action(async (file: string, options: { password?: string; certificate?: string; next?: boolean; keySet?: string }, command: Command) => {
      const { client, json } = connect(command);
      const content = await readInput(file, 'key file');
      const text = content.toString('utf8');
      const request: ImportRequest = text.includes('-----BEGIN ') ? { private_key: text } : { pkcs12: content.toString('base64') };
      if (options.password !== undefined) request.password = options.password;
      if (options.certificate !== undefined) request.certificate = (await readInput(options.certificate, 'certificate')).toString('utf8');
      if (options.next) request.state = 'next';
      if (options.keySet !== undefined) request.key_set = options.keySet;
      const result = await client.keys.import(request);
      if (json) return printJson(result);
      print(`imported ${result.imported_kid} into key set ${result.key_set}: ${result.events.join(', ')}`);
      print(`\n${keySet(result)}`);
    });

  program
    .command('assertion')
    .description('sign a client assertion (RFC 7523 private_key_jwt) and print it')
    .requiredOption('--client-id <id>', 'the OAuth client id (iss, and sub unless --subject)')
    .requiredOption('--audience <url>', "the token endpoint, exactly as the server expects it (aud)")
    .option('--subject <sub>', 'sub, when it differs from the client id')
    .option('--ttl <seconds>', 'lifetime in seconds', seconds)
    .option('--key-set <name>', 'the key set (default: the default set)')
    .addOption(new Option('--typ <typ>', 'the typ header').choices(['JWT', 'client-authentication+jwt']))
    .addOption(new Option('--x5t <header>', 'add the certificate thumbprint header').choices(['x5t', 'x5t#S256']))
    .option('--decode', 'also print the decoded header and claims')
    .action(async (options: { clientId: string; audience: string; subject?: string; ttl?: number; keySet?: string; typ?: 'JWT' | 'client-authentication+jwt'; x5t?: 'x5t' | 'x5t#S256'; decode?: boolean }, command: Command) => {
      const { client, json } = connect(command);
      const result = await client.assertion({
        client_id: options.clientId,
        audience: options.audience,
        ...(options.subject !== undefined ? { subject: options.subject } : {}),
        ...(options.ttl !== undefined ? { ttl: options.ttl } : {}),
        ...(options.keySet !== undefined ? { key_set: options.keySet } : {}),
        ...(options.typ !== undefined ? { typ: options.typ } : {}),
        ...(options.x5t !== undefined ? { x5t: options.x5t } : {}),
      });
      const decoded = options.decode ? { header: decodeProtectedHeader(result.client_assertion), claims: decodeJwt(result.client_assertion) } : undefined;
      if (json) return printJson({ ...result, ...decoded });
      print(result.client_assertion);
      if (decoded) print(`\nheader:\n${JSON.stringify(decoded.header, null, 2)}\n\nclaims:\n${JSON.stringify(decoded.claims, null, 2)}`);
    });

  grantOptions(
    program
      .command('token')
      .description('sign a fresh client assertion and make the token request with it; prints the token response (or the error as received)')
      .option('--token-endpoint <url>', 'the token endpoint')
      .option('--issuer <url>', 'find the token endpoint in the issuer\'s discovery document')
      .requiredOption('--client-id <id>', 'the OAuth client id')
      .option('--jwks-url <url>', 'on invalid_client, look the assertion\'s kid up in this public JWKS'),
  ).action(async (options: GrantOptions & { tokenEndpoint?: string; issuer?: string; clientId: string; jwksUrl?: string; scope?: string; audience?: string; keySet?: string; subject?: string }, command: Command) => {
    if (options.tokenEndpoint === undefined && options.issuer === undefined) throw new UsageError('--token-endpoint or --issuer is required');
    let tokenEndpoint = options.tokenEndpoint === undefined ? undefined : httpUrl(options.tokenEndpoint, '--token-endpoint');
    let issuer = options.issuer === undefined ? undefined : httpUrl(options.issuer, '--issuer');
    const jwksUrl = options.jwksUrl === undefined ? undefined : httpUrl(options.jwksUrl, '--jwks-url');
    const parameters = await grantParameters(options);
    checkGrant(options.clientId, options, parameters);
    const { client, json } = connect(command);
    const timeoutMs = options.timeout * 1000;
    if (issuer !== undefined) {
      const { document, url } = await discover(issuer, timeoutMs);
      if (typeof document.issuer === 'string') issuer = document.issuer;
      if (tokenEndpoint === undefined) {
        if (typeof document.token_endpoint !== 'string') throw new DiscoveryError(`${url} names no token_endpoint`);
        tokenEndpoint = document.token_endpoint;
      }
    }
    const jwks = jwksUrl === undefined ? undefined : { url: jwksUrl, kids: (await checkJwksKeys((await fetchOutside(jwksUrl, { timeoutMs, maxBytes: 1024 * 1024 })).body)).kids };
    const outcome = await requestToken(client, {
      tokenEndpoint: tokenEndpoint!,
      ...(issuer === undefined ? {} : { issuer }),
      clientId: options.clientId,
      grant: options.grant,
      ...(options.scope === undefined ? {} : { scope: options.scope }),
      parameters,
      ...(options.audience === undefined ? {} : { audience: options.audience }),
      ...(options.keySet === undefined ? {} : { keySet: options.keySet }),
      ...(options.subject === undefined ? {} : { subject: options.subject }),
      timeoutMs,
      ...(jwks === undefined ? {} : { jwks }),
    });
    const { answer } = outcome;
    if (isTokenResponse(answer)) return printJson(answer.json);
    if (answer.text !== '') process.stdout.write(answer.text.endsWith('\n') ? answer.text : `${answer.text}\n`);
    const error = typeof answer.json?.error === 'string' ? ` ${answer.json.error}` : '';
    process.stderr.write(`jwks-signer: the token endpoint answered HTTP ${answer.status}${error}\n`);
    if (outcome.diagnosis) {
      process.stderr.write(`jwks-signer: hint: ${invalidClientHint(outcome.diagnosis)}\n`);
      if (json) process.stderr.write(`${JSON.stringify({ diagnosis: outcome.diagnosis })}\n`);
    }
    throw new Failed();
  });

  grantOptions(
    program
      .command('doctor')
      .description('check the public JWKS URL (and the authorization server) as consumers see them; exit 1 when a check fails')
      .requiredOption('--jwks-url <url>', 'the public JWKS URL, as registered at the consumers')
      .option('--issuer <url>', 'the authorization server: read its discovery document')
      .option('--client-id <id>', 'with --issuer: make a real token request as this client'),
  ).action(async (options: GrantOptions & { jwksUrl: string; issuer?: string; clientId?: string; scope?: string; audience?: string; keySet?: string; subject?: string }, command: Command) => {
    const jwksUrl = httpUrl(options.jwksUrl, '--jwks-url');
    const issuer = options.issuer === undefined ? undefined : httpUrl(options.issuer, '--issuer');
    if (options.clientId !== undefined && issuer === undefined) throw new UsageError('--client-id needs --issuer');
    const parameters = await grantParameters(options);
    if (options.clientId !== undefined) checkGrant(options.clientId, options, parameters);
    const { token, json } = command.optsWithGlobals<GlobalOptions>();
    if (options.clientId !== undefined && !token) throw new UsageError('the token request needs an assertion signed by the service: set JWKS_SIGNER_TOKEN (or pass --token)');
    const client = token ? connect(command).client : undefined;
    const result = await runDoctor(
      {
        jwksUrl,
        ...(issuer === undefined ? {} : { issuer }),
        ...(options.clientId === undefined ? {} : { clientId: options.clientId }),
        ...(options.audience === undefined ? {} : { audience: options.audience }),
        ...(options.keySet === undefined ? {} : { keySet: options.keySet }),
        ...(options.subject === undefined ? {} : { subject: options.subject }),
        grant: options.grant,
        ...(options.scope === undefined ? {} : { scope: options.scope }),
        parameters,
        timeoutMs: options.timeout * 1000,
      },
      client,
    );
    if (json) printJson(result);
    else print(formatReport(result));
    if (!result.ok) throw new Failed();
  });

  return program;
}

/** Runs the command and answers its exit code: 0 done, 1 the operation failed, 2 a usage error. */
export async function run(argv: readonly string[]): Promise<number> {
  const program = createProgram();
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT.ok;
  } catch (err) {
    // Commander has already printed its message (or the help it was asked for).
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    if (err instanceof Failed) return EXIT.failed;
    if (err instanceof UsageError) {
      process.stderr.write(`jwks-signer: ${err.message}\n`);
      return EXIT.usage;
    }
    if (err instanceof JwksSignerError) {
      if (program.opts<GlobalOptions>().json) printJson(err.problem ?? { code: err.code, detail: err.message });
      process.stderr.write(`jwks-signer: ${err.code}: ${err.message}\n`);
      return EXIT.failed;
    }
    if (err instanceof TokenRequestError || err instanceof OutsideFetchError || err instanceof DiscoveryError) {
      process.stderr.write(`jwks-signer: ${err.code}: ${err.message}\n`);
      return EXIT.failed;
    }
    process.stderr.write(`jwks-signer: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT.failed;
  }
}
