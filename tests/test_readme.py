"""README.md documents what the package does: its Models table is generated from the schemas."""

import subprocess
import sys
from pathlib import Path

import pytest

import shark_nb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_models_table as tool  # noqa: E402

README = (ROOT / "README.md").read_text("utf-8")


def test_the_readme_models_table_is_the_tools_output():
    assert tool.block() in README, "run: python tools/make_models_table.py --write"
    assert README.count(tool.START) == 1 and README.count(tool.END) == 1


def test_the_tool_prints_the_same_table_from_a_fresh_process():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "make_models_table.py")], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == tool.table()


def test_the_table_has_a_row_per_model_with_every_name_and_setting():
    rows = tool.table().splitlines()[2:]
    assert len(rows) == len(shark_nb.models())
    for spec, row in zip(shark_nb.models(), rows):
        assert row.startswith(f"| `{spec.id}` |")
        assert all(f"`{n}`" in row for n in (spec.name, *spec.aliases))
        assert all(f"`{f.name}`" in row for f in spec.fields)
        cells = row.replace("\\|", "").split(" | ")
        assert len(cells) == 5


def test_the_table_changes_when_a_schema_changes(monkeypatch):
    from shark_nb.schemas import Field, ModelSpec

    extra = ModelSpec(id="acme/painter", name="painter", title="Acme Painter", aliases=("acme",),
                      fields=(Field("steps", "int", "steps", min=1, max=50, default=20),
                              Field("size", "choice", "size", choices=("512*512", "a|b"), default="512*512")))
    monkeypatch.setattr(tool, "models", lambda: [*shark_nb.models(), extra])
    row = tool.table().splitlines()[-1]
    assert row == ("| `acme/painter` | `painter`, `acme` | `steps` 1..50 = 20<br>`size` 512\\*512, a\\|b = 512\\*512"
                   " | — | image URLs |")
    assert tool.block() not in README


def test_replace_in_rewrites_only_the_block():
    text = f"intro\n{tool.START}\nold table\n{tool.END}\noutro\n"
    assert tool.replace_in(text) == f"intro\n{tool.block()}\noutro\n"
    with pytest.raises(ValueError):
        tool.replace_in("no markers")


@pytest.mark.parametrize("needle", [
    "client.compare(", "vary={", "%shark compare --models gpt-image-2,gemini,seedream",
    "shark_nb.models()", "shark_nb.model_spec(", "client.estimate(", "## Models",
])
def test_the_readme_documents_models_and_compare(needle):
    assert needle in README


@pytest.mark.parametrize("module", ["config.py", "schemas/", "request.py", "session.py", "text.py", "display.py",
                                    "compare.py", "_version.py"])
def test_the_modules_the_readme_names_exist(module):
    assert f"`{module}`" in README or f"`shark_nb/{module}`" in README
    assert (ROOT / "shark_nb" / module).exists()
