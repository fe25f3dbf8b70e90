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
  // keep-alive: an agent of our own on every request (simple-oauth2 passes
  // per-request options to its HTTP library as they are; agents given in
  // its config are deep-copied and stop working)
  let httpOptions;
  if (mode === 'keepalive') {
    const tls = ca && ca !== '-' ? { ca: fs.readFileSync(ca) } : {};
    httpOptions = {
      agent: target.protocol === 'https:'
        ? new https.Agent({ keepAlive: true, maxSockets: 1, ...tls })
        : new http.Agent({ keepAlive: true, maxSockets: 1 }),
    };
  }
  const client = new ClientCredentials(config);
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const token = await client.getToken({}, httpOptions);
    if (!token.token.access_token) throw new Error('no token');
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(`${seconds.toFixed(6)} ${n}`);
}

main().catch((err) => { console.error(err.message); process.exit(1); });
