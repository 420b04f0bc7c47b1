"""Where the time goes, from a py-spy raw (collapsed stacks) profile: the functions with the most
samples on top of the stack (self) and anywhere in it (inclusive), in percent of all samples.

    py-spy record -r 250 -f raw -o profile.txt -- python ...     # e.g. BENCH_PYSPY in mqtt_ingest.py
    python bench/profile_summary.py profile.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: lines of one function fold together."""
    frame = _LINE.sub(")", frame.strip())
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rstrip(')').rsplit('/', 1)[-1]})" if where else name


def summarise(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    return total, own, inclusive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    total, own, inclusive = summarise(args.profile)
    print(f"{total} samples")
    for title, counts in (("self", own), ("inclusive", inclusive)):
        print(f"-- {title}")
        for name, n in counts.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {name}")


if __name__ == "__main__":
    main()
