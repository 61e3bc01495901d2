#!/usr/bin/env python3
"""Writes /etc/nalcast/nalcast.toml for the .deb from the options table in
docs/configuration.md (itself checked against the flags by nalcast's tests), so
the packaged file names every option nalcast has: each commented out, at its
default, with what it does.

    packaging/tools/conffile.py            print the file
    packaging/tools/conffile.py --check    fail if packaging/nalcast.toml is stale
"""
import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "configuration.md"
OUT = ROOT / "packaging" / "nalcast.toml"

# Keys whose default is not a value a file can hold: the line shows an example.
EXAMPLES = {
    "source": '"rpicam"',
    "camera": "1",
    "stream": '["garden=rtsp://user:password@garden-cam.lan/stream1", "desk=usb"]',
    "legacy-listen": '"off"',
    "max-connections": "4096",
    "max-connections-per-ip": "256",
    "viewer-threads": "4",
    "allow-origin": '["http://dashboard.lan:3000"]',
    "frame-ancestors": '["http://homeassistant.lan:8123"]',
    "public-host": '["camera.example.com"]',
    "webrtc": '"0.0.0.0:8189"',
    "webrtc-public-ip": '["203.0.113.7"]',
    "trusted-proxy": '["127.0.0.1"]',
    "tls": '"off"',
    "tls-cert": '"/etc/nalcast/cert.pem"',
    "tls-key": '"/etc/nalcast/key.pem"',
    "data-dir": '"/var/lib/nalcast"',
    "auth": '"ann:$argon2id$v=19$..."',
    "token": '"a-token-of-16-or-more-characters"',
    "publish": '["rtmp://media.lan/live/camera"]',
}
# A line more for the settings a Pi owner changes first.
HINTS = {
    "source": 'With a Raspberry Pi camera: source = "rpicam"; a USB webcam: source = "usb" (nalcast --list-cameras shows them)',
    "stream": "Or, with settings per camera, [[stream]] tables: see the end of this file.",
    "tls": 'For WebCodecs (hardware decoding) in browsers on other machines: tls = "self-signed"',
    "auth": "Make the hash with: echo 'my password' | nalcast --hash-password",
    "data-dir": "The service sets it to /var/lib/nalcast (systemd's StateDirectory).",
}

HEADER = """\
# nalcast settings for the nalcast service (/usr/bin/nalcast --config this file).
#
# Each key is a flag of `nalcast --help` without the dashes. Every option is listed
# below, commented out at its default (or, marked "e.g.", with an example); remove
# the '#' to set one, then: sudo systemctl restart nalcast
# An unknown key or a bad value stops nalcast with one line naming it:
# journalctl -u nalcast shows it. This file is kept as it is on upgrades."""

FOOTER = """\
## Several cameras
#
# One [[stream]] table per camera, instead of source: each is served at
# /streams/NAME/ and the page at / shows them all; the first also at the plain
# URLs and on the legacy port 9000. A table takes name, source, and any of width,
# height, fps, bitrate, keyframe-interval, camera, rotation, hflip, vflip,
# rtsp-transport, hls, publish, on-demand, idle-timeout and max-viewers; what it
# leaves out comes from the settings above. Check the file with
# nalcast --config /etc/nalcast/nalcast.toml --check, then:
# sudo systemctl reload nalcast (streams not changed keep playing). The example
# below: remove the "# " before its lines (and the source line above).
#
# [[stream]]
# name = "printer"
# source = "rpicam"
#
# [[stream]]
# name = "desk"
# source = "usb"
# width = 640
# height = 480
# on-demand = "on"
#
# [[stream]]
# name = "garden"
# source = "rtsp://user:password@garden-cam.lan/stream1"
# publish = ["rtmp://media.lan/live/garden"]"""


def rows():
    text = DOCS.read_text()
    table = text.split("<!-- options:start -->")[1].split("<!-- options:end -->")[0]
    for line in table.splitlines():
        if line.startswith("### "):
            yield "topic", line[4:], None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) != 4 or not cells[1].startswith("`"):
            continue  # header, separator, and flags with no file key
        key = cells[1].strip("`")
        yield key, cells[2], cells[3].replace("\\|", "|").replace("\\*", "*")


def render():
    out = [HEADER]
    topic = None
    for key, default, what in rows():
        if key == "topic":
            topic = default  # shown above its first key (General has none)
            continue
        if topic:
            out += ["", "", f"## {topic}"]
            topic = None
        literal = re.fullmatch(r"`([^`]*)`", default)
        if literal:
            value = literal.group(1)
            line = f"#{key} = {value if re.fullmatch(r'[0-9]+', value) else chr(34) + value + chr(34)}"
        elif key in EXAMPLES:
            note = "" if default == "—" else f" (default: {default})"
            line = f"#{key} = {EXAMPLES[key]}   # e.g.{note}"
        else:
            sys.exit(f"conffile: no example for '{key}' (default {default!r}): add one to EXAMPLES in {__file__}")
        what = re.sub(r"`([^`]*)`", r"\1", what)
        out.append("")
        out += textwrap.wrap(what, 84, initial_indent="# ", subsequent_indent="# ")
        if key in HINTS:
            out.append(f"# {HINTS[key]}")
        out.append(line)
    out += ["", ""] + FOOTER.splitlines()
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    text = render()
    if sys.argv[1:] == ["--check"]:
        if OUT.read_text() != text:
            sys.exit(f"conffile: {OUT.relative_to(ROOT)} is out of date: run packaging/tools/conffile.py > {OUT.relative_to(ROOT)}")
    else:
        sys.stdout.write(text)
