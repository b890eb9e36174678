#!/usr/bin/env node
/*
 * sigv4-verifier.js - an HTTP proxy of the local lab that checks AWS
 * Signature Version 4 on every request before forwarding it.
 *
 * s3rver and dynalite implement S3 and DynamoDB well enough to test modules
 * against, but accept any signature.  Put this proxy in front of one of
 * them and point the client at the proxy: each request is verified
 * independently with the aws4 package (the secret is looked up by access
 * key id, the signature recomputed over the signed headers, and compared),
 * the payload hash in x-amz-content-sha256 is checked against the body,
 * the request date must be within --max-skew-s of the clock, and only
 * requests that pass are forwarded.  A bad one is answered 403 in the
 * service's error format (S3: XML, others: JSON), never forwarded.
 *
 *   node sigv4-verifier.js --upstream http://127.0.0.1:4568 \
 *        --credentials S3RVER:S3RVER [--credentials AKID:SECRET ...] \
 *        [--listen 127.0.0.1:0] [--port-file FILE] [--latency-ms N] \
 *        [--max-skew-s 900] [--no-verify]
 *
 * --latency-ms delays every forwarded request (to widen the window in
 * which a test stops the upstream); --no-verify makes it a plain counting
 * proxy (for peers that check their own signatures, such as azurite).
 *
 * Control endpoints (never forwarded, never verified):
 *   GET  /_verifier/stats   {"received", "verified", "forwarded", "rejected",
 *                            "upstream_errors", "rejections": [last 20 reasons]}
 *   POST /_verifier/reset   zero the counters
 *   POST /_verifier/latency?ms=N   set --latency-ms while running
 *
 * Prints "sigv4-verifier listening on http://HOST:PORT -> UPSTREAM" once
 * listening.  SIGTERM/SIGINT stop it.
 */
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');

let aws4;
try {
  aws4 = require(path.join(__dirname, 'npm', 'node_modules', 'aws4'));
} catch (e) {
  aws4 = require('aws4');
}

function usage(msg) {
  if (msg) process.stderr.write(`sigv4-verifier: ${msg}\n`);
  process.stderr.write('usage: sigv4-verifier.js --upstream URL --credentials KEY:SECRET ' +
    '[--listen HOST:PORT] [--port-file FILE] [--latency-ms N] [--max-skew-s S] [--no-verify]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { listen: '127.0.0.1:0', credentials: {}, latencyMs: 0, maxSkewS: 900, verify: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--upstream') o.upstream = new URL(val());
    else if (a === '--listen') o.listen = val();
    else if (a === '--port-file') o.portFile = val();
    else if (a === '--latency-ms') o.latencyMs = Number(val());
    else if (a === '--max-skew-s') o.maxSkewS = Number(val());
    else if (a === '--no-verify') o.verify = false;
    else if (a === '--credentials') {
      const c = val(), colon = c.indexOf(':');
      if (colon <= 0) usage('--credentials wants KEY:SECRET');
      o.credentials[c.slice(0, colon)] = c.slice(colon + 1);
    } else if (a === '-h' || a === '--help') usage();
    else usage(`unknown option ${a}`);
  }
  if (!o.upstream || o.upstream.protocol !== 'http:') usage('--upstream http://HOST:PORT is required');
  if (o.verify && Object.keys(o.credentials).length === 0) usage('--credentials is required');
  if (!(o.latencyMs >= 0) || !(o.maxSkewS > 0)) usage('bad --latency-ms or --max-skew-s');
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const stats = { received: 0, verified: 0, forwarded: 0, rejected: 0, upstream_errors: 0, rejections: [] };

const AUTH_RE = new RegExp('^AWS4-HMAC-SHA256 Credential=([^/,\\s]+)/(\\d{8})/([^/,\\s]+)/' +
  '([^/,\\s]+)/aws4_request,\\s*SignedHeaders=([a-z0-9;_.-]+),\\s*Signature=([0-9a-f]{64})$');
const AMZ_DATE_RE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;

/* Why a request fails verification: { status, code, message } or null. */
function verify(req, body) {
  const auth = req.headers.authorization;
  if (!auth) return { code: 'MissingAuthenticationToken', message: 'Request is missing Authentication Token' };
  const m = AUTH_RE.exec(auth);
  if (!m) return { code: 'IncompleteSignature', message: `Authorization header is not a SigV4 header: ${auth.slice(0, 80)}` };
  const [, accessKey, scopeDate, region, service, signedList, signature] = m;
  const secret = opts.credentials[accessKey];
  if (secret === undefined) return { code: 'InvalidAccessKeyId', message: `The access key id ${accessKey} is not known` };

  const signed = signedList.split(';');
  if (signed.join(';') !== [...signed].sort().join(';')) return { code: 'IncompleteSignature', message: 'SignedHeaders are not sorted' };
  if (!signed.includes('host')) return { code: 'IncompleteSignature', message: 'host is not a signed header' };
  if (!signed.includes('x-amz-date')) return { code: 'IncompleteSignature', message: 'x-amz-date is not a signed header' };
  const headers = {}, include = Object.create(null);
  for (const h of signed) {
    if (req.headers[h] === undefined) return { code: 'IncompleteSignature', message: `signed header ${h} is missing` };
    headers[h] = req.headers[h];
    include[h] = true;
  }

  const amzDate = req.headers['x-amz-date'];
  const dm = AMZ_DATE_RE.exec(amzDate);
  if (!dm) return { code: 'IncompleteSignature', message: `bad x-amz-date ${amzDate}` };
  if (amzDate.slice(0, 8) !== scopeDate) return { code: 'SignatureDoesNotMatch', message: 'credential scope date differs from x-amz-date' };
  const when = Date.UTC(+dm[1], +dm[2] - 1, +dm[3], +dm[4], +dm[5], +dm[6]);
  if (Math.abs(Date.now() - when) > opts.maxSkewS * 1000) return { code: 'RequestTimeTooSkewed', message: `x-amz-date ${amzDate} is too far from the server time` };

  const payloadHash = req.headers['x-amz-content-sha256'];
  if (payloadHash !== undefined && payloadHash !== 'UNSIGNED-PAYLOAD') {
    const actual = crypto.createHash('sha256').update(body).digest('hex');
    if (payloadHash !== actual) return { code: 'XAmzContentSHA256Mismatch', message: 'x-amz-content-sha256 does not match the body' };
  } else if (payloadHash === undefined && service === 's3') {
    return { code: 'InvalidRequest', message: 'Missing required header for this request: x-amz-content-sha256' };
  }

  const signer = new aws4.RequestSigner({
    method: req.method, path: req.url, host: req.headers.host, headers, body,
    service, region, doNotModifyHeaders: true, extraHeadersToInclude: include,
  }, { accessKeyId: accessKey, secretAccessKey: secret });
  signer.prepareRequest();
  signer.datetime = amzDate; // the request's own date, never the clock
  if (signer.signedHeaders() !== signedList) return { code: 'SignatureDoesNotMatch', message: 'SignedHeaders differ from the canonical list' };
  const expected = signer.signature();
  if (!crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(signature))) {
    return { code: 'SignatureDoesNotMatch', message: 'The request signature we calculated does not match the signature you provided. Check your key and signing method.' };
  }
  return null;
}

function serviceOf(req) {
  const m = AUTH_RE.exec(req.headers.authorization || '');
  if (m) return m[4];
  return req.headers['x-amz-target'] ? 'dynamodb' : 's3';
}

function xmlEscape(s) {
  return String(s).replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/* The error types the JSON protocols (DynamoDB, ...) answer for each case. */
const JSON_ERRORS = {
  MissingAuthenticationToken: 'MissingAuthenticationTokenException',
  IncompleteSignature: 'IncompleteSignatureException',
  InvalidAccessKeyId: 'UnrecognizedClientException',
  SignatureDoesNotMatch: 'InvalidSignatureException',
  RequestTimeTooSkewed: 'InvalidSignatureException',
  XAmzContentSHA256Mismatch: 'InvalidSignatureException',
  InvalidRequest: 'ValidationException',
};

function reject(req, res, why) {
  stats.rejected++;
  stats.rejections.push(`${req.method} ${req.url}: ${why.code}: ${why.message}`);
  if (stats.rejections.length > 20) stats.rejections.shift();
  let body, type;
  if (serviceOf(req) === 's3') {
    type = 'application/xml';
    body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${xmlEscape(why.code)}</Code>` +
      `<Message>${xmlEscape(why.message)}</Message><Resource>${xmlEscape(req.url)}</Resource></Error>`;
  } else {
    type = 'application/x-amz-json-1.0';
    body = JSON.stringify({ __type: `com.amazon.coral.service#${JSON_ERRORS[why.code] || why.code}`, message: why.message });
  }
  res.writeHead(403, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function forward(req, res, body) {
  const headers = { ...req.headers, 'content-length': String(body.length) };
  if (body.length === 0 && req.headers['content-length'] === undefined) delete headers['content-length'];
  delete headers['transfer-encoding'];
  const up = http.request({
    host: opts.upstream.hostname, port: opts.upstream.port || 80,
    method: req.method, path: req.url, headers,
  }, (ur) => {
    stats.forwarded++;
    res.writeHead(ur.statusCode, ur.headers);
    ur.pipe(res);
  });
  up.on('error', (e) => {
    stats.upstream_errors++;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const msg = `upstream ${opts.upstream.host}: ${e.message}`;
    res.writeHead(502, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(msg) });
    res.end(msg);
  });
  up.end(body);
}

function control(req, res) {
  let body;
  if (req.method === 'GET' && req.url === '/_verifier/stats') {
    body = JSON.stringify(stats);
  } else if (req.method === 'POST' && req.url === '/_verifier/reset') {
    Object.assign(stats, { received: 0, verified: 0, forwarded: 0, rejected: 0, upstream_errors: 0, rejections: [] });
    body = JSON.stringify(stats);
  } else if (req.method === 'POST' && /^\/_verifier\/latency\?ms=\d+$/.test(req.url)) {
    opts.latencyMs = Number(req.url.split('=')[1]);
    body = JSON.stringify({ latency_ms: opts.latencyMs });
  } else {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('no such control endpoint\n');
    return;
  }
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/_verifier/')) {
    req.resume();
    req.on('end', () => control(req, res));
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    stats.received++;
    if (opts.verify) {
      let why;
      try {
        why = verify(req, body);
      } catch (e) {
        why = { code: 'SignatureDoesNotMatch', message: `cannot verify: ${e.message}` };
      }
      if (why) {
        reject(req, res, why);
        return;
      }
      stats.verified++;
    }
    if (opts.latencyMs > 0) setTimeout(() => forward(req, res, body), opts.latencyMs);
    else forward(req, res, body);
  });
});

const colon = opts.listen.lastIndexOf(':');
const host = opts.listen.slice(0, colon).replace(/^\[|\]$/g, '');
const port = Number(opts.listen.slice(colon + 1));
server.keepAliveTimeout = 30000;
server.listen(port, host, () => {
  const addr = server.address();
  if (opts.portFile) {
    fs.writeFileSync(`${opts.portFile}.tmp`, `${addr.port}\n`);
    fs.renameSync(`${opts.portFile}.tmp`, opts.portFile);
  }
  process.stdout.write(`sigv4-verifier listening on http://${host}:${addr.port} -> ${opts.upstream.href}` +
    `${opts.verify ? '' : ' (not verifying)'}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
