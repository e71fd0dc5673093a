"""``%shark`` with every model: options derived from the schemas, per-model help, did-you-mean,
``%shark compare``, ``%config`` defaults per model — through a real InteractiveShell against the
in-process simulator (and once through a real kernel).

The body each model was sent is read from ``sim.log`` (what the simulator received, data URLs
elided), so the tests check the wire, not the request object.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from shark_nb import magic
from shark_nb.client import Shark
from shark_nb.compare import ComparisonGrid
from shark_nb.ledger import Ledger, reset_default_ledger
from shark_nb.magic import options
from shark_nb.schemas import PRICE_BOOK, models
from shark_nb.simulator import Simulator
from test_magic import _forget_config, _kernel_env, fails, html_of, ok, run

GPT, GEMINI, SEEDREAM, MJ, GROK = (s.id for s in models())
STYLE_URL = "https://example.com/style.png"


@pytest.fixture
def sim():
    return Simulator(latency=0.0)


@pytest.fixture
def ip(tmp_path, monkeypatch, sim):
    """The shell with the extension loaded, on a client over ``sim`` with its own ledger."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (96, 64), "green").save(tmp_path / "ref.png")
    shell = InteractiveShell.instance()
    magic.unload_ipython_extension(shell)
    _forget_config(shell)
    reset_default_ledger()
    PRICE_BOOK.clear()  # prices learned by earlier tests would turn "unknown" into an estimate
    client = Shark(simulator=sim, ledger=Ledger(tmp_path / "ledger.jsonl"), quiet=True)
    magic.set_client(client)
    magic.load_ipython_extension(shell)
    yield shell
    for name in ("_shark", "grid", "g"):
        shell.user_ns.pop(name, None)
    magic.unload_ipython_extension(shell)
    _forget_config(shell)
    magic.reset_client()
    client.close()
    reset_default_ledger()
    PRICE_BOOK.clear()


def posted(sim) -> list[dict]:
    """The bodies the simulator received and processed, in order (a request answered by an
    injected fault has none)."""
    return [e["json"] for e in sim.log if e["route"] == "post" and "json" in e]


def ledger():
    return magic.get_client().ledger


# ---------------------------------------------------------------------- each model, its own body

MODEL_CALLS = [
    ("%shark -n 2 --size 1536x1024 --quality low --background opaque --format webp a fox",
     {"model": GPT, "prompt": "a fox", "n": 2, "size": "1536x1024", "quality": "low", "background": "opaque",
      "output_format": "webp"}),
    ("%shark --model gemini -n 2 --seed 7 --image-size 2K --aspect-ratio 16:9 --response-format url a fox",
     {"model": GEMINI, "prompt": "a fox", "n": 2, "seed": 7, "image_size": "2K", "aspect_ratio": "16:9",
      "response_format": "url"}),
    ("%shark --model nano-banana --aspect-ratio=21:9 a fox",
     {"model": GEMINI, "prompt": "a fox", "aspect_ratio": "21:9"}),
    ("%shark --model seedream --size 1536*1024 a fox",
     {"model": SEEDREAM, "prompt": "a fox", "size": "1536*1024"}),
    ("%shark --model mj --aspect-ratio 21:9 --version 6.1 --quality 0.5 --stylize 250 --chaos 10 --weird 5 "
     f"--niji 6 --seed 42 --sref {STYLE_URL} a fox",
     {"model": MJ, "prompt": "a fox", "aspect_ratio": "21:9", "version": "6.1", "quality": "0.5", "stylize": 250,
      "chaos": 10, "weird": 5, "niji": "6", "seed": 42, "sref": STYLE_URL}),
    ("%shark --model midjourney --version 7.0 --quality 2 a fox",  # numbers sent as the API's strings
     {"model": MJ, "prompt": "a fox", "version": "7", "quality": "2"}),
    ("%%shark --model grok --image ref.png\nmake it night",
     {"model": GROK, "prompt": "make it night", "image": "<data:image/png>"}),
]


@pytest.mark.parametrize("cell, body", MODEL_CALLS, ids=lambda x: x.split()[2] if isinstance(x, str) else "")
def test_each_model_is_sent_exactly_its_own_fields(ip, sim, cell, body, tmp_path):
    ok(ip, cell)
    (sent,) = posted(sim)
    if body.get("image") == "<data:image/png>":
        assert sent["image"].startswith("data:image/png;base64,")
        sent = {**sent, "image": "<data:image/png>"}
    assert sent == body
    result = ip.user_ns["_shark"]
    assert result.request.model == body["model"] and len(result.images) == body.get("n", 1)
    assert all((tmp_path / p).is_file() for p in result.saved)
    assert ledger().calls == 1


def test_a_model_without_options_gets_only_model_and_prompt(ip, sim):
    ok(ip, "%shark --model seedream a plain fox")
    ok(ip, "%shark --model mj a plain fox")
    assert posted(sim) == [{"model": SEEDREAM, "prompt": "a plain fox"}, {"model": MJ, "prompt": "a plain fox"}]


def test_every_setting_of_every_model_is_an_option(ip):
    parser = magic._loaded[id(ip)]._parser
    for spec in models():
        for f in spec.settings:
            assert f.option in parser._option_string_actions, (spec.id, f.name)
    shared = {o.option: {s.name for s in o.owners} for o in options.schema_options()}
    assert shared["--size"] == {"gpt-image-2", "seedream"}
    assert shared["--quality"] == {"gpt-image-2", "midjourney"}
    assert shared["--seed"] == {"gemini", "midjourney"} and shared["--aspect-ratio"] == {"gemini", "midjourney"}
    assert shared["-n"] == {"gpt-image-2", "gemini"}


def test_one_option_means_the_chosen_models_field(ip, sim):
    ok(ip, "%shark --quality low --size 1024x1024 a fox")
    ok(ip, "%shark --model mj --quality 0.25 a fox")
    ok(ip, "%shark --model seedream --size 2048*2048 a fox")
    first, second, third = posted(sim)
    assert first["quality"] == "low" and second["quality"] == "0.25" and third["size"] == "2048*2048"
    # the same text judged by each model's schema: 0.25 is no gpt-image-2 quality, low no midjourney one
    assert "quality='0.25'" in fails(ip, "%shark --quality 0.25 a fox")
    assert "quality='low'" in fails(ip, "%shark --model mj --quality low a fox")
    assert len(posted(sim)) == 3


# ------------------------------------------------------------------- bad values, refused before sending

BAD = [
    ("%shark --model gemini --image-size 3K a fox", ["image_size='3K'", GEMINI, "'1K', '2K', '4K'"]),
    ("%shark --model gemini --seed=-2 a fox", ["seed=-2", "from -1 to 2,147,483,647"]),
    ("%shark --model gemini -n 0 a fox", ["n=0", "from 1 to 4"]),
    ("%shark --model gemini --response-format png a fox", ["response_format='png'", "'b64_json', 'url'"]),
    ("%shark --model seedream --size 1024x1024 a fox", ["size='1024x1024'", "did you mean '1024*1024'?"]),
    ("%shark --model seedream --size auto a fox", ["size='auto'", SEEDREAM]),
    ("%shark --model mj --stylize 1001 a fox", ["stylize=1001", "from 0 to 1,000"]),
    ("%shark --model mj --chaos 2.5 a fox", ["chaos=2.5", "a whole number"]),
    ("%shark --model mj --weird -1 a fox", ["weird=-1", "from 0 to 3,000"]),
    ("%shark --model mj --version 6.2 a fox", ["version=", "'6', '6.1', '7'"]),
    ("%shark --model mj --niji 4 a fox", ["niji=", "'close', '0', '5', '6'"]),
    ("%shark --model mj --sref ref.png a fox", ["sref='ref.png'", "URL"]),
    ("%shark --model grok make it night", ["grok-edit edits an image", "--image"]),
    ("%shark --model grok --image ref.png --image ref.png make it night", ["at most 1 reference image"]),
    ("%shark --size 1024*1024 a fox", ["size='1024*1024'", "did you mean '1024x1024'?"]),
]


@pytest.mark.parametrize("cell, fragments", BAD, ids=[c for c, _ in BAD])
def test_bad_values_are_refused_before_sending(ip, sim, cell, fragments):
    message = fails(ip, cell)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert posted(sim) == [] and ledger().records == []


@pytest.mark.parametrize("cell, option, owners, model, takes", [
    ("%shark --aspect-ratio 16:9 a fox", "--aspect-ratio", "gemini/midjourney", "gpt-image-2",
     "gpt-image-2 takes --size"),
    ("%shark --model gemini --size 1024x1024 a fox", "--size", "gpt-image-2/seedream", "gemini",
     "gemini takes --aspect-ratio and --image-size"),
    ("%shark --model gemini --quality low a fox", "--quality", "gpt-image-2/midjourney", "gemini",
     "gemini takes --image-size"),
    ("%shark --model seedream --seed 3 a fox", "--seed", "gemini/midjourney", "seedream", "(seedream's options: --size;"),
    ("%shark --model mj --image ref.png a fox", "--image", "gpt-image-2/gemini/grok-edit", "midjourney",
     "midjourney takes --sref"),
    ("%shark --model gemini --sref https://x.org/a.png a fox", "--sref", "midjourney", "gemini", "gemini takes --image"),
    ("%shark --model grok --image ref.png -n 2 a fox", "-n", "gpt-image-2/gemini", "grok-edit",
     "grok-edit's options: --image;"),
    ("%shark --model seedream --mask ref.png a fox", "--mask", "gpt-image-2", "seedream", "seedream's options: --size;"),
])
def test_an_option_of_another_model_names_who_takes_it(ip, sim, cell, option, owners, model, takes):
    message = fails(ip, cell)
    assert f"{option} is a {owners} option, not {model}'s" in message
    assert takes in message and f"%shark --model {model} --help" in message
    assert posted(sim) == []


# -------------------------------------------------------------------------------------- help

def test_help_has_the_common_options_and_what_each_model_takes(ip):
    out = ok(ip, "%shark --help").stdout
    for word in ("--model", "--image", "--wait", "--dry-run", "%shark compare", "Shark.defaults"):
        assert word in out, word
    for spec in models():
        row = next(line for line in out.splitlines() if line.strip().startswith(spec.name + " "))
        assert spec.id in row
        for opt in options.model_options(spec):
            assert opt in row, (spec.name, opt)


@pytest.mark.parametrize("spec", models(), ids=lambda s: s.name)
def test_help_for_one_model_shows_only_its_fields(ip, spec):
    for cell in (f"%shark --model {spec.name} --help", f"%shark --help --model {spec.aliases[0] if spec.aliases else spec.id}"):
        out = ok(ip, cell).stdout
        assert spec.describe() in out
        mine = set(options.model_options(spec))
        for o in options.schema_options():
            if o.option not in mine:
                assert f" {o.option} " not in out, (spec.name, o.option)
    assert ledger().calls == 0


def test_help_for_an_unknown_model_suggests_one(ip):
    assert "did you mean 'midjourney'?" in fails(ip, "%shark --model midjourny --help")


@pytest.mark.parametrize("typed, meant", [
    ("--output-format", "--format"), ("--output_format", "--format"), ("--aspect", "--aspect-ratio"),
    ("--aspect_ratio", "--aspect-ratio"), ("--stylise", "--stylize"), ("--style", "--stylize"),
    ("--qual", "--quality"), ("--Size", "--size"), ("--imagesize", "--image-size"), ("--modle", "--model"),
])
def test_an_unknown_option_gets_a_did_you_mean(ip, sim, typed, meant):
    message = fails(ip, f"%shark {typed} x a fox")
    assert f"unknown option {typed!r} — did you mean {meant}?" in message
    assert posted(sim) == []


def test_an_option_twice_is_refused_not_the_last_one_kept(ip, sim):
    assert "--seed is given twice" in fails(ip, "%shark --model gemini --seed 1 --seed=2 a fox")
    ok(ip, "%shark --model gpt-image-2 --image ref.png --image ref.png --quality low two refs")
    assert len(posted(sim)[0]["image"]) == 2  # --image is repeatable


# -------------------------------------------------------------------------------------- dry run

def test_dry_run_shows_the_exact_body_and_an_unknown_estimate_never_zero(ip, sim):
    out = ok(ip, "%shark --dry-run --model gemini --aspect-ratio 16:9 --seed 3 a fox").stdout
    body = json.loads(out[out.index("{"): out.index("}") + 1])
    assert body == {"model": GEMINI, "prompt": "a fox", "seed": 3, "aspect_ratio": "16:9"}
    assert "Estimated cost: unknown" in out and "0 credit" not in out and "$0.00" not in out
    ok(ip, "%shark budget $1")
    out = ok(ip, "%shark --dry-run --model seedream a fox").stdout
    assert "the cost is unknown, so the budget cannot judge it in advance" in out
    assert posted(sim) == []


def test_dry_run_estimate_says_its_basis(ip, sim):
    from shark_nb import text

    out = ok(ip, "%shark --dry-run --quality high --size 1024x1024 a fox").stdout
    request = magic.get_client().build("a fox", quality="high", size="1024x1024")
    assert f"Estimated cost: ~{text.money(request.estimate_credit())}, token table" in out
    ok(ip, "%shark --model gemini --image-size 2K a fox")  # a charged call: its price is learned
    out = ok(ip, "%shark --dry-run --model gemini --image-size 2K a fox").stdout
    assert "Estimated cost: ~650 credit ($0.07), learned from 1 call" in out
    assert len(posted(sim)) == 1


# ------------------------------------------------------------------------------------ compare

def test_compare_models_shows_the_estimate_then_the_grid(ip, sim, tmp_path):
    ok(ip, "%shark budget $1")
    result, cap = run(ip, "%shark compare --models gpt-image-2,gemini,seedream -o grid a fox in the snow")
    result.raise_error()
    first, last = cap.outputs[0], cap.outputs[-1]
    note = first.data["text/plain"]
    assert note.startswith("comparing — 3 cells, estimated ") and "+ 2 cells of unknown cost" in note
    assert "budget: 10,000 credit ($1.00) left" in note and "Sending" in note
    assert last.update and "Comparison" in last.data["text/html"]  # the grid replaced the estimate
    grid = ip.user_ns["grid"]
    assert isinstance(grid, ComparisonGrid) and ip.user_ns["_shark"] is grid
    assert grid.labels == ["gpt-image-2", "gemini", "seedream"] and grid.failures == 0
    bodies = sorted(posted(sim), key=lambda b: b["model"])
    assert [b["model"] for b in bodies] == sorted([GPT, GEMINI, SEEDREAM])
    assert {b["model"]: set(b) for b in bodies} == {
        GPT: {"model", "prompt", "n", "size", "quality", "background", "output_format"},
        GEMINI: {"model", "prompt"}, SEEDREAM: {"model", "prompt"}}
    assert len(list((tmp_path / "shark-images").iterdir())) == 3  # every paid image is on disk
    assert ledger().calls == 3


def test_compare_cell_form_and_common_options_per_model(ip, sim):
    ok(ip, "%%shark compare --models gemini,mj --aspect-ratio 16:9 --seed 5 -o grid\na fox\nat dusk")
    assert ip.user_ns["grid"].prompt == "a fox\nat dusk"
    assert sorted(posted(sim), key=lambda b: b["model"]) == [
        {"model": GEMINI, "prompt": "a fox\nat dusk", "seed": 5, "aspect_ratio": "16:9"},
        {"model": MJ, "prompt": "a fox\nat dusk", "aspect_ratio": "16:9", "seed": 5}]


def test_compare_vary_one_field_of_one_model(ip, sim):
    ok(ip, "%shark compare --model gpt-image-2 --vary quality=low,medium,high --size 1024x1024 -o grid a fox")
    grid = ip.user_ns["grid"]
    assert grid.labels == ["quality=low", "quality=medium", "quality=high"]
    assert sorted(b["quality"] for b in posted(sim)) == ["high", "low", "medium"]
    assert {b["size"] for b in posted(sim)} == {"1024x1024"}
    ok(ip, "%shark compare --model mj --vary stylize=0,1000 --vary quality=0.25,1 -o grid a fox")
    assert len(ip.user_ns["grid"].labels) == 4
    assert {(b["stylize"], b["quality"]) for b in posted(sim)[3:]} == {(0, "0.25"), (0, "1"), (1000, "0.25"), (1000, "1")}


@pytest.mark.parametrize("cell, fragments", [
    ("%shark compare --models gpt-image-2,seedream --quality low a fox", ["[seedream] --quality is a"]),
    ("%shark compare --models gpt-image-2,grok a fox", ["[grok-edit] grok-edit edits an image"]),
    ("%shark compare --model seedream --vary size=1024*1024,1024x1024 a fox", ["[size=1024x1024]", "'1024*1024'"]),
    ("%shark compare --model gpt-image-2 --quality low --vary quality=low,high a fox", ["--quality and --vary quality"]),
    ("%shark compare --models gpt-image-2,gemini --vary n=1,2 a fox", ["not both"]),
    ("%shark compare --model gemini --vary seed a fox", ["--vary FIELD=V1,V2"]),
    ("%shark compare --models gemini -n 2 --model gpt a fox", ["drop --model"]),
    ("%shark --models gemini,mj a fox", ["options of %shark compare"]),
])
def test_a_bad_cell_is_one_line_and_nothing_is_sent(ip, sim, cell, fragments):
    message = fails(ip, cell)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert posted(sim) == [] and ledger().records == []


def test_a_failing_cell_is_shown_in_place(ip, sim):
    sim.inject("post", "status", status=400, type="invalid_request_error", message="simulated refusal",
               code="simulated")
    result, cap = run(ip, "%shark compare --models gpt-image-2,gemini,seedream -o grid a fox")
    result.raise_error()  # the cell succeeds: the failure is in its cell
    grid = ip.user_ns["grid"]
    assert grid.failures == 1 and sim.requests["post"] == 3 and len(posted(sim)) == 2
    html = html_of(cap)
    assert "simulated refusal" in html and html.count("<img ") == 2


def test_the_budget_refuses_the_whole_grid(ip, sim):
    ok(ip, "%shark budget 1000")  # each low cell fits, the grid does not
    message = fails(ip, "%shark compare --model gpt-image-2 --vary quality=low,low,high --size 1024x1024 a fox")
    assert "the grid of 3 cells is over the budget" in message and "nothing was sent" in message
    assert posted(sim) == [] and ledger().records == []


def test_compare_dry_run_shows_every_body_and_the_total(ip, sim):
    message = fails(ip, "%shark compare --dry-run --models gpt-image-2,mj --quality 1 a fox")
    assert "[gpt-image-2] quality='1'" in message  # one --quality, each model's meaning
    out = ok(ip, "%shark compare --dry-run --models gpt-image-2,mj a fox").stdout
    assert "[gpt-image-2]" in out and "[midjourney]" in out and f'"model": "{MJ}"' in out
    assert "Total: 2 cells, estimated " in out and "+ 1 cell of unknown cost" in out
    assert posted(sim) == []


# ------------------------------------------------------------------------------ %config defaults

def test_config_defaults_per_model(ip, sim):
    ok(ip, '%config Shark.defaults = {"gemini": {"aspect_ratio": "16:9", "image_size": "2K"}, "mj": {"stylize": 250}}')
    ok(ip, "%shark --model gemini a fox")
    ok(ip, "%shark --model gemini --aspect-ratio 1:1 a fox")  # an option wins over the default
    ok(ip, "%shark --model midjourney a fox")
    ok(ip, "%shark --model seedream a fox")
    gem1, gem2, mj, sd = posted(sim)
    assert gem1 == {"model": GEMINI, "prompt": "a fox", "image_size": "2K", "aspect_ratio": "16:9"}
    assert gem2["aspect_ratio"] == "1:1" and gem2["image_size"] == "2K"
    assert mj == {"model": MJ, "prompt": "a fox", "stylize": 250}
    assert sd == {"model": SEEDREAM, "prompt": "a fox"}
    config = ok(ip, "%shark config").stdout
    assert "gemini: image_size=2K aspect_ratio=16:9" in config and "midjourney: stylize=250" in config


def test_gpt_traits_are_never_sent_to_another_model(ip, sim):
    ok(ip, '%config Shark.size = "1536x1024"')
    ok(ip, "%config Shark.n = 2")
    ok(ip, '%config Shark.quality = "low"')
    ok(ip, "%shark --model gemini a fox")
    ok(ip, "%shark --model mj a fox")
    ok(ip, "%shark a fox")
    gemini, mj, gpt = posted(sim)
    assert gemini == {"model": GEMINI, "prompt": "a fox"} and mj == {"model": MJ, "prompt": "a fox"}
    assert gpt["size"] == "1536x1024" and gpt["n"] == 2 and gpt["quality"] == "low"


def test_config_model_takes_an_alias_and_defaults_are_validated(ip, sim, caplog):
    ok(ip, '%config Shark.model = "nano-banana"')
    ok(ip, "%shark --seed 4 a fox")
    assert posted(sim)[0] == {"model": GEMINI, "prompt": "a fox", "seed": 4}
    m = magic._loaded[id(ip)]
    for bad, fragment in [({"gemini": {"size": "1024x1024"}}, "gemini has no size"),
                          ({"seedream": {"size": "1024x1024"}}, "did you mean '1024*1024'?"),
                          ({"dalle": {}}, "model='dalle'"),
                          ({"gemini": "16:9"}, "expected a dict of gemini's fields")]:
        run(ip, f"%config Shark.defaults = {bad!r}")
        assert fragment in caplog.text, (bad, caplog.text)
        assert m.defaults == {}
        caplog.clear()
    ok(ip, '%config Shark.defaults = {"gpt": {"quality": "LOW"}}')
    assert m.defaults == {GPT: {"quality": "low"}}  # keyed by id, values canonical


# ---------------------------------------------------------------------------------- a real kernel

def test_in_a_real_kernel_a_non_gpt_model_via_the_magic(tmp_path):
    pytest.importorskip("jupyter_client")
    from kernel_driver import Kernel

    kernel = Kernel(_kernel_env(tmp_path), cwd=str(tmp_path))
    try:
        kernel.run("%load_ext shark_nb")
        kernel.run("%shark --model gemini --aspect-ratio 16:9 --image-size 2K --seed 3 -o g a fox in the snow")
        assert kernel.value("(g.request.model, g.images[0].size, g.request.fields)") == (
            GEMINI, (2048, 1152), {"seed": 3, "image_size": "2K", "aspect_ratio": "16:9"})
        _, out = kernel.run("%shark --model mj --dry-run --stylize 900 a fox")
        assert '"stylize": 900' in out and "Estimated cost: unknown" in out
        assert len(list((Path(tmp_path) / "shark-images").glob("*.png"))) == 1
    finally:
        kernel.close()


def test_schema_options_may_not_collide(monkeypatch):
    """A model whose field would take a common option, or one option meaning two field names,
    is refused when the options are built (a programming error, not a silent override)."""
    from shark_nb.schemas import Field, ModelSpec

    def specs(*fields_per_model):
        return [ModelSpec(id=f"test/m{i}", name=f"m{i}", title="t", fields=fields)
                for i, fields in enumerate(fields_per_model)]

    cases = [
        (specs((Field("model_version", "text", option="--model"),)), "the magic's own option --model"),
        (specs((Field("size", "text"),), (Field("dims", "text", option="--size"),)),
         "option --size would mean 'size' on test/m0 and 'dims' on test/m1"),
    ]
    for fake, message in cases:
        monkeypatch.setattr(options, "models", lambda fake=fake: fake)
        options._options.cache_clear()
        with pytest.raises(TypeError, match=message):
            options.schema_options()
    monkeypatch.undo()
    options._options.cache_clear()
    assert len(options.schema_options()) >= 15
