#!/usr/bin/env bash
# Installs the third-party WebRTC client of the WHEP tests (tests/webrtc/whep_client.py):
# aiortc in a Python venv of its own, once; quiet and quick when it is there.
#   scripts/setup-webrtc-client.sh
# The tests run it as "${XDG_CACHE_HOME:-$HOME/.cache}/nalcast/aiortc-venv/bin/python".
set -euo pipefail

# Versions known to work together: aiortc 1.16.0 wants av >= 14 and < 20; av 18.1.0
# has a manylinux wheel with its own FFmpeg (H.264 decoder included) for Python 3.11.
aiortc=1.16.0
av=18.1.0
venv="${XDG_CACHE_HOME:-$HOME/.cache}/nalcast/aiortc-venv"
# Written last, named by the versions: a changed pin or a broken install reinstalls.
marker="$venv/.installed-aiortc-$aiortc-av-$av"
[[ -f "$marker" && -x "$venv/bin/python" ]] && exit 0

echo "setup: installing aiortc $aiortc (av $av) into $venv"
# Debian's python3 has no venv module (ensurepip) without python3-venv.
if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed"; then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
rm -f "$venv"/.installed-aiortc-*
/usr/bin/python3 -m venv "$venv"
# Wheels only: nothing is compiled, so no FFmpeg or OpenSSL headers are needed.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
    "aiortc==$aiortc" "av==$av" >/dev/null
"$venv/bin/python" -c 'import aiortc, av' || { echo "setup: aiortc did not install" >&2; exit 1; }
touch "$marker"
