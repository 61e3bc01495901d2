#!/usr/bin/env python3
"""One book of metrics, checked (scripts/check-structure.sh runs this).

Each series is a `Series` constant defined once beside what it counts
(crates/core/src/metric.rs says how). In the crates' non-test code:
  - a series name is spelt in one file only, where it is defined;
  - nothing calls the metrics macros but crates/core/src/metric.rs;
  - every defined series is in the start-up list (server/series.rs, ALL);
  - every listed series is emitted somewhere (not only registered at 0);
and every series the scripts and docs read from /metrics is one.
Exit status 1 and one line per finding when any of them fails.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BOOK = "crates/core/src/metric.rs"
LIST = "crates/nalcast/src/server/series.rs"
# `nalcast_…` strings that are not metric names.
NOT_METRICS = {"nalcast_token"}  # the token cookie (server/auth.rs)

DEFINITION = re.compile(
    r"pub const (\w+): (?:[\w:]*::)?Series\s*=\s*(?:[\w:]*::)?Series::(?:counter|gauge|histogram)\(\s*\"(nalcast_[a-z0-9_]+)\"",
    re.S,
)
NAME = re.compile(r"\"(nalcast_[a-z0-9_]+)\"")
MACRO = re.compile(r"\bmetrics::(?:describe_)?(?:counter|gauge|histogram)!")
EMIT = r"\b{}\s*\.(?:count|count_as|gauge_now|gauge_in|gauge_as|observe|observe_as)(?:_in)?\("


def non_test(text: str) -> str:
    """The file without its unit-test modules (`#[cfg(test)]` and what follows it at
    the same indentation: in this tree, a file's tests come last)."""
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n(?:pub(?:\(crate\))? )?mod ", text, re.M)
    return text[: cut.start()] if cut else text


def main() -> int:
    sources = {
        str(p.relative_to(ROOT)): non_test(p.read_text())
        for p in sorted(ROOT.glob("crates/*/src/**/*.rs"))
    }
    failures = []
    defined = {}  # constant name -> (series name, file)
    for path, text in sources.items():
        for const, name in DEFINITION.findall(text):
            if const in defined:
                failures.append(f"{path}: {const} is also defined in {defined[const][1]}")
            defined[const] = (name, path)
    names = {name for name, _ in defined.values()}
    if len(names) != len(defined):
        failures.append("two Series constants share a name")

    for path, text in sources.items():
        if path != BOOK and MACRO.search(text):
            failures.append(f"{path}: calls a metrics macro; count through a Series constant")
        for name in set(NAME.findall(text)) - NOT_METRICS:
            if name not in names:
                failures.append(f"{path}: \"{name}\" is not a defined series (a typo, or define it as a Series)")
            else:
                home = next(p for n, p in defined.values() if n == name)
                if home != path:
                    failures.append(f"{path}: spells \"{name}\", defined in {home}; use the constant")

    # A defined name inside any other string (a log line, a help text) is a second
    # spelling too; comments may name series.
    for path, text in sources.items():
        code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
        for name, home in ((n, p) for n, p in defined.values()):
            if home != path and re.search(rf"\"[^\"\n]*\b{name}\b[^\"\n]*\"", code):
                failures.append(f"{path}: mentions {name} in a string; use the constant's .name")

    listed = sources[LIST]
    for const, (name, path) in sorted(defined.items()):
        if not re.search(rf"\b{const},", listed):
            failures.append(f"{path}: {const} ({name}) is not registered in {LIST}")
        emitted = any(
            re.search(EMIT.format(const), text) for p, text in sources.items() if p != LIST
        )
        if not emitted:
            failures.append(f"{path}: {const} ({name}) is registered but nothing counts it")

    # Scripts and docs read series by name from /metrics: each name they spell must
    # be a series (a histogram's _bucket, _count and _sum included).
    readers = sorted(ROOT.glob("scripts/*.sh")) + sorted(ROOT.glob("scripts/*.py")) \
        + sorted(ROOT.glob("docs/*.md")) + [ROOT / "README.md"]
    for reader in readers:
        for token in set(re.findall(r"\bnalcast_[a-z0-9_]*[a-z0-9]", reader.read_text())):
            base = re.sub(r"_(bucket|count|sum)$", "", token)
            looks_like_metric = base in names or re.search(r"_(total|seconds)$", base)
            if looks_like_metric and base not in names:
                failures.append(f"{reader.relative_to(ROOT)}: reads {token}, which is no series")

    if not defined:
        failures.append("no Series constants found: has the definition syntax changed?")
    for line in failures:
        print(f"FAILED: {line}", file=sys.stderr)
    if not failures:
        print(f"ok: {len(defined)} metric series, each named once, registered and emitted")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
