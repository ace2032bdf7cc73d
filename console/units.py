"""How the console writes a duration: milliseconds under a second, seconds (two decimals) from one."""

from __future__ import annotations


def duration(milliseconds: float | None) -> str:
    if milliseconds is None:
        return "-"
    milliseconds = float(milliseconds)
    return f"{milliseconds / 1000:.2f} s" if milliseconds >= 1000 else f"{milliseconds:.0f} ms"
