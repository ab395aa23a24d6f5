"""The cost of ``import todo_observability``, and what it pulls in.

Each measurement is ``python -X importtime -c "import <module>"`` in a fresh
interpreter; the figure is the cumulative time of the top-level module
(median over runs, interleaved). A separate interpreter lists which heavy
modules ``import todo_observability`` left in ``sys.modules``.

    python -m benchmarks.import_time --runs 7
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: What is measured, in the order reported: the standard library's typing
#: (the bulk of our import, and imported by any FastAPI app anyway), the
#: package itself, then for scale what its first use (configure) imports, and FastAPI.
STATEMENTS = (
    "import typing",
    "import todo_observability",
    "from todo_observability import configure",
    "import fastapi",
)
#: Modules that ``import todo_observability`` must not import.
FORBIDDEN = ("fastapi", "dapr")
#: Modules reported for information.
WATCHED = (
    "fastapi",
    "dapr",
    "starlette",
    "opentelemetry",
    "prometheus_client",
    "pythonjsonlogger",
    "httpx",
    "pluggy",
    "orjson",
)
_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\| ( *)(\S+)")


@dataclass
class ImportResult:
    runs: int
    ms: dict[str, list[float]] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)
    module_count: int = 0

    def median(self, statement: str) -> float:
        return statistics.median(self.ms[statement])

    @property
    def forbidden_loaded(self) -> list[str]:
        return [m for m in self.loaded if m in FORBIDDEN]


def _importtime(statement: str) -> list[tuple[int, str, int]]:
    """(nesting depth, module, cumulative µs) of each import `statement` runs in a fresh python."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    return [
        (len(indent) // 2, name, int(cumulative))
        for _, cumulative, indent, name in _LINE.findall(out)
    ]


def startup_modules() -> frozenset[str]:
    """What the interpreter imports before running any statement (site, encodings, ...)."""
    return frozenset(name for _, name, _ in _importtime("pass"))


def import_ms(statement: str, startup: frozenset[str]) -> float:
    """Total import time of `statement` in ms: its top-level imports, startup ones excluded."""
    return (
        sum(c for depth, name, c in _importtime(statement) if depth == 0 and name not in startup)
        / 1000
    )


def loaded_modules() -> tuple[list[str], int]:
    code = (
        "import sys, json; before = set(sys.modules); import todo_observability; "
        f"watched = {WATCHED!r}; "
        "print(json.dumps([sorted(m for m in watched if m in sys.modules), "
        "len(set(sys.modules) - before)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    loaded, count = json.loads(out)
    return list(loaded), int(count)


def run(runs: int = 7) -> ImportResult:
    result = ImportResult(runs)
    startup = startup_modules()
    for _ in range(runs):
        for statement in STATEMENTS:
            result.ms.setdefault(statement, []).append(import_ms(statement, startup))
    result.loaded, result.module_count = loaded_modules()
    return result


def format_result(result: ImportResult) -> str:
    out = ["| statement | ms (median) | min-max |", "|---|---:|---:|"]
    for statement, values in result.ms.items():
        out.append(
            f"| `{statement}` | {statistics.median(values):.1f} | {min(values):.1f}-{max(values):.1f} |"
        )
    out.append("")
    out.append(
        f"`import todo_observability` adds {result.module_count} modules; of {', '.join(WATCHED)} "
        f"it loads: {', '.join(result.loaded) or 'none'}."
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    print(format_result(run(args.runs)))


if __name__ == "__main__":
    main()
