#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_window_log: segment files of the window log
(cbn/store.c): magic u32 | length u32 | time_ns u64 | crc32c u32 | payload,
little-endian, CRC-32C over length, time_ns and payload."""
import struct, sys, os

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF

MAGIC = 0x4C574D53

def record(time_ns, payload):
    body = struct.pack('<IQ', len(payload), time_ns)
    crc = crc32c(body + payload)
    return struct.pack('<I', MAGIC) + body + struct.pack('<I', crc) + payload

assert crc32c(b'123456789') == 0xE3069283
out = sys.argv[1]
one = record(1_700_000_030_000_000_000, b'window 1: frontend p99 12.5 ms')
three = b''.join(record(1_700_000_000_000_000_000 + i * 30_000_000_000,
                        bytes((i * 7 + k) & 0xff for k in range(20 + 40 * i)))
                 for i in range(3))
files = {
    'one': one,
    'three': three,
    'torn': three[:-17],
    'bad-crc': three[:len(three) // 2] + bytes([three[len(three) // 2] ^ 1])
               + three[len(three) // 2 + 1:],
    'empty': b'',
    'huge-length': one + struct.pack('<IIQI', MAGIC, 0xFFFFFFF0, 5, 0) + b'x' * 8,
}
for name, data in files.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)
