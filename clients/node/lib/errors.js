'use strict';

/**
 * What went wrong talking to the gateway. `code` is one of:
 * UNREACHABLE (no answer), HTTP_STATUS (a non-2xx answer: see `status`, `retryAfterS`),
 * MALFORMED (an answer that is not what the gateway's API promises), EXPIRING (a token
 * with under a second left), NO_SUCCESSOR (a reported token was not replaced in time).
 * Messages never hold the API key or a whole token.
 */
class GatewayError extends Error {
  constructor(message, { code, status, retryAfterS, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'GatewayError';
    this.code = code;
    if (status !== undefined) this.status = status;
    if (retryAfterS !== undefined) this.retryAfterS = retryAfterS;
  }
}

module.exports = { GatewayError };
