'use strict';

// Fake servers on 127.0.0.1 for the unit tests: a wxtoken gateway whose answers a test
// scripts, and a fake WeChat that accepts one token at a time. Both record every request.

const http = require('node:http');

function listen(handler) {
  const requests = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => {
      const seen = { method: req.method, url: req.url, headers: req.headers, body };
      requests.push(seen);
      handler(seen, res);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}`,
        requests,
        close: () =>
          new Promise((done) => {
            server.closeAllConnections();
            server.close(done);
          }),
      });
    });
  });
}

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(text);
}

/** A gateway for one app: `answers` is a queue of read answers ({status, body, headers});
 * when it is empty the last one repeats. Reports answer `report` (default 202). */
async function fakeGateway({ answers = [], report = { status: 202 } } = {}) {
  const queue = [...answers];
  let last = null;
  const reports = [];
  const server = await listen((req, res) => {
    if (req.method === 'POST' && req.url.endsWith(':report')) {
      reports.push(JSON.parse(req.body));
      const app = req.url.split('/')[3];
      send(res, report.status, report.body ?? { app_id: app, reported: true });
      return;
    }
    if (req.method !== 'GET') {
      send(res, 405, { error: 'method_not_allowed', reason: req.method });
      return;
    }
    const answer = queue.length > 0 ? queue.shift() : last;
    last = answer;
    if (answer === null) {
      send(res, 503, { error: 'unavailable', reason: 'nothing scripted' });
      return;
    }
    send(res, answer.status ?? 200, answer.body, answer.headers);
  });
  return {
    ...server,
    reports,
    reads: () => server.requests.filter((r) => r.method === 'GET').length,
  };
}

function tokenBody(token, { expiresIn = 7000, version = 1, nowS = Date.now() / 1000 } = {}) {
  return { access_token: token, expires_in: expiresIn, expires_at: nowS + expiresIn, version };
}

/** A fake WeChat: getcallbackip answers for the one token in `accepted.token`, else 40001. */
async function fakeWeChat(accepted) {
  return listen((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname === '/cgi-bin/getcallbackip') {
      if (url.searchParams.get('access_token') === accepted.token) {
        send(res, 200, { ip_list: ['127.0.0.1'] });
      } else {
        send(res, 200, {
          errcode: 40001,
          errmsg: 'invalid credential, access_token is invalid or not latest',
        });
      }
      return;
    }
    send(res, 200, { errcode: 40125, errmsg: 'invalid appsecret' });
  });
}

module.exports = { fakeGateway, fakeWeChat, tokenBody, listen, send };
