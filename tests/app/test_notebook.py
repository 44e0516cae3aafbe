"""The README's notebook one-liner, run in a real Jupyter kernel (ipykernel via nbclient), as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.app.conftest import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_notebook_one_liner_renders_the_app_inline(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    port = free_port()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(f'import app; demo = app.notebook(model="tiny", port={port}, '
                                  f'data_dir={str(tmp_path / "data")!r})'),
        nbformat.v4.new_code_cell("import json, urllib.request\n"
                                  "page = urllib.request.urlopen(demo.local_url + 'config').read()\n"
                                  "print(json.dumps({'url': demo.local_url, 'tabs': [c['props'].get('label') "
                                  "for c in json.loads(page)['components'] if c.get('type') == 'tabitem']}))\n"
                                  "demo.close()"),
    ]
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()

    frames = [o["data"]["text/html"] for o in notebook.cells[0].outputs if "text/html" in o.get("data", {})]
    assert len(frames) == 1 and f'<iframe src="http://127.0.0.1:{port}/"' in frames[0]
    text = "".join(o.get("text", "") for o in notebook.cells[1].outputs if o["output_type"] == "stream")
    [line] = [line for line in text.splitlines() if line.startswith("{")]  # (close() prints a line too)
    printed = json.loads(line)
    assert printed["url"] == f"http://127.0.0.1:{port}/"
    assert printed["tabs"][:3] == ["Generate", "History", "Studies"]  # the studio, as on the desktop
    assert "Rate" not in printed["tabs"]
