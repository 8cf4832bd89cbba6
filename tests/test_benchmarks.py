"""The benchmark harness in --quick mode: every ratio is measured in pairs and written out.
Ratios are reported, not asserted: this machine's speed decides nothing here."""
import csv
import json
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def test_quick_harness_writes_every_ratio_with_its_pairs(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/run_all.py", "--quick", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    data = json.loads((run / "run.json").read_text())
    names = [x["ratio"] for x in data["ratios"]]
    assert any("client-seen / bare loop (embedded)" in n for n in names)
    assert any("live display / display off" in n for n in names)
    assert any("late / early TPOT, ours ÷ bare loop" in n for n in names)
    assert any("Qwen2 byte-level BPE" in n for n in names)
    assert any("chat follow-up" in n for n in names)
    assert any("in-process / server" in n for n in names) and any("shared / in-process" in n for n in names)
    assert any("first cell, hash in background" in n for n in names)
    assert data["failed"] == []
    for x in data["ratios"]:
        assert x["pairs"] >= 3 and len(x["every_pair"]) == x["pairs"]
        assert x["min"] <= x["q1"] <= x["median"] <= x["q3"] <= x["max"]
        assert all(p["a"] > 0 and p["b"] > 0 for p in x["every_pair"])
    rows = list(csv.DictReader(open(run / "ratios.csv")))
    assert [row["ratio"] for row in rows] == names
    assert (run / "ratios.png").stat().st_size > 5000
    assert "IQR" in r.stdout and "n=3" in r.stdout
