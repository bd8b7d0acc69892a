// A local OpenID Connect provider (panva's oidc-provider) for the console's development and
// browser tests. Loopback only; three accounts: admin, viewer, nobody (in no group).
// Settings from the environment:
//   IDP_PORT            port on 127.0.0.1 (the issuer is http://127.0.0.1:IDP_PORT)
//   IDP_CLIENT_ID       the console's client id            (default "console")
//   IDP_CLIENT_SECRET   its secret                          (default "console-dev-secret")
//   IDP_UI_BASE_URL     the console's UI_BASE_URL           (default http://127.0.0.1:8000;
//                       comma-separated for several consoles, as the tests run)
//   IDP_TEST_CONTROLS   "1": tests/security may change it at run time (never in a deployment):
//     POST /_test/groups?user=admin&groups=a,b  a user's groups from now on (empty: none)
//     POST /_test/tamper?mode=aud|nonce|signature|off  spoil the ID tokens the token endpoint
//                       returns from now on: another audience, another nonce, or signed with
//                       a key the provider does not publish
//     POST /_test/reset  the accounts' groups as at start, tokens unspoiled
import crypto from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT || 8180);
const issuer = `http://127.0.0.1:${port}`;
const uiBases = (process.env.IDP_UI_BASE_URL || 'http://127.0.0.1:8000')
  .split(',').map((url) => url.trim().replace(/\/$/, '')).filter(Boolean);
const clientId = process.env.IDP_CLIENT_ID || 'console';
const clientSecret = process.env.IDP_CLIENT_SECRET || 'console-dev-secret';

const testControls = process.env.IDP_TEST_CONTROLS === '1';

const START_GROUPS = {
  admin: ['mailing-admins'],
  viewer: ['mailing-viewers'],
  nobody: [],
};
const USERS = {
  admin: { name: 'Ada Admin', email: 'admin@example.test', groups: START_GROUPS.admin },
  viewer: { name: 'Victor Viewer', email: 'viewer@example.test', groups: START_GROUPS.viewer },
  nobody: { name: 'Nora Nobody', email: 'nobody@example.test', groups: START_GROUPS.nobody },
};

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: uiBases.map((base) => `${base}/ui/auth/callback`),
    post_logout_redirect_uris: uiBases.map((base) => `${base}/ui/`),
    response_types: ['code'],
    // refresh_token: the console re-reads the account's groups every few minutes.
    grant_types: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  }],
  pkce: { required: () => true, methods: ['S256'] },
  // A refresh token for every sign-in of a client allowed the grant (no offline_access asked).
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  async findAccount(ctx, id) {
    const user = USERS[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: id,
          name: user.name,
          email: user.email,
          email_verified: true,
          groups: user.groups,
        };
      },
    };
  },
  // The console is our own first-party client: no consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile email groups');
    await grant.save();
    return grant;
  },
  features: {
    devInteractions: { enabled: true }, // the small built-in login form
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = `<!doctype html><html lang="en"><head><title>Sign out</title></head><body>
${form}<p>Signing you out of the development identity provider…</p>
<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>
<script>document.querySelector('button[name=logout]').click()</script></body></html>`;
      },
    },
  },
  cookies: { keys: ['dev-idp-cookie-key-not-secret'] },
  ttl: {
    Session: 3600, Interaction: 600, Grant: 3600, AccessToken: 600, IdToken: 600,
    RefreshToken: 12 * 3600,
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!doctype html><html lang="en"><head><title>Error</title></head><body><h1>Error</h1>${
      Object.entries(out).map(([k, v]) => `<p>${escapeHtml(k)}: ${escapeHtml(v)}</p>`).join('')
    }</body></html>`;
  },
};

// Test controls: the provider signs with a key of ours, so a spoiled token can be re-signed.
const signingKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const rogueKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
if (testControls) {
  configuration.jwks = {
    keys: [{ ...signingKey.export({ format: 'jwk' }), kid: 'dev-idp-test', use: 'sig', alg: 'RS256' }],
  };
}
let tamperMode = 'off';

function spoil(jwt, mode) {
  const [header, payload] = jwt.split('.').slice(0, 2)
    .map((part) => JSON.parse(Buffer.from(part, 'base64url').toString()));
  if (mode === 'aud') {
    // A token the provider made for another client (azp names ours, so only `aud` is wrong).
    payload.aud = ['another-client'];
    payload.azp = clientId;
  }
  if (mode === 'nonce') payload.nonce = 'not-the-nonce-the-console-sent';
  const input = [header, payload]
    .map((part) => Buffer.from(JSON.stringify(part)).toString('base64url')).join('.');
  const key = mode === 'signature' ? rogueKey : signingKey;
  return `${input}.${crypto.sign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

async function testControl(ctx) {
  const { query } = ctx;
  if (ctx.path === '/_test/groups' && USERS[query.user]) {
    USERS[query.user].groups = String(query.groups || '').split(',').filter(Boolean);
  } else if (ctx.path === '/_test/tamper' && ['aud', 'nonce', 'signature', 'off'].includes(query.mode)) {
    tamperMode = query.mode;
  } else if (ctx.path === '/_test/reset') {
    for (const [id, groups] of Object.entries(START_GROUPS)) USERS[id].groups = groups;
    tamperMode = 'off';
  } else {
    ctx.status = 404;
    return;
  }
  ctx.body = { users: Object.fromEntries(Object.entries(USERS).map(([id, u]) => [id, u.groups])), tamper: tamperMode };
}

const provider = new Provider(issuer, configuration);
if (testControls) {
  provider.use(async (ctx, next) => {
    if (ctx.path.startsWith('/_test/') && ctx.method === 'POST') {
      await testControl(ctx);
      return;
    }
    await next();
    if (tamperMode !== 'off' && ctx.path === '/token' && ctx.body?.id_token) {
      ctx.body = { ...ctx.body, id_token: spoil(ctx.body.id_token, tamperMode) };
    }
  });
}
provider.listen(port, '127.0.0.1', () => {
  console.log(`dev-idp: issuer ${issuer}, client ${clientId}, users ${Object.keys(USERS).join(', ')}${
    testControls ? ', test controls on' : ''}`);
});
