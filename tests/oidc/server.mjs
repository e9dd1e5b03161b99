// A real OpenID provider (npm oidc-provider) set up for SMART on FHIR, for tests only.
//
//   node server.mjs --port N --config clients.json --keys provider-keys.json
//
// The config file (written by the test) says who may ask for what; see README.md. The
// provider's own signing keys live in --keys (created when missing) so a restart keeps
// them and tokens issued before it stay verifiable by the resource server.
//
// Not for production: the interaction completes by itself for the configured test user.
import crypto from 'node:crypto';
import fs from 'node:fs';
import process from 'node:process';

import Provider, { errors } from 'oidc-provider';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback === undefined) {
    console.error(`oidc-provider: --${name} is required`);
    process.exit(2);
  }
  return fallback;
}

const port = Number(arg('port'));
const configPath = arg('config');
const keysPath = arg('keys');
const host = arg('host', '127.0.0.1');
const issuer = `http://${host}:${port}`;

const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));

// ---------------------------------------------------------------- provider keys

function loadOrCreateKeys(path) {
  if (fs.existsSync(path)) return JSON.parse(fs.readFileSync(path, 'utf8'));
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const keys = {
    keys: [
      { ...rsa, kid: `rs-${crypto.randomBytes(6).toString('hex')}`, use: 'sig', alg: 'RS256' },
      { ...ec, kid: `es-${crypto.randomBytes(6).toString('hex')}`, use: 'sig', alg: 'ES256' },
    ],
  };
  fs.writeFileSync(path, JSON.stringify(keys), { mode: 0o600 });
  return keys;
}

const jwks = loadOrCreateKeys(keysPath);

// ---------------------------------------------------------------- clients and context

// Our own per-client fields are taken out before the client reaches oidc-provider:
//   allowed_scope  space-separated scopes this client may be granted (granted = asked ∩ allowed)
//   access_token_ttl  this client's access-token lifetime in seconds (else the global one)
const allowedScope = new Map();
const clientTtl = new Map();
const clients = (config.clients || []).map((entry) => {
  const { allowed_scope: allowed, access_token_ttl: ttl, ...client } = entry;
  allowedScope.set(client.client_id, new Set(String(allowed || '').split(' ').filter(Boolean)));
  if (ttl) clientTtl.set(client.client_id, Number(ttl));
  if (client.token_endpoint_auth_method === 'private_key_jwt') {
    client.grant_types ??= ['client_credentials'];
    client.response_types ??= [];
    client.redirect_uris ??= [];
  }
  return client;
});

const resource = config.resource; // the FHIR base URL: the access tokens' audience
if (!resource) {
  console.error('oidc-provider: the config needs "resource" (the FHIR base URL)');
  process.exit(2);
}
const tokenTtl = Number(config.access_token_ttl || 300);
const launchContexts = config.launch_contexts || {}; // launch value -> { patient, user }
const users = config.users || {}; // account id -> { fhirUser }
const defaultUser = config.test_user || Object.keys(users)[0];
const grantContext = new Map(); // grant id -> { patient }

const OIDC_SCOPES = ['openid', 'fhirUser', 'launch', 'launch/patient', 'offline_access'];

function resourceScopes(clientId) {
  return [...(allowedScope.get(clientId) || [])].join(' ');
}

// ---------------------------------------------------------------- the provider

const provider = new Provider(issuer, {
  clients,
  jwks,
  scopes: OIDC_SCOPES,
  claims: { openid: ['sub'], fhirUser: ['fhirUser'] },
  conformIdTokenClaims: false,
  extraParams: ['launch', 'aud'],
  findAccount(_ctx, id) {
    if (!users[id]) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, fhirUser: users[id].fhirUser };
      },
    };
  },
  cookies: { keys: [crypto.createHash('sha256').update(JSON.stringify(jwks)).digest('hex')] },
  enabledJWA: {
    clientAuthSigningAlgValues: ['RS384', 'ES384', 'RS256', 'ES256', 'PS384'],
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, indicator, client) {
        if (indicator !== resource) throw new errors.InvalidTarget('unknown resource');
        return {
          scope: resourceScopes(client.clientId),
          audience: resource,
          accessTokenTTL: clientTtl.get(client.clientId) || tokenTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraTokenClaims(_ctx, token) {
    const context = token.grantId ? grantContext.get(token.grantId) : undefined;
    return context ? { patient: context.patient } : undefined;
  },
  ttl: {
    // The resource server's TTL (per client, see getResourceServerInfo) wins.
    ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL || tokenTtl,
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL || tokenTtl,
    AuthorizationCode: Number(config.authorization_code_ttl || 60),
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
  clockTolerance: 0,
});
provider.proxy = false;

// Test-only interaction: log in the launch's user (or the test user) and consent to what was
// asked, within what the client may have; the launch value becomes the grant's patient.
async function interaction(ctx) {
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params } = details;
  const launch = params.launch ? launchContexts[params.launch] : undefined;
  if (params.launch && !launch) {
    const result = { error: 'invalid_request', error_description: 'unknown launch value' };
    ctx.body = undefined;
    return provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'login') {
    const accountId = launch?.user || defaultUser;
    return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId } }, { mergeWithLastSubmission: false });
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
  const asked = String(params.scope || '').split(' ').filter(Boolean);
  grant.addOIDCScope(asked.filter((s) => OIDC_SCOPES.includes(s)).join(' '));
  const allowed = allowedScope.get(params.client_id) || new Set();
  grant.addResourceScope(resource, asked.filter((s) => allowed.has(s)).join(' '));
  const grantId = await grant.save();
  if (launch) grantContext.set(grantId, { patient: launch.patient });
  return provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path.startsWith('/interaction/')) {
    await interaction(ctx);
    ctx.respond = false;
    return;
  }
  await next();
  // SMART: the token response carries the launch context beside the access token.
  if (ctx.oidc?.route === 'token' && ctx.status === 200 && ctx.body && ctx.body.access_token) {
    const code = ctx.oidc.entities.AuthorizationCode || ctx.oidc.entities.RefreshToken;
    const context = code?.grantId ? grantContext.get(code.grantId) : undefined;
    if (context) ctx.body.patient = context.patient;
  }
});

// Token endpoint failures are what the tests look at: say them on the log, without secrets.
provider.on('grant.error', (ctx, err) => {
  console.log(`grant.error ${ctx.oidc?.client?.clientId || '-'} ${err.error || err.name}: ${err.error_description || ''}${err.error_detail ? ` (${err.error_detail})` : ''}`);
});
provider.on('grant.success', (ctx) => {
  console.log(`grant.success ${ctx.oidc?.client?.clientId || '-'}`);
});

const server = provider.listen(port, host, () => {
  console.log(`oidc-provider READY ${issuer}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
