"""Execute a notebook with nbclient and save it with its outputs: run_notebook.py IN [OUT]."""
import sys

import nbformat
from nbclient import NotebookClient

src = sys.argv[1]
dst = sys.argv[2] if len(sys.argv) > 2 else src
nb = nbformat.read(src, as_version=4)
NotebookClient(nb, timeout=600, kernel_name="python3").execute()
nbformat.write(nb, dst)
print(f"executed {src} -> {dst}")
