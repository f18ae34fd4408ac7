#!/usr/bin/env python3
"""Writes the seed streams in fuzz/seeds/fcgi/ (run from anywhere).

`webauth::fcgi::fuzz_input` reads its first byte as the read size
(1 + 97 * byte) and serves the rest as FastCGI connections; each seed is one
such byte and a well-formed stream.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fcgi")


def rec(kind, rid, content=b""):
    pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBB", 1, kind, rid, len(content), pad, 0) + content + b"\0" * pad


def length(n):
    return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)


def pairs(d):
    return b"".join(length(len(k)) + length(len(v)) + k + v for k, v in d)


def begin(rid, role=1, keep=False):
    return rec(1, rid, struct.pack(">HB5x", role, 1 if keep else 0))


def request(rid, params, body=b"", role=1, keep=False):
    p = pairs([(k.encode(), v.encode()) for k, v in params])
    out = begin(rid, role, keep) + rec(4, rid, p) + rec(4, rid)
    if body:
        out += rec(5, rid, body)
    return out + rec(5, rid)


POST = [("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "11"), ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
        ("SCRIPT_NAME", "/login"), ("HTTP_HOST", "example.org"), ("WEBAUTH_MOUNT", "/")]
GET = [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/index"), ("QUERY_STRING", "next=/x")]

SEEDS = {
    "post": (0xFF, request(1, POST, b"username=jo")),
    "post_byte_reads": (0x00, request(1, POST, b"username=jo")),
    "keep_conn_two_requests": (0x01, request(1, GET, keep=True) + request(2, POST, b"username=jo", keep=True)),
    "authorizer": (0x2A, request(7, [("REQUEST_METHOD", "GET"), ("HTTP_COOKIE", "webauth=x")], role=2)),
    "get_values": (0xFF, rec(9, 0, pairs([(b"FCGI_MAX_CONNS", b""), (b"FCGI_MAX_REQS", b""), (b"FCGI_MPXS_CONNS", b"")]))),
    "abort": (0x03, begin(3, keep=True) + rec(4, 3, pairs([(b"REQUEST_METHOD", b"POST")])) + rec(2, 3) + request(4, GET)),
    "unknown_role_and_type": (0xFF, begin(5, role=9) + rec(11, 0, b"\x42" * 8) + rec(4, 5) + request(6, GET, role=3)),
    "short_body": (0x10, request(1, [("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "99")], b"abc")),
    "two_connections": (0x05, request(1, GET) + request(1, POST, b"username=jo")),
}

os.makedirs(OUT, exist_ok=True)
for name in os.listdir(OUT):
    os.remove(os.path.join(OUT, name))
for name, (read_size, stream) in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([read_size]) + stream)
