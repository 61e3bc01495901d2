#!/usr/bin/env python3
"""Saves nalcast's raw WebSocket stream (/ws/raw: one Annex-B NAL unit per binary
message) to an .h264 file that ffmpeg reads, for the packaging smoke test.
Standard library only, so it runs wherever the packages are built.

    ws_capture.py ws://127.0.0.1:PORT/ws/raw OUT.h264 SECONDS
Prints the number of messages and bytes saved. OUT "-" writes to standard output,
each NAL unit as it comes (a live source for another nalcast: `--source
exec:ws_capture.py URL - 3600`, a camera that cannot make keyframes on demand),
and the count to standard error.
"""
import base64
import os
import socket
import struct
import sys
import time
import urllib.parse


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def main():
    url, out_path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    u = urllib.parse.urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += read_exact(sock, 1)
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        sys.exit(f"ws_capture: handshake refused: {status.decode(errors='replace')}")
    end = time.monotonic() + seconds
    messages = size = 0
    message = b""
    live = out_path == "-"
    with (os.fdopen(os.dup(1), "wb", buffering=0) if live else open(out_path, "wb")) as out:
        while time.monotonic() < end:
            sock.settimeout(max(0.1, end - time.monotonic()))
            try:
                b0, b1 = read_exact(sock, 2)
            except socket.timeout:
                break
            sock.settimeout(30)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", read_exact(sock, 2))
            elif length == 127:
                (length,) = struct.unpack(">Q", read_exact(sock, 8))
            payload = read_exact(sock, length)
            opcode = b0 & 0x0F
            if opcode == 8:
                break
            if opcode in (0, 2):
                message += payload
                if b0 & 0x80:
                    out.write(message)
                    messages += 1
                    size += len(message)
                    message = b""
    print(f"{messages} messages, {size} bytes", file=sys.stderr if live else sys.stdout)


if __name__ == "__main__":
    main()
