'use strict';

// A token store over a wxtoken gateway's HTTP API, in the shape co-wechat-api's constructor
// takes (`new API(appid, appsecret, getToken, saveToken)`). It only ever talks to the gateway:
//   GET  {url}/v1/apps/{appId}/access_token          -> {access_token, expires_in, expires_at, version}
//   POST {url}/v1/apps/{appId}/access_token:report   <- {access_token, reason}   (202: the producer replaces it)
// Neither route needs the app secret; nothing here ever calls WeChat.

const { GatewayError } = require('./errors');

const APP_ID = /^[A-Za-z0-9_.-]{1,64}$/;
// The gateway's own limits on a token (ops/gateway/_app.py: TokenText).
const TOKEN = /^[\x21-\x7e]{1,512}$/;
const MAX_ANSWER_BYTES = 64 * 1024;
const MAX_EXPIRES_IN_S = 86_400;

const DEFAULTS = Object.freeze({
  // Re-read the gateway this long before the token's expiry (WeChat tokens live 7200 s).
  marginMs: 30_000,
  // ...and at least this often: a producer's early refresh is picked up well within
  // the 5 minutes WeChat keeps the previous token alive.
  maxAgeMs: 60_000,
  // One HTTP request to the gateway.
  timeoutMs: 5_000,
  // After a report: how long to wait for the gateway to serve a different token.
  successorTimeoutMs: 10_000,
  pollIntervalMs: 250,
});

function checkOptions(options) {
  if (options === null || typeof options !== 'object') {
    throw new TypeError('gatewayTokenStore needs an options object: { url, apiKey, appId }');
  }
  const { url, apiKey, appId } = options;
  let base;
  try {
    base = new URL(url);
  } catch {
    throw new TypeError('gatewayTokenStore: url must be the gateway\'s http(s) base URL');
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') {
    throw new TypeError('gatewayTokenStore: url must be http:// or https://');
  }
  if (typeof apiKey !== 'string' || !/^[\x21-\x7e]+$/.test(apiKey)) {
    throw new TypeError('gatewayTokenStore: apiKey must be the gateway API key (printable ASCII)');
  }
  if (typeof appId !== 'string' || !APP_ID.test(appId)) {
    throw new TypeError('gatewayTokenStore: appId must be 1-64 of A-Z a-z 0-9 _ . -');
  }
  const settings = { ...DEFAULTS };
  for (const name of Object.keys(DEFAULTS)) {
    if (options[name] !== undefined) {
      if (!Number.isFinite(options[name]) || options[name] < 0) {
        throw new TypeError(`gatewayTokenStore: ${name} must be a number >= 0`);
      }
      settings[name] = options[name];
    }
  }
  const fetchImpl = options.fetch ?? globalThis.fetch;
  const now = options.now ?? Date.now;
  if (typeof fetchImpl !== 'function' || typeof now !== 'function') {
    throw new TypeError('gatewayTokenStore: fetch and now must be functions');
  }
  const root = base.href.replace(/\/+$/, '');
  const tokenUrl = `${root}/v1/apps/${appId}/access_token`;
  return { ...settings, apiKey, appId, fetchImpl, now, tokenUrl, reportUrl: `${tokenUrl}:report` };
}

/** A token's first characters, for error messages: never the whole token. */
function mask(token) {
  return `${token.slice(0, 4)}...(${token.length} chars)`;
}

/** An error worth waiting out: no answer, 429, or a 5xx. */
function isTransient(error) {
  return error.code === 'UNREACHABLE' || error.status === 429 || (error.status ?? 0) >= 500;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A store for one app's access token, read from a wxtoken gateway.
 *
 * Options: url (the gateway's base URL), apiKey (a key with the `read` scope, and `report`
 * for the retry path), appId; optional marginMs, maxAgeMs, timeoutMs, successorTimeoutMs,
 * pollIntervalMs, fetch and now (tests inject these).
 *
 * Returns { getToken, saveToken, read, report, replace }:
 * - getToken(): co-wechat-api's reader. `{accessToken, expireTime}` (expireTime in ms on this
 *   machine's clock), from memory while fresh, else from the gateway. Never a token past its
 *   expiry, never null: when no valid token can be had it throws a GatewayError, so
 *   co-wechat-api never falls back to fetching one from WeChat.
 * - saveToken(): co-wechat-api's writer; a no-op (the gateway's producer owns the token).
 * - read({fresh}): the token from the gateway now (fresh: bypass the memory).
 * - report(token, reason): tell the gateway WeChat rejected `token`; true when sent.
 * - replace(token, reason): report `token`, then wait for the gateway to serve another one.
 */
function gatewayTokenStore(options) {
  const cfg = checkOptions(options);
  let cached = null; // {accessToken, expireTime, freshUntil, version}
  let reading = null; // the gateway read in flight, shared by concurrent callers
  let rejected = null; // the last token reported as rejected: never cached again
  const replacing = new Map(); // rejected token -> the promise of its successor

  async function call(method, url, body) {
    const headers = { Authorization: `Bearer ${cfg.apiKey}`, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    let text;
    try {
      response = await cfg.fetchImpl(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(cfg.timeoutMs),
        redirect: 'error',
      });
      text = await response.text();
    } catch (cause) {
      throw new GatewayError(
        `wxtoken gateway unreachable for ${cfg.appId} (${method} ${new URL(url).pathname}): ${cause.message}`,
        { code: 'UNREACHABLE', cause },
      );
    }
    if (response.status < 200 || response.status > 299) {
      throw answerError(response, text);
    }
    if (text.length > MAX_ANSWER_BYTES) {
      throw malformed(`an answer of ${text.length} bytes`);
    }
    try {
      return JSON.parse(text);
    } catch {
      throw malformed('an answer that is not JSON');
    }
  }

  function answerError(response, text) {
    let detail = '';
    try {
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed.reason === 'string') {
        detail = `: ${parsed.error ?? 'error'}: ${parsed.reason.slice(0, 300)}`;
      }
    } catch {
      // not the gateway's JSON error: the status says enough
    }
    const retryAfter = Number(response.headers.get('retry-after'));
    return new GatewayError(
      `wxtoken gateway answered ${response.status} for ${cfg.appId}${detail}`,
      {
        code: 'HTTP_STATUS',
        status: response.status,
        retryAfterS: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
      },
    );
  }

  function malformed(what) {
    return new GatewayError(`wxtoken gateway sent ${what} for ${cfg.appId}; nothing cached`, {
      code: 'MALFORMED',
    });
  }

  /** The checked token of a read route answer, timed on this machine's clock. */
  function parseToken(answer, startedAt) {
    if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) {
      throw malformed('a token answer that is not a JSON object');
    }
    const { access_token: token, expires_in: expiresIn, expires_at: expiresAt, version } = answer;
    if (typeof token !== 'string' || !TOKEN.test(token)) {
      throw malformed('no access_token of 1-512 printable ASCII characters');
    }
    if (!Number.isInteger(expiresIn) || expiresIn < 0 || expiresIn > MAX_EXPIRES_IN_S) {
      throw malformed(`an expires_in that is not whole seconds in 0..${MAX_EXPIRES_IN_S}`);
    }
    if (typeof expiresAt !== 'number' || !Number.isFinite(expiresAt)) {
      throw malformed('an expires_at that is not a number');
    }
    if (!Number.isSafeInteger(version) || version < 0) {
      throw malformed('a version that is not a whole number');
    }
    // expires_in counts from the gateway's answer; counting it from before the request
    // went out keeps the expiry on the safe side whatever the two machines' clocks say.
    const expireTime = startedAt + expiresIn * 1000;
    if (expireTime <= cfg.now()) {
      throw new GatewayError(
        `wxtoken gateway served a token for ${cfg.appId} that expires within a second; not used`,
        { code: 'EXPIRING' },
      );
    }
    return {
      accessToken: token,
      expireTime,
      version,
      freshUntil: Math.min(expireTime - cfg.marginMs, startedAt + cfg.maxAgeMs),
    };
  }

  async function readOnce() {
    const startedAt = cfg.now();
    const token = parseToken(await call('GET', cfg.tokenUrl), startedAt);
    if (token.accessToken !== rejected) {
      cached = token;
    } else if (cached !== null && cached.accessToken === rejected) {
      cached = null;
    }
    return token;
  }

  async function read({ fresh = false } = {}) {
    if (!fresh && cached !== null && cfg.now() < cached.freshUntil) {
      return cached;
    }
    if (reading === null) {
      reading = readOnce().finally(() => {
        reading = null;
      });
    }
    try {
      return await reading;
    } catch (error) {
      // The gateway is away or overloaded: a token still valid here is still good.
      // A refusal (401, 403, 404: a revoked key, an app no longer served) is honoured: the
      // held token goes. A malformed answer is an error, and changes nothing held.
      if (isTransient(error) && cached !== null && cfg.now() < cached.expireTime) {
        return cached;
      }
      if (error.code === 'HTTP_STATUS' && !isTransient(error)) cached = null;
      throw error;
    }
  }

  async function getToken() {
    const token = await read();
    return { accessToken: token.accessToken, expireTime: token.expireTime };
  }

  async function saveToken() {
    // The gateway's producer owns the token: nothing to save, and never a fetch.
  }

  async function report(token, reason) {
    if (typeof token !== 'string' || !TOKEN.test(token)) {
      throw new TypeError('report: the rejected access token (1-512 printable ASCII)');
    }
    const body = { access_token: token };
    if (reason) body.reason = String(reason).replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 200);
    rejected = token;
    if (cached !== null && cached.accessToken === token) cached = null;
    const answer = await call('POST', cfg.reportUrl, body);
    if (answer === null || typeof answer !== 'object' || typeof answer.reported !== 'boolean') {
      throw malformed('a report answer without "reported"');
    }
    return answer.reported;
  }

  async function awaitSuccessor(token, reason) {
    await report(token, reason);
    const deadline = cfg.now() + cfg.successorTimeoutMs;
    let lastError = null;
    for (;;) {
      try {
        const served = await read({ fresh: true });
        if (served.accessToken !== token) return served;
        lastError = null;
      } catch (error) {
        if (!isTransient(error)) throw error;
        lastError = error;
      }
      if (cfg.now() >= deadline) break;
      await sleep(Math.max(0, Math.min(cfg.pollIntervalMs, deadline - cfg.now())));
    }
    throw new GatewayError(
      `wxtoken gateway served no successor of the rejected token ${mask(token)} for ${cfg.appId} ` +
        `within ${cfg.successorTimeoutMs} ms` +
        (lastError ? ` (last: ${lastError.message})` : ''),
      { code: 'NO_SUCCESSOR', cause: lastError ?? undefined },
    );
  }

  /** Report `token` as rejected and resolve with the gateway's next token (one report and
   * one wait per rejected token, however many callers saw it rejected). */
  function replace(token, reason) {
    let pending = replacing.get(token);
    if (pending === undefined) {
      pending = awaitSuccessor(token, reason).finally(() => replacing.delete(token));
      replacing.set(token, pending);
    }
    return pending;
  }

  return { getToken, saveToken, read, report, replace, appId: cfg.appId };
}

module.exports = { gatewayTokenStore, DEFAULTS, mask };
