'use strict';

// co-wechat-api (3.x) retries a call WeChat answered 40001 or 42001 like this
// (lib/api_common.js, API.prototype.request):
//     await this.saveToken(null);
//     let token = await this.getAccessToken();   // GET /cgi-bin/token with the app secret
//     ...the same URL with ?access_token=token.accessToken, up to 3 times
// and falls back to the same getAccessToken() whenever getToken() gives no valid token.
// `routeRetriesThroughGateway` replaces both methods on one API instance:
// - `request` is wrapped only to remember which token the call carried (its URL's
//   access_token), in an AsyncLocalStorage, so the retry knows which token WeChat refused;
// - `getAccessToken` reports that token to the gateway's report route and answers with the
//   token the gateway serves next (store.replace); with no refused token in sight (called
//   directly, or by ensureAccessToken) it answers with store.getToken(). It never calls
//   WeChat and never reads api.appsecret.

const { AsyncLocalStorage } = require('node:async_hooks');

const { GatewayError } = require('./errors');

function tokenInUrl(url) {
  try {
    return new URL(String(url)).searchParams.get('access_token') || null;
  } catch {
    return null;
  }
}

/**
 * Make `api` (a co-wechat-api `API` built with the store's getToken/saveToken) recover from
 * a rejected token through the gateway: report, then the gateway's successor, never WeChat.
 * Returns `api`. Do not set co-wechat-api's `tokenFromCustom`: it turns the retry off.
 */
function routeRetriesThroughGateway(api, store) {
  if (api === null || typeof api !== 'object' || typeof api.request !== 'function') {
    throw new TypeError('routeRetriesThroughGateway: a co-wechat-api API instance');
  }
  if (store === null || typeof store !== 'object' || typeof store.replace !== 'function') {
    throw new TypeError('routeRetriesThroughGateway: a store from gatewayTokenStore()');
  }
  const carried = new AsyncLocalStorage();
  const request = api.request;

  api.request = function requestRemembering(url, opts, retry) {
    return carried.run(tokenInUrl(url), () => request.call(this, url, opts, retry));
  };

  api.getAccessToken = async function getAccessTokenFromGateway() {
    const refused = carried.getStore();
    if (!refused) return store.getToken();
    try {
      const next = await store.replace(refused, 'co-wechat-api: WeChat rejected the token');
      return { accessToken: next.accessToken, expireTime: next.expireTime };
    } catch (error) {
      if (error instanceof GatewayError && error.code === 'NO_SUCCESSOR') {
        // As co-wechat-api reports a refused token: a WeChatAPIError with WeChat's code.
        const refusedError = new Error(error.message, { cause: error });
        refusedError.name = 'WeChatAPIError';
        refusedError.code = 40001;
        throw refusedError;
      }
      throw error;
    }
  };
  return api;
}

module.exports = { routeRetriesThroughGateway };
