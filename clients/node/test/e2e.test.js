'use strict';

// End to end, against a real wxtoken gateway in front of a real producer and the sandbox
// WeChat (tests/integration/test_node_client.py starts them and sets the variables):
//   WXTOKEN_GATEWAY_URL, WXTOKEN_GATEWAY_API_KEY (scopes read, report),
//   WXTOKEN_E2E_APP_ID, WXTOKEN_E2E_WECHAT_URL (the sandbox's base URL).
// Skipped when they are not set. The real co-wechat-api calls getcallbackip through a
// recording proxy in front of the sandbox; the sandbox then invalidates the token, and the
// next call recovers through the gateway's report route: the proxy sees no request to
// WeChat's token endpoints.

const assert = require('node:assert/strict');
const http = require('node:http');
const { test } = require('node:test');

const API = require('co-wechat-api');

const { gatewayTokenStore, routeRetriesThroughGateway } = require('..');

const NEEDED = ['WXTOKEN_GATEWAY_URL', 'WXTOKEN_GATEWAY_API_KEY', 'WXTOKEN_E2E_APP_ID', 'WXTOKEN_E2E_WECHAT_URL'];
const missing = NEEDED.filter((name) => !process.env[name]);

/** A proxy to `target` that records each request's path and WeChat's errcode. */
function recordingProxy(target) {
  const seen = [];
  const server = http.createServer((req, res) => {
    const upstream = http.request(
      new URL(req.url, target),
      { method: req.method, headers: { ...req.headers, host: new URL(target).host } },
      (answer) => {
        const chunks = [];
        answer.on('data', (chunk) => chunks.push(chunk));
        answer.on('end', () => {
          const body = Buffer.concat(chunks);
          let errcode = 0;
          try {
            errcode = JSON.parse(body.toString()).errcode ?? 0;
          } catch {
            // not JSON: recorded as 0
          }
          seen.push({ path: new URL(req.url, target).pathname, url: req.url, errcode });
          res.writeHead(answer.statusCode, answer.headers);
          res.end(body);
        });
      },
    );
    upstream.on('error', (error) => {
      res.writeHead(502);
      res.end(String(error));
    });
    req.pipe(upstream);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        seen,
        close: () =>
          new Promise((done) => {
            server.closeAllConnections();
            server.close(done);
          }),
      });
    });
  });
}

async function postJson(url, body) {
  const answer = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(answer.status, 200, `${url} answered ${answer.status}`);
  return answer.json();
}

test(
  'co-wechat-api on the sandbox recovers from an invalidated token through the gateway',
  { skip: missing.length > 0 ? `set ${missing.join(', ')}` : false, timeout: 120_000 },
  async () => {
    const appId = process.env.WXTOKEN_E2E_APP_ID;
    const sandbox = process.env.WXTOKEN_E2E_WECHAT_URL;
    const gatewayCalls = [];
    const store = gatewayTokenStore({
      url: process.env.WXTOKEN_GATEWAY_URL,
      apiKey: process.env.WXTOKEN_GATEWAY_API_KEY,
      appId,
      successorTimeoutMs: 60_000,
      pollIntervalMs: 100,
      fetch: (url, init) => {
        gatewayCalls.push(`${init.method} ${new URL(url).pathname}`);
        return fetch(url, init);
      },
    });
    const proxy = await recordingProxy(sandbox);
    try {
      // The app secret is not here: nothing on this side needs it.
      const api = routeRetriesThroughGateway(
        new API(appId, 'no-secret-here', store.getToken, store.saveToken),
        store,
      );
      api.prefix = `${proxy.url}/cgi-bin/`;

      assert.deepEqual(await api.getIp(), { ip_list: ['127.0.0.1'] });
      const first = await store.getToken();
      assert.ok(proxy.seen.some((c) => c.url.endsWith(`access_token=${first.accessToken}`)));

      // WeChat kills the token early (as when some other server fetched a new one).
      assert.deepEqual(await postJson(`${sandbox}/sandbox/invalidate`, { owner: appId }), { ok: true });

      assert.deepEqual(await api.getIp(), { ip_list: ['127.0.0.1'] });
      const second = await store.getToken();
      assert.notEqual(second.accessToken, first.accessToken, 'the successor is held');

      const ipCalls = proxy.seen.filter((c) => c.path === '/cgi-bin/getcallbackip');
      assert.deepEqual(
        ipCalls.map((c) => [c.url.endsWith(second.accessToken) ? 'second' : 'first', c.errcode]),
        [
          ['first', 0],
          ['first', 40001],
          ['second', 0],
        ],
      );
      const report = `POST /v1/apps/${appId}/access_token:report`;
      assert.equal(gatewayCalls.filter((c) => c === report).length, 1, 'one report');
      const tokenCalls = proxy.seen.filter((c) => /^\/cgi-bin\/(token|stable_token)$/.test(c.path));
      assert.deepEqual(tokenCalls, [], 'no fetch from WeChat\'s token endpoints');
      console.log(
        `e2e: getcallbackip calls ${ipCalls.length}, gateway calls ${gatewayCalls.length} ` +
          `(reports 1), WeChat token fetches by Node ${tokenCalls.length}`,
      );
    } finally {
      await proxy.close();
    }
  },
);
