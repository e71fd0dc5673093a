"""One amount reads the same everywhere: the gallery, the result's repr and HTML, the ledger's
summary, table and budget refusal, and ``python -m shark_nb`` all write money with shark_nb.text
(whole cents from one cent up, up to 4 decimals below a cent, "unknown" for unknown). And the
package's own modules hold no second money formatter, no second spelling of an environment
variable and no second default save folder."""

from __future__ import annotations

import html
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from shark_nb import config, display, text
from shark_nb.display import Gallery
from shark_nb.errors import BudgetExceededError
from shark_nb.ledger import Ledger
from shark_nb.request import build_request
from shark_nb.results import GeneratedImage, GenerationResult

PACKAGE = Path(__file__).resolve().parents[1] / "shark_nb"
CREDITS = [5_000, 422.4, 27.2, 0.5, 99, 123_456, 1_234.5678]


def png(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (seed * 40 % 256, 90, 160)).save(buf, "PNG")
    return buf.getvalue()


def result(credit, model="gpt-image-2", **fields):
    req = build_request("a fox", model=model, **fields)
    return GenerationResult(images=[GeneratedImage.from_bytes(png(i), index=i) for i in range(2)],
                            credit=credit, tracing_id="t-1", request=req, latency=1.5)


@pytest.mark.parametrize("credit", CREDITS)
def test_the_same_credit_shows_the_same_dollars_everywhere(tmp_path, credit):
    money, usd = text.money(credit), text.usd_of_credit(credit)
    r = result(credit)
    assert display.fmt_credit(credit) == money and display.fmt_credit(credit, usd=False) == text.credit(credit)
    assert f"this call: {html.escape(money)}" in r._repr_html_()
    assert f"credit={money}" in repr(r)
    gallery = Gallery(r)
    assert f"this call: {html.escape(money)}" in gallery.to_html() and f"this call: {money}" in gallery.to_text()

    led = Ledger(tmp_path / "s.jsonl")
    led.record({"model": r.model, "prompt": "a fox", "params": r.request.params(), "outcome": "ok",
                "images": 2, "credit": credit, "estimate_credit": 10.0})
    assert money in led.summary() and money in repr(led)
    table = led._repr_html_()
    assert f">{html.escape(usd)}</td>" in table and f">{html.escape(text.number(credit))}</td>" in table

    led.budget = credit  # all of it spent: the next call is refused, its estimate in the same spelling
    with pytest.raises(BudgetExceededError) as info:
        led.check_budget(credit)
    assert f"estimated at {money} " in str(info.value) and f"the session budget of {money}" in str(info.value)
    # every dollar figure any of them printed is one text.usd would print
    for shown in (r._repr_html_(), repr(r), gallery.to_text(), led.summary(), table, str(info.value)):
        for amount in re.findall(r"-?\$[\d,]+(?:\.\d+)?", html.unescape(shown)):
            assert amount == text.usd(float(amount.replace("$", "").replace(",", ""))), (amount, shown[:200])


@pytest.mark.parametrize("model, fields", [("gemini", {}), ("seedream", {}), ("midjourney", {})])
def test_unknown_credit_is_the_word_unknown_never_zero(tmp_path, model, fields):
    r = result(None, model, **fields)
    assert "credit=unknown" in repr(r)
    page = r._repr_html_()
    assert "this call: credit unknown" in page and "$0" not in page and "0 credit" not in page
    assert display.fmt_credit(None) == "unknown"


def test_a_known_estimate_is_shown_beside_an_unknown_credit():
    r = result(None, "gpt-image-2", quality="low")
    assert f"credit unknown (estimate {text.credit(r.estimate_credit)})" in r._repr_html_()


def test_bytes_and_durations_read_the_same_in_the_gallery_and_the_repr():
    r = result(300)
    size = text.bytes_(len(r[0].data))
    assert size in repr(r[0]) and size in r._repr_html_() and display.human_bytes(len(r[0].data)) == size
    assert text.duration(1.5) in r._repr_html_()


# ------------------------------------------------------------------ no second writer, no second name

OWNED = ("display.py", "ledger.py", "results.py", "__main__.py", "config.py", "compare.py", "text.py")
# a format spec that writes money or credit by hand: "${x:.4f}", "{credit:,.1f} credit", "${...}"
HAND_MONEY = re.compile(r"\$\{|\{[^{}]*(credit|usd|cost|budget|remaining|estimate)[^{}]*:[^{}]*f\}", re.I)


@pytest.mark.parametrize("name", OWNED)
def test_no_module_formats_money_by_hand(name):
    source = (PACKAGE / name).read_text("utf-8")
    if name == "text.py":
        return  # the one writer
    assert [m.group(0) for m in HAND_MONEY.finditer(source)] == []


ENV_NAMES = ("SHARK_API_KEY", "SHARK_BASE_URL", "SHARK_OFFLINE", "SHARK_NB_HOME", "SHARK_SIM_LATENCY", "SHARK_NB_SLOW")


def test_every_environment_name_is_defined_once_in_config():
    defined = {v for k, v in vars(config).items() if k.startswith("ENV_")}
    assert defined == set(ENV_NAMES)


@pytest.mark.parametrize("name", ["display.py", "ledger.py", "results.py", "__main__.py",
                                  *sorted(f"client/{p.name}" for p in (PACKAGE / "client").glob("*.py")),
                                  "session.py", "request.py", "compare.py"])
def test_no_other_module_spells_an_environment_name_or_the_save_folder(name):
    source = (PACKAGE / name).read_text("utf-8")
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
    # names in quotes are lookups; the docstrings may mention them in backticks
    quoted = [n for n in ENV_NAMES if re.search(rf"""["']{n}["']""", code)]
    assert quoted == [] and f'"{config.DEFAULT_SAVE_FOLDER}"' not in code
