"""The Binder recipe, as far as this machine can check it: a fresh venv built only from binder/
(requirements.txt, then postBuild in the repository root) executes the quickstart notebook."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_binder_environment_runs_the_quickstart(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".venv", "out", ".git", "__pycache__", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", VIRTUAL_ENV=str(venv))
    env.pop("PYTHONPATH", None)
    run = lambda *cmd: subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=1800)  # noqa: E731
    r = run("python", "-m", "pip", "install", "-q", "-r", "binder/requirements.txt")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run("bash", "binder/postBuild")
    assert r.returncode == 0, r.stderr[-2000:]
    code = ("import nbformat, vllama_jupyter, sys; from nbclient import NotebookClient\n"
            "assert 'site-packages' in vllama_jupyter.__file__, vllama_jupyter.__file__\n"
            f"nb = nbformat.read({str(repo / 'notebooks' / '01_quickstart.ipynb')!r}, as_version=4)\n"
            "NotebookClient(nb, timeout=600, kernel_name='python3').execute()\n"
            "print(nb.cells[6].outputs[0]['data']['text/plain'])")
    r = subprocess.run(["python", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(80, 'length', 'tiny-shakespeare')" in r.stdout
