"""The notebooks in notebooks/: executed end to end on a tiny TST/baseline pair made by our own
code (``$TST_NOTEBOOK_RUNS``; 03 on a tiny sweep, ``$TST_SWEEP``), and their committed versions
checked (executed, with figures, the numbers quoted in their readings printed by their own cells,
a reasonable size).

``pytest --nbmake notebooks/`` runs them too, on the benchmark output or the demo pair (see the
notebooks' parameters cell)."""

import glob
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers.trainer import ROOT

NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
#: The PNGs each notebook saves in <TST run>/figures/.
FIGURES = {
    "01_loss_curves.ipynb": ["loss_01_frontier", "loss_02_training_loss", "loss_03_val_loss", "loss_04_switch_zoom"],
    "02_embeddings.ipynb": ["emb_01_norms_vs_frequency", "emb_02_input_output_cosine", "emb_03_drift_vs_frequency",
                            "emb_04_pca", "emb_05_bag_decodability", "emb_06_phase1_entropy"],
    "03_ablations.ipynb": ["abl_01_heatmap", "abl_02_modes", "abl_03_weightings", "abl_04_optimizer"],
    "04_downstream.ipynb": ["down_01_accuracy"],
}
#: Notebooks that read a sweep (``python -m tst_titan.tools.sweep``) instead of a TST/baseline pair.
SWEEP_NOTEBOOKS = ["03_ablations.ipynb"]
CELL_TIMEOUT_S = 180


def test_every_notebook_is_covered():
    assert NOTEBOOKS == sorted(FIGURES)


def _text_outputs(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o["text"])
            elif "text/plain" in o.get("data", {}):
                out.append(o["data"]["text/plain"])
    return "\n".join(out)


def _execute(name):
    nb = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": NOTEBOOK_DIR}}).execute()
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NOTEBOOKS if n not in SWEEP_NOTEBOOKS])
def test_notebook_executes_on_a_tiny_pair(name, pair, monkeypatch):
    monkeypatch.setenv("TST_NOTEBOOK_RUNS", pair["dir"])
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = _execute(name)
    text = _text_outputs(nb)
    assert "runs from: $TST_NOTEBOOK_RUNS" in text
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    for fig in FIGURES[name]:
        path = os.path.join(pair["tst"], "figures", f"{fig}.png")
        assert os.path.getsize(path) > 5_000, path


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEEP_NOTEBOOKS)
def test_sweep_notebook_executes_on_a_tiny_sweep(name, tiny_sweep, monkeypatch):
    monkeypatch.setenv("TST_SWEEP", tiny_sweep)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = _execute(name)
    text = _text_outputs(nb)
    assert "sweep from: $TST_SWEEP" in text
    assert "this sweep has no" not in text  # the tiny sweep has every ablation
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    for fig in FIGURES[name]:
        path = os.path.join(tiny_sweep, "figures", f"{fig}.png")
        assert os.path.getsize(path) > 5_000, path


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_outputs_and_its_readings_quote_them(name):
    path = os.path.join(NOTEBOOK_DIR, name)
    assert os.path.getsize(path) < 2 * 2**20, "keep committed notebooks under 2 MB (dpi ~80)"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "commit the notebook executed (with outputs)"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "executed top to bottom"
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images == len(FIGURES[name])
    text = _text_outputs(nb)
    readings = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("**Reading.**")]
    assert len(readings) >= len(FIGURES[name])
    for reading in readings:
        assert "to be written" not in reading
        for quoted in [q for q in re.findall(r"`([^`]*)`", reading) if re.search(r"\d", q)]:
            assert quoted in text, f"{name}: the reading quotes `{quoted}`, which no cell printed"
