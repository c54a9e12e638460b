#!/usr/bin/env python3
"""Minimal HTTP BitTorrent tracker for loopback benchmarks (scripts/compare).

Usage: tracker.py [--port 0]   (prints "listening on 127.0.0.1:PORT" on stderr)

Answers GET /announce with a bencoded dict carrying a compact peer list (BEP 23) of every
other peer that announced the same info_hash. Peers are kept in memory, never expire while
the tracker runs, and "event=stopped" removes a peer. Binds 127.0.0.1 only.
"""
import argparse, socket, struct, sys, threading, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PEERS = {}  # info_hash -> {(ip, port): left}
LOCK = threading.Lock()


def bencode(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, dict):
        return b"d" + b"".join(bencode(k) + bencode(x[k]) for k in sorted(x)) + b"e"
    raise TypeError(type(x))


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        # Values such as info_hash are raw bytes, percent-encoded: decode to bytes, not str.
        q = {}
        for part in url.query.split("&"):
            k, _, v = part.partition("=")
            q.setdefault(k, urllib.parse.unquote_to_bytes(v))
        get = lambda k: q.get(k, b"")
        try:
            if url.path != "/announce":
                raise ValueError("unknown path")
            info_hash, port = get("info_hash"), int(get("port"))
            if len(info_hash) != 20:
                raise ValueError("bad info_hash")
            left = int(get("left") or 0)
            ip = self.client_address[0]
            with LOCK:
                swarm = PEERS.setdefault(info_hash, {})
                if get("event") == b"stopped":
                    swarm.pop((ip, port), None)
                else:
                    swarm[(ip, port)] = left
                others = [p for p in swarm if p != (ip, port)]
                seeders = sum(1 for v in swarm.values() if v == 0)
            compact = b"".join(socket.inet_aton(h) + struct.pack(">H", pt) for h, pt in others)
            body = bencode({"interval": 30, "min interval": 5, "complete": seeders,
                            "incomplete": len(swarm) - seeders, "peers": compact})
        except Exception as e:  # noqa: BLE001 - any bad request gets a failure reason
            body = bencode({"failure reason": str(e)})
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(f"listening on 127.0.0.1:{srv.server_address[1]}", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
