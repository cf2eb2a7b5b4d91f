'use strict';

// The real co-wechat-api package (from the npm registry, see package-lock.json) fed by the
// store, against a fake gateway and a fake WeChat on 127.0.0.1: a rejected token is reported
// to the gateway and replaced by the gateway's successor; WeChat's token endpoint is never
// asked, whatever happens.

const assert = require('node:assert/strict');
const { test } = require('node:test');

const API = require('co-wechat-api');

const { gatewayTokenStore, routeRetriesThroughGateway } = require('..');
const { fakeGateway, fakeWeChat, tokenBody } = require('./support/servers');

const APP = 'wx0000000000000001';
const KEY = 'k'.repeat(43);

async function setUp(answers, { accepted = 'TOKEN-A', store: storeOptions = {} } = {}) {
  const wechat = await fakeWeChat({ token: accepted });
  const gateway = await fakeGateway({ answers });
  const store = gatewayTokenStore({
    url: gateway.url,
    apiKey: KEY,
    appId: APP,
    pollIntervalMs: 1,
    ...storeOptions,
  });
  const api = new API(APP, 'not-the-secret', store.getToken, store.saveToken);
  api.prefix = `${wechat.url}/cgi-bin/`;
  return {
    wechat,
    gateway,
    store,
    api,
    accept: (token) => {
      wechat.accepted = token;
    },
    tokenFetches: () => wechat.requests.filter((r) => r.url.startsWith('/cgi-bin/token')).length,
    close: async () => {
      await wechat.close();
      await gateway.close();
    },
  };
}

test('a call carries the gateway\'s token; saveToken never stores one', async () => {
  const t = await setUp([{ body: tokenBody('TOKEN-A') }]);
  try {
    routeRetriesThroughGateway(t.api, t.store);
    assert.deepEqual(await t.api.getIp(), { ip_list: ['127.0.0.1'] });
    assert.deepEqual(await t.api.getIp(), { ip_list: ['127.0.0.1'] });
    assert.equal(t.gateway.reads(), 1, 'the second call is served from memory');
    const call = t.wechat.requests.find((r) => r.url.startsWith('/cgi-bin/getcallbackip'));
    assert.match(call.url, /access_token=TOKEN-A$/);
    assert.equal(t.tokenFetches(), 0);
  } finally {
    await t.close();
  }
});

test('a 40001 is reported to the gateway and retried with its successor', async () => {
  const accepted = { token: 'TOKEN-A' };
  const wechat = await fakeWeChat(accepted);
  const gateway = await fakeGateway({
    answers: [{ body: tokenBody('TOKEN-A') }, { body: tokenBody('TOKEN-B', { version: 2 }) }],
  });
  try {
    const store = gatewayTokenStore({ url: gateway.url, apiKey: KEY, appId: APP, pollIntervalMs: 1 });
    const api = routeRetriesThroughGateway(
      new API(APP, 'not-the-secret', store.getToken, store.saveToken),
      store,
    );
    api.prefix = `${wechat.url}/cgi-bin/`;
    await api.getIp();
    accepted.token = 'TOKEN-B'; // WeChat now takes only the successor
    assert.deepEqual(await api.getIp(), { ip_list: ['127.0.0.1'] });
    assert.equal(gateway.reports.length, 1);
    assert.equal(gateway.reports[0].access_token, 'TOKEN-A', 'the token WeChat refused');
    assert.match(gateway.reports[0].reason, /co-wechat-api/);
    const calls = wechat.requests.map((r) => r.url);
    assert.deepEqual(calls, [
      '/cgi-bin/getcallbackip?access_token=TOKEN-A',
      '/cgi-bin/getcallbackip?access_token=TOKEN-A',
      '/cgi-bin/getcallbackip?access_token=TOKEN-B',
    ]);
  } finally {
    await wechat.close();
    await gateway.close();
  }
});

test('with no successor in time the caller gets a 40001 WeChatAPIError, after one report', async () => {
  const t = await setUp([{ body: tokenBody('TOKEN-A') }], {
    accepted: 'NOBODY',
    store: { successorTimeoutMs: 20, pollIntervalMs: 5 },
  });
  try {
    routeRetriesThroughGateway(t.api, t.store);
    await assert.rejects(t.api.getIp(), (error) => {
      assert.equal(error.name, 'WeChatAPIError');
      assert.equal(error.code, 40001);
      assert.match(error.message, /no successor/);
      return true;
    });
    assert.equal(t.gateway.reports.length, 1);
    assert.equal(t.tokenFetches(), 0);
  } finally {
    await t.close();
  }
});

test('without the helper co-wechat-api\'s own retry fetches from WeChat (what it replaces)', async () => {
  const t = await setUp([{ body: tokenBody('TOKEN-A') }], { accepted: 'NOBODY' });
  try {
    await assert.rejects(t.api.getIp(), { name: 'WeChatAPIError' });
    assert.ok(t.tokenFetches() > 0, 'the unpatched retry asks /cgi-bin/token with the secret');
    assert.equal(t.gateway.reports.length, 0);
  } finally {
    await t.close();
  }
});

test('a gateway that cannot answer fails the call instead of a fetch from WeChat', async () => {
  const t = await setUp([{ status: 503, body: { error: 'unavailable', reason: 'no token' } }]);
  try {
    routeRetriesThroughGateway(t.api, t.store);
    await assert.rejects(t.api.getIp(), { name: 'GatewayError', status: 503 });
    assert.equal(t.tokenFetches(), 0);
  } finally {
    await t.close();
  }
});

test('getAccessToken called directly reads the gateway, not WeChat', async () => {
  const t = await setUp([{ body: tokenBody('TOKEN-A') }]);
  try {
    routeRetriesThroughGateway(t.api, t.store);
    assert.equal((await t.api.getAccessToken()).accessToken, 'TOKEN-A');
    assert.equal(t.gateway.reports.length, 0);
    assert.equal(t.tokenFetches(), 0);
  } finally {
    await t.close();
  }
});

test('routeRetriesThroughGateway checks its arguments', () => {
  const store = gatewayTokenStore({ url: 'http://127.0.0.1:8777', apiKey: KEY, appId: APP });
  assert.throws(() => routeRetriesThroughGateway(null, store), TypeError);
  assert.throws(() => routeRetriesThroughGateway(new API(APP, 'x'), {}), TypeError);
});
