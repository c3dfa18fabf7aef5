"""CPU per send of the twilio client: its stock HTTP client (requests) against Hearth's lean
path (the same twilio client on a urllib3 pool), in one process, one thread, the same
stand-in.

CPU time (``time.process_time``), not wall time: on a shared machine the wall clock says how
busy the neighbours are, the CPU time what a send costs. The two paths take turns in rounds
so drift weighs on both. ``--profile`` prints a cProfile summary of each path (its own
overhead inflates every figure about twofold; compare the shares, not the times).

    python -m bench.send_cpu [--sends 2000] [--rounds 4] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

from twilio.rest import Client

from bench.burst import RemoteStandIn
from bench.stock_twilio import close_stock, stock_client
from service.channels.twilio_http import close_client, make_client
from tests.peers.twilio_standin import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN


def _send(client: Client, n: int) -> float:
    """CPU milliseconds per send over ``n`` sends."""
    messages = client.messages
    t0 = time.process_time()
    for i in range(n):
        messages.create(to=f"+1415{i % 10_000_000:07d}", from_="+15005550006", body="Ritual time")
    return (time.process_time() - t0) / n * 1000


def _profile(client: Client, n: int) -> str:
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    _send(client, n)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(18)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=2000, help="per path and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with RemoteStandIn(0.0) as standin:
        clients = {
            False: stock_client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, standin.base_url, 10),
            True: make_client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, standin.base_url, 10),
        }
        for client in clients.values():
            _send(client, 50)  # warm: imports, connections
        ms: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for lean, client in clients.items():
                ms[lean].append(_send(client, args.sends))
        if args.profile:
            for lean, client in clients.items():
                print(f"--- {'lean' if lean else 'stock'} path, cProfile ---")
                print(_profile(client, args.sends))
        close_client(clients[True])
        close_stock(clients[False])
    stock_ms, lean_ms = (sorted(ms[k])[len(ms[k]) // 2] for k in (False, True))
    spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in ms.items()}
    print(f"stock twilio client (requests): {stock_ms:.2f} ms CPU per send ({spread[False]})")
    print(f"lean path (urllib3 pool):       {lean_ms:.2f} ms CPU per send ({spread[True]})")
    print(f"lean / stock: {lean_ms / stock_ms:.0%} of the CPU, {stock_ms / lean_ms:.2f}x per core")


if __name__ == "__main__":
    main()
