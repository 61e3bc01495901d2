#!/usr/bin/env python3
"""The memory attacks of issue 27, against a running nalcast, for measuring by hand:
each runs for a while from many loopback addresses (127.0.x.y), prints what it
saw, and meanwhile samples nalcast's resident memory (VmRSS of --pid) every 0.2 s.

    scripts/attacks.py --pid PID --addr 127.0.0.1:8000 password-flood [--auth USER:PW]
    scripts/attacks.py --pid PID --addr 127.0.0.1:8000 slow-segments [--readers 4000]
    scripts/attacks.py --pid PID --addr 127.0.0.1:8000 header-flood [--conns 4000]

scripts/attack.sh runs nalcast under `prlimit --as=1500000000` (a small device's
address-space limit) with a normal viewer beside the attack; this script only
attacks. password-flood also asks as the owner (--owner, from 127.1.0.1) every
half second and counts the answers.
"""
import argparse
import asyncio
import base64
import re
import sys
import time


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


async def sample(pid, stop, peak):
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kib(pid))
        await asyncio.sleep(0.2)


def local(i):
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


async def open_from(i, host, port):
    return await asyncio.open_connection(host, port, local_addr=(local(i), 0))


async def password_flood(a):
    """Many connections sending the same wrong password again and again (keep-alive)."""
    host, port = a.addr.rsplit(":", 1)
    cred = base64.b64encode(a.guess.encode()).decode()
    req = (f"GET /api/stream HTTP/1.1\r\nHost: {a.addr}\r\n"
           f"Authorization: Basic {cred}\r\n\r\n").encode()
    statuses = {}
    deadline = time.monotonic() + a.seconds

    async def one(i):
        while time.monotonic() < deadline:
            try:
                r, w = await open_from(i % a.addresses, host, int(port))
                while time.monotonic() < deadline:
                    w.write(req)
                    head = await r.readuntil(b"\r\n\r\n")
                    status = head.split(b" ", 2)[1].decode()
                    statuses[status] = statuses.get(status, 0) + 1
                    m = re.search(rb"content-length: *(\d+)", head, re.I)
                    if m:
                        await r.readexactly(int(m.group(1)))
                w.close()
            except (OSError, asyncio.IncompleteReadError):
                statuses["closed"] = statuses.get("closed", 0) + 1
                await asyncio.sleep(0.05)

    owner = {}

    async def owner_asks():
        # The owner, from an address of its own, every half second.
        good = base64.b64encode(a.owner.encode()).decode()
        while time.monotonic() < deadline:
            try:
                r, w = await asyncio.open_connection(host, int(port), local_addr=("127.1.0.1", 0))
                w.write((f"GET /api/stream HTTP/1.1\r\nHost: {a.addr}\r\nConnection: close\r\n"
                         f"Authorization: Basic {good}\r\n\r\n").encode())
                status = (await r.readuntil(b"\r\n")).split(b" ", 2)[1].decode()
                w.close()
            except (OSError, asyncio.IncompleteReadError):
                status = "closed"
            owner[status] = owner.get(status, 0) + 1
            await asyncio.sleep(0.5)

    await asyncio.gather(owner_asks(), *(one(i) for i in range(a.conns)))
    return f"answers: {dict(sorted(statuses.items()))}; the owner's: {owner}"


async def slow_segments(a):
    """Readers that ask for the newest complete segment and read it 1 byte a second."""
    host, port = a.addr.rsplit(":", 1)
    r, w = await asyncio.open_connection(host, int(port))
    w.write(f"GET /hls/index.m3u8 HTTP/1.1\r\nHost: {a.addr}\r\nConnection: close\r\n\r\n".encode())
    playlist = (await r.read()).decode(errors="replace")
    w.close()
    segs = re.findall(r"^([^#\s][^\s]*/s\d+\.m4s)", playlist, re.M)
    if not segs:
        return f"no segment in the playlist: {playlist[:300]}"
    path = "/hls/" + segs[-1]
    held, refused = [], {}

    async def one(i):
        try:
            rr, ww = await open_from(i, host, int(port))
            # A tiny receive buffer, so the server's copy waits in nalcast.
            sock = ww.get_extra_info("socket")
            import socket as s
            sock.setsockopt(s.SOL_SOCKET, s.SO_RCVBUF, 1024)
            ww.write(f"GET {path} HTTP/1.1\r\nHost: {a.addr}\r\n\r\n".encode())
            head = await asyncio.wait_for(rr.readuntil(b"\r\n\r\n"), 20)
            status = head.split(b" ", 2)[1].decode()
            if status != "200":
                refused[status] = refused.get(status, 0) + 1
                ww.close()
                return
            held.append((rr, ww))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            refused[type(e).__name__] = refused.get(type(e).__name__, 0) + 1

    for start in range(0, a.readers, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(a.readers, start + 200))))
    await asyncio.sleep(a.seconds)
    n = len(held)
    for _, ww in held:
        ww.close()
    return f"segment {path}: {n} readers held, refused {refused}"


async def header_flood(a):
    """Connections that send large unfinished request headers and never finish."""
    host, port = a.addr.rsplit(":", 1)
    held, errors = [], {}
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"

    async def one(i):
        try:
            rr, ww = await open_from(i, host, int(port))
            ww.write(f"GET / HTTP/1.1\r\nHost: {a.addr}\r\n".encode())
            sent = 0
            while sent < a.bytes:
                ww.write(line)
                sent += len(line)
                await ww.drain()
            held.append(ww)
        except (OSError, ConnectionError) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1

    for start in range(0, a.conns, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(a.conns, start + 200))))
    await asyncio.sleep(a.seconds)
    for ww in held:
        ww.close()
    return f"{len(held)} connections sent {a.bytes} header bytes each, errors {errors}"


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--addr", required=True)
    p.add_argument("--seconds", type=float, default=5)
    sub = p.add_subparsers(dest="attack", required=True)
    f = sub.add_parser("password-flood")
    f.add_argument("--guess", default="ann:the same wrong password")
    f.add_argument("--owner", default="ann:right password")
    f.add_argument("--conns", type=int, default=200)
    f.add_argument("--addresses", type=int, default=200)
    s = sub.add_parser("slow-segments")
    s.add_argument("--readers", type=int, default=4000)
    h = sub.add_parser("header-flood")
    h.add_argument("--conns", type=int, default=4000)
    h.add_argument("--bytes", type=int, default=120_000)
    a = p.parse_args()
    before = rss_kib(a.pid)
    stop, peak = asyncio.Event(), [before]
    sampler = asyncio.create_task(sample(a.pid, stop, peak))
    attack = {"password-flood": password_flood, "slow-segments": slow_segments,
              "header-flood": header_flood}[a.attack]
    result = await attack(a)
    stop.set()
    await sampler
    after = rss_kib(a.pid)
    alive = rss_kib(a.pid) > 0
    print(f"{a.attack}: {result}")
    print(f"VmRSS before {before // 1024} MB, peak {peak[0] // 1024} MB, after {after // 1024} MB; nalcast {'alive' if alive else 'GONE'}")


if __name__ == "__main__":
    asyncio.run(main())
