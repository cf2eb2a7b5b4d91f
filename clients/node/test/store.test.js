'use strict';

// gatewayTokenStore against a fake gateway on 127.0.0.1: the read route's headers and path,
// the memory cache and its limits, expiry, errors and malformed answers, the report route.

const assert = require('node:assert/strict');
const { test } = require('node:test');

const { gatewayTokenStore, GatewayError } = require('..');
const { fakeGateway, tokenBody } = require('./support/servers');

const APP = 'wx0000000000000001';
const KEY = 'k'.repeat(43);

function clock(startMs = 1_800_000_000_000) {
  const c = { ms: startMs, now: () => c.ms, advance: (ms) => (c.ms += ms) };
  return c;
}

async function withGateway(scripted, body) {
  const gateway = await fakeGateway(scripted);
  try {
    await body(gateway);
  } finally {
    await gateway.close();
  }
}

function store(gateway, c, extra = {}) {
  return gatewayTokenStore({ url: gateway.url, apiKey: KEY, appId: APP, now: c.now, ...extra });
}

test('getToken reads the gateway with the API key and answers in co-wechat-api\'s shape', async () => {
  await withGateway({ answers: [{ body: tokenBody('TOKEN-A', { expiresIn: 7000 }) }] }, async (gw) => {
    const c = clock();
    const token = await store(gw, c).getToken();
    assert.deepEqual(token, { accessToken: 'TOKEN-A', expireTime: c.ms + 7_000_000 });
    const [req] = gw.requests;
    assert.equal(req.method, 'GET');
    assert.equal(req.url, `/v1/apps/${APP}/access_token`);
    assert.equal(req.headers.authorization, `Bearer ${KEY}`);
  });
});

test('a base URL with a path and a trailing slash is joined once', async () => {
  await withGateway({ answers: [{ body: tokenBody('TOKEN-A') }] }, async (gw) => {
    const s = gatewayTokenStore({ url: `${gw.url}/`, apiKey: KEY, appId: APP });
    await s.getToken();
    assert.equal(gw.requests[0].url, `/v1/apps/${APP}/access_token`);
  });
});

test('the token is served from memory until maxAgeMs, then read again', async () => {
  await withGateway(
    { answers: [{ body: tokenBody('TOKEN-A') }, { body: tokenBody('TOKEN-B', { version: 2 }) }] },
    async (gw) => {
      const c = clock();
      const s = store(gw, c, { maxAgeMs: 60_000 });
      assert.equal((await s.getToken()).accessToken, 'TOKEN-A');
      c.advance(59_999);
      assert.equal((await s.getToken()).accessToken, 'TOKEN-A');
      assert.equal(gw.reads(), 1);
      c.advance(1);
      assert.equal((await s.getToken()).accessToken, 'TOKEN-B');
      assert.equal(gw.reads(), 2);
    },
  );
});

test('the token is read again marginMs before its expiry', async () => {
  await withGateway(
    {
      answers: [
        { body: tokenBody('TOKEN-A', { expiresIn: 100 }) },
        { body: tokenBody('TOKEN-B', { expiresIn: 7000, version: 2 }) },
      ],
    },
    async (gw) => {
      const c = clock();
      const s = store(gw, c, { marginMs: 30_000, maxAgeMs: 600_000 });
      assert.equal((await s.getToken()).accessToken, 'TOKEN-A');
      c.advance(69_999);
      assert.equal((await s.getToken()).accessToken, 'TOKEN-A');
      c.advance(1);
      assert.equal((await s.getToken()).accessToken, 'TOKEN-B');
    },
  );
});

test('concurrent callers share one read', async () => {
  await withGateway({ answers: [{ body: tokenBody('TOKEN-A') }] }, async (gw) => {
    const s = store(gw, clock());
    const tokens = await Promise.all(Array.from({ length: 20 }, () => s.getToken()));
    assert.ok(tokens.every((t) => t.accessToken === 'TOKEN-A'));
    assert.equal(gw.reads(), 1);
  });
});

test('a gateway outage is bridged with the held token, never past its expiry', async () => {
  await withGateway(
    {
      answers: [
        { body: tokenBody('TOKEN-A', { expiresIn: 100 }) },
        { status: 503, body: { error: 'unavailable', reason: 'no token yet' }, headers: { 'Retry-After': '2' } },
      ],
    },
    async (gw) => {
      const c = clock();
      const s = store(gw, c, { marginMs: 30_000 });
      await s.getToken();
      c.advance(99_999); // past the margin, 1 ms before expiry: the gateway says 503
      assert.equal((await s.getToken()).accessToken, 'TOKEN-A');
      c.advance(1); // expired: nothing to serve
      await assert.rejects(s.getToken(), (error) => {
        assert.ok(error instanceof GatewayError);
        assert.equal(error.status, 503);
        assert.equal(error.retryAfterS, 2);
        assert.match(error.message, /503 for wx0000000000000001: unavailable: no token yet/);
        return true;
      });
    },
  );
});

test('an unreachable gateway past expiry is an UNREACHABLE error', async () => {
  const gw = await fakeGateway({ answers: [{ body: tokenBody('TOKEN-A', { expiresIn: 10 }) }] });
  const c = clock();
  const s = store(gw, c);
  await s.getToken();
  await gw.close();
  c.advance(10_000);
  await assert.rejects(s.getToken(), { name: 'GatewayError', code: 'UNREACHABLE' });
});

test('a 4xx is honoured at once: the held token is dropped', async () => {
  await withGateway(
    {
      answers: [
        { body: tokenBody('TOKEN-A') },
        { status: 403, body: { error: 'forbidden', reason: "key 'x' may not use app" } },
        { body: tokenBody('TOKEN-B', { version: 2 }) },
      ],
    },
    async (gw) => {
      const c = clock();
      const s = store(gw, c);
      await s.getToken();
      c.advance(60_000);
      await assert.rejects(s.getToken(), (error) => {
        assert.equal(error.code, 'HTTP_STATUS');
        assert.equal(error.status, 403);
        assert.ok(!error.message.includes(KEY), 'the key is never in a message');
        return true;
      });
      assert.equal((await s.getToken()).accessToken, 'TOKEN-B');
      assert.equal(gw.reads(), 3);
    },
  );
});

const MALFORMED = {
  'not JSON': '<html>proxy error</html>',
  'a JSON array': '[]',
  'no access_token': { expires_in: 7000, expires_at: 1, version: 1 },
  'an empty access_token': { access_token: '', expires_in: 7000, expires_at: 1, version: 1 },
  'a token with a space': { access_token: 'a b', expires_in: 7000, expires_at: 1, version: 1 },
  'a numeric access_token': { access_token: 12345, expires_in: 7000, expires_at: 1, version: 1 },
  'expires_in as a string': { access_token: 'T', expires_in: '7000', expires_at: 1, version: 1 },
  'a negative expires_in': { access_token: 'T', expires_in: -1, expires_at: 1, version: 1 },
  'a fractional expires_in': { access_token: 'T', expires_in: 1.5, expires_at: 1, version: 1 },
  'an absurd expires_in': { access_token: 'T', expires_in: 10 ** 9, expires_at: 1, version: 1 },
  'no expires_at': { access_token: 'T', expires_in: 7000, version: 1 },
  'no version': { access_token: 'T', expires_in: 7000, expires_at: 1 },
  'a huge answer': { access_token: 'T', expires_in: 7000, expires_at: 1, version: 1, pad: 'x'.repeat(70_000) },
};

for (const [name, body] of Object.entries(MALFORMED)) {
  test(`${name} is a MALFORMED error and never cached`, async () => {
    await withGateway(
      { answers: [{ body: tokenBody('GOOD-TOKEN') }, { body }, { body: tokenBody('NEXT', { version: 2 }) }] },
      async (gw) => {
        const c = clock();
        const s = store(gw, c);
        await s.getToken();
        await assert.rejects(s.read({ fresh: true }), { name: 'GatewayError', code: 'MALFORMED' });
        assert.equal((await s.getToken()).accessToken, 'GOOD-TOKEN', 'the good token is kept');
        c.advance(60_000);
        assert.equal((await s.getToken()).accessToken, 'NEXT');
      },
    );
  });
}

test('a malformed first answer leaves nothing to serve', async () => {
  await withGateway({ answers: [{ body: { access_token: 'T' } }] }, async (gw) => {
    const s = store(gw, clock());
    await assert.rejects(s.getToken(), { code: 'MALFORMED' });
    await assert.rejects(s.getToken(), { code: 'MALFORMED' });
    assert.equal(gw.reads(), 2);
  });
});

test('a token with under a second left is refused, not served expired', async () => {
  await withGateway({ answers: [{ body: tokenBody('DYING', { expiresIn: 0 }) }] }, async (gw) => {
    const s = store(gw, clock());
    await assert.rejects(s.getToken(), { code: 'EXPIRING' });
  });
});

test('saveToken is a no-op that never calls anything', async () => {
  let calls = 0;
  const s = gatewayTokenStore({
    url: 'http://127.0.0.1:9',
    apiKey: KEY,
    appId: APP,
    fetch: async () => {
      calls += 1;
      throw new Error('no');
    },
  });
  await s.saveToken({ accessToken: 'FROM-WECHAT', expireTime: Date.now() + 7_000_000 });
  await s.saveToken(null);
  assert.equal(calls, 0);
});

test('report posts the rejected token and a reason to the report route', async () => {
  await withGateway({ answers: [{ body: tokenBody('TOKEN-A') }] }, async (gw) => {
    const s = store(gw, clock());
    assert.equal(await s.report('TOKEN-A', 'WeChat said 40001\n'), true);
    const post = gw.requests.find((r) => r.method === 'POST');
    assert.equal(post.url, `/v1/apps/${APP}/access_token:report`);
    assert.equal(post.headers.authorization, `Bearer ${KEY}`);
    assert.equal(post.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(post.body), { access_token: 'TOKEN-A', reason: 'WeChat said 40001 ' });
  });
});

test('a report the gateway refuses is an error naming the status', async () => {
  await withGateway(
    { report: { status: 403, body: { error: 'forbidden', reason: "key 'r' lacks the 'report' scope" } } },
    async (gw) => {
      await assert.rejects(store(gw, clock()).report('TOKEN-A'), (error) => {
        assert.equal(error.status, 403);
        assert.match(error.message, /lacks the 'report' scope/);
        return true;
      });
    },
  );
});

test('replace reports, drops the rejected token and waits for the successor', async () => {
  await withGateway(
    {
      answers: [
        { body: tokenBody('OLD-TOKEN') },
        { body: tokenBody('OLD-TOKEN') }, // the producer has not replaced it yet
        { body: tokenBody('NEW-TOKEN', { version: 2 }) },
      ],
    },
    async (gw) => {
      const s = gatewayTokenStore({ url: gw.url, apiKey: KEY, appId: APP, pollIntervalMs: 1 });
      await s.getToken();
      const [a, b] = await Promise.all([s.replace('OLD-TOKEN', 'x'), s.replace('OLD-TOKEN', 'y')]);
      assert.equal(a.accessToken, 'NEW-TOKEN');
      assert.equal(b, a);
      assert.equal(gw.reports.length, 1, 'one report per rejected token');
      assert.equal((await s.getToken()).accessToken, 'NEW-TOKEN');
      assert.equal(gw.reads(), 3, 'the successor is cached');
    },
  );
});

test('the rejected token is never served from memory while the successor is awaited', async () => {
  await withGateway(
    { answers: [{ body: tokenBody('OLD-TOKEN') }, { body: tokenBody('OLD-TOKEN') }] },
    async (gw) => {
      const c = clock();
      const s = store(gw, c);
      await s.getToken();
      await s.report('OLD-TOKEN');
      await s.getToken(); // still what the gateway serves, but read again, not cached
      await s.getToken();
      assert.equal(gw.reads(), 3);
    },
  );
});

test('no successor in time is a NO_SUCCESSOR error', async () => {
  await withGateway({ answers: [{ body: tokenBody('OLD-TOKEN') }] }, async (gw) => {
    const s = gatewayTokenStore({
      url: gw.url,
      apiKey: KEY,
      appId: APP,
      successorTimeoutMs: 50,
      pollIntervalMs: 5,
    });
    await assert.rejects(s.replace('OLD-TOKEN'), (error) => {
      assert.equal(error.code, 'NO_SUCCESSOR');
      assert.ok(!error.message.includes('OLD-TOKEN'), 'the token is masked');
      return true;
    });
  });
});

test('bad options are TypeErrors', () => {
  const good = { url: 'http://127.0.0.1:8777', apiKey: KEY, appId: APP };
  assert.throws(() => gatewayTokenStore(), TypeError);
  assert.throws(() => gatewayTokenStore({ ...good, url: 'ftp://x' }), TypeError);
  assert.throws(() => gatewayTokenStore({ ...good, url: 'not a url' }), TypeError);
  assert.throws(() => gatewayTokenStore({ ...good, apiKey: '' }), TypeError);
  assert.throws(() => gatewayTokenStore({ ...good, apiKey: 'a key\n' }), TypeError);
  assert.throws(() => gatewayTokenStore({ ...good, appId: '../admin' }), TypeError);
  assert.throws(() => gatewayTokenStore({ ...good, marginMs: -1 }), TypeError);
  assert.throws(() => gatewayTokenStore({ ...good, fetch: 'no' }), TypeError);
});
