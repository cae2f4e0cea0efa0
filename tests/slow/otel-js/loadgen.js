'use strict';
// Sends GET requests to the front service of the chain; not traced itself,
// so the frontend's SERVER spans are the roots of the traces.
//
//   node loadgen.js --url URL --requests N --concurrency C --window-ms W
//
// sagemesh cuts event time into windows aligned on multiples of W and
// closes one when it sees an event 1 s (the test's --lateness) past its end.
// To keep the test independent of how fast the SDKs export, the load starts
// 200 ms into a window (waiting for the next one when the current window is
// older than that) and sends no new request later than 9/10 of the window
// into it. No event can then reach 1 s past the window's end, so the peer
// closes no window before the test flushes it: no span arrives late and
// every CLIENT span is paired with its SERVER span. Prints one JSON line:
// {"sent":N,"ok":N,"failed":N,"first_ms":T,"last_ms":T,"window_start_ms":T}
// and exits 0 (the caller judges the numbers).

const http = require('node:http');
const { parseArgs } = require('node:util');

const { values: opt } = parseArgs({
    options: {
        url: { type: 'string' },
        requests: { type: 'string', default: '300' },
        concurrency: { type: 'string', default: '4' },
        'window-ms': { type: 'string', default: '5000' },
    },
});
const total = Number(opt.requests);
const concurrency = Number(opt.concurrency);
const windowMs = Number(opt['window-ms']);
if (!opt.url || !(total > 0) || !(concurrency > 0) || !(windowMs > 0)) {
    console.error('usage: loadgen.js --url URL --requests N --concurrency C --window-ms W');
    process.exit(2);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });

function get(url) {
    return new Promise((resolve) => {
        const req = http.get(url, { agent, timeout: 10000 }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode === 200));
            res.on('error', () => resolve(false));
        });
        req.on('timeout', () => req.destroy(new Error('timeout')));
        req.on('error', (err) => {
            console.error(`request failed: ${err.message}`);
            resolve(false);
        });
    });
}

async function main() {
    const margin = 200;
    let now = Date.now();
    while (now % windowMs < margin || now % windowMs > margin + 300) {
        const wait = (windowMs + margin - (now % windowMs)) % windowMs;
        await new Promise((r) => setTimeout(r, Math.max(wait, 1)));
        now = Date.now();
    }
    const windowStart = now - (now % windowMs);
    const stopAt = windowStart + (windowMs * 9) / 10;
    const result = { sent: 0, ok: 0, failed: 0, first_ms: now, last_ms: 0,
                     window_start_ms: windowStart };
    async function worker() {
        while (result.sent < total && Date.now() < stopAt) {
            result.sent++;
            if (await get(opt.url)) {
                result.ok++;
            } else {
                result.failed++;
            }
        }
    }
    await Promise.all(Array.from({ length: concurrency }, worker));
    result.last_ms = Date.now();
    agent.destroy();
    console.log(JSON.stringify(result));
}

main();
