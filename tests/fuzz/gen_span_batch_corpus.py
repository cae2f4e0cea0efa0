#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_span_batch: span batches as node/span_route.h
describes them, "SPB" 0x01 | n_spans v | n_strings v | strings (len v | bytes)
| spans (trace_id 16 | span_id 8 | parent_id 8 | start u64 | end u64 | kind u8
| error u8 | service, instance, operation, peer as string ids v), little-endian,
v a minimal LEB128 varint, the strings distinct in first-use order. Written
apart from the C encoder so that the unit test checks one against the other.
Usage: gen_span_batch_corpus.py tests/fuzz/corpus/span_batch"""
import os
import struct
import sys


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def batch(spans):
    table, ids = [], {}
    refs = []
    for s in spans:
        for field in ('service', 'instance', 'operation', 'peer'):
            text = s[field].encode()
            if text not in ids:
                ids[text] = len(table)
                table.append(text)
            refs.append(ids[text])
    out = bytearray(b'SPB\x01')
    out += varint(len(spans)) + varint(len(table))
    for text in table:
        out += varint(len(text)) + text
    for i, s in enumerate(spans):
        out += s['trace'] + s['span'] + s['parent']
        out += struct.pack('<QQBB', s['start'], s['end'], s['kind'], s['error'])
        for r in refs[4 * i:4 * i + 4]:
            out += varint(r)
    return bytes(out)


CLIENT, SERVER = 3, 2
T0 = 1_700_000_000_000_000_000
TRACE = bytes.fromhex('ddd32ae4915f570ff3b6077ee2305301')
one = batch([{
    'trace': TRACE, 'span': bytes(range(1, 9)), 'parent': bytes(8),
    'start': T0, 'end': T0 + 12_500_000, 'kind': CLIENT, 'error': 1,
    'service': 'frontend', 'instance': 'pod-a', 'operation': 'GET /api/cart',
    'peer': 'cart'}])

spans = []
for i in range(5):
    spans.append({
        'trace': TRACE if i < 3 else bytes([i]) * 16,
        'span': struct.pack('<Q', 100 + i),
        'parent': struct.pack('<Q', 99 + i) if i else bytes(8),
        'start': T0 + i * 1000, 'end': T0 + i * 1000 + 500 * (i + 1),
        'kind': SERVER if i % 2 else CLIENT, 'error': 0,
        'service': ['frontend', 'cart', 'redis'][i % 3],
        'instance': '' if i % 2 else 'pod-b',
        'operation': ['GET /api/cart', '/api/:id', 'Cart/Add'][i % 3],
        'peer': 'cart' if i % 2 == 0 else ''})
many = batch(spans)
empty = batch([])

bad_kind = bytearray(one)
bad_kind[len(one) - 4 - 2] = 6
repeat = (b'SPB\x01\x01\x02\x01a\x01a' + TRACE + bytes(16)
          + struct.pack('<QQBB', 5, 9, 0, 0) + b'\x00\x01\x00\x00')
files = {
    'one': one,
    'many': many,
    'empty': empty,
    'bad-version': b'SPB\x02' + one[4:],
    'truncated': many[:len(many) // 2],
    'trailing': one + b'\x00',
    'bad-kind': bytes(bad_kind),
    'repeat-string': repeat,
    'huge-count': b'SPB\x01' + varint(1 << 40) + b'\x00',
}
for name, data in files.items():
    with open(os.path.join(sys.argv[1], name), 'wb') as f:
        f.write(data)
