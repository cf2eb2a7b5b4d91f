'use strict';

const { gatewayTokenStore, DEFAULTS } = require('./lib/store');
const { routeRetriesThroughGateway } = require('./lib/co-wechat-api');
const { GatewayError } = require('./lib/errors');

module.exports = { gatewayTokenStore, routeRetriesThroughGateway, GatewayError, DEFAULTS };
