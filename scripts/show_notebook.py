"""Print the code cells of an executed notebook with their text outputs (a terminal view)."""
import sys

import nbformat

nb = nbformat.read(sys.argv[1], as_version=4)
for cell in nb.cells:
    if cell.cell_type != "code":
        continue
    print(f"\n>>> {cell.source}")
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            print(out["text"], end="")
        elif "data" in out and "text/plain" in out["data"]:
            print(out["data"]["text/plain"])
