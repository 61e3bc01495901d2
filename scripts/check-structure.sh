#!/usr/bin/env bash
# What the crate layout promises, checked (make test runs this; docs/architecture.md
# says why): the pipeline crate, nalcast-core, links none of the I/O edges' crates,
# so its tests build without a C codec, an RTSP client or process control; and each
# metric series is named once (scripts/check-metrics.py).
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
edge_crates='retina openh264 openh264-sys2 nix url'
linked=$(cargo tree --locked -p nalcast-core -e normal,dev --prefix none 2>/dev/null \
    | awk '{print $1}' | sort -u)
[[ -n $linked ]] || { echo "FAILED: cargo tree -p nalcast-core printed nothing" >&2; exit 1; }
for crate in $edge_crates; do
    if grep -qx "$crate" <<<"$linked"; then
        echo "FAILED: nalcast-core links $crate; I/O belongs in nalcast-sources" \
            "(cargo tree -p nalcast-core -e normal,dev -i $crate says through what)" >&2
        status=1
    fi
done
[[ $status -ne 0 ]] || echo "ok: nalcast-core links none of: $edge_crates"
scripts/check-metrics.py || status=1
exit $status
