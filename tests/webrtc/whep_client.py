#!/usr/bin/env python3
"""A third-party WHEP (RFC 9725) player for the tests: aiortc, not our own code.

    whep_client.py URL --seconds N [--out FILE.json] [--header 'Name: value' ...]

Offers a recvonly H.264 video transceiver (all ICE candidates in the offer, no
STUN/TURN), POSTs it to URL, plays the answer's video for N seconds after the
first decoded frame (failing when none comes within 10 s), reads the test
pattern's stamp off each frame (crates/core/src/stamp.rs), then DELETEs the
session's Location. Prints (or writes to --out) one JSON object:
  frames, width, height, stamps (frame number or null per decoded frame),
  first_frame_ms (POST to first decoded frame), first_stamp_age_ms (wall clock
  minus the first frame's capture time), delete_status, answer_has_h264, and
  location (the header as the server sent it; DELETE goes to it resolved against URL),
  packets_received and packets_lost (the receiver's RTP counts), dropped (RTP
  datagrams thrown away by --drop-every) and nacks (RTCP NACKs sent, by aiortc).
--drop-every N throws away every Nth RTP datagram as it arrives, before SRTP (as
a lossy network would): what the server sends again on the NACKs makes up for it.
When URL's host is loopback the offer has a loopback candidate too (aioice leaves
loopback out): a server on this machine or in a namespace with only lo is reached.
Exit status 0 when frames came, 1 with the reason on stderr otherwise.
Runs with the venv of scripts/setup-webrtc-client.sh:
  "${XDG_CACHE_HOME:-$HOME/.cache}/nalcast/aiortc-venv/bin/python"
"""
import argparse
import asyncio
import ipaddress
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

FIRST_FRAME_TIMEOUT = 10.0  # seconds from the POST
HTTP_TIMEOUT = 10.0

# The stamp (crates/core/src/stamp.rs): two rows of 40 cells, each cell
# width // 40 pixels wide and 16 high, from the frame's top left corner; 80 bits,
# most significant first: frame number (4 bytes, big-endian), low 40 bits of the
# capture time in µs since the epoch (5 bytes), check byte (XOR of the 9, from 0xA5).
CELLS_PER_ROW = 40
ROW_HEIGHT = 16
BITS = 80
TIME_MASK = (1 << 40) - 1


def read_stamp(luma, width, stride):
    """(frame, time_low40) from a luma plane (bytes-like, rows `stride` apart), or
    None when unreadable or the check byte fails; a port of Stamp::read."""
    cw = width // CELLS_PER_ROW
    if cw == 0:
        return None
    b = bytearray(10)
    for i in range(BITS):
        row, col = divmod(i, CELLS_PER_ROW)
        at = (row * ROW_HEIGHT + ROW_HEIGHT // 2) * stride + col * cw + cw // 2
        if at >= len(luma):
            return None
        if luma[at] >= 128:  # between black 16 and white 235
            b[i // 8] |= 0x80 >> (i % 8)
    check = 0xA5
    for x in b[:9]:
        check ^= x
    if check != b[9]:
        return None
    return int.from_bytes(b[:4], "big"), int.from_bytes(b[4:9], "big")


def capture_us_near(time_low40, now_us):
    """The full capture time: the value with these low 40 bits nearest to now_us."""
    base = now_us & ~TIME_MASK
    candidates = [(base + d) | time_low40 for d in (-(1 << 40), 0, 1 << 40)]
    return min(candidates, key=lambda c: abs(c - now_us))


def fail(message):
    print(f"whep_client: {message}", file=sys.stderr)
    sys.exit(1)


def http(method, url, headers, body=None):
    """(status, headers, body) of one request; HTTP errors are answers too."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def allow_loopback_candidates(url):
    """aioice gathers host candidates on every interface but leaves out 127.0.0.1
    and ::1 (aioice.ice.get_host_addresses). A server reached on loopback may offer
    only loopback candidates, and a network namespace may have nothing else: add
    the loopback address of the URL's family then."""
    import aioice.ice

    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        ip = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError:
        return
    if not ip.is_loopback:
        return
    loopback = "::1" if ip.version == 6 else "127.0.0.1"
    original = aioice.ice.get_host_addresses

    def with_loopback(use_ipv4, use_ipv6):
        return original(use_ipv4, use_ipv6) + [loopback]

    aioice.ice.get_host_addresses = with_loopback


def lose_packets(every, loss):
    """Throw away every `every`-th RTP datagram before SRTP sees it, and count the
    NACKs aiortc sends for them."""
    import aioice.ice
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    # aiortc's ICE transport reads its datagrams with aioice's Connection.recv.
    receive = aioice.ice.Connection.recv
    seen = 0

    async def lossy(self):
        nonlocal seen
        while True:
            data = await receive(self)
            # RTP, not RTCP (RFC 5761: RTCP's packet types 192-223 in byte 2).
            if len(data) > 1 and 128 <= data[0] < 192 and not 64 <= data[1] & 0x7F < 96:
                seen += 1
                if seen % every == 0:
                    loss["dropped"] += 1
                    continue
            return data

    aioice.ice.Connection.recv = lossy
    send_nack = RTCRtpReceiver._send_rtcp_nack

    async def counted(self, media_ssrc, lost):
        loss["nacks"] += 1
        await send_nack(self, media_ssrc, lost)

    RTCRtpReceiver._send_rtcp_nack = counted


def has_h264(sdp):
    """Whether a video m-section of the SDP maps a payload type to H264."""
    for section in re.split(r"\r?\n(?=m=)", sdp):
        h264 = re.search(r"^a=rtpmap:\d+ H264/90000", section, re.M | re.I)
        if section.startswith("m=video") and h264:
            return True
    return False


async def play(args, headers):
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    allow_loopback_candidates(args.url)
    loss = {"dropped": 0, "nacks": 0}
    if args.drop_every:
        lose_packets(args.drop_every, loss)
    # No ICE servers: aiortc's default is a public STUN server.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track_future = asyncio.get_running_loop().create_future()
    failed = asyncio.get_running_loop().create_future()  # set when ICE/DTLS fails

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "failed" and not failed.done():
            failed.set_result(None)

    @pc.on("track")
    def on_track(track):
        if track.kind == "video" and not track_future.done():
            track_future.set_result(track)

    transceiver = pc.addTransceiver("video", direction="recvonly")
    h264 = [c for c in RTCRtpReceiver.getCapabilities("video").codecs if c.name == "H264"]
    if h264:
        transceiver.setCodecPreferences(h264)
    # aiortc's setLocalDescription returns once ICE gathering is complete, so the
    # offer carries all candidates (WHEP without trickle).
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp

    started = time.monotonic()
    post_headers = dict(headers, **{"Content-Type": "application/sdp"})
    try:
        status, answer_headers, body = await asyncio.to_thread(
            http, "POST", args.url, post_headers, offer.encode()
        )
    except (OSError, urllib.error.URLError) as e:
        await pc.close()
        fail(f"POST {args.url} failed: {getattr(e, 'reason', e)}")
    content_type = (answer_headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if status != 201 or content_type != "application/sdp":
        await pc.close()
        text = body.decode("utf-8", "replace").strip()
        fail(f"POST {args.url} answered {status} ({content_type or 'no Content-Type'}), "
             f"not 201 application/sdp: {text[:2000]}")
    answer = body.decode("utf-8", "replace")
    location = answer_headers.get("Location")
    if not location:
        print("whep_client: the answer has no Location header", file=sys.stderr)
    result = {
        "frames": 0, "width": None, "height": None, "stamps": [],
        "first_frame_ms": None, "first_stamp_age_ms": None, "delete_status": None,
        "answer_has_h264": has_h264(answer), "location": location,
        "packets_received": None, "packets_lost": None, "dropped": 0, "nacks": 0,
    }

    error = None
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        track = await asyncio.wait_for(track_future, 1.0)
        deadline = started + FIRST_FRAME_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            recv = asyncio.ensure_future(track.recv())
            await asyncio.wait({recv, failed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if not recv.done():  # out of time, or the connection failed
                recv.cancel()
                break
            try:
                frame = recv.result()
            except MediaStreamError:  # the track ended: the server closed the session
                print("whep_client: the video track ended", file=sys.stderr)
                break
            now_us = time.time_ns() // 1000
            plane = frame.planes[0]  # Y of yuv420p, rows line_size apart
            stamp = read_stamp(memoryview(plane), frame.width, plane.line_size)
            if result["frames"] == 0:
                result["first_frame_ms"] = round((time.monotonic() - started) * 1000, 1)
                deadline = time.monotonic() + args.seconds
                if stamp is not None:
                    age = now_us - capture_us_near(stamp[1], now_us)
                    result["first_stamp_age_ms"] = round(age / 1000, 1)
            result["frames"] += 1
            result["width"], result["height"] = frame.width, frame.height
            result["stamps"].append(None if stamp is None else stamp[0])
        # RTP continuity: what the receiver counted (RFC 3550's cumulative loss).
        for stats in (await transceiver.receiver.getStats()).values():
            if stats.type == "inbound-rtp":
                result["packets_received"] = stats.packetsReceived
                result["packets_lost"] = stats.packetsLost
        if result["frames"] == 0:
            error = (f"no video frame (ICE {pc.iceConnectionState}, connection "
                     f"{pc.connectionState}, {time.monotonic() - started:.1f} s after the POST)")
    except Exception as e:  # e.g. an answer without a codec of the offer: OperationError
        error = f"the answer could not be played: {type(e).__name__}: {e}"
    finally:
        result.update(loss)
        if location:
            session = urllib.parse.urljoin(args.url, location)
            try:
                result["delete_status"] = (await asyncio.to_thread(http, "DELETE", session, headers))[0]
            except (OSError, urllib.error.URLError) as e:
                print(f"whep_client: DELETE {session} failed: {getattr(e, 'reason', e)}", file=sys.stderr)
        await pc.close()
    return result, error


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out")
    parser.add_argument("--drop-every", type=int, default=0, metavar="N")
    parser.add_argument("--header", action="append", default=[], metavar="'Name: value'")
    args = parser.parse_args()
    headers = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            parser.error(f"--header {h!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()

    result, error = asyncio.run(play(args, headers))
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    if error or result["frames"] == 0:
        fail(error or "no video frame")


if __name__ == "__main__":
    main()
