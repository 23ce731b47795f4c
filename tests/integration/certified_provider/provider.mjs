// A certified OpenID Connect provider for Fleetline's single sign-on tests: panva's
// oidc-provider (OpenID Certified) with its default settings (claims asked for by scope
// come from the userinfo endpoint, not the ID token; RFC 9207's `iss` on every
// authorization response), its development sign-in pages (any password), PKCE required.
//
//   node provider.mjs CONFIG.json
//
// CONFIG: {"port", "clients": [{client_id, client_secret, redirect_uris,
//          token_endpoint_auth_method}], "accounts": {"<login>": {"email", "email_verified"}},
//          "jwks": {"keys": [a private JWK]}}  (its signing key, the same across restarts)
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    response_types: ['code'], grant_types: ['authorization_code'], ...c,
  })),
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  pkce: { required: () => true },
  cookies: { keys: ['fleetline-test-cookie-key'] },
  jwks: config.jwks,
  async findAccount(ctx, id) {
    const account = config.accounts[id];
    if (!account) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...account }; } };
  },
});
provider.listen(config.port, '127.0.0.1', () => console.log(`ready ${issuer}`));
