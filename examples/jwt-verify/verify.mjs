// Verifies a Mayfly-issued JWT with an independent JOSE implementation
// (panva/jose), against the JWKS the broker publishes through its OIDC
// discovery document. Usage:
//   NODE_EXTRA_CA_CERTS=$MAYFLY_DEV_DIR/bundle.pem node verify.mjs ISSUER_URL AUDIENCE TOKEN
import { createRemoteJWKSet, jwtVerify } from "jose";

const [issuer, audience, token] = process.argv.slice(2);
if (!issuer || !audience || !token) {
  console.error("usage: node verify.mjs ISSUER_URL AUDIENCE TOKEN");
  process.exit(2);
}
const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri));
try {
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    algorithms: discovery.id_token_signing_alg_values_supported,
  });
  console.log(JSON.stringify({ verified: true, alg: protectedHeader.alg, kid: protectedHeader.kid,
    sub: payload.sub, jti: payload.jti, ent: payload.ent, ttl_seconds: payload.exp - payload.iat }, null, 2));
} catch (e) {
  console.error(`not verified: ${e.code ?? ""} ${e.message}`);
  process.exit(1);
}
