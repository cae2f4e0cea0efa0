'use strict';
// Compares the peer's view of the service graph with the chain the test ran.
//
//   node check.js --status status.json [--services services.json]
//                 --expect frontend:middle,cache --expect backend: ...
//
// One --expect per service: NAME:CALLEE,CALLEE (nothing after the colon for
// a leaf). Checks /v1/status: the CBN holds exactly these services, none
// inferred, each with "parents" = its number of distinct callees (a callee's
// latency is a cause of its caller's). With --services, checks /v1/services:
// exactly these services, with exactly these callers and callees. Prints a
// "# ..." line per check; exits 1 on the first mismatch.

const fs = require('node:fs');
const { parseArgs } = require('node:util');

const { values: opt } = parseArgs({
    options: {
        status: { type: 'string' },
        services: { type: 'string' },
        expect: { type: 'string', multiple: true, default: [] },
    },
});

function fail(msg) {
    console.log(`not ok - ${msg}`);
    process.exit(1);
}

const callees = new Map();
for (const e of opt.expect) {
    const [name, list] = e.split(':');
    callees.set(name, [...new Set((list || '').split(',').filter(Boolean))].sort());
}
const callers = new Map([...callees.keys()].map((n) => [n, []]));
for (const [name, list] of callees) {
    for (const c of list) {
        if (!callers.has(c)) {
            fail(`--expect: callee ${c} of ${name} has no --expect of its own`);
        }
        callers.get(c).push(name);
    }
}
for (const list of callers.values()) {
    list.sort();
}
const names = [...callees.keys()].sort();
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

function read(file) {
    try {
        return JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (err) {
        fail(`${file}: not JSON: ${err.message}`);
    }
}

const status = read(opt.status);
const nodes = (status.cbn && status.cbn.nodes) || [];
const got = nodes.map((n) => n.name).sort();
if (!same(got, names)) {
    fail(`CBN nodes ${JSON.stringify(got)}, expected ${JSON.stringify(names)}`);
}
for (const n of nodes) {
    if (n.inferred) {
        fail(`CBN node ${n.name} is inferred`);
    }
    const want = callees.get(n.name).length;
    if (n.parents !== want) {
        fail(`CBN node ${n.name} has ${n.parents} parents, expected ${want}`);
    }
}
console.log(`# /v1/status: CBN version ${status.cbn.version}, nodes ` +
    nodes.map((n) => `${n.name}(parents=${n.parents})`).sort().join(' '));

if (opt.services) {
    const svc = read(opt.services);
    const list = svc.services || [];
    const gotNames = list.map((s) => s.name).sort();
    if (!same(gotNames, names)) {
        fail(`/v1/services lists ${JSON.stringify(gotNames)}, expected ${JSON.stringify(names)}`);
    }
    for (const s of list) {
        const ce = [...(s.callees || [])].sort();
        const cr = [...(s.callers || [])].sort();
        if (!same(ce, callees.get(s.name))) {
            fail(`/v1/services: ${s.name} callees ${JSON.stringify(ce)}, expected ` +
                JSON.stringify(callees.get(s.name)));
        }
        if (!same(cr, callers.get(s.name))) {
            fail(`/v1/services: ${s.name} callers ${JSON.stringify(cr)}, expected ` +
                JSON.stringify(callers.get(s.name)));
        }
        if (s.inferred) {
            fail(`/v1/services: ${s.name} is inferred`);
        }
    }
    console.log('# /v1/services: ' + list.map((s) => s.name).sort().map(
        (n) => `${n}<-[${callers.get(n)}] ->[${callees.get(n)}]`).join(' '));
}
