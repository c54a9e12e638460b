#!/usr/bin/python3
"""Headless libtorrent-rasterbar client for loopback benchmarks (scripts/compare).

libtorrent-rasterbar is the engine of qBittorrent and Deluge; this is a thin driver over its
official Python bindings (Debian's python3-libtorrent), so the transfer itself is entirely
libtorrent's C++ code. Run with Debian's /usr/bin/python3 (the bindings live there).

  lt_client.py seed --torrent T --dir D --port P      seed D/<name> until SIGTERM
  lt_client.py get  --torrent T --dir D --port P      download into D, exit 0 when complete

Both ends use libtorrent's `high_performance_seed` preset, with DHT, LSD, UPnP, NAT-PMP and
encryption off, several connections per IP allowed (every peer is 127.0.0.1) and peers
found through the torrent's tracker. The seeder prints "seeding on ..." on stderr once it
has checked its data; `get` exits once every piece has passed libtorrent's SHA-1 check, the
disk threads have written everything and the files are closed.
"""
import argparse, signal, sys, time

import libtorrent as lt


def settings(port):
    s = lt.high_performance_seed()
    s.update({
        "listen_interfaces": f"127.0.0.1:{port}",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_incoming_utp": False, "enable_outgoing_utp": False,
        "out_enc_policy": lt.enc_policy.disabled, "in_enc_policy": lt.enc_policy.disabled,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
        "stop_tracker_timeout": 1,
        "user_agent": "furymesh-compare/libtorrent-" + lt.__version__,
    })
    return s


def wait_for(ses, alert_type, deadline):
    while time.monotonic() < deadline:
        ses.wait_for_alert(200)
        if any(isinstance(x, alert_type) for x in ses.pop_alerts()):
            return
    raise SystemExit(f"lt_client: timed out waiting for {alert_type.__name__}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["seed", "get"])
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    ses = lt.session(settings(a.port))
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(a.torrent)
    p.save_path = a.dir
    # No seed_mode: a seeder checks its data when added (before "seeding" is printed, so
    # outside any measurement) instead of hashing each piece on its first upload, which
    # would charge the check to the first download's seeder CPU.
    h = ses.add_torrent(p)
    deadline = time.monotonic() + a.timeout
    announced = False
    while not stop:
        if time.monotonic() > deadline:
            print("lt_client: timed out", file=sys.stderr)
            return 1
        ses.wait_for_alert(200)
        for al in ses.pop_alerts():
            if isinstance(al, (lt.torrent_error_alert, lt.file_error_alert)):
                print(f"lt_client: {al.message()}", file=sys.stderr)
                return 1
            if isinstance(al, lt.listen_failed_alert):
                print(f"lt_client: {al.message()}", file=sys.stderr)
                return 1
        st = h.status()
        if a.mode == "seed":
            if not announced and st.is_seeding:
                print(f"seeding on 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
                announced = True
        elif st.is_seeding:
            # Every piece has passed its hash check, but writes may still be queued in
            # libtorrent's disk threads: wait for them before saying done, then remove the
            # torrent (closes the files) and let the session shut down normally (it sends
            # the tracker its "stopped" event).
            h.flush_cache()
            wait_for(ses, lt.cache_flushed_alert, deadline)
            ses.remove_torrent(h)
            wait_for(ses, lt.torrent_removed_alert, deadline)
            del ses
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
