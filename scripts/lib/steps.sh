# Sourced by scripts that run long: `step "what"` says when a step starts and how
# long the one before took; `$started` is when the script began.
started=$SECONDS
step_started=$SECONDS
step() {
    if ((SECONDS > started)); then
        echo "   ($((SECONDS - step_started)) s)"
    fi
    step_started=$SECONDS
    echo "== $*"
}
