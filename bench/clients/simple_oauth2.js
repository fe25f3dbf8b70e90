// bench client: simple-oauth2's ClientCredentials, with its default agents
// or with keep-alive agents.  Usage: node simple_oauth2.js URL N [CA_FILE] [keepalive]
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');
const { ClientCredentials } = require('simple-oauth2');

async function main() {
  const [url, count, ca, mode] = process.argv.slice(2);
  const n = Number(count);
  const target = new URL(url);
  const config = {
    client: { id: 'bench-id', secret: 'bench-secret' },
    auth: { tokenHost: target.origin, tokenPath: target.pathname },
    options: { authorizationMethod: 'body' },
  };
  // keep-alive: simple-oauth2 deep-copies agents given in its options
  // (which breaks them), so the agents go onto the HTTP client it makes
  // (@hapi/wreck's defaults()) right after it is made
  if (mode === 'keepalive') {
    const tls = ca && ca !== '-' ? { ca: fs.readFileSync(ca) } : {};
    const agents = {
      http: new http.Agent({ keepAlive: true, maxSockets: 1 }),
      https: new https.Agent({ keepAlive: true, maxSockets: 1, ...tls }),
      httpsAllowUnauthorized: new https.Agent({ keepAlive: true, rejectUnauthorized: false }),
    };
    const Wreck = require('@hapi/wreck');
    const defaults = Wreck.defaults;
    Wreck.defaults = function (options) {
      const instance = defaults.call(this, options);
      instance.agents = agents;
      return instance;
    };
  }
  const client = new ClientCredentials(config);
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const token = await client.getToken({});
    if (!token.token.access_token) throw new Error('no token');
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(`${seconds.toFixed(6)} ${n}`);
}

main().catch((err) => { console.error(err.message); process.exit(1); });
