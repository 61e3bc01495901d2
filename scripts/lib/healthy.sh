# Sourced by the benchmark scripts: `healthy URL WHO [SECONDS]` waits until nalcast's
# /healthz at URL (http or https, a self-signed certificate taken) says ok, or says
# which nalcast did not start (WHO) and ends the script.
healthy() {
    local url=$1 who=$2 tries=$((${3:-10} * 10))
    for _ in $(seq "$tries"); do
        curl -sfk "$url/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$who did not become healthy" >&2
    exit 1
}

# `stop_server VAR`: stops the nalcast whose PID the variable named VAR holds, if
# any, waits for it, and empties VAR (safe to call twice, as an EXIT trap does).
stop_server() {
    local -n server_pid_ref=$1
    if [[ -n ${server_pid_ref:-} ]]; then
        kill "$server_pid_ref" 2>/dev/null || true
        wait "$server_pid_ref" 2>/dev/null || true
        server_pid_ref=""
    fi
}
