"""The bad-input catalogue: every input a user can get wrong, through the three surfaces.

One table, :data:`CASES`, of ``Case(id, surface, input, expected_fragments)``:

* ``surface="client"``: ``Shark.generate(**input)`` (or the other entry point named by the
  input: ``generate_many``, the ``Shark(...)`` constructor, ``set_key``, the ledger's budget)
  raises :class:`~shark_nb.ValidationError` (or the class named by ``Case.error``);
* ``surface="magic"``: the cell, run in a real :class:`~IPython.core.interactiveshell.InteractiveShell`
  with the extension loaded, fails with the magic's :class:`~shark_nb.magic.SharkUsageError`,
  shown as ONE line with no traceback;
* ``surface="studio"``: the studio is built (``studio(client, **defaults)``), files are added with
  ``add_reference`` / ``set_mask`` or delivered to the upload widgets the way the browser does, and
  Generate is clicked: the message appears in the status line (or next to the upload button), and
  nothing is sent.

Every refused case names what is wrong: the test asserts on fragments of the message (the field
and the allowed values). Every case runs against an in-process :class:`~shark_nb.simulator.Simulator`
with its own ledger file, and a refused case must leave ``sim.log`` empty and the ledger with no
record (and no file): *nothing was sent*. Cases whose settings come from the environment
(``SHARK_BASE_URL``, ``SHARK_API_KEY``) are refused before a client exists: they assert that the
magic's shared client was never created and that no ledger file appeared. ``expected_fragments=()``
marks an input that is fine (unicode prompts): it must be accepted and sent, once.

The same table, with the messages actually produced, is ``docs/bad-inputs.md``. Regenerate it with

    python tools/make_bad_input_table.py

(the default ``pytest`` run never writes into the repository; :func:`test_doc_lists_every_case`
only checks that the doc lists every case id).
"""

from __future__ import annotations

import asyncio
import html
import os
import random
import re
import struct
import zlib
from collections import Counter
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import shark_nb
from shark_nb import BudgetExceededError, ValidationError, config, magic, session
from shark_nb.ledger import Ledger, reset_default_ledger

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad-inputs.md"
SURFACES = ("client", "magic", "studio")

#: A key that looks real, for the cases about keys; never a real one.
FAKE_KEY = "sk-test-0d1e2f3a4b5c"
LONG_PROMPT = "a fox " + "x" * 99_994          # 100,000 characters (the limit is 32,000)
CONTROL_PROMPT = "a fox \x1b[31min red\x1b[0m"    # an ANSI escape sequence pasted from a terminal
NUL_PROMPT = "a fox\x00 in the snow"
#: A file name with a byte that is not UTF-8, as os.listdir() returns it (surrogateescape).
SURROGATE_NAME_PROMPT = "photo of r\udcffsum.png"
CUT_EMOJI_PROMPT = "a fox \ud83e"                # an emoji cut in half: its high surrogate alone
UNICODE_PROMPT = "一只狐狸在雪中 🦊 — ñandú, Ærø, «quotes», naïve café"
BIG_UPLOAD = 20_000_001                      # one byte over the studio's per-file upload limit
INPUT_HINT = ("a PNG, JPEG, WebP or GIF image",)   # the allowed inputs, named in every image message
MASK_HINT = ("a PNG with an alpha channel",)


# ------------------------------------------------------------------------------------ the table

@dataclass(frozen=True)
class Case:
    """One bad input on one surface. ``expected_fragments=()``: the input is fine (accepted)."""

    id: str
    surface: str
    input: Any
    expected_fragments: tuple[str, ...]
    #: The doc's "input" column when ``input`` is too long to show.
    short: str | None = None
    #: Environment for the cases about settings (key, base URL).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Notebook variables the magic's cell refers to.
    ns: Mapping[str, Any] = field(default_factory=dict)
    #: Session budget in credits, set on the ledger before the input is tried.
    budget: float | None = None
    #: The exception the client raises (by class name).
    error: str = "ValidationError"

    @property
    def accepted(self) -> bool:
        return not self.expected_fragments

    @property
    def key(self) -> str:
        return f"{self.surface}-{self.id}"


def C(id: str, input: Any, *expected: str, **kw: Any) -> Case:
    return Case(id, "client", input, tuple(expected), **kw)


def M(id: str, input: Any, *expected: str, **kw: Any) -> Case:
    return Case(id, "magic", input, tuple(expected), **kw)


def S(id: str, input: Any, *expected: str, **kw: Any) -> Case:
    return Case(id, "studio", input, tuple(expected), **kw)


def gen(**kwargs: Any) -> tuple[str, dict]:
    """client input: ``Shark.generate(prompt="a fox", **kwargs)``."""
    return ("generate", {"prompt": "a fox", **kwargs})


SIZES = ("'1024x1024'", "'1536x1024'", "'1024x1536'", "'2048x2048'", "'auto'")
N_RANGE = ("a whole number from 1 to 4",)

CASES: list[Case] = [
    # ---------------------------------------------------------------- client: enums and ranges
    C("size-512", gen(size="512x512"), "size='512x512'", *SIZES),
    C("size-int", gen(size=1024), "size=1024", "'1024x1024'"),
    C("quality-ultra", gen(quality="ultra"), "quality='ultra'", "'low'", "'medium'", "'high'", "'auto'"),
    C("background-transparent", gen(background="transparent"), "background='transparent'", "'opaque'", "'auto'"),
    C("output-format-gif", gen(output_format="gif"), "output_format='gif'", "'png'", "'jpeg'", "'webp'"),
    C("n-0", gen(n=0), "n=0", *N_RANGE),
    C("n-5", gen(n=5), "n=5", *N_RANGE),
    C("n-2.5", gen(n=2.5), "n=2.5", *N_RANGE),
    C("n-True", gen(n=True), "n=True", *N_RANGE),
    C("n-str", gen(n="2"), "n='2'", *N_RANGE),
    C("wait-later", gen(wait="later"), "wait='later'", "'sync'", "'task'"),
    C("task-timeout-29", gen(wait="task", task_timeout=29), "timeout=29", "30 to 1800"),
    C("task-timeout-1801", gen(wait="task", task_timeout=1801), "timeout=1801", "30 to 1800"),
    C("task-timeout-nan", gen(wait="task", task_timeout=float("nan")), "timeout=nan", "30 to 1800"),
    C("model-space", gen(model="openai/gpt image 2"), "model=", "one of the known models", "did you mean 'gpt-image-2'"),
    # ---------------------------------------------------------------- client: prompts
    C("prompt-empty", gen(prompt=""), "prompt=''", "the prompt is empty"),
    C("prompt-whitespace", gen(prompt="  \n\t "), "prompt=", "the prompt is empty"),
    C("prompt-100k", gen(prompt=LONG_PROMPT), "prompt=", "100,000 characters", "at most 32,000 characters",
      short="prompt='a fox xxx…' (100,000 characters)"),
    C("prompt-control-ansi", gen(prompt=CONTROL_PROMPT), "prompt=", "control characters 0x1b",
      "printable text"),
    C("prompt-control-nul", gen(prompt=NUL_PROMPT), "prompt=", "control characters 0x0", "printable text"),
    C("prompt-none", gen(prompt=None), "prompt=None", "a text string"),
    C("prompt-unicode-ok", gen(prompt=UNICODE_PROMPT, quality="low", size="1024x1024")),
    C("prompt-surrogate-file-name", gen(prompt=SURROGATE_NAME_PROMPT), "prompt=", "position 10", "U+DCFF",
      "valid Unicode text"),
    C("prompt-surrogate-start", gen(prompt="\udc80a fox"), "prompt=", "position 0", "U+DC80", "valid Unicode text"),
    C("prompt-surrogate-cut-emoji", gen(prompt=CUT_EMOJI_PROMPT), "prompt=", "position 6", "U+D83E",
      "valid Unicode text"),
    C("model-surrogate", gen(model="openai/gpt-image-2\udcff"), "model=", "position 18", "U+DCFF"),
    # ---------------------------------------------------------------- client: image inputs
    C("image-not-an-image", gen(image="notes.txt"), "image[0]='notes.txt'", "not a recognised image", *INPUT_HINT),
    C("image-truncated-png", gen(image="truncated.png"), "image[0]='truncated.png'", "damaged or truncated",
      *INPUT_HINT),
    C("image-20000x20000", gen(image="huge-20000x20000.png"), "image[0]=", "20000x20000",
      "40 megapixel limit", *INPUT_HINT),
    C("image-bomb-png", gen(image="bomb.png"), "image[0]='bomb.png'", "10000x10000", "40 megapixel limit"),
    C("image-bomb-gif", gen(image="bomb.gif"), "image[0]='bomb.gif'", "decompression bomb", *INPUT_HINT),
    C("image-missing-path", gen(image="no-such-file.png"), "image[0]='no-such-file.png'", "no such file",
      *INPUT_HINT),
    C("image-directory", gen(image="photos"), "image[0]='photos'", "it is a folder, not a file"),
    C("image-empty-file", gen(image="empty.png"), "image[0]='empty.png'", "it is empty (0 bytes)"),
    C("image-file-url", gen(image="file:///etc/passwd"), "image[0]='file:///etc/passwd'",
      "the file: scheme is not supported", "only http, https and data URLs"),
    C("image-url-credentials", gen(image="https://user:hunter2@example.com/cat.png"),
      "image[0]='https://***@example.com/cat.png'", "carries credentials", "without user name or password"),
    C("image-data-url-text", gen(image="data:text/plain;base64,aGVsbG8="), "image[0]=", "holds 'text/plain'",
      "not an image"),
    C("image-data-url-bad-base64", gen(image="data:image/png;base64,@@not-base64@@"), "image[0]=",
      "cannot be decoded", "valid base64"),
    C("image-int", gen(image=42), "image[0]=42", "a int is not an image input", *INPUT_HINT),
    C("image-17-references", gen(image=["ref.png"] * 17), "image=", "at most 16 reference images",
      short="image=['ref.png'] * 17"),
    C("mask-without-alpha", gen(image="ref.png", mask="mask-rgb.png"), "mask='mask-rgb.png'",
      "no alpha channel", *MASK_HINT),
    C("mask-other-size", gen(image="ref.png", mask="mask-32x32.png"), "mask='mask-32x32.png'",
      "the mask is 32x32 but the reference image is 64x48", *MASK_HINT),
    C("mask-jpeg", gen(image="ref.png", mask="mask.jpg"), "mask='mask.jpg'", "a JPEG image, not a PNG", *MASK_HINT),
    C("mask-without-image", gen(mask="mask.png"), "mask='mask.png'", "at least one reference image"),
    # ---------------------------------------------------------------- client: budget, batches, settings
    C("budget-refusal", gen(quality="high"), "estimated at", "credit", "nothing was sent", budget=1,
      error="BudgetExceededError"),
    C("budget-negative", ("budget", -1), "budget=-1", "a number of credits >= 0"),
    C("budget-usd-negative", ("budget_usd", -2.5), "budget=-2.5", "US dollars >= 0"),
    C("budget-text", ("budget", "lots"), "budget='lots'", "a number of credits"),
    C("budget-nan", ("budget", float("nan")), "budget=nan", "a number of credits"),
    C("concurrency-0", ("generate_many", {"prompts": ["a fox", "a hen"], "concurrency": 0}),
      "concurrency=0", "a whole number from 1 to 64"),
    C("concurrency-65", ("generate_many", {"prompts": ["a fox", "a hen"], "concurrency": 65}),
      "concurrency=65", "a whole number from 1 to 64"),
    C("base-url-http-remote", ("Shark", {"api_key": FAKE_KEY, "base_url": "http://example.com/api/v1"}),
      "base_url='http://example.com/api/v1'", "would travel unencrypted", "https://", "only for localhost"),
    C("base-url-file", ("Shark", {"api_key": FAKE_KEY, "base_url": "file:///etc/shark"}),
      "base_url='file:///etc/shark'", "an https:// URL"),
    C("base-url-credentials", ("Shark", {"api_key": FAKE_KEY, "base_url": f"https://me:{FAKE_KEY}@shark.ai/api/v1"}),
      "base_url='https://***@shark.ai/api/v1'", "without credentials"),
    C("base-url-query", ("Shark", {"api_key": FAKE_KEY, "base_url": f"https://shark.ai/api/v1?key={FAKE_KEY}"}),
      "base_url='https://shark.ai/api/v1?***'", "without ?query"),
    C("base-url-is-a-key", ("Shark", {"api_key": FAKE_KEY, "base_url": FAKE_KEY}),
      "base_url='<hidden>'", "looks like an API key", "SHARK_API_KEY"),
    C("key-trailing-newline", ("Shark", {"api_key": FAKE_KEY + "\n"}), "api_key='<hidden>'",
      "contains whitespace", "no spaces or line breaks"),
    C("key-inner-space", ("Shark", {"api_key": "sk-test 0d1e2f"}), "api_key='<hidden>'", "no spaces or line breaks"),
    C("key-empty", ("Shark", {"api_key": ""}), "api_key='<hidden>'", "a non-empty string"),
    C("key-env-newline", ("Shark", {}), "api_key='<hidden>'", "contains whitespace",
      env={"SHARK_API_KEY": FAKE_KEY + "\n", "SHARK_BASE_URL": "https://shark.ai/api/v1"},
      short="SHARK_API_KEY='sk-…\\n'; Shark()"),
    C("set-key-space", ("set_key", "sk-test 0d1e2f"), "api_key='<hidden>'", "no spaces or line breaks"),
    C("timeout-0", ("Shark", {"timeout": 0}), "timeout=0", "a positive number of seconds"),
    C("max-retries-negative", ("Shark", {"max_retries": -1}), "max_retries=-1", "a whole number >= 0"),

    # ---------------------------------------------------------------- magic
    M("size-512", "%shark --size 512x512 a fox", "size='512x512'", *SIZES),
    M("quality-ultra", "%shark --quality ultra a fox", "quality='ultra'", "'low'", "'high'"),
    M("background-transparent", "%shark --background transparent a fox", "background='transparent'", "'opaque'",
      "'auto'"),
    M("format-gif", "%shark --format gif a fox", "output_format='gif'", "'png'", "'jpeg'", "'webp'"),
    M("n-0", "%shark -n 0 a fox", "n=0", *N_RANGE),
    M("n-5", "%shark -n 5 a fox", "n=5", *N_RANGE),
    M("n-2.5", "%shark -n 2.5 a fox", "n=2.5", "openai/gpt-image-2", *N_RANGE),
    M("n-True", "%shark -n True a fox", "n='True'", "openai/gpt-image-2", *N_RANGE),
    M("wait-later", "%shark --wait later a fox", "wait='later'", "'sync'", "'task'"),
    M("model-space", "%shark --model 'openai/gpt image 2' a fox", "model=", "one of the known models"),
    M("no-prompt", "%shark", "no prompt", "%shark [options] PROMPT"),
    M("cell-whitespace", "%%shark -n 1\n   \n\t\n", "the cell is empty", "write the prompt below"),
    M("prompt-100k", "%%shark\n" + LONG_PROMPT, "prompt=", "100,000 characters", "at most 32,000",
      short="%%shark⏎ 'a fox xxx…' (100,000 characters)"),
    M("prompt-control-cell", "%%shark\n" + CONTROL_PROMPT, "prompt=", "control characters 0x1b",
      short="%%shark⏎ a fox \\x1b[31min red\\x1b[0m"),
    M("prompt-control-variable", "%shark {pasted}", "prompt=", "control characters 0x0",
      ns={"pasted": NUL_PROMPT}, short="pasted = 'a fox\\x00…'; %shark {pasted}"),
    M("prompt-unicode-ok", f"%shark --quality low --size 1024x1024 {UNICODE_PROMPT}"),
    M("prompt-surrogate-variable", "%shark {fname}", "prompt=", "position 10", "U+DCFF", "valid Unicode text",
      ns={"fname": SURROGATE_NAME_PROMPT}, short="fname = os.listdir()[0] (b'\\xff' in the name); %shark {fname}"),
    M("unknown-option", "%shark --colour red a fox", "unknown option '--colour'", "%shark --help"),
    M("option-needs-value", "%shark --size", "option --size needs a value"),
    M("undefined-name", "%shark a {undefined} fox", "unknown name", "{undefined}", "no notebook variable 'undefined'"),
    M("unbalanced-brace", "%shark a fox {in the snow", "unbalanced brace", "{{"),
    M("image-not-an-image", "%shark --image notes.txt a fox", "image[0]='notes.txt'", "not a recognised image",
      *INPUT_HINT),
    M("image-truncated-png", "%shark --image truncated.png a fox", "image[0]='truncated.png'",
      "damaged or truncated"),
    M("image-20000x20000", "%shark --image huge-20000x20000.png a fox", "20000x20000", "40 megapixel limit"),
    M("image-bomb-png", "%shark --image bomb.png a fox", "image[0]='bomb.png'", "40 megapixel limit"),
    M("image-bomb-gif", "%shark --image bomb.gif a fox", "image[0]='bomb.gif'", "decompression bomb"),
    M("image-missing-path", "%shark --image no-such-file.png a fox", "--image no-such-file.png", "file not found"),
    M("image-missing-name", "%shark --image heron a fox", "--image heron", "no notebook variable or file named 'heron'"),
    M("image-directory", "%shark --image photos a fox", "image[0]='photos'", "it is a folder"),
    M("image-file-url", "%shark --image file:///etc/passwd a fox", "image[0]='file:///etc/passwd'",
      "the file: scheme is not supported"),
    M("image-url-credentials", "%shark --image https://user:hunter2@example.com/cat.png a fox",
      "image[0]='https://***@example.com/cat.png'", "carries credentials"),
    M("image-17-references", "%shark " + "--image ref.png " * 17 + "a fox", "at most 16 reference images",
      short="%shark --image ref.png (17 times) a fox"),
    M("mask-without-alpha", "%shark --image ref.png --mask mask-rgb.png a fox", "mask='mask-rgb.png'",
      "no alpha channel", *MASK_HINT),
    M("mask-other-size", "%shark --image ref.png --mask mask-32x32.png a fox",
      "the mask is 32x32 but the reference image is 64x48"),
    M("mask-without-image", "%shark --mask mask.png a fox", "--mask mask.png", "at least one reference image",
      "--image"),
    M("out-not-a-name", "%shark -o 1fox a fox", "-o 1fox", "not a valid Python variable name"),
    M("save-empty", "%shark --save '' a fox", "--save ''", "expected a folder path"),
    M("budget-negative", "%shark budget -5", "budget: '-5' is not an amount", "%shark budget $2.50"),
    M("budget-text", "%shark budget lots", "budget: 'lots' is not an amount", "%shark budget 25000"),
    M("budget-dollar-only", "%shark budget $", "budget: '$' is not an amount"),
    M("budget-refusal", ["%shark budget 0.0001$", "%shark --quality high a fox"], "estimated at",
      "nothing was sent", short="%shark budget 0.0001$ ; %shark --quality high a fox"),
    M("budget-decimal-comma", "%shark budget $2,50", "budget: '$2,50' is not an amount", "comma is ambiguous",
      "$2.50"),
    M("budget-comma-no-currency", "%shark budget 2,5", "budget: '2,5' is not an amount", "comma is ambiguous"),
    M("budget-dollar-thousands", "%shark budget $1,000", "budget: '$1,000' is not an amount",
      "no comma for thousands"),
    M("budget-euro", "%shark budget €2.50", "budget: '€2.50' is not an amount", "only US dollars or credits"),
    M("budget-exponent", "%shark budget 1e3", "budget: '1e3' is not an amount", "%shark budget 25000"),
    M("budget-nan", "%shark budget NaN", "budget: 'NaN' is not an amount"),
    M("budget-negative-dollars", "%shark budget $-2.50", "budget: '$-2.50' is not an amount", "cannot be negative"),
    M("cell-empty", "%%shark --quality low", "the cell is empty", "below the %%shark line"),
    M("base-url-no-scheme", "%shark a fox", "base_url='shark.ai'", "no https:// in front",
      env={"SHARK_API_KEY": FAKE_KEY, "SHARK_BASE_URL": "shark.ai"}, short="SHARK_BASE_URL=shark.ai; %shark a fox"),
    M("base-url-ftp", "%shark a fox", "base_url='ftp://x'", "ftp: scheme is not supported",
      env={"SHARK_API_KEY": FAKE_KEY, "SHARK_BASE_URL": "ftp://x"}, short="SHARK_BASE_URL=ftp://x; %shark a fox"),
    M("base-url-no-host", "%shark a fox", "base_url='https://'", "no host name",
      env={"SHARK_API_KEY": FAKE_KEY, "SHARK_BASE_URL": "https://"}, short="SHARK_BASE_URL=https://; %shark a fox"),
    M("base-url-spaces", "%shark a fox", "base_url='   '", "an https:// URL",
      env={"SHARK_API_KEY": FAKE_KEY, "SHARK_BASE_URL": "   "}, short="SHARK_BASE_URL='   '; %shark a fox"),
    M("subcommand-extra-words", "%shark ledger of a ship", "%shark ledger takes no arguments", "%shark -- ledger"),
    M("base-url-http-remote", "%shark a fox", "base_url='http://example.com/api/v1'", "would travel unencrypted",
      env={"SHARK_API_KEY": FAKE_KEY, "SHARK_BASE_URL": "http://example.com/api/v1"},
      short="SHARK_BASE_URL=http://example.com/api/v1; %shark a fox"),
    M("key-env-newline", "%shark a fox", "api_key='<hidden>'", "contains whitespace",
      env={"SHARK_API_KEY": FAKE_KEY + "\n"}, short="SHARK_API_KEY='sk-…\\n'; %shark a fox"),
    # magic: the other models' options (from the schemas)
    M("aspect-ratio-for-gpt", "%shark --aspect-ratio 16:9 a fox", "--aspect-ratio is a gemini/midjourney option",
      "gpt-image-2 takes --size", "gpt-image-2's options: -n, --size"),
    M("format-for-gemini", "%shark --model gemini --format png a fox", "--format is a gpt-image-2 option",
      "not gemini's", "gemini's options: -n, --seed, --image-size, --aspect-ratio"),
    M("size-for-gemini", "%shark --model gemini --size 1024x1024 a fox", "--size is a gpt-image-2/seedream option",
      "gemini takes --aspect-ratio and --image-size"),
    M("stylize-for-seedream", "%shark --model seedream --stylize 500 a fox", "--stylize is a midjourney option",
      "seedream's options: --size"),
    M("image-for-midjourney", "%shark --model mj --image ref.png a fox", "--image is a gpt-image-2/gemini/grok-edit option",
      "midjourney takes --sref"),
    M("mask-for-gemini", "%shark --model gemini --image ref.png --mask mask.png a fox", "--mask is a gpt-image-2 option",
      "not gemini's"),
    M("gemini-image-size-8k", "%shark --model gemini --image-size 8K a fox", "image_size='8K'",
      "google/gemini-3.1-flash-image-preview", "'1K'", "'2K'", "'4K'"),
    M("gemini-aspect-ratio-7-5", "%shark --model gemini --aspect-ratio 7:5 a fox", "aspect_ratio='7:5'", "'16:9'"),
    M("gemini-seed-text", "%shark --model gemini --seed lucky a fox", "seed='lucky'", "a whole number from -1"),
    M("gemini-n-5", "%shark --model gemini -n 5 a fox", "n=5", "google/gemini-3.1-flash-image-preview", *N_RANGE),
    M("seedream-size-x", "%shark --model seedream --size 1024x1024 a fox", "size='1024x1024'",
      "bytedance/seedream-v4.5", "did you mean '1024*1024'?"),
    M("midjourney-stylize-2000", "%shark --model mj --stylize 2000 a fox", "stylize=2000", "from 0 to 1,000"),
    M("midjourney-version-6.2", "%shark --model midjourney --version 6.2 a fox", "version=", "'6.1'", "'7'"),
    M("midjourney-quality-high", "%shark --model mj --quality high a fox", "quality='high'", "'0.25'", "'2'"),
    M("midjourney-sref-path", "%shark --model mj --sref ref.png a fox", "sref='ref.png'", "URL"),
    M("grok-without-image", "%shark --model grok a fox", "grok-edit edits an image", "--image"),
    M("grok-two-images", "%shark --model grok --image ref.png --image ref.png a fox", "at most 1 reference image"),
    M("model-typo", "%shark --model gemni a fox", "model='gemni'", "did you mean 'gemini'?"),
    M("option-field-name", "%shark --output-format png a fox", "unknown option '--output-format'",
      "did you mean --format?"),
    M("option-abbreviated", "%shark --aspect 16:9 a fox", "unknown option '--aspect'", "did you mean --aspect-ratio?"),
    M("option-british", "%shark --model mj --stylise 500 a fox", "unknown option '--stylise'", "did you mean --stylize?"),
    M("option-twice", "%shark --size 1024x1024 --size 1536x1024 a fox", "--size is given twice"),
    M("compare-nothing-to-compare", "%shark compare a fox", "needs --models", "--vary", "%shark -- compare"),
    M("compare-bad-cell", "%shark compare --models gpt-image-2,gemini --size 1024x1024 a fox", "[gemini]",
      "--size is a gpt-image-2/seedream option"),
    M("compare-bad-value", "%shark compare --model gpt-image-2 --vary quality=low,ultra a fox", "[quality=ultra]",
      "quality='ultra'"),
    M("compare-unknown-model", "%shark compare --models gpt-image-2,dall-e a fox", "--models dall-e",
      "one of the known models"),
    M("compare-model-twice", "%shark compare --models gpt,gpt-image-2 a fox", "lists gpt-image-2 twice", "--vary"),
    M("compare-vary-foreign-field", "%shark compare --model gemini --vary stylize=100,900 a fox",
      "--stylize is a midjourney option", "not gemini's"),
    M("compare-over-budget", "%shark compare --model gpt-image-2 --vary quality=low,high a fox", "grid of 2 cells",
      "nothing was sent", budget=500),

    # ---------------------------------------------------------------- studio: settings
    S("size-512", {"defaults": {"size": "512x512"}}, "size='512x512'", *SIZES),
    S("quality-ultra", {"defaults": {"quality": "ultra"}}, "quality='ultra'", "'low'", "'high'"),
    S("background-transparent", {"defaults": {"background": "transparent"}}, "background='transparent'",
      "'opaque'", "'auto'"),
    S("output-format-gif", {"defaults": {"output_format": "gif"}}, "output_format='gif'", "'png'", "'webp'"),
    S("n-0", {"defaults": {"n": 0}}, "n=0", *N_RANGE),
    S("n-5", {"defaults": {"n": 5}}, "n=5", *N_RANGE),
    S("n-2.5", {"defaults": {"n": 2.5}}, "n=2.5", *N_RANGE),
    S("n-True", {"defaults": {"n": True}}, "n=True", *N_RANGE),
    S("n-str", {"defaults": {"n": "2"}}, "n='2'", *N_RANGE),
    S("wait-later", {"defaults": {"wait": "later"}}, "wait='later'", "'task'", "'sync'"),
    S("model-space", {"defaults": {"model": "openai/gpt image 2"}}, "model='openai/gpt image 2'",
      "one of the known models", "did you mean 'gpt-image-2'"),
    S("gemini-size", {"defaults": {"model": "gemini", "size": "1024x1024"}}, "size='1024x1024'",
      "gemini has no size", "did you mean 'aspect_ratio'"),
    S("seedream-size-x", {"defaults": {"model": "seedream", "size": "1024x1024"}}, "size='1024x1024'",
      "'1024*1024'", "'2048*2048'"),
    S("midjourney-stylize-1001", {"defaults": {"model": "midjourney", "stylize": 1001}}, "stylize=1001",
      "a whole number from 0 to 1,000"),
    S("midjourney-sref-not-a-url", {"defaults": {"model": "midjourney"}, "settings": {"sref": "style.png"},
                                    "prompt": "a fox", "generate": True},
      "Error: sref='style.png'", "an http(s) or data: URL", short="midjourney; Style reference = 'style.png'; Generate"),
    S("gemini-seed-too-big", {"defaults": {"model": "gemini"}, "settings": {"seed": 2**31}, "prompt": "a fox",
                              "generate": True},
      "Error: seed=2147483648", "a whole number from -1 to 2,147,483,647", short="gemini; Seed = 2**31; Generate"),
    S("grok-edit-without-image", {"defaults": {"model": "grok-edit"}, "prompt": "make it night", "generate": True},
      "grok-edit edits an image", "add one"),
    # ---------------------------------------------------------------- studio: prompts (click Generate)
    S("prompt-empty", {"prompt": "", "generate": True}, "Write a prompt first"),
    S("prompt-whitespace", {"prompt": "  \n\t ", "generate": True}, "Write a prompt first"),
    S("prompt-100k", {"prompt": LONG_PROMPT, "generate": True}, "Error: prompt=", "100,000 characters",
      "at most 32,000", short="prompt = 'a fox xxx…' (100,000 characters); Generate"),
    S("prompt-control", {"prompt": CONTROL_PROMPT, "generate": True}, "Error: prompt=", "control characters 0x1b"),
    S("prompt-surrogate", {"prompt": CUT_EMOJI_PROMPT, "generate": True}, "Error: prompt=", "position 6", "U+D83E"),
    S("prompt-unicode-ok", {"defaults": {"size": "1024x1024", "quality": "low"}, "prompt": UNICODE_PROMPT,
                            "generate": True}),
    S("budget-refusal", {"defaults": {"quality": "high"}, "prompt": "a fox", "generate": True}, "Error:",
      "estimated at", "nothing was sent", budget=1),
    # ---------------------------------------------------------------- studio: files
    S("upload-not-an-image", {"upload": ["notes.txt"]}, "notes.txt was not added", "not a recognised image"),
    S("reference-truncated-png", {"references": ["truncated.png"]}, "truncated.png was not added",
      "damaged or truncated"),
    S("reference-20000x20000", {"references": ["huge-20000x20000.png"]}, "was not added", "20000x20000",
      "40 megapixel limit"),
    S("upload-bomb-png", {"upload": ["bomb.png"]}, "bomb.png was not added", "40 megapixel limit"),
    S("upload-bomb-gif", {"upload": ["bomb.gif"]}, "bomb.gif was not added", "decompression bomb"),
    S("upload-empty-file", {"upload": ["empty.png"]}, "empty.png is empty (0 bytes)"),
    S("upload-too-big", {"upload": [("big.png", BIG_UPLOAD)]}, "big.png is 20,000,001 bytes", "the limit is 20 MB",
      short="upload big.png (20,000,001 bytes)"),
    S("reference-missing-path", {"references": ["no-such-file.png"]}, "Could not read no-such-file.png",
      "No such file"),
    S("reference-directory", {"references": ["photos"]}, "Could not read photos", "Is a directory"),
    S("reference-17th", {"references": ["ref.png"] * 17}, "was not added", "at most 16 reference images",
      short="add_reference('ref.png') × 17"),
    S("mask-without-alpha", {"references": ["ref.png"], "mask": "mask-rgb.png"}, "mask-rgb.png was not kept",
      "no alpha channel"),
    S("mask-other-size", {"references": ["ref.png"], "mask": "mask-32x32.png"},
      "the mask is 32x32 but the reference image is 64x48"),
    S("mask-upload-jpeg", {"references": ["ref.png"], "mask_upload": "mask.jpg"}, "mask.jpg was not kept",
      "a JPEG image, not a PNG"),
    S("mask-without-image", {"mask": "mask.png"}, "mask.png was not kept", "add a reference image first"),
    S("reference-on-seedream", {"defaults": {"model": "seedream"}, "references": ["ref.png"]},
      "ref.png was not added", "seedream takes no reference images"),
    S("grok-edit-second-image", {"defaults": {"model": "grok-edit"}, "references": ["ref.png"] * 2},
      "was not added", "at most 1 reference image for grok-edit"),
    S("mask-on-gemini", {"defaults": {"model": "gemini"}, "references": ["ref.png"], "mask": "mask.png"},
      "mask.png was not kept", "gemini takes no mask"),
    # ---------------------------------------------------------------- studio: settings from the environment
    S("base-url-http-remote", {"client": "environment"}, "base_url='http://example.com/api/v1'",
      "would travel unencrypted", env={"SHARK_API_KEY": FAKE_KEY, "SHARK_BASE_URL": "http://example.com/api/v1"},
      short="SHARK_BASE_URL=http://example.com/api/v1; shark_nb.studio()"),
    S("key-env-newline", {"client": "environment"}, "api_key='<hidden>'", "contains whitespace",
      env={"SHARK_API_KEY": FAKE_KEY + "\n"}, short="SHARK_API_KEY='sk-…\\n'; shark_nb.studio()"),
]


# ------------------------------------------------------------------------------- input files

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG that *declares* width x height (8-bit RGB) with the given IDAT: no pixel is allocated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def png_bomb() -> bytes:
    """About 1 KB declaring 10000x10000 RGB: its zlib stream of zeros would inflate to 300 MB.
    (Only the first MB of zeros is compressed here; the declaration is what a reader acts on.)"""
    z = zlib.compressobj(9)
    stream = z.compress(b"\x00" * (1 << 20)) + z.flush(zlib.Z_SYNC_FLUSH)
    return png_header_only(10_000, 10_000, stream)


def gif_bomb() -> bytes:
    """A 1x1 GIF screen whose first frame declares 65535x65535: the header sniffer sees 1x1, Pillow
    grows the canvas to the frame (4.3 gigapixels)."""
    return (b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0, 0, 0)
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x08\x02\x4c\x01\x00;")


def make_files(folder: Path) -> Path:
    """The input files the cases name (relative paths: the cases run with this as cwd)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    ref = Image.frombytes("RGB", (64, 48), bytes(rng.randrange(256) for _ in range(64 * 48 * 3)))
    ref.save(folder / "ref.png")
    data = (folder / "ref.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (64, 48), "white").save(folder / "mask-rgb.png")
    mask = Image.new("RGBA", (64, 48), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (8, 8, 24, 24))
    mask.save(folder / "mask.png")
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(folder / "mask-32x32.png")
    Image.new("RGB", (64, 48), "white").save(folder / "mask.jpg", "JPEG")
    (folder / "notes.txt").write_text("shopping list: eggs, milk, flour\n", encoding="utf-8")
    (folder / "empty.png").write_bytes(b"")
    (folder / "huge-20000x20000.png").write_bytes(png_header_only(20_000, 20_000))
    (folder / "bomb.png").write_bytes(png_bomb())
    (folder / "bomb.gif").write_bytes(gif_bomb())
    (folder / "photos").mkdir(exist_ok=True)
    return folder


# ------------------------------------------------------------------------------- the runners

@dataclass
class Outcome:
    """What a case produced: the message the user sees and whether anything was sent."""

    message: str | None
    error: BaseException | None = None
    requests: int = 0               # requests the simulator saw
    ledger_records: int = 0         # records in the case's ledger (or ledger files for env cases)
    client_created: bool = True     # env cases: did a client come to exist?
    one_line: bool = True           # magic: exactly one UsageError line, no traceback
    shown: str = ""                 # magic: everything the cell printed
    widgets_left_open: list[str] = field(default_factory=list)  # studio: models still open after close()

    @property
    def sent(self) -> bool:
        return bool(self.requests or self.ledger_records)


@contextmanager
def case_environment(case: Case, files: Path, scratch: Path):
    """cwd = the input files; SHARK_NB_HOME in scratch; no key, base URL or offline flag except
    what the case sets. Everything is restored afterwards (also the session key and the magic's
    shared client)."""
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    os.environ["SHARK_NB_HOME"] = str(scratch / "shark_home")
    for name in ("SHARK_API_KEY", "SHARK_BASE_URL", "SHARK_OFFLINE"):
        os.environ.pop(name, None)
    os.environ["SHARK_SIM_LATENCY"] = "0"
    os.environ.update(case.env)
    os.chdir(files)
    config.clear_key()
    magic.reset_client()
    reset_default_ledger()
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        config.clear_key()
        magic.reset_client()
        reset_default_ledger()


def _ledger_files(scratch: Path) -> int:
    folder = scratch / "shark_home" / "ledger"
    return sum(1 for p in folder.iterdir() if p.stat().st_size) if folder.is_dir() else 0


def _count(ledger: Ledger) -> int:
    return len(ledger.records) + (1 if ledger.path.exists() and ledger.path.stat().st_size else 0)


def run_case(case: Case, files: Path, scratch: Path) -> Outcome:
    """Run one case on its surface; never raises for the case's own error."""
    scratch.mkdir(parents=True, exist_ok=True)
    with case_environment(case, files, scratch):
        runner = {"client": _run_client, "magic": _run_magic, "studio": _run_studio}[case.surface]
        return runner(case, scratch)


# --- client

def _run_client(case: Case, scratch: Path) -> Outcome:
    from shark_nb.client import Shark
    from shark_nb.simulator import Simulator

    sim = Simulator(latency=0.0)
    ledger = Ledger(scratch / "ledger.jsonl", budget=case.budget)
    method, arg = case.input
    client = None
    error: BaseException | None = None
    try:
        if method == "Shark":
            # The simulator's transport takes every request whatever the host, so a client that
            # wrongly accepted these settings would show up in sim.log.
            client = Shark(**arg, ledger=ledger, transport=sim.async_transport(),
                           download_transport=sim.async_transport(), quiet=True)
            client.generate("a fox")
        elif method == "set_key":
            shark_nb.set_key(arg)
        else:
            client = Shark(simulator=sim, ledger=ledger, quiet=True)
            if method == "generate":
                client.generate(**arg)
            elif method == "generate_many":
                client.generate_many(arg["prompts"], concurrency=arg["concurrency"])
            elif method == "budget":
                client.ledger.budget = arg
            elif method == "budget_usd":
                client.ledger.set_budget_usd(arg)
            else:  # pragma: no cover - a typo in the table
                raise AssertionError(f"unknown client input {method!r}")
    except Exception as exc:  # noqa: BLE001 - the case's error is the result
        error = exc
    finally:
        if client is not None:
            client.close()
    return Outcome(str(error) if error is not None else None, error, len(sim.log), _count(ledger),
                   client_created=client is not None)


# --- magic

def _forget_magic_config(shell: Any) -> None:
    for section in ("Shark", "SharkMagic"):
        if section in shell.config:
            del shell.config[section]


def _run_magic(case: Case, scratch: Path) -> Outcome:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from shark_nb.client import Shark
    from shark_nb.simulator import Simulator

    shell = InteractiveShell.instance()
    magic.unload_ipython_extension(shell)
    _forget_magic_config(shell)
    magic.load_ipython_extension(shell)
    sim = Simulator(latency=0.0)
    ledger = Ledger(scratch / "ledger.jsonl", budget=case.budget)
    from_env = bool(case.env)
    client = None
    if not from_env:
        client = Shark(simulator=sim, ledger=ledger, quiet=True)
        magic.set_client(client)
    shell.user_ns.update(case.ns)
    cells = list(case.input) if isinstance(case.input, (list, tuple)) else [case.input]
    try:
        for cell in cells[:-1]:
            with capture_output():
                shell.run_cell(cell).raise_error()
        with capture_output() as cap:
            result = shell.run_cell(cells[-1])
        err = result.error_in_exec or result.error_before_exec
        shown = cap.stdout + cap.stderr
        usage_lines = [line for line in shown.splitlines() if "UsageError" in line]
        one_line = (err is None or (len(usage_lines) == 1 and "Traceback" not in shown
                                    and "\n" not in str(err)))
        created = session._client is not None
        if from_env:
            requests, records = 0, _ledger_files(scratch)
        else:
            requests, records = len(sim.log), _count(ledger)
        return Outcome(str(err) if err is not None else None, err, requests, records,
                       client_created=created, one_line=one_line, shown=shown)
    finally:
        for name in (*case.ns, "_shark"):
            shell.user_ns.pop(name, None)
        magic.unload_ipython_extension(shell)
        _forget_magic_config(shell)
        if client is not None:
            client.close()


# --- studio

def _text(html_text: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", html_text)).split())


def _deliver(upload: Any, files: list[tuple[str, bytes]]) -> None:
    """An upload exactly as the browser delivers it (a state update from the front end)."""
    upload.set_state({"value": [
        {"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
         "last_modified": 1_700_000_000_000}
        for name, data in files
    ]})


def _file(item: Any) -> tuple[str, bytes]:
    if isinstance(item, tuple):
        name, size = item
        return name, b"\x89PNG\r\n\x1a\n" + b"\x00" * (size - 8)
    return Path(item).name, Path(item).read_bytes()


async def _studio_async(case: Case, scratch: Path) -> Outcome:
    from shark_nb.client import AsyncShark
    from shark_nb.simulator import Simulator
    from shark_nb.ui.common import ERROR_COLOR
    from shark_nb.widget import studio

    spec: dict = case.input
    sim = Simulator(latency=0.0)
    ledger = Ledger(scratch / "ledger.jsonl", budget=case.budget)
    from_env = spec.get("client") == "environment"
    client = None if from_env else AsyncShark(simulator=sim, ledger=ledger, poll_interval=0.02, quiet=True)
    st = None
    try:
        try:
            defaults = dict(spec.get("defaults", {}))
            st = studio(client, **defaults) if client is not None else studio(**defaults)
        except Exception as exc:  # noqa: BLE001 - refused at construction
            records = _ledger_files(scratch) if from_env else _count(ledger)
            return Outcome(str(exc), exc, len(sim.log), records, client_created=session._client is not None)
        where = st.status
        for path in spec.get("references", ()):
            st.add_reference(path)
            where = st.reference_message
        if "upload" in spec:
            _deliver(st.reference_upload, [_file(f) for f in spec["upload"]])
            where = st.reference_message
        if "mask" in spec:
            st.set_mask(spec["mask"])
            where = st.mask_message
        if "mask_upload" in spec:
            _deliver(st.mask_upload, [_file(spec["mask_upload"])])
            where = st.mask_message
        for name, value in spec.get("settings", {}).items():   # typed into the model's controls
            st.settings[name].value = value
        if "prompt" in spec:
            st.prompt.value = spec["prompt"]
        if spec.get("generate"):
            st.generate_button.click()
            await st.wait_for_job()
            where = st.status
        message = where.value if where is st.status else _text(where.value)
        failed = st.status.style.text_color == ERROR_COLOR or where is not st.status
        return Outcome(message if failed else None, st.last_error, len(sim.log), _count(ledger))
    finally:
        if st is not None:
            if st.job is not None:
                st.job.cancel()
                await st.wait_for_job()
            st.close()
        if client is not None:
            await client.aclose()


def _run_studio(case: Case, scratch: Path) -> Outcome:
    from ipywidgets.widgets import widget as widget_module

    before = set(widget_module._instances)
    out = asyncio.run(_studio_async(case, scratch))
    out.widgets_left_open = sorted(type(w).__name__ for k, w in widget_module._instances.items() if k not in before)
    return out


# ------------------------------------------------------------------------------- doc helpers

def short_input(case: Case) -> str:
    """The doc's "input" column."""
    if case.short:
        return case.short
    if case.surface == "client":
        method, arg = case.input
        if method == "generate":
            return "generate(" + ", ".join(f"{k}={v!r}" for k, v in arg.items()) + ")"
        if method == "generate_many":
            return f"generate_many({arg['prompts']!r}, concurrency={arg['concurrency']!r})"
        if method == "Shark":
            return "Shark(" + ", ".join(f"{k}={v!r}" for k, v in arg.items()) + ")"
        if method == "set_key":
            return f"shark_nb.set_key({arg!r})"
        if method == "budget":
            return f"ledger.budget = {arg!r}"
        return f"ledger.set_budget_usd({arg!r})"
    if case.surface == "magic":
        return case.input.replace("\n", "⏎ ")
    parts = []
    spec = case.input
    if spec.get("client") == "environment":
        parts.append("shark_nb.studio()")
    elif spec.get("defaults"):
        parts.append("studio(" + ", ".join(f"{k}={v!r}" for k, v in spec["defaults"].items()) + ")")
    parts += [f"add_reference({p!r})" for p in spec.get("references", ())]
    parts += [f"upload {f if isinstance(f, str) else f[0]}" for f in spec.get("upload", ())]
    if "mask" in spec:
        parts.append(f"set_mask({spec['mask']!r})")
    if "mask_upload" in spec:
        parts.append(f"mask upload {spec['mask_upload']}")
    parts += [f"{k} = {v!r}" for k, v in spec.get("settings", {}).items()]
    if "prompt" in spec:
        parts.append(f"prompt = {spec['prompt']!r}")
    if spec.get("generate"):
        parts.append("Generate")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return make_files(tmp_path_factory.mktemp("bad_input_files"))


def test_the_table_covers_the_catalogue():
    keys = [c.key for c in CASES]
    assert len(keys) == len(set(keys)), [k for k, n in Counter(keys).items() if n > 1]
    per_surface = Counter(c.surface for c in CASES)
    assert set(per_surface) == set(SURFACES)
    assert len(CASES) >= 40 and min(per_surface.values()) >= 20, per_surface
    required = {
        "client": {"size-512", "quality-ultra", "background-transparent", "output-format-gif", "n-0", "n-5", "n-2.5",
                   "n-True", "n-str", "wait-later", "task-timeout-29", "task-timeout-1801", "prompt-empty",
                   "prompt-whitespace", "prompt-100k", "prompt-unicode-ok", "prompt-control-ansi",
                   "image-not-an-image", "image-truncated-png", "mask-without-alpha", "mask-other-size",
                   "image-20000x20000", "image-bomb-png", "image-missing-path", "image-directory",
                   "base-url-http-remote", "key-trailing-newline", "key-inner-space", "concurrency-0",
                   "budget-negative", "mask-without-image", "image-17-references", "image-file-url",
                   "image-url-credentials", "base-url-credentials"},
        "magic": {"unknown-option", "undefined-name", "budget-negative", "budget-text", "prompt-unicode-ok",
                  "image-bomb-png", "image-20000x20000", "mask-without-alpha", "mask-other-size"},
        "studio": {"upload-not-an-image", "reference-truncated-png", "mask-without-alpha", "mask-other-size",
                   "reference-20000x20000", "upload-bomb-png", "prompt-empty", "prompt-unicode-ok"},
    }
    for surface, ids in required.items():
        missing = ids - {c.id for c in CASES if c.surface == surface}
        assert not missing, (surface, missing)
    for c in CASES:
        assert c.accepted or all(isinstance(f, str) and f for f in c.expected_fragments), c.key


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.key)
def test_bad_input(case: Case, files: Path, tmp_path: Path):
    out = run_case(case, files, tmp_path)
    assert not out.widgets_left_open, f"{case.key}: widgets left open after studio.close(): {out.widgets_left_open}"
    if case.accepted:
        assert out.error is None and out.message is None, out.message
        assert out.requests >= 1 and out.ledger_records >= 1, "an accepted input is sent (and recorded)"
        return
    assert out.message, f"{case.key}: no message shown"
    for fragment in case.expected_fragments:
        assert fragment in out.message, f"{case.key}: {fragment!r} not in {out.message!r}"
    assert "Traceback" not in out.message
    # nothing was sent, nothing was recorded
    assert out.requests == 0, f"{case.key}: the simulator saw {out.requests} request(s)"
    assert out.ledger_records == 0, f"{case.key}: the ledger has a record"
    if case.env:
        assert not out.client_created, f"{case.key}: a client was created from bad settings"
    if case.surface == "client":
        assert type(out.error).__name__ == case.error, repr(out.error)
        if case.error == "ValidationError":
            assert isinstance(out.error, ValidationError) and isinstance(out.error, ValueError)
        else:
            assert isinstance(out.error, BudgetExceededError)
    elif case.surface == "magic":
        assert isinstance(out.error, magic.SharkUsageError), repr(out.error)
        assert out.one_line, f"{case.key}: not a one-line error:\n{out.shown}"
    else:
        assert "\n" not in out.message
    assert FAKE_KEY not in out.message and FAKE_KEY not in repr(out.error)


def test_a_refused_studio_leaves_no_widget_open(files, tmp_path):
    """Regression: a studio refused while being built (bad settings, settings from a bad
    environment, an unknown setting) left its half-built widgets open in the kernel's registry
    for good, and closing one (Widget.__del__ at exit) raised AttributeError ('_ticker').
    (Every studio case of test_bad_input also checks that ``close()`` leaves no model open:
    Layout and Style models used to stay, 68 of a fresh studio's 112.)"""
    from ipywidgets.widgets import widget as widget_module

    from shark_nb.widget import Studio

    before = set(widget_module._instances)
    refused_when_built = [c for c in CASES if c.surface == "studio" and set(c.input) == {"defaults"}]
    assert len(refused_when_built) >= 14   # gpt-image-2's settings, the other models', an unknown model
    for case in refused_when_built:
        assert isinstance(run_case(case, files, tmp_path / case.id).error, ValidationError), case.key
    for case in (c for c in CASES if c.surface == "studio" and c.env):
        assert isinstance(run_case(case, files, tmp_path / case.id).error, ValidationError), case.key
    with pytest.raises(TypeError, match="unexpected settings"):
        Studio(None, colour="red")
    leaked = [type(w).__name__ for k, w in widget_module._instances.items() if k not in before]
    assert not leaked, leaked


def test_doc_lists_every_case():
    """docs/bad-inputs.md is generated from this table (python tools/make_bad_input_table.py)."""
    text = DOC.read_text(encoding="utf-8")
    missing = [c.key for c in CASES if f"| `{c.id}` | {c.surface} |" not in text]
    assert not missing, f"regenerate docs/bad-inputs.md (python tools/make_bad_input_table.py): {missing}"
