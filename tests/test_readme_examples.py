"""The README's copy-paste examples run as written."""

import re
from pathlib import Path

import pytest
from _extras import require

README = Path(__file__).resolve().parents[1] / "README.md"


def _example(name: str) -> str:
    match = re.search(rf"<!-- example: {re.escape(name)} -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no example marked {name!r}"
    return match.group(1)


@pytest.mark.parametrize("name,needs", [("usage", ["timm"]), ("nni", ["timm", "nni"]),
                                        ("torch-pruning", ["timm"])])
def test_readme_example_runs(name, needs, tmp_path, monkeypatch):
    for module in needs:
        require(module)
    monkeypatch.chdir(tmp_path)  # examples may write files
    exec(compile(_example(name), f"README:{name}", "exec"), {})
