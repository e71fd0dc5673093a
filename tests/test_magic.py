"""``%shark`` / ``%%shark`` driven through a real IPython shell (and, at the end, a real kernel).

Every test runs offline (no key: the simulator) in its own working directory, with a fresh
shared client, a fresh session ledger and fresh magic settings.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from PIL import Image

from shark_nb import images, magic
from shark_nb.ledger import reset_default_ledger

PLANTED_KEY = "sk-planted-7f3a9c1e5b2d4086"
DATA_URL = re.compile(r'src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)"')


# ------------------------------------------------------------------------------------- fixtures

@pytest.fixture
def ip(tmp_path, monkeypatch):
    """The IPython shell with the extension freshly loaded, working in an empty folder."""
    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    magic.unload_ipython_extension(shell)
    _forget_config(shell)
    magic.reset_client()
    reset_default_ledger()
    magic.load_ipython_extension(shell)
    yield shell
    for name in ("_shark", "fox", "style", "scene", "raw", "sizes"):
        shell.user_ns.pop(name, None)
    magic.unload_ipython_extension(shell)
    _forget_config(shell)
    magic.reset_client()
    reset_default_ledger()


def _forget_config(shell):
    """%config also lands in the shell's own config, the parent of the next SharkMagic."""
    for section in ("Shark", "SharkMagic"):
        if section in shell.config:
            del shell.config[section]


def run(shell, code):
    """Run a cell; return (ExecutionResult, captured stdout/stderr/rich outputs)."""
    with capture_output() as cap:
        result = shell.run_cell(code)
    return result, cap


def ok(shell, code):
    result, cap = run(shell, code)
    result.raise_error()
    return cap


def fails(shell, code) -> str:
    """Run a cell that must fail with a SharkUsageError; return its message."""
    result, cap = run(shell, code)
    err = result.error_in_exec
    assert isinstance(err, UsageError), f"expected a UsageError, got {err!r}\n{cap.stdout}\n{cap.stderr}"
    assert isinstance(err, magic.SharkUsageError)
    # one line, no traceback
    assert "Traceback" not in cap.stderr + cap.stdout
    shown = [line for line in (cap.stderr + cap.stdout).splitlines() if "UsageError" in line]
    assert len(shown) == 1, cap.stderr + cap.stdout
    return str(err)


def html_of(cap) -> str:
    return "".join(o.data.get("text/html", "") for o in cap.outputs)


def everything(cap) -> str:
    parts = [cap.stdout, cap.stderr]
    for o in cap.outputs:
        parts.extend(str(v) for v in o.data.values())
    return "\n".join(parts)


def ledger():
    return magic.get_client().ledger


# --------------------------------------------------------------------------------- generation

def test_line_form_generates_saves_and_sets_shark(ip, tmp_path):
    cap = ok(ip, "%shark -n 2 --size 1536x1024 --quality low --format jpeg a red fox in the snow")
    result = ip.user_ns["_shark"]
    assert len(result.images) == 2
    assert all(im.size == (1536, 1024) and im.format == "jpeg" for im in result.images)
    assert result.prompt == "a red fox in the snow"
    assert len(result.saved) == 2
    for path in result.saved:
        full = tmp_path / path
        assert full.parent == tmp_path / "shark-images" and full.suffix == ".jpg" and full.stat().st_size > 0
        meta = images.read_metadata(full)
        assert meta["prompt"] == "a red fox in the snow"
        assert json.loads(meta["parameters"])["size"] == "1536x1024"
    html = html_of(cap)
    assert html.count("<img ") == 2 and "offline simulator" in html
    assert ledger().calls == 1


def test_cell_form_body_is_the_prompt_and_o_assigns(ip):
    ok(ip, "%%shark -n 1 --size 1024x1024 --quality low --format webp -o fox\n  a fox\n  on two lines  \n")
    fox = ip.user_ns["fox"]
    assert fox is ip.user_ns["_shark"]
    assert fox.prompt == "a fox\n  on two lines"
    assert fox.images[0].format == "webp" and fox.images[0].size == (1024, 1024)


def test_magic_returns_none_and_prints_no_repr(ip):
    assert ip.run_line_magic("shark", "--quality low --size 1024x1024 a boat") is None
    result, cap = run(ip, "%shark --quality low --size 1024x1024 a boat")
    assert result.result is None and "Out[" not in cap.stdout


def test_prompt_expands_variables_and_keeps_double_braces(ip):
    ip.user_ns["style"] = "watercolour"
    ip.user_ns["sizes"] = {"big": "huge"}
    ok(ip, "%%shark --quality low --size 1024x1024\na {style} fox, {sizes[big]} {{not a var}} {style!r:>15}")
    assert ip.user_ns["_shark"].prompt == "a watercolour fox, huge {not a var}   'watercolour'"
    ok(ip, "%shark --quality low --size 1024x1024 a {style} heron {{literal}}")
    assert ip.user_ns["_shark"].prompt == "a watercolour heron {literal}"


def test_unknown_name_in_prompt_is_a_usage_error_naming_it(ip):
    ip.user_ns["style"] = "ink"
    message = fails(ip, "%shark a {style} fox by {painter} in {season}")
    assert "{painter}" in message and "'season'" in message and "{style}" not in message
    assert "{{" in message  # says how to write literal braces
    assert ledger().calls == 0
    assert "unbalanced" in fails(ip, "%%shark\na { fox")
    assert "empty or numbered" in fails(ip, "%shark a {} fox")


def test_dry_run_sends_nothing_and_shows_body_and_estimate(ip):
    cap = ok(ip, "%shark --dry-run -n 3 --size 2048x2048 --quality high a lighthouse")
    assert ledger().calls == 0 and ledger().records == []
    assert magic.get_client().simulator.requests["post"] == 0
    assert "_shark" not in ip.user_ns
    out = cap.stdout
    assert "nothing was sent" in out
    body = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert body == {"model": "openai/gpt-image-2", "prompt": "a lighthouse", "n": 3, "size": "2048x2048",
                    "quality": "high", "background": "auto", "output_format": "png"}
    from shark_nb import pricing
    estimate = pricing.estimate_credit(prompt="a lighthouse", n=3, size="2048x2048", quality="high")
    assert f"{estimate:,.2f} credit" in out and "estimate" in out.lower()


def test_dry_run_elides_image_payloads(ip, tmp_path):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "ref.png")
    cap = ok(ip, "%shark --dry-run --image ref.png edit it")
    assert "bytes elided>" in cap.stdout and "base64," in cap.stdout
    assert len(cap.stdout) < 2000


def test_image_from_a_previous_result_variable(ip):
    ok(ip, "%shark -o fox --quality low --size 1024x1024 a fox")
    fox = ip.user_ns["fox"]
    ok(ip, "%shark --image fox --quality low --size 1024x1024 the same fox at night")
    edit = ip.user_ns["_shark"]
    assert edit is not fox
    assert len(edit.request.image) == 1 and edit.request.image[0].startswith("data:image/png;base64,")
    assert edit.request.inputs[0]["sha256"] == fox.images[0].sha256
    # name[i] picks another image; a GeneratedImage and a PIL image work too
    ok(ip, "%shark -n 2 -o fox --quality low --size 1024x1024 two foxes")
    ok(ip, "%shark --image fox[1] --quality low --size 1024x1024 the second one")
    assert ip.user_ns["_shark"].request.inputs[0]["sha256"] == ip.user_ns["fox"].images[1].sha256
    ip.user_ns["scene"] = Image.new("RGB", (80, 60), "blue")
    ok(ip, "%shark --image scene --quality low --size 1024x1024 a blue scene")
    assert ip.user_ns["_shark"].request.inputs[0]["width"] == 80


def test_image_from_a_file_path_and_missing_file(ip, tmp_path):
    Image.new("RGB", (100, 50), "green").save(tmp_path / "my ref.png")
    ok(ip, '%shark --image "my ref.png" --quality low --size 1024x1024 a green field')
    info = ip.user_ns["_shark"].request.inputs[0]
    assert info["width"] == 100 and info["height"] == 50
    assert "file not found" in fails(ip, "%shark --image nowhere/ref.png a field")
    assert "no notebook variable or file named 'nothing'" in fails(ip, "%shark --image nothing a field")
    assert ledger().calls == 1


def test_mask_validation_error_is_a_usage_error(ip, tmp_path):
    ok(ip, "%shark -o fox --quality low --size 1024x1024 a fox")
    Image.new("RGB", (1024, 1024), "white").save(tmp_path / "flat.png")
    message = fails(ip, "%shark --image fox --mask flat.png repaint the sky")
    assert message.startswith("mask=") and "alpha" in message
    assert "together with at least one reference image" in fails(ip, "%shark --mask flat.png no image")
    assert ledger().calls == 1


def test_html_shows_previews_not_full_resolution_and_links_the_files(ip, tmp_path):
    cap = ok(ip, "%shark --size 2048x2048 --quality low a very large mountain")
    result = ip.user_ns["_shark"]
    saved = tmp_path / result.saved[0]
    html = html_of(cap)
    (mime, payload), = DATA_URL.findall(html)
    assert mime == "image/webp"
    preview = base64.b64decode(payload)
    assert len(preview) * 10 < saved.stat().st_size, (len(preview), saved.stat().st_size)
    assert max(Image.open(io.BytesIO(preview)).size) == 1024
    assert f'href="shark-images/{saved.name}"' in html
    assert "2048×2048" in html and "this call:" in html and "session:" in html
    assert len(html) < 200_000
    # text/plain fallback names the file too
    assert saved.name in "".join(o.data.get("text/plain", "") for o in cap.outputs)


def test_full_embeds_the_file_and_preview_settings_apply(ip):
    cap = ok(ip, "%shark --full --quality low --size 1024x1024 a small boat")
    (mime, payload), = DATA_URL.findall(html_of(cap))
    assert mime == "image/png" and base64.b64decode(payload) == ip.user_ns["_shark"].images[0].data
    ok(ip, '%config Shark.preview_format = "jpeg"')
    ok(ip, "%config Shark.preview_max_side = 256")
    cap = ok(ip, "%shark --quality low --size 1536x1024 a wide boat")
    (mime, payload), = DATA_URL.findall(html_of(cap))
    assert mime == "image/jpeg" and Image.open(io.BytesIO(base64.b64decode(payload))).size == (256, 171)


def test_save_option_and_save_dir_setting(ip, tmp_path):
    ok(ip, "%shark --save out/here --quality low --size 1024x1024 a saved fox")
    assert (tmp_path / ip.user_ns["_shark"].saved[0]).parent == tmp_path / "out" / "here"
    ok(ip, '%config SharkMagic.save_dir = "pictures"')
    ok(ip, "%shark --quality low --size 1024x1024 another fox")
    assert (tmp_path / ip.user_ns["_shark"].saved[0]).parent == tmp_path / "pictures"


# --------------------------------------------------------------------------- options & errors

def test_bad_option_is_a_one_line_usage_error(ip):
    assert "unknown option '--colour'" in fails(ip, "%shark --colour red a fox")
    assert "n='many' is not valid" in fails(ip, "%shark -n many a fox")  # read by the schema's field
    assert "needs a value" in fails(ip, "%shark --size")
    assert "size='999'" in fails(ip, "%shark --size 999 a fox")
    assert "n=7" in fails(ip, "%shark -n 7 a fox")
    assert "wait='later'" in fails(ip, "%shark --wait later a fox")
    assert "no prompt" in fails(ip, "%shark --quality low")
    assert "cell is empty" in fails(ip, "%%shark -n 1\n   \n")
    assert "only options on its first line" in fails(ip, "%%shark a prompt here\nand here")
    assert "not a valid Python variable name" in fails(ip, "%shark -o 2fox a fox")
    assert ledger().calls == 0


def test_option_forms_and_verbatim_prompt(ip):
    ok(ip, """%shark -n2 --quality=low --size=1024x1024 it's a "quoted" fox -- with dashes""")
    result = ip.user_ns["_shark"]
    assert len(result.images) == 2 and result.request.quality == "low"
    assert result.prompt == """it's a "quoted" fox -- with dashes"""
    ok(ip, "%shark --quality low --size 1024x1024 -- -dash first")
    assert ip.user_ns["_shark"].prompt == "-dash first"


def test_help_prints_the_grammar(ip):
    for code in ("%shark --help", "%shark -h", "%shark help"):
        cap = ok(ip, code)
        for word in ("--size", "--image", "--dry-run", "%shark ledger", "%shark budget", "%shark studio",
                     "%shark config", "%shark -- ledger of a ship", "{{", "%config Shark.size"):
            assert word in cap.stdout, (code, word)
    assert ledger().calls == 0


def test_prompt_starting_with_a_subcommand_word(ip):
    message = fails(ip, "%shark ledger of a ship")
    assert "%shark -- ledger of a ship" in message
    assert "budget" in fails(ip, "%shark budget of a small film")
    ok(ip, "%shark -- ledger of a ship")
    assert ip.user_ns["_shark"].prompt == "ledger of a ship"
    ok(ip, "%%shark\nconfig of stars")
    assert ip.user_ns["_shark"].prompt == "config of stars"


def test_a_one_line_prompt_may_end_with_a_question_mark(ip):
    ok(ip, "%shark --quality low --size 1024x1024 what does a fox dream of?")
    assert ip.user_ns["_shark"].prompt == "what does a fox dream of?"
    assert "pinfo" in ip.transform_cell("%shark?")


def test_budget_refusal_is_a_usage_error_and_sends_nothing(ip):
    ok(ip, "%shark budget 100")
    message = fails(ip, "%shark --size 2048x2048 --quality high a costly picture")
    assert "budget" in message and "nothing was sent" in message
    assert ledger().calls == 0


def test_service_errors_are_usage_errors(ip):
    # the simulator moderates prompts containing "[moderate]"
    message = fails(ip, "%shark --quality low a [moderate] picture")
    assert "content_moderation" in message or "rephrase" in message
    assert ledger().calls == 1  # it reached the gateway


def test_keyboard_interrupt_becomes_a_short_error(ip):
    real = magic.get_client()

    class Interrupted:
        offline = True
        ledger = real.ledger

        def build(self, prompt, **params):
            return real.build(prompt, **params)

        def send(self, request, on_image=None):
            raise KeyboardInterrupt

    magic.set_client(Interrupted())
    assert "interrupted" in fails(ip, "%shark --quality low a slow picture")
    # a sync call has no task: the message must not talk of one
    message = fails(ip, "%shark --wait sync --quality low a slow picture")
    assert "task" not in message and "may still be charged" in message and "%shark ledger" in message
    message = fails(ip, "%shark --wait task --quality low a slow picture")
    assert "the task was asked to cancel at the gateway" in message


@pytest.mark.parametrize("code", ["%%shark", "%%shark\n", "%%shark\n\n   \n", "%%shark --quality low",
                                  "%%shark -n 2 --size 1024x1024\n\t\n"])
def test_an_empty_cell_body_is_a_one_line_failing_error(ip, code):
    message = fails(ip, code)
    assert "the cell is empty: write the prompt below the %%shark line" in message
    assert ledger().calls == 0


def test_an_empty_cell_body_with_help_still_shows_the_help(ip):
    cap = ok(ip, "%%shark --help")
    assert "usage:" in cap.stdout and "%shark budget" in cap.stdout


# -------------------------------------------------------------------------------- subcommands

def test_ledger_subcommand_displays_the_session_ledger(ip):
    ok(ip, "%shark --quality low --size 1024x1024 a ledger test")
    cap = ok(ip, "%shark ledger")
    html = html_of(cap)
    assert "a ledger test" in html and "Total" in html
    assert "%shark ledger takes no arguments" in fails(ip, "%shark ledger now")


@pytest.mark.parametrize("text, credits", [("$2.50", 25_000), ("2.50$", 25_000), ("2.5 usd", 25_000),
                                           ("25000", 25_000), ("25,000 credits", 25_000), ("off", None)])
def test_budget_subcommand(ip, text, credits):
    cap = ok(ip, f"%shark budget {text}")
    assert ledger().budget == credits
    if credits is None:
        assert "No session budget" in cap.stdout
    else:
        assert "Session budget: 25,000 credit ($2.50) — 25,000 credit ($2.50) left" in cap.stdout


@pytest.mark.parametrize("text, why", [
    ("$2,50", "comma is ambiguous"), ("2,5", "comma is ambiguous"), ("$1,000", "comma is ambiguous"),
    ("2,50 usd", "comma is ambiguous"), ("1,00", "comma is ambiguous"), ("1,000,00 credits", "comma is ambiguous"),
    ("€2.50", "only US dollars or credits"), ("2.50 eur", "only US dollars or credits"),
    ("£3", "only US dollars or credits"), ("-1", "cannot be negative"), ("$-2.50", "cannot be negative"),
    ("1e3", "is not an amount"), ("$", "is not an amount"), ("NaN", "is not an amount"),
    ("inf", "is not an amount"), ("$2.50.1", "is not an amount"),
])
def test_an_ambiguous_or_foreign_budget_is_refused_and_the_budget_is_unchanged(ip, text, why):
    ok(ip, "%shark budget 777")
    message = fails(ip, f"%shark budget {text}")
    assert f"budget: {text!r} is not an amount" in message and why in message
    assert "%shark budget $2.50" in message and "%shark budget 25000" in message
    assert ledger().budget == 777, "a refused amount leaves the budget as it was"


@pytest.mark.parametrize("text, credits", [("1,000", 1000), ("25,000 credits", 25_000), ("1,000,000", 1_000_000),
                                           ("1_000", 1000), ("$2.50", 25_000), ("2.50$", 25_000),
                                           ("$0.25", 2500), ("0", 0)])
def test_an_unambiguous_budget_is_accepted(ip, text, credits):
    ok(ip, f"%shark budget {text}")
    assert ledger().budget == credits


def test_budget_show_and_small_credit_hint(ip):
    cap = ok(ip, "%shark budget")
    assert "No session budget" in cap.stdout and ledger().budget is None
    cap = ok(ip, "%shark budget 3")
    assert ledger().budget == 3 and "For dollars write %shark budget $3" in cap.stdout
    cap = ok(ip, "%shark budget")
    assert "Session budget: 3 credit" in cap.stdout
    assert "not an amount" in fails(ip, "%shark budget lots")


def test_config_subcommand_shows_settings(ip):
    cap = ok(ip, "%shark config")
    out = cap.stdout
    assert "offline simulator" in out and "API key" in out and "unset" in out
    assert "size=auto" in out and "shark-images" in out and str(ledger().path) in out
    ok(ip, '%config Shark.size = "1536x1024"')
    assert "size=1536x1024" in ok(ip, "%shark config").stdout


def test_the_key_is_shown_only_as_set_and_never_printed(ip, monkeypatch):
    monkeypatch.setenv("SHARK_API_KEY", PLANTED_KEY)
    monkeypatch.setenv("SHARK_OFFLINE", "1")
    magic.reset_client()
    seen = []
    cap = ok(ip, "%shark config")
    assert "set (from SHARK_API_KEY)" in cap.stdout and "SHARK_OFFLINE=1" in cap.stdout
    seen.append(everything(cap))
    for code in ("%shark --quality low --size 1024x1024 -o fox a secret fox", "%shark ledger", "%shark budget $1",
                 "%shark budget", "%shark --dry-run --image fox x", "%shark --help", "%shark -n 9 x",
                 "%shark --image nothing x"):
        result, cap = run(ip, code)
        seen.append(everything(cap) + repr(result.error_in_exec))
    seen.append(ledger().path.read_text(encoding="utf-8"))
    seen.append(repr(magic.get_client()))
    text = "\n".join(seen)
    assert PLANTED_KEY not in text and "planted" not in text


def test_config_traits_change_the_defaults(ip):
    ok(ip, '%config Shark.size = "1536X1024"')       # the alias section; values are normalised
    ok(ip, "%config SharkMagic.n = 2")
    ok(ip, '%config Shark.quality = "low"')
    ok(ip, '%config Shark.output_format = "jpg"')
    ok(ip, "%shark a configured fox")
    result = ip.user_ns["_shark"]
    assert len(result.images) == 2 and result.images[0].size == (1536, 1024)
    assert result.request.quality == "low" and result.images[0].format == "jpeg"
    # an option still wins over the default
    ok(ip, "%shark -n 1 --size 1024x1024 an explicit fox")
    assert ip.user_ns["_shark"].images[0].size == (1024, 1024) and len(ip.user_ns["_shark"].images) == 1


def test_config_rejects_bad_values_and_stays_usable(ip, caplog):
    m = magic._loaded[id(ip)]
    run(ip, '%config Shark.size = "999x999"')  # %config logs the error (logging.error) and goes on
    assert "size='999x999' is not valid" in caplog.text and m.size == "auto"
    ok(ip, '%config Shark.quality = "low"')  # a rejected value does not block later changes
    assert m.quality == "low" and m.size == "auto"
    for trait, value in (("n", 5), ("background", "transparent"), ("wait", "never"),
                         ("preview_format", "gif"), ("preview_max_side", 10), ("model", "two words")):
        with pytest.raises(Exception) as info:
            setattr(m, trait, value)
        assert trait in str(info.value)


def test_config_help_lists_the_settings(ip):
    cap = ok(ip, "%config SharkMagic")
    for name in ("size", "quality", "save_dir", "preview_max_side", "preview_format", "full"):
        assert f"SharkMagic.{name}" in cap.stdout


def test_studio_subcommand_displays_the_studio_on_the_shared_client(ip):
    ok(ip, '%config Shark.size = "1536x1024"')
    cap = ok(ip, "%shark studio")
    assert any("application/vnd.jupyter.widget-view+json" in o.data for o in cap.outputs)
    assert "%shark studio takes no arguments" in fails(ip, "%shark studio please")


def test_one_shared_client_and_ledger(ip):
    client = magic.get_client()
    ok(ip, "%shark --quality low --size 1024x1024 first")
    ok(ip, "%shark --quality low --size 1024x1024 second")
    assert magic.get_client() is client
    assert client.ledger.calls == 2 and client.offline


# ------------------------------------------------------------------------------- a real kernel

def _kernel_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARK_")}
    env["SHARK_NB_HOME"] = str(tmp_path / "home")
    env["SHARK_SIM_LATENCY"] = "0.01"
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def test_in_a_kernel_previews_are_saved_and_a_bad_magic_fails_the_cell_in_one_line(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for k, v in _kernel_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext shark_nb"),
        nbformat.v4.new_code_cell("%%shark -n 1 --size 1024x1024 --quality low\na red fox in the snow"),
        nbformat.v4.new_code_cell("%shark --size 999x999 a fox"),
        nbformat.v4.new_code_cell("print('run all went on')"),
    ]
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(nbclient.exceptions.CellExecutionError) as info:
        client.execute()
    assert info.value.ename == "SharkUsageError" and "UsageError: size='999x999'" in str(info.value)
    path = tmp_path / "out.ipynb"
    nbformat.write(nb, path)
    saved = nbformat.read(path, as_version=4)
    gen, bad, after = saved.cells[1], saved.cells[2], saved.cells[3]
    shown = [o for o in gen.outputs if o.output_type == "display_data"]
    assert len(shown) == 1  # the "generating…" line was replaced by the gallery
    html = shown[0].data["text/html"]
    assert 'src="data:image/webp;base64,' in html and "shark-images/" in html
    assert shown[0].data["text/plain"].startswith("1 image")
    files = list((tmp_path / "shark-images").glob("*.png"))
    assert len(files) == 1 and files[0].stat().st_size > len(html)
    errors = [o for o in bad.outputs if o.output_type == "error"]
    assert len(errors) == 1 and len(errors[0].traceback) == 1
    line = errors[0].traceback[0]
    assert "UsageError: size='999x999' is not valid" in line and "\n" not in line
    assert "\x1b[0;31m" in line  # red
    assert not any("Traceback" in str(o) or "File " in str(o) for o in bad.outputs)
    assert after.outputs == []  # the run stopped at the failing cell
    assert path.stat().st_size < 100_000


def test_in_a_kernel_failures_leave_one_error_and_no_empty_output(tmp_path, monkeypatch):
    """An empty %%shark body fails the cell (not IPython's stderr-only message); a call that fails
    after the "generating…" line leaves no empty output behind, only a note and the one error."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for k, v in _kernel_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    nb = nbformat.v4.new_notebook()
    bad_cells = ["%%shark", "%%shark --quality low\n\n", "%shark --quality low a [moderate] picture",
                 "%%shark --quality low\na [moderate] picture", "%shark --size 999x999 a fox"]
    nb.cells = [nbformat.v4.new_code_cell("%load_ext shark_nb")] + [nbformat.v4.new_code_cell(c) for c in bad_cells]
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120, allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    for cell in nb.cells[1:]:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert len(errors) == 1 and len(errors[0].traceback) == 1, (cell.source, cell.outputs)
        assert errors[0].ename == "SharkUsageError"
        assert not any(o.output_type == "stream" and "UsageError" in o.text for o in cell.outputs)
        for o in cell.outputs:
            if o.output_type in ("display_data", "execute_result"):
                assert o.data.get("text/plain", "").strip(), f"an empty output in {cell.source!r}"
    assert "the cell is empty" in nb.cells[1].outputs[-1].evalue
    notes = [o for o in nb.cells[3].outputs if o.output_type == "display_data"]
    assert [o.data["text/plain"] for o in notes] == ["no images: the call did not complete (the error follows)"]


def test_interrupt_during_a_long_generation_cancels_promptly(tmp_path):
    jupyter_client = pytest.importorskip("jupyter_client")
    env = _kernel_env(tmp_path)
    env["SHARK_SIM_LATENCY"] = "60"
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        kc.execute_interactive("%load_ext shark_nb", timeout=60)
        outputs = []
        msg_id = kc.execute("%shark --wait task --quality low a very slow picture")
        time.sleep(3)
        started = time.monotonic()
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=30)
        assert time.monotonic() - started < 20
        assert reply["content"]["status"] == "error"
        while True:
            msg = kc.get_iopub_msg(timeout=10)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            outputs.append(msg)
        errors = [m["content"] for m in outputs if m["msg_type"] == "error"]
        assert errors and "interrupted" in errors[0]["evalue"]
        # the kernel is still usable
        result = kc.execute_interactive("1 + 1", timeout=30)
        assert result["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
