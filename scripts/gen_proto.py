"""Generate the Python protobuf module from proto/aimesh.proto.

    python scripts/gen_proto.py          # write python/aimesh/proto/aimesh_pb2.py(i)
    python scripts/gen_proto.py --check  # fail if the committed files are stale

The generated files are committed and never edited by hand; grpcio-tools
(pinned in pyproject's dev extra) makes the output reproducible.
"""

from __future__ import annotations

import argparse
import filecmp
import pathlib
import sys
import tempfile

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "python" / "aimesh" / "proto"
FILES = ("aimesh_pb2.py", "aimesh_pb2.pyi")


def generate(out_dir: pathlib.Path) -> None:
    proto_dir = ROOT / "proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            str(proto_dir / "aimesh.proto"),
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare with committed files")
    args = parser.parse_args()
    if not args.check:
        generate(OUT)
        print(f"wrote {', '.join(FILES)} to {OUT.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(pathlib.Path(tmp))
        stale = [f for f in FILES if not filecmp.cmp(OUT / f, pathlib.Path(tmp) / f, shallow=False)]
    if stale:
        print(f"stale generated files: {stale}; run `make proto`", file=sys.stderr)
        return 1
    print("generated protobuf code is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
