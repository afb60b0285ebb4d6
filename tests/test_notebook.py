"""examples/router.ipynb runs top to bottom and shows what it claims.

The notebook is executed in memory by nbclient, in a temporary directory, with a kernel on this
interpreter (the venv's), so the committed file is never written. It must run without error,
draw its plots and print a cost saving that only a cost-aware router reaches.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "router.ipynb"
KERNEL = "aimesh-test"
SAVING_RE = re.compile(r"cost saved vs always-most-expensive: (-?\d+(?:\.\d+)?)%")
# The notebook saves ~63%. With w_cost=0 the same simulation still saves ~24%, because
# spreading load moves traffic onto cheaper endpoints too; so "> 0" alone would not notice a
# router that ignored cost, and the floor sits between the two.
MIN_SAVING_PCT = 40.0


def _kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel on this very interpreter: a "python3" spec found on the machine (a user-level
    one, say) could start another Python without aimesh installed."""
    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "aimesh test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def _outputs(nb: Any) -> list[Any]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def test_notebook_is_committed_without_outputs() -> None:
    # Outputs (base64 PNGs) would bloat the repository and every diff of the notebook.
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(not c.outputs and c.execution_count is None for c in code)


def test_router_notebook_executes(tmp_path: Path) -> None:
    before = NOTEBOOK.read_bytes()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    work = tmp_path / "run"
    work.mkdir()
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=120,  # per cell; the whole notebook takes a few seconds
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    # Kept next to the test's temporary files for a look when an assertion fails.
    nbformat.write(nb, tmp_path / "router.executed.ipynb")

    outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 3, f"expected at least 3 plots, got {len(pngs)}"

    text = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    found = SAVING_RE.findall(text)
    assert len(found) == 1, f"expected one cost-saving line in the output:\n{text[-2000:]}"
    saving = float(found[0])
    assert saving > 0, f"routing saved nothing: {saving}%"
    assert saving >= MIN_SAVING_PCT, f"saving {saving}% is what a cost-blind router gets"

    assert NOTEBOOK.read_bytes() == before, "the committed notebook was modified"
