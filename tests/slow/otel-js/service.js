'use strict';
// One HTTP service of the test chain, traced by the OpenTelemetry JS SDK and
// exporting OTLP/HTTP JSON to a sagemesh peer (tests/slow/test_otel_js.sh).
//
//   node service.js --name NAME --otlp http://127.0.0.1:P/v1/traces
//                   [--gzip] [--call http://127.0.0.1:Q/path ...]
//
// Listens on 127.0.0.1 on an ephemeral port and prints "listening port=N".
// Every request calls each --call URL (in parallel) and answers 200, or 502
// when a callee failed. On SIGTERM or SIGINT it shuts the SDK down (which
// exports every span still queued), prints
//   stats name=NAME ended=E exported=X failed=F batches=B
// and exits 0; exit 1 when the shutdown failed or timed out.

const { parseArgs } = require('node:util');

const { values: opt } = parseArgs({
    options: {
        name: { type: 'string' },
        otlp: { type: 'string' },
        gzip: { type: 'boolean', default: false },
        call: { type: 'string', multiple: true, default: [] },
    },
});
if (!opt.name || !opt.otlp) {
    console.error('usage: service.js --name NAME --otlp URL [--gzip] [--call URL ...]');
    process.exit(2);
}

// The SDK first: the http instrumentation patches the module when it is
// first required, so 'http' is required only after registration.
const { diag, DiagConsoleLogger, DiagLogLevel } = require('@opentelemetry/api');
const { ExportResultCode } = require('@opentelemetry/core');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { NodeTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-node');

// Export failures (a 415, a refused connection) show in this process's log.
diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN);

const stats = { ended: 0, exported: 0, failed: 0, batches: 0 };

// Counts what the SDK handed to the exporter and what the peer acknowledged.
const otlp = new OTLPTraceExporter({
    url: opt.otlp, // http/json: this package serializes OTLP as JSON
    compression: opt.gzip ? 'gzip' : 'none',
    timeoutMillis: 10000,
});
const exporter = {
    export(spans, done) {
        otlp.export(spans, (result) => {
            stats.batches++;
            if (result.code === ExportResultCode.SUCCESS) {
                stats.exported += spans.length;
            } else {
                stats.failed += spans.length;
                console.error(`export of ${spans.length} spans failed: ${result.error}`);
            }
            done(result);
        });
    },
    forceFlush() {
        return otlp.forceFlush();
    },
    shutdown() {
        return otlp.shutdown();
    },
};
// Counts every span that ended, so that a span dropped before export (a full
// queue) shows as ended != exported.
const counter = {
    onStart() {},
    onEnd() {
        stats.ended++;
    },
    forceFlush() {
        return Promise.resolve();
    },
    shutdown() {
        return Promise.resolve();
    },
};

const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({
        'service.name': opt.name,
        'service.instance.id': `${opt.name}-${process.pid}`,
    }),
    spanProcessors: [
        counter,
        new BatchSpanProcessor(exporter, {
            maxQueueSize: 16384,
            maxExportBatchSize: 512,
            scheduledDelayMillis: 200,
            exportTimeoutMillis: 10000,
        }),
    ],
});
provider.register();
registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [new HttpInstrumentation()],
});

const http = require('http');

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

function get(url) {
    return new Promise((resolve, reject) => {
        const req = http.get(url, { agent, timeout: 10000 }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c) => (body += c));
            res.on('end', () => {
                if (res.statusCode === 200) {
                    resolve(body);
                } else {
                    reject(new Error(`${url}: status ${res.statusCode}`));
                }
            });
            res.on('error', reject);
        });
        req.on('timeout', () => req.destroy(new Error(`${url}: timeout`)));
        req.on('error', reject);
    });
}

const server = http.createServer((req, res) => {
    req.resume();
    Promise.all(opt.call.map(get)).then(
        (bodies) => {
            res.writeHead(200, { 'Content-Type': 'application/json' });
            res.end(JSON.stringify({ service: opt.name, calls: bodies.length }));
        },
        (err) => {
            console.error(`${opt.name}: ${err.message}`);
            res.writeHead(502, { 'Content-Type': 'text/plain' });
            res.end(err.message);
        }
    );
});
// Longer than any pause in the test, so that a kept-alive connection is never
// closed under a caller that is about to reuse it.
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => {
    console.log(`listening port=${server.address().port}`);
});

let stopping = false;
function stop() {
    if (stopping) {
        return;
    }
    stopping = true;
    server.close();
    server.closeAllConnections();
    const deadline = setTimeout(() => {
        console.error(`${opt.name}: SDK shutdown timed out`);
        process.exit(1);
    }, 20000);
    provider.shutdown().then(
        () => {
            clearTimeout(deadline);
            console.log(
                `stats name=${opt.name} ended=${stats.ended} exported=${stats.exported}` +
                    ` failed=${stats.failed} batches=${stats.batches}`
            );
            process.exit(0);
        },
        (err) => {
            console.error(`${opt.name}: SDK shutdown failed: ${err}`);
            process.exit(1);
        }
    );
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
