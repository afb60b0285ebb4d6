"""Run every benchmark suite (benches/bench_*.py), print a table, write JSON.

Usage: python benches/run.py [--quick] [--only NAME ...] [--out PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from harness import Harness


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small workloads (smoke run)")
    parser.add_argument("--only", nargs="*", default=[], help="suite names, e.g. router")
    parser.add_argument("--out", default="bench-results/results.json")
    args = parser.parse_args()
    h = Harness(quick=args.quick)
    here = pathlib.Path(__file__).parent
    print(f"  {'suite':<10} {'benchmark':<48} {'value':>14} unit")
    for path in sorted(here.glob("bench_*.py")):
        suite = path.stem.removeprefix("bench_")
        if args.only and suite not in args.only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        h.suite = suite
        module.run(h)
    h.write_json(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
