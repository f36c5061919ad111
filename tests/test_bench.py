"""The benchmark command's plumbing (the suites themselves run from the command line and
the benchmark notebook, not in the tests: they time things)."""

import json

import pytest

from ndwork.bench import __main__ as bench_main
from ndwork.bench import peers
from ndwork.bench.common import table


def test_a_table_without_rows_is_its_header():
    assert table([], ["config", "steps"]).splitlines() == ["config  steps", "------  -----"]


def test_the_peers_table_of_a_memory_only_run():
    memory = [{"library": "ndwork", "input_size": 2048, "windows": 64, "steps": 2,
               "peak GiB": 1.5, "seconds": 3.0, "ndwork / NF peak": 0.4}]
    text = peers.render({"rows": [], "memory": memory, "threads": 2, "torch": "x",
                         "neuralforecast": "3.3.0", "numpy_blas_kernel": [], "cpu": {}})
    assert "TFT memory" in text and "0.4" in text


def test_results_are_written_before_the_table(monkeypatch, tmp_path):
    class Suite:
        @staticmethod
        def run(quick):
            return {"rows": [{"config": "a", "ratio": 2.0}]}

        @staticmethod
        def render(results):
            raise RuntimeError("a table that cannot be drawn")

    monkeypatch.setattr(bench_main.importlib, "import_module", lambda name: Suite)
    with pytest.raises(RuntimeError, match="cannot be drawn"):
        bench_main.main(["kernels", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "kernels.json").read_text())["rows"][0]["ratio"] == 2.0
