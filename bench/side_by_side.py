"""Two trees measured at the same time: this checkout's ``bench.run`` and another's, started together, so the
shared host's drift (which moved the cpu scenario by up to 30% within 20 minutes, docs/performance.md) hits both
alike. Each stack runs on its own embedded servers and free ports, and counts only its own processes.

    git worktree add /tmp/base REV && ln -s "$PWD/.venv" /tmp/base/.venv
    python -m bench.side_by_side /tmp/base [--runs 3] [--scenarios cpu] [--only direct_] [bench.run's options]

Prints, for every figure both report: the other tree's and this tree's median (min to max), and the median of
the per-run ratios (this / other), which is the figure to quote for a change. Both stacks share the cores,
so absolute figures run higher than either alone; the ratio is the comparison. Every run keeps its ledger.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from orchestrator.embedded import PROJECT_DIR


def _start(tree: Path, scenarios: str, options: list[str]) -> subprocess.Popen:
    python = tree / ".venv" / "bin" / "python"
    return subprocess.Popen(
        [str(python), "-m", "bench.run", "--runs", "1", "--scenarios", scenarios, *options],
        cwd=tree,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _figures(output: str) -> dict[str, float]:
    """The one run's figures, from ``bench.run``'s ``run 1/1: {...}`` line, as ``<scenario>_<figure>``."""
    line = next((line for line in output.splitlines() if line.startswith("run 1/1: ")), None)
    if line is None:
        raise SystemExit(f"a run ended without its figures:\n{output[-2000:]}")
    figures = {}
    for scenario, values in json.loads(line.removeprefix("run 1/1: ")).items():
        for name, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                figures[f"{scenario}_{name}"] = float(value)
    if "ledger: balanced in every run" not in output:
        raise SystemExit(f"a run's ledger did not balance:\n{output[-2000:]}")
    return figures


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g} to {max(values):.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="the other checkout (with a .venv)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default="cpu")
    parser.add_argument("--only", default="", help="figures whose name starts with this")
    # Any other option goes to both trees' bench.run (e.g. --cpu-rate 12 when two stacks at 20/s would
    # saturate the shared cores and void the runs).
    args, options = parser.parse_known_args()
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    for i in range(args.runs):
        mine = _start(PROJECT_DIR, args.scenarios, options)
        other = _start(args.other.resolve(), args.scenarios, options)
        outputs = mine.communicate()[0], other.communicate()[0]  # both ended before either is read
        ours.append(_figures(outputs[0]))
        theirs.append(_figures(outputs[1]))
        print(f"run {i + 1}/{args.runs} done", file=sys.stderr, flush=True)
    names = [n for n in ours[0] if n.startswith(args.only) and all(n in run for run in ours + theirs)]
    print(f"| figure | {args.other} | this tree | ratio (median of {args.runs} runs) |")
    print("| --- | --- | --- | --- |")
    for name in names:
        before, after = [run[name] for run in theirs], [run[name] for run in ours]
        ratios = [a / b for a, b in zip(after, before, strict=True) if b]
        ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f} to {max(ratios):.2f})" if ratios else ""
        print(f"| {name} | {_spread(before)} | {_spread(after)} | {ratio} |")


if __name__ == "__main__":
    main()
