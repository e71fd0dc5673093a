"""The session ledger: every call's cost, tokens and outcome, appended to a JSON Lines file.

Users pay for every call, so the ledger is built so that no charged call is ever lost:

* **Append-only JSON Lines.** By default one file per session in ``$SHARK_NB_HOME/ledger/``
  (``SHARK_NB_HOME`` defaults to ``~/.shark_nb``), named like
  ``2026-11-26T13-45-02Z-<pid>-<4 hex>.jsonl``. The folder is created with mode 0700 and the file,
  lazily on the first record, with mode 0600. :attr:`Ledger.path` is known before the file exists.
* **One line = one ``os.write``** on a descriptor opened with ``O_APPEND``, then ``os.fsync``.
  Appends from several threads (a lock), kernels or processes — even to the same file — never
  interleave. If the file ends in a torn line (a crash mid-write), the next line starts on a
  fresh line, so the torn fragment never swallows a good record.
* **Records live in memory first.** If the disk write fails the record is kept in memory (totals
  and the budget still see it), a :class:`LedgerWarning` is issued, and the write is retried
  with the next record (:attr:`Ledger.unsaved` counts what is waiting).
* **Reading is forgiving.** :meth:`Ledger.load` skips a torn last line (and any other line that
  is not a JSON object, nests past json's recursion limit or is over 4 MB) with a warning, never
  an exception, counts them in :attr:`Ledger.skipped`, and keeps every other line. Bytes that are
  not UTF-8 cost only those characters (U+FFFD). A field of an odd type (``"outcome": ["ok"]``,
  ``"credit": "abc"``, ``"params": 5``) is coerced or ignored by every reader; a damaged outcome
  counts as "may have been charged".
* **Any text can be written.** Lone surrogates (``'\\udcff'``) in any key or value, nested or
  not, are stored as U+FFFD (:func:`clean_text`) instead of failing the write.

Record schema (one JSON object a line; the client writes these)::

    {"v": 1,                      # schema version (added when missing)
     "call_id": str,              # uuid4 hex, one per logical call (added when missing)
     "time": str,                 # ISO 8601 UTC, e.g. "2026-11-26T13:45:02.123Z" (added when missing)
     "tracing_id": str,           # the X-Tracing-ID sent: what a user quotes to the provider
     "model": str,                # the gateway's model id: "openai/gpt-image-2", "bytedance/seedream-v4.5", ...
     "prompt": str,
     "params": {"model", <that model's settings, defaults filled in>, "wait"},
                                  # ImageRequest.params(): e.g. gpt-image-2's n, size, quality,
                                  # background, output_format; gemini's n, image_size,
                                  # aspect_ratio, response_format (see shark_nb.models())
     "inputs": [{"role": "image"|"mask", "bytes", "sha256", "width", "height", "format"}
                | {"role": "image"|"mask", "url"}],
     "task_id": str | null,       # async task id (wait="task")
     "outcome": "ok" | "sending" | "pending" | "unknown" | "<error type>" | "cancelled"
                | "not_sent" | "settled",
                                  # "sending": written before the request leaves (write-ahead);
                                  # a session that stopped mid-call keeps it, at its estimate.
                                  # "not_sent": interrupted while waiting to (re)try: nothing charged.
                                  # "settled": booked by the user with Ledger.settle()
     "status": int | null,        # HTTP status of the final answer
     "images": int,               # images delivered
     "images_billed": int,        # images the answer held: delivered + missing
     "urls": [str],               # the answer's image URLs (inline data: images are not kept):
                                  #   written before the downloads, so a paid image can be fetched
     "missing": [{"index", "url", "reason", "status"}],   # billed images not delivered
     "note": str,                 # what the user must know (images missing, more or fewer than asked)
     "usage": {"input_tokens", "output_tokens", "total_tokens"} | null,
     "credit": float | null,      # as reported by the gateway; null = UNKNOWN, never 0
     "credit_reported": any,      # only when the gateway's credit is not counted as it stands
     "credit_note": str,          #   (negative, not a number, absurd): the raw value and why
     "usd": float | null,         # credit / 10,000
     "estimate_credit": float | null,  # the pre-call estimate (ImageRequest.estimate_credit());
                                  #   null: the model has no known price yet
     "latency_s": float,
     "offline": bool,             # answered by the built-in simulator
     "error": str | null,
     "settled_from": str,         # Ledger.settle(): the outcome the call had before it was settled
     "saved": [str]}              # Ledger.note_saved(): every path its images were saved to

A call may be written as several lines with the same ``call_id`` — e.g. ``"outcome": "pending"``
when a task is submitted, then the final line. Lines with the same ``call_id`` are merged in file
order (later keys win) and :attr:`Ledger.records` is the merged view, in first-seen order.

Money:

* :attr:`~Ledger.total_credits` sums every *known* ``credit`` (whatever the outcome: a call that
  was charged and then failed to download still carries its credit).
* A record whose credit is null but which **may have been charged** — outcome ``ok``,
  ``sending``, ``pending``, ``unknown``, ``timeout``, ``download_error`` (or no outcome at all) — is counted in
  :attr:`~Ledger.unknown_cost_calls`, and its ``estimate_credit`` is added to
  :attr:`~Ledger.committed_credits`, the conservative figure the budget is checked against.
  A client that stops waiting on a task whose cancel was refused should write ``"unknown"``
  (with the ``task_id``), not ``"cancelled"``.
* Outcomes ``budget_exceeded``, ``validation_error`` and ``not_sent`` mean nothing was sent (or
  nothing was done: a call interrupted while it waited out a 429): not counted in :attr:`~Ledger.calls`.
* A reported credit counts only if it is a number from 0 to :data:`MAX_CREDIT_PER_CALL`
  (:func:`credit_rule`). A negative, non-finite or non-numeric one is unknown (counted at the
  estimate); one above the ceiling is counted at the ceiling. So a strange report never
  loosens the budget. A negative ``estimate_credit`` counts as 0.
* :meth:`Ledger.reserve` checks the budget and writes the write-ahead line in one step under the
  ledger's lock: threads and event loops sharing a ledger cannot together overspend it.
  :meth:`Ledger.settle` books the real cost of a call of unknown cost (:attr:`Ledger.unsettled`).
"""

from __future__ import annotations

import calendar
import copy
import csv
import html
import json
import math
import os
import re
import secrets
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import config, pricing, text
from .errors import BudgetExceededError, ValidationError

__all__ = [
    "Ledger",
    "LedgerWarning",
    "default_ledger",
    "reset_default_ledger",
    "shark_home",
    "ledger_dir",
    "SCHEMA_VERSION",
    "MAY_BE_CHARGED",
    "CLIENT_REFUSALS",
    "MAX_CREDIT_PER_CALL",
    "clean_text",
    "credit_rule",
    "settings_summary",
]

SCHEMA_VERSION = 1
#: Outcomes that may have been charged; with a null credit their cost is unknown.
MAY_BE_CHARGED = frozenset({"ok", "sending", "pending", "unknown", "timeout", "download_error", None})
#: Outcomes where the client refused before sending anything: not calls.
CLIENT_REFUSALS = frozenset({"budget_exceeded", "validation_error", "not_sent"})
#: The largest credit one call is believed to cost: 10,000,000 credit = US$1,000 (the priciest
#: gpt-image-2 call, n=4 at 2048x2048 high, is about 70,000). A reported credit above it is kept
#: in the record but counted at this ceiling (see :func:`credit_rule`).
MAX_CREDIT_PER_CALL = 10_000_000.0
#: A line longer than this is not parsed (a damaged file; a real record is a few KB).
MAX_LINE_BYTES = 4 * 1024 * 1024
#: Nesting deeper than this inside a record is replaced by a marker (real records nest 3 deep).
_MAX_DEPTH = 32
#: Fields that hold text; another JSON type there (a damaged line) is stored as its JSON text.
_TEXT_FIELDS = ("call_id", "tracing_id", "model", "prompt", "time", "task_id", "error", "polling_url")
#: Rows shown by the HTML repr.
HTML_MAX_ROWS = 50

_SESSION_STAMP = "%Y-%m-%dT%H-%M-%SZ"
_USAGE_COLUMNS = ("input_tokens", "output_tokens", "total_tokens")
#: Flat columns before the model's parameters, and after them (the parameters are the union of
#: the ``params`` keys the records hold, in first-seen order: every model's own settings).
_HEAD_COLUMNS = ("time", "call_id", "tracing_id", "model", "prompt")
_TAIL_COLUMNS = ("inputs", "task_id", "outcome", "status", "images", *_USAGE_COLUMNS,
                 "credit", "usd", "estimate_credit", "latency_s", "offline", "error", "v")
_FLAT_COLUMNS = (*_HEAD_COLUMNS, *_TAIL_COLUMNS)
_TOP_LEVEL_FLATTENED = {"params", "usage", "inputs"}


class LedgerWarning(UserWarning):
    """Something about the ledger file needs attention (a skipped line, a failed write)."""


# --------------------------------------------------------------------------------------- paths


def shark_home() -> Path:
    """``$SHARK_NB_HOME``, or ``~/.shark_nb`` (:func:`shark_nb.config.shark_home`)."""
    return config.shark_home()


def ledger_dir(home: str | os.PathLike | None = None) -> Path:
    """The folder holding the session files: ``<home>/ledger``."""
    return (Path(home).expanduser() if home is not None else shark_home()) / "ledger"


def _new_session_path() -> Path:
    stamp = time.strftime(_SESSION_STAMP, time.gmtime())
    return ledger_dir() / f"{stamp}-{os.getpid()}-{secrets.token_hex(2)}.jsonl"


def _make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents, each new one with mode 0700."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        try:
            os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask
        except OSError:
            pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: directories cannot be opened
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------- helpers


def _find_model(model: str) -> Any:
    from .schemas import find_model

    return find_model(model)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _encode(entry: dict) -> bytes:
    return (json.dumps(entry, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            + "\n").encode("utf-8")


def clean_text(value: Any) -> Any:
    """``value`` with every lone surrogate (``'\\udcff'``: text decoded from bytes that were not
    UTF-8, or a JSON ``\\ud83e`` escape cut in half) replaced by U+FFFD, in strings, dict keys and
    nested lists/dicts; a surrogate *pair* becomes the character it encodes. Other values are
    returned as they are. Such text cannot be written as UTF-8, so anything from outside (a
    gateway answer, an error message) goes through this before it is stored or shown."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {clean_text(k): clean_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_text(v) for v in value]
    return value


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy: non-finite floats become None, text is cleaned of lone surrogates,
    unknown objects become their str(), nesting deeper than ``_MAX_DEPTH`` a marker."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH and isinstance(value, (Mapping, list, tuple)):
        return "<nested too deeply>"
    if isinstance(value, Mapping):
        return {clean_text(str(k)): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, os.PathLike):
        return clean_text(os.fspath(value))
    if hasattr(value, "__index__"):  # numpy integers and the like
        try:
            return int(value.__index__())
        except Exception:
            pass
    try:
        f = float(value)  # numpy floats and the like
    except (TypeError, ValueError, OverflowError):
        return clean_text(str(value))
    return f if math.isfinite(f) else None


def _normalise(entry: Mapping) -> dict:
    """A record every reader can rely on, whatever the line held: JSON-safe (see
    :func:`_jsonable`), text fields as text, ``outcome`` a string or None (a damaged outcome
    such as ``["ok"]`` becomes None: "may have been charged", the conservative reading)."""
    out = _jsonable(dict(entry))
    for k in _TEXT_FIELDS:
        v = out.get(k)
        if v is not None and not isinstance(v, str):
            out[k] = json.dumps(v, ensure_ascii=False)
    if not isinstance(out.get("outcome"), (str, type(None))):
        out["outcome"] = None
    return out


#: A JSON escape of a UTF-16 surrogate: json.loads may turn it into a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _normalise_read(entry: dict, line: str, odd_number: bool) -> dict:
    """:func:`_normalise` for a dict ``json.loads`` just read from ``line``, without walking it
    when nothing in it can need it: JSON gives only JSON types, so only a lone surrogate (from a
    ``\\udXXX`` escape), a non-finite number (``odd_number``: NaN, Infinity, 1e999) or nesting
    as deep as the marker's limit (fewer brackets than that cannot nest that deep) change
    anything; else only the typed fields are checked. The same result, several times faster
    (reading 10,000 past calls for the history)."""
    if odd_number or line.count("{") + line.count("[") >= _MAX_DEPTH or _SURROGATE_ESCAPE.search(line):
        return _normalise(entry)
    for k in _TEXT_FIELDS:
        v = entry.get(k)
        if v is not None and not isinstance(v, str):
            entry[k] = json.dumps(v, ensure_ascii=False)
    if not isinstance(entry.get("outcome"), (str, type(None))):
        entry["outcome"] = None
    return entry


def _number(value: Any) -> float | None:
    """A finite float, or None for null / non-numbers (a bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        f = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return f if math.isfinite(f) else None


def _shown_value(field: Any, name: str, value: Any) -> str:
    """One setting as the ledger's table shows it: a choice bare (``16:9``, ``2K``), anything
    else, or a choice of numbers, as ``name=value`` (``n=2``, ``seed=7``, ``version=7``)."""
    if field is not None and field.kind == "choice" and not field.numeric:
        return text.shorten(value, 24)
    return f"{name}={text.shorten(value, 24)}"


def settings_summary(model: Any, params: Any) -> str:
    """A call's settings in a few words, read from its model's schema: every setting that
    shapes the price, and every other one not at its published default, in the schema's
    order with ``n`` last — ``1024x1024 · low · n=2`` (gpt-image-2), ``2K · 16:9 · n=2``
    (gemini), ``version=7 · quality=1`` (midjourney). For a model shark_nb does not know,
    every parameter as ``name=value``. ``"defaults"`` when nothing is worth showing."""
    from .schemas import find_model

    params = dict(params) if isinstance(params, Mapping) else {}
    params.pop("wait", None)
    if params.get("model") == model:
        params.pop("model")
    spec = find_model(model)
    if spec is None:
        shown = [_shown_value(None, k, v) for k, v in params.items() if v is not None]
        return " · ".join(shown) or "defaults"
    fields = {f.name: f for f in spec.settings}
    order = [n for n in fields if n != "n"] + (["n"] if "n" in fields else [])
    order += [k for k in params if k not in fields]  # a parameter the schema does not list
    shown = []
    for name in order:
        value = params.get(name)
        field = fields.get(name)
        if value is None:
            continue
        if field is not None and name not in spec.price_fields and value == field.default:
            continue
        shown.append(_shown_value(field, name, value))
    return " · ".join(shown) or "defaults"


def credit_rule(reported: Any) -> tuple[float | None, str | None]:
    """How a credit the gateway reported is counted: ``(credit, note)``.

    * a finite number from 0 to :data:`MAX_CREDIT_PER_CALL` (or such a number as text, "300"):
      counted as it is, no note;
    * nothing reported (None): unknown, no note;
    * negative, NaN/infinite, not a number, or above the ceiling: the credit is **unknown**
      (``None``) and the note says why. The raw value is kept in the record as
      ``credit_reported`` for a dispute, and the budget counts the call at its estimate — or at
      the ceiling when the report was above it — so a strange report can never loosen the budget.
    """
    if reported is None:
        return None, None
    value = reported
    if isinstance(reported, str):
        try:
            value = float(reported.strip())
        except ValueError:
            return None, "the gateway reported a credit that is not a number"
    n = _number(value)
    if n is None:
        why = "not a finite number" if isinstance(value, (int, float)) and not isinstance(value, bool) else "not a number"
        return None, f"the gateway reported a credit that is {why}"
    if n < 0:
        return None, "the gateway reported a negative credit; counted at the estimate"
    if n > MAX_CREDIT_PER_CALL:
        return None, (f"the gateway reported {text.credit(n)}, above the {text.number(MAX_CREDIT_PER_CALL)} "
                      "a call can plausibly cost; counted at that ceiling")
    return n, None


def _credit_of(r: Mapping) -> float | None:
    """The credit a record counts with: its ``credit`` if plausible (see :func:`credit_rule`)."""
    c = _number(r.get("credit"))
    return c if c is not None and 0 <= c <= MAX_CREDIT_PER_CALL else None


def _above_ceiling(r: Mapping) -> bool:
    for key in ("credit", "credit_reported"):
        v = r.get(key)
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                continue
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (v > MAX_CREDIT_PER_CALL or v == math.inf):
            return True
    return False


def _suspect_credit(r: Mapping) -> bool:
    """The gateway said something about the credit that is not counted as it stands."""
    if r.get("outcome") == "settled":
        return False
    if r.get("credit_reported") is not None:
        return True
    return r.get("credit") is not None and _credit_of(r) is None


def _may_be_charged_unknown(r: Mapping) -> bool:
    if _credit_of(r) is not None:
        return False
    return r.get("outcome") in MAY_BE_CHARGED or _above_ceiling(r)


def _unknown_charge(r: Mapping) -> float:
    """What the budget counts for a call of unknown cost: its estimate (never negative), or the
    ceiling when the gateway reported a credit above it."""
    if not _may_be_charged_unknown(r):
        return 0.0
    est = _number(r.get("estimate_credit"))
    est = est if est is not None and est > 0 else 0.0
    return max(est, MAX_CREDIT_PER_CALL) if _above_ceiling(r) else est


# -------------------------------------------------------------------------------------- ledger


class Ledger:
    """The per-session ledger of cost, tokens and calls. See the module docstring."""

    def __init__(self, path: str | os.PathLike | None = None, *, budget: float | None = None) -> None:
        self._lock = threading.RLock()
        self._path = Path(path).expanduser() if path is not None else _new_session_path()
        self._records: dict[str, dict] = {}
        self._unsaved: list[bytes] = []
        self._anon = 0
        self._budget: float | None = None
        self.budget = budget
        #: Lines of the file that could not be read as a record when it was opened (each warned).
        self.skipped = 0
        if self._path.is_file():
            self._read_file()

    # ------------------------------------------------------------------ properties & budget

    @property
    def path(self) -> Path:
        """The JSONL file this ledger appends to (it may not exist before the first record)."""
        return self._path

    @property
    def budget(self) -> float | None:
        """The session budget in credits (1 USD = 10,000 credit), or None for no budget."""
        return self._budget

    @budget.setter
    def budget(self, value: float | None) -> None:
        if value is None:
            self._budget = None
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                if isinstance(value, (str, bytes, bool)):
                    raise TypeError
                value = float(value)  # numpy & co.
            except (TypeError, ValueError):
                raise ValidationError("budget", value, "a number of credits >= 0, or None") from None
        if not math.isfinite(value) or value < 0:
            raise ValidationError("budget", value, "a number of credits >= 0, or None")
        self._budget = float(value)

    def set_budget_usd(self, usd: float | None) -> None:
        """Set the budget in US dollars (None removes it)."""
        if usd is None:
            self.budget = None
            return
        if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd < 0:
            raise ValidationError("budget", usd, "a number of US dollars >= 0, or None")
        self.budget = pricing.usd_to_credits(usd)

    # -------------------------------------------------------------------------- writing

    def record(self, entry: Mapping) -> dict:
        """Append one line for one call and return the stored entry.

        Adds ``"v": 1``, ``"time"`` and ``"call_id"`` when missing. The record joins the in-memory
        view first, then the line is written with one ``os.write`` (``O_APPEND``) and fsynced. A
        failed write is retried with the next record, never dropped (see :attr:`unsaved`).
        """
        if not isinstance(entry, Mapping):
            raise TypeError(f"Ledger.record() takes a dict, not {type(entry).__name__}")
        stored = dict(entry)
        if "v" not in stored:
            stored["v"] = SCHEMA_VERSION
        if not stored.get("time"):
            stored["time"] = _now_iso()
        if not stored.get("call_id"):
            stored["call_id"] = uuid.uuid4().hex
        try:
            line = _encode(stored)
            if not isinstance(stored.get("outcome"), (str, type(None))):
                raise ValueError("the outcome is not text")
        except (TypeError, ValueError, RecursionError) as exc:
            # Never lose the record over a value: the gateway's strings can hold lone surrogates
            # (UnicodeEncodeError is a ValueError), numpy numbers, NaN, deep nesting...
            stored = _normalise(stored)
            line = _encode(stored)
            what = ("text that is not valid Unicode (replaced with U+FFFD)"
                    if isinstance(exc, UnicodeEncodeError) else f"values JSON cannot hold ({exc})")
            warnings.warn(f"ledger record {stored['call_id']} had {what}; they were stored as null or text",
                          LedgerWarning, stacklevel=2)
        with self._lock:
            self._merge(copy.deepcopy(stored))
            self._unsaved.append(line)
            self._flush()
        return stored

    def reserve(self, entry: Mapping, estimate: float) -> dict:
        """Check the budget and record ``entry`` (the call's write-ahead line) in ONE step.

        Raises :class:`~shark_nb.errors.BudgetExceededError` (and records nothing) when
        ``estimate`` exceeds what is left. Under the ledger's lock, so calls on any event loops
        and threads of the process that share this ledger cannot together pass a check that only
        one of them fits: the first one's reservation is counted before the next one is checked.
        (Another *process* appending to the same file has its own in-memory view: the budget is
        per :class:`Ledger` object.)
        """
        with self._lock:
            self.check_budget(estimate)
            return self.record(entry)

    def settle(self, call_id: str, credit: float, *, note: str | None = None) -> dict:
        """Book what a call of unknown cost really cost, once the user knows (from the provider,
        quoting the tracing id): ``credit=0`` when it was not charged. ``call_id`` may also be
        the call's tracing id. Appends a line with outcome ``"settled"``; the earlier outcome is
        kept as ``settled_from``. Returns the merged record.
        """
        value = _number(credit)
        if value is None or value < 0 or value > MAX_CREDIT_PER_CALL:
            raise ValidationError("credit", credit,
                                  f"a number of credits from 0 to {text.number(MAX_CREDIT_PER_CALL)} (0 = not charged)")
        with self._lock:
            key = call_id if isinstance(call_id, str) and call_id in self._records else None
            if key is None and isinstance(call_id, str) and call_id:
                key = next((k for k, r in self._records.items() if r.get("tracing_id") == call_id
                            and isinstance(r.get("call_id"), str) and r["call_id"]), None)
            if key is None or key.startswith("\0"):
                raise ValidationError("call_id", call_id, "the call_id or tracing_id of a call in this ledger "
                                      "(see ledger.unsettled)")
            rec = self._records[key]
            self.record({"call_id": key, "outcome": "settled", "settled_from": rec.get("outcome"),
                         "credit": value, "usd": pricing.credits_to_usd(value),
                         "error": note if note is not None else rec.get("error")})
            return copy.deepcopy(self._records[key])

    def note_saved(self, call_id: str, paths: Any) -> dict | None:
        """Record where a call's full-resolution files were saved (``result.save``, the magic,
        the studio's Save): one more line for ``call_id`` whose ``saved`` lists every path saved
        so far (lines merge by call_id, so the list accumulates) and which repeats the call's
        ``time`` (the merged record keeps when the call was made). A call_id this ledger does
        not hold writes nothing (a line of its own would read as a call of unknown cost): None."""
        with self._lock:
            rec = self._records.get(call_id) if isinstance(call_id, str) and call_id else None
            if rec is None:
                return None
            old = rec.get("saved") if isinstance(rec.get("saved"), list) else []
            saved = list(dict.fromkeys([*(str(p) for p in old), *(os.fspath(p) for p in paths)]))
            if saved == old:
                return copy.deepcopy(rec)
            return self.record({"call_id": call_id, "time": rec.get("time"), "saved": saved})

    @property
    def unsettled(self) -> list[dict]:
        """Calls that may have been charged but whose credit is unknown (copies): the ones to ask
        the provider about, by tracing id, and then :meth:`settle`."""
        with self._lock:
            return [copy.deepcopy(r) for r in self._records.values() if _may_be_charged_unknown(r)]

    def _flush(self) -> None:
        """Write every unsaved line, oldest first. Caller holds the lock."""
        try:
            _make_private_dirs(self._path.parent)
            fd, created = self._open()
        except OSError as exc:
            self._warn_unsaved(exc)
            return
        try:
            while self._unsaved:
                self._write_line(fd, self._unsaved[0])
                self._unsaved.pop(0)
            os.fsync(fd)
        except OSError as exc:
            self._warn_unsaved(exc)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self._path.parent)

    def _open(self) -> tuple[int, bool]:
        flags = (os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_BINARY", 0))
        try:
            fd = os.open(self._path, flags | os.O_EXCL, 0o600)
        except FileExistsError:
            return os.open(self._path, flags, 0o600), False
        if hasattr(os, "fchmod"):
            try:
                os.fchmod(fd, 0o600)
            except OSError:
                pass
        return fd, True

    @staticmethod
    def _write_line(fd: int, data: bytes) -> None:
        # A torn line left by a crash has no newline: start ours on a fresh line.
        size = os.fstat(fd).st_size
        if size and hasattr(os, "pread") and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        written = os.write(fd, data)  # one write: O_APPEND makes it land whole, after the rest
        while written < len(data):  # only on a short write (disk full...): finish the line
            data = data[written:]
            written = os.write(fd, data)

    def _warn_unsaved(self, exc: OSError) -> None:
        warnings.warn(
            f"could not write the ledger file {self._path} ({exc.strerror or exc}); "
            f"{text.count(len(self._unsaved), 'record')} kept in memory, retried with the next one",
            LedgerWarning, stacklevel=4)

    @property
    def unsaved(self) -> int:
        """Lines that could not be written to disk yet (kept in memory, retried on the next record)."""
        with self._lock:
            return len(self._unsaved)

    # -------------------------------------------------------------------------- reading

    def _merge(self, entry: dict) -> None:
        key = entry.get("call_id")
        if not isinstance(key, str) or not key:
            self._anon += 1
            key = f"\0line-{self._anon}"
        old = self._records.get(key)
        self._records[key] = entry if old is None else {**old, **entry}

    def _read_file(self) -> None:
        data = self._path.read_bytes()
        lines = data.split(b"\n")
        last_index = len(lines) - 1  # the chunk after the last newline ("" when the file is whole)
        odd = [False]  # this line holds a number JSON cannot write back (NaN, Infinity, 1e999)

        def number(s: str) -> float:
            f = float(s)
            if not math.isfinite(f):
                odd[0] = True
            return f

        def constant(s: str) -> float:
            odd[0] = True
            return float(s)

        decoder = json.JSONDecoder(parse_float=number, parse_constant=constant)
        for i, raw in enumerate(lines):
            if not raw.strip():
                continue
            where = "last line" if i == last_index else f"line {i + 1}"
            if len(raw) > MAX_LINE_BYTES:
                self._skip(f"skipped {where}, which is {len(raw):,} bytes long (no record is that long)")
                continue
            # Bytes that are not UTF-8 (a damaged disk, another tool) cost only those characters.
            text = raw.decode("utf-8", "replace")
            odd[0] = False
            try:
                entry = decoder.decode(text)
            except (ValueError, RecursionError):
                torn = " (a torn write: the session was interrupted mid-write)" if i == last_index else ""
                self._skip(f"skipped {where}, which is not valid JSON{torn}")
                continue
            if not isinstance(entry, dict):
                self._skip(f"skipped {where}, which is not a JSON object")
                continue
            if i == last_index:
                # Complete JSON missing only its newline: the data is whole, keep it.
                warnings.warn(f"{self._path.name}: the last line has no newline at the end (kept)",
                              LedgerWarning, stacklevel=3)
            try:
                self._merge(_normalise_read(entry, text, odd[0]))
            except RecursionError:  # deeper than the marker can reach (never from our own lines)
                self._skip(f"skipped {where}, which is nested too deeply")

    def _skip(self, why: str) -> None:
        self.skipped += 1
        warnings.warn(f"{self._path.name}: {why}", LedgerWarning, stacklevel=4)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Ledger":
        """Reopen a past session file. Torn or invalid lines are skipped with a warning.

        The returned ledger can still be appended to (lines go to the same file).
        """
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"no ledger file at {p}")
        return cls(p)

    @classmethod
    def sessions(cls, home: str | os.PathLike | None = None) -> list[Path]:
        """Past session files (``*.jsonl``) under ``<home>/ledger``, newest first."""
        folder = ledger_dir(home)
        if not folder.is_dir() and home is not None and Path(home).expanduser().is_dir():
            folder = Path(home).expanduser()  # a ledger folder given directly
        if not folder.is_dir():
            return []

        def key(p: Path) -> tuple[float, float, str]:
            try:
                mtime = p.stat().st_mtime
            except OSError:
                mtime = 0.0
            try:
                started = float(calendar.timegm(time.strptime(p.name[:20], _SESSION_STAMP)))
            except ValueError:
                started = mtime
            return started, mtime, p.name

        return sorted((p for p in folder.glob("*.jsonl") if p.is_file()), key=key, reverse=True)

    # --------------------------------------------------------------------------- totals

    def _values(self) -> list[dict]:
        with self._lock:
            return list(self._records.values())

    @property
    def records(self) -> list[dict]:
        """One dict per call (lines merged by call_id), in first-seen order. Copies."""
        with self._lock:
            return copy.deepcopy(list(self._records.values()))

    @property
    def calls(self) -> int:
        """Calls made (records, minus client-side refusals where nothing was sent)."""
        return sum(1 for r in self._values() if r.get("outcome") not in CLIENT_REFUSALS)

    @property
    def images(self) -> int:
        total = 0
        for r in self._values():
            n = _number(r.get("images"))
            total += int(n) if n else 0
        return total

    @property
    def total_credits(self) -> float:
        """Sum of the credits the gateway reported (unknown credits are *not* counted as 0:
        see :attr:`unknown_cost_calls` and :attr:`committed_credits`)."""
        return float(sum(c for c in (_credit_of(r) for r in self._values()) if c is not None))

    @property
    def total_usd(self) -> float:
        return self.total_credits / pricing.CREDITS_PER_USD

    @property
    def unknown_cost_calls(self) -> int:
        """Calls that may have been charged but whose credit is unknown."""
        return sum(1 for r in self._values() if _may_be_charged_unknown(r))

    @property
    def suspect_credit_calls(self) -> int:
        """Calls whose reported credit is not counted as it stands (negative, not a number,
        above :data:`MAX_CREDIT_PER_CALL`): see :func:`credit_rule`. The raw value is in the record."""
        return sum(1 for r in self._values() if _suspect_credit(r))

    @property
    def total_tokens(self) -> dict[str, int]:
        sums = dict.fromkeys(_USAGE_COLUMNS, 0)
        for r in self._values():
            usage = r.get("usage")
            if isinstance(usage, Mapping):
                for k in _USAGE_COLUMNS:
                    v = _number(usage.get(k))
                    if v is not None:
                        sums[k] += int(v)
        return sums

    @property
    def committed_credits(self) -> float:
        """Known credits plus the estimate of every call of unknown cost: the budget's figure."""
        with self._lock:
            values = list(self._records.values())
        known = sum(c for c in (_credit_of(r) for r in values) if c is not None)
        pending = sum(_unknown_charge(r) for r in values)
        return float(known + pending)

    @property
    def remaining(self) -> float | None:
        """Budget minus committed credits (None without a budget; negative when over)."""
        budget = self._budget
        return None if budget is None else budget - self.committed_credits

    def check_budget(self, estimate: float) -> None:
        """Raise :class:`~shark_nb.errors.BudgetExceededError` if ``estimate`` exceeds what is left."""
        est = _number(estimate)
        if est is None or est < 0:
            raise ValidationError("estimate", estimate, "a number of credits >= 0")
        budget = self._budget
        if budget is None:
            return
        remaining = budget - self.committed_credits
        if est <= remaining + 1e-9:
            return
        of_budget = f"the session budget of {text.money(budget)}"
        left = (f"{text.money(remaining)} is left of {of_budget}"
                if remaining >= 0 else f"the session is already {text.credit(-remaining)} over {of_budget}")
        raise BudgetExceededError(
            f"this call is estimated at {text.money(est)} "
            f"but {left}; nothing was sent. Raise it with "
            f"`%shark budget <USD>` or `ledger.budget = <credits>` (None removes it)",
            estimate=est, remaining=remaining)

    # -------------------------------------------------------------------------- display

    def summary(self) -> str:
        """One line, e.g. ``3 calls · 7 images · 1,234.5 credit ($0.12) · 1 call of unknown cost
        · budget 10,000 credit, 8,765.5 left``."""
        credits = self.total_credits
        parts = [text.count(self.calls, "call"), text.count(self.images, "image"),
                 f"{text.money(credits)}"]
        unknown = self.unknown_cost_calls
        if unknown:
            parts.append(f"{text.count(unknown, 'call')} of unknown cost")
        suspect = self.suspect_credit_calls
        if suspect:
            parts.append(f"{text.count(suspect, 'call')} with a suspect credit report")
        budget = self._budget
        if budget is not None:
            remaining = budget - self.committed_credits
            tail = f"{text.number(remaining)} left" if remaining >= 0 else f"{text.number(-remaining)} over"
            parts.append(f"budget {text.credit(budget)}, {tail}")
        unsaved = self.unsaved
        if unsaved:
            parts.append(f"{text.count(unsaved, 'record')} not yet saved to disk")
        if self.skipped:
            parts.append(f"{text.count(self.skipped, 'damaged line')} skipped")
        return " · ".join(parts)

    def __repr__(self) -> str:
        return f"<Ledger {self.summary()} · {self._path}>"

    def _repr_html_(self) -> str:
        e = html.escape
        values = self._values()
        shown = values[-HTML_MAX_ROWS:]
        hidden = len(values) - len(shown)
        td = 'style="padding:2px 8px;text-align:{}"'
        left, right = td.format("left"), td.format("right")
        head = ("Time", "Model", "Prompt", "Settings", "Images", "Credit", "USD", "Latency", "Outcome")
        aligns = (left, left, left, left, right, right, right, right, left)
        out = ['<div class="shark-ledger" style="font-size:12px">',
               '<table style="border-collapse:collapse">',
               "<thead><tr>" + "".join(f"<th {a}>{h}</th>" for h, a in zip(head, aligns)) + "</tr></thead>",
               "<tbody>"]
        if hidden:
            out.append(f'<tr><td colspan="{len(head)}" {left}><i>…{text.count(hidden, "earlier call")} '
                       f"not shown (see ledger.records or ledger.to_csv())</i></td></tr>")
        for r in shown:
            cells = self._html_cells(r)
            out.append("<tr>" + "".join(f"<td {a}>{c}</td>" for c, a in zip(cells, aligns)) + "</tr>")
        credits = self.total_credits
        tokens = self.total_tokens
        unknown = self.unknown_cost_calls
        unknown_note = f" + {text.count(unknown, 'call')} of unknown cost" if unknown else ""
        out.append(
            f'<tr style="border-top:1px solid #999;font-weight:bold"><td {left} colspan="4">'
            f"Total: {text.count(self.calls, 'call')}, {tokens['total_tokens']:,} tokens</td>"
            f"<td {right}>{self.images:,}</td><td {right}>{e(text.number(credits))}</td>"
            f"<td {right}>{e(text.usd_of_credit(credits))}</td>"
            f'<td {left} colspan="2">{e(unknown_note)}</td></tr>')
        out.append("</tbody></table>")
        budget = self._budget
        if budget is None:
            line = "No budget set (<code>%shark budget 2.50</code> or <code>ledger.budget = 25000</code>)."
        else:
            remaining = budget - self.committed_credits
            colour = "#c62828" if remaining < 0 else "inherit"
            tail = (f"{e(text.credit(remaining))} left" if remaining >= 0
                    else f"{e(text.credit(-remaining))} over")
            line = (f"Budget {e(text.money(budget))}: "
                    f'<span style="color:{colour}">{tail}</span>'
                    + (" (counting estimates for calls of unknown cost)" if unknown else "") + ".")
        out.append(f'<div style="margin-top:4px">{line} '
                   f'<span style="color:#888">{e(str(self._path))}</span></div></div>')
        return "".join(out)

    @staticmethod
    def _html_cells(r: Mapping) -> list[str]:
        e = html.escape
        raw_time = str(r.get("time") or "")
        shown_time = raw_time.replace("T", " ")[:19] if len(raw_time) >= 19 else raw_time
        prompt = str(r.get("prompt") or "")
        short = prompt if len(prompt) <= 80 else prompt[:79] + "…"
        title = prompt if len(prompt) <= 500 else prompt[:499] + "…"
        params = r.get("params") if isinstance(r.get("params"), Mapping) else {}
        model = str(r.get("model") or "?")
        spec = _find_model(model)
        setting = settings_summary(model, params)
        every_param = ", ".join(f"{k}={v}" for k, v in params.items() if k != "model")
        images = _number(r.get("images"))
        credit = _credit_of(r)
        estimate = _number(r.get("estimate_credit"))
        if credit is not None:
            credit_cell = e(text.number(credit))
            usd_cell = e(text.usd_of_credit(credit))
        elif _may_be_charged_unknown(r):
            est = f"estimate {text.credit(estimate)}" if estimate is not None else "no estimate"
            if _suspect_credit(r):
                est += f"; the gateway reported {r.get('credit_reported', r.get('credit'))!r}"
            credit_cell = f'<span title="{e(est)}" style="color:#b26a00">unknown</span>'
            usd_cell = "?"
        else:
            credit_cell = usd_cell = "—"
        latency = _number(r.get("latency_s"))
        outcome = str(r.get("outcome") or "?")
        colour = ("#2e7d32" if outcome == "ok" else "#b26a00" if outcome in ("pending", "unknown", "cancelled")
                  else "#c62828")
        outcome_cell = f'<span style="color:{colour}">{e(outcome)}</span>'
        if r.get("error"):
            err = str(r.get("error"))
            outcome_cell = f'<span title="{e(err[:500])}">{outcome_cell}</span>'
        if r.get("offline"):
            outcome_cell += (' <span style="background:#eee;color:#555;border-radius:3px;'
                             'padding:0 4px;font-size:10px">offline</span>')
        return [
            e(shown_time),
            f'<span title="{e(model)}">{e(spec.name if spec is not None else text.shorten(model, 32))}</span>',
            f'<span title="{e(title)}">{e(short)}</span>',
            f'<span title="{e(text.shorten(every_param, 500))}">{e(setting)}</span>',
            f"{int(images):,}" if images is not None else "—",
            credit_cell,
            usd_cell,
            text.duration(latency) if latency is not None else "—",
            outcome_cell,
        ]

    # --------------------------------------------------------------------------- export

    def _flat(self) -> tuple[list[str], list[dict[str, Any]]]:
        values = self.records
        param_columns: list[str] = []   # the union of every record's params, first seen first
        extra: list[str] = []
        rows = []
        for r in values:
            row: dict[str, Any] = {}
            for k, v in r.items():
                if k in _TOP_LEVEL_FLATTENED:
                    continue
                row[k] = v
            params = r.get("params")
            if isinstance(params, Mapping):
                for k, v in params.items():
                    if k == "model" and v == r.get("model"):
                        continue  # the model column says it
                    col = f"params.{k}" if k in _FLAT_COLUMNS or k in _TOP_LEVEL_FLATTENED else k
                    if col not in param_columns:
                        param_columns.append(col)
                    row[col] = v
            usage = r.get("usage")
            if isinstance(usage, Mapping):
                for k, v in usage.items():
                    row[k if k in _USAGE_COLUMNS else f"usage.{k}"] = v
            inputs = r.get("inputs")
            row["inputs"] = len(inputs) if isinstance(inputs, (list, tuple)) else 0
            for k, v in row.items():
                if isinstance(v, (dict, list, tuple)):
                    row[k] = json.dumps(v, ensure_ascii=False, separators=(",", ":"), default=str)
                if k not in _FLAT_COLUMNS and k not in param_columns and k not in extra:
                    extra.append(k)
            rows.append(row)
        return [*_HEAD_COLUMNS, *param_columns, *_TAIL_COLUMNS, *extra], rows

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the merged records as a flat CSV (usage and params as columns, inputs as a count).

        The parameter columns are the union of the settings of every model in the ledger
        (``n``, ``size``, ``quality`` ... for gpt-image-2, ``aspect_ratio``, ``image_size`` ...
        for gemini), first seen first; a call without a setting has an empty cell there. A
        parameter named like a ledger column is written as ``params.<name>``.

        Written atomically (a temporary file in the same folder, then renamed). An existing folder
        as ``path`` gets ``<session>.csv`` inside it. Unknown values are empty cells. Returns the path.
        """
        target = Path(path).expanduser()
        if target.is_dir():
            target = target / (self._path.stem + ".csv")
        columns, rows = self._flat()
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns, restval="", extrasaction="ignore")
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return target

    def to_dataframe(self):
        """The merged records as a pandas DataFrame (same columns as :meth:`to_csv`).

        Unknown credits are NaN, never 0. ``time`` is a UTC datetime column.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Ledger.to_dataframe() needs pandas (pip install pandas); "
                              "without it use ledger.records or ledger.to_csv(path)") from None
        columns, rows = self._flat()
        df = pd.DataFrame(rows, columns=columns)
        if len(df):
            df["time"] = pd.to_datetime(df["time"], utc=True, errors="coerce")
        return df


# ------------------------------------------------------------------------ process-wide ledger

_default: Ledger | None = None
_default_lock = threading.Lock()


def default_ledger() -> Ledger:
    """The process-wide session ledger the client uses when none is given (created lazily)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Ledger()
        return _default


def reset_default_ledger() -> None:
    """Forget the process-wide ledger (tests; the next default_ledger() starts a new session)."""
    global _default
    with _default_lock:
        _default = None
