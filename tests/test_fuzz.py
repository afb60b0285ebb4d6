"""Bounded atheris runs (``make fuzz`` runs longer): malformed frames must
only ever raise ``AiMeshError``, and the HTTP routes only ever answer 4xx to
malformed bodies."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 100_000


def test_frame_decoders_survive_fuzzing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed in (ROOT / "proto" / "testdata").glob("*.bin"):
        shutil.copy(seed, corpus)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / "fuzz_frames.py"),
            f"-runs={RUNS}",
            "-max_len=4096",
            "-seed=1",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"Done {RUNS} runs" in out, out[-3000:]


HTTP_RUNS = 50_000


def test_http_entry_points_survive_fuzzing(tmp_path: Path) -> None:
    """JSON and protobuf bodies (and the headers steering them) through the
    real route handlers: only 4xx errors, never a 500 or a storage error."""
    corpus = tmp_path / "corpus"
    harness = str(ROOT / "fuzz" / "fuzz_http.py")
    subprocess.run([sys.executable, harness, f"-write_seeds={corpus}"], check=True, timeout=60)
    assert len(list(corpus.iterdir())) >= 10
    proc = subprocess.run(
        [sys.executable, harness, f"-runs={HTTP_RUNS}", "-max_len=4096", "-seed=1", str(corpus)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"Done {HTTP_RUNS} runs" in out, out[-3000:]
