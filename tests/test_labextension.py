"""The JupyterLab extension: its jest unit tests, and the wheel carrying the prebuilt bundle so that
a fresh install lists it enabled and OK with no Node.js anywhere on the PATH."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXT = ROOT / "labextension"


@pytest.mark.skipif(shutil.which("npm") is None, reason="Node.js/npm is not installed")
def test_frontend_unit_tests_pass():
    env = dict(os.environ, npm_config_fund="false", npm_config_audit="false")
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=EXT, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(["npx", "jest", "--ci"], cwd=EXT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Tests:       6 passed, 6 total" in r.stderr + r.stdout


@pytest.mark.slow
def test_wheel_installs_the_extension_without_nodejs(tmp_path):
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next(dist.glob("vllama_jupyter-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    no_node = ":".join(p for p in os.environ["PATH"].split(":") if p and not (Path(p) / "node").exists())
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{no_node}")
    assert shutil.which("node", path=env["PATH"]) is None
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel), "jupyterlab>=4"],
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(venv / "bin" / "jupyter"), "labextension", "list"], capture_output=True, text=True,
                       timeout=120, env=env)
    listing = r.stdout + r.stderr
    line = next((x for x in listing.splitlines() if "vllama-jupyter" in x), "")
    assert "enabled" in line and "OK" in line, listing
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB; "
          f"bundle {sum(f.stat().st_size for f in (ROOT / 'vllama_jupyter' / 'labextension').rglob('*') if f.is_file()) / 1024:.0f} KiB")
