// A local OpenID Connect provider (panva's oidc-provider) for the console's development and
// browser tests. Loopback only; three accounts: admin, viewer, nobody (in no group).
// Settings from the environment:
//   IDP_PORT            port on 127.0.0.1 (the issuer is http://127.0.0.1:IDP_PORT)
//   IDP_CLIENT_ID       the console's client id            (default "console")
//   IDP_CLIENT_SECRET   its secret                          (default "console-dev-secret")
//   IDP_UI_BASE_URL     the console's UI_BASE_URL           (default http://127.0.0.1:8000;
//                       comma-separated for several consoles, as the tests run)
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT || 8180);
const issuer = `http://127.0.0.1:${port}`;
const uiBases = (process.env.IDP_UI_BASE_URL || 'http://127.0.0.1:8000')
  .split(',').map((url) => url.trim().replace(/\/$/, '')).filter(Boolean);
const clientId = process.env.IDP_CLIENT_ID || 'console';
const clientSecret = process.env.IDP_CLIENT_SECRET || 'console-dev-secret';

const USERS = {
  admin: { name: 'Ada Admin', email: 'admin@example.test', groups: ['mailing-admins'] },
  viewer: { name: 'Victor Viewer', email: 'viewer@example.test', groups: ['mailing-viewers'] },
  nobody: { name: 'Nora Nobody', email: 'nobody@example.test', groups: [] },
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
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  }],
  pkce: { required: () => true, methods: ['S256'] },
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
  ttl: { Session: 3600, Interaction: 600, Grant: 3600, AccessToken: 600, IdToken: 600 },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!doctype html><html lang="en"><head><title>Error</title></head><body><h1>Error</h1>${
      Object.entries(out).map(([k, v]) => `<p>${escapeHtml(k)}: ${escapeHtml(v)}</p>`).join('')
    }</body></html>`;
  },
};

const provider = new Provider(issuer, configuration);
provider.listen(port, '127.0.0.1', () => {
  console.log(`dev-idp: issuer ${issuer}, client ${clientId}, users ${Object.keys(USERS).join(', ')}`);
});
