"""Results: :class:`GenerationResult`, :class:`GeneratedImage`, :class:`Usage`, and their display.

Display is compact on purpose, so the notebook file stays small: a single image shows as a
JPEG preview (a PNG one when it has transparent pixels), a result as the package's one gallery
(:class:`shark_nb.display.Gallery`) of 256 px thumbnails with a footer (credit and its dollar
value, tokens, latency, tracing id). Full-resolution files go to disk
with :meth:`GeneratedImage.save` / :meth:`GenerationResult.save`, carrying the prompt and the
parameters as metadata.

Pillow is only needed (and imported) when an image is decoded, previewed or saved.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from . import config, pricing, text
from .errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from .params import ImageRequest

__all__ = ["Usage", "GeneratedImage", "GenerationResult", "MissingImage", "DEFAULT_FOLDER"]

#: Where images are saved when no folder is given (:data:`shark_nb.config.DEFAULT_SAVE_FOLDER`).
DEFAULT_FOLDER = config.DEFAULT_SAVE_FOLDER
_FORMAT_SUFFIXES = {"png": (".png",), "jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"), "webp": (".webp",),
                    "gif": (".gif",)}


def _count(value: Any) -> int | None:
    """A token count from JSON, or None when missing or garbage."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value >= 0 and value.is_integer() else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


@dataclass(frozen=True)
class Usage:
    """Token usage as reported by the gateway (any field may be None)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None

    @classmethod
    def from_json(cls, obj: Any) -> "Usage | None":
        """Usage from a ``usage`` object; None when it is missing or holds nothing usable.

        Tolerant: garbage fields become None, ``prompt_tokens`` / ``completion_tokens`` are
        read as aliases, and a missing total is the sum of the other two when both are known.
        """
        if not isinstance(obj, dict):
            return None
        it = _count(obj.get("input_tokens"))
        if it is None:
            it = _count(obj.get("prompt_tokens"))
        ot = _count(obj.get("output_tokens"))
        if ot is None:
            ot = _count(obj.get("completion_tokens"))
        tt = _count(obj.get("total_tokens"))
        if tt is None and it is not None and ot is not None:
            tt = it + ot
        if it is None and ot is None and tt is None:
            return None
        return cls(it, ot, tt)

    def to_dict(self) -> dict[str, int | None]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "total_tokens": self.total_tokens}

    def __str__(self) -> str:
        def f(v: int | None) -> str:
            return "?" if v is None else f"{v:,}"
        return f"{f(self.input_tokens)} in / {f(self.output_tokens)} out / {f(self.total_tokens)} total"


@dataclass(frozen=True)
class MissingImage:
    """An image the gateway answered with (and billed) that could not be delivered.

    ``index`` is its place in the answer (0-based), ``url`` where it can still be fetched while
    the signed URL lives (None for an inline image; a ``data:`` URL is shortened), ``reason`` why it
    is missing, ``status`` the HTTP status of the last download attempt when there was one.
    """

    index: int
    url: str | None
    reason: str
    status: int | None = None

    def __str__(self) -> str:
        return f"image {self.index + 1}: {self.reason}"


def _is_file_target(target: Path) -> bool:
    """A path with a suffix that is not an existing folder names a file; anything else a folder."""
    return bool(target.suffix) and not target.is_dir()


@dataclass(eq=False)
class GeneratedImage:
    """One generated image: the bytes exactly as served, and ways to look at and save them."""

    data: bytes
    format: str
    size: tuple[int, int]
    url: str | None = None
    index: int = 0
    result: "GenerationResult | None" = field(default=None, repr=False)
    _previews: dict = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_bytes(cls, data: bytes, *, url: str | None = None, index: int = 0,
                   result: "GenerationResult | None" = None) -> "GeneratedImage":
        """Read format and size from the header (no decode). ValueError if not an image."""
        from . import images

        data = bytes(data)
        fmt, size = images.image_info(data)
        return cls(data=data, format=fmt, size=(int(size[0]), int(size[1])), url=url, index=index,
                   result=result)

    # -- facts -----------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def prompt(self) -> str:
        return self.result.prompt if self.result is not None else ""

    @property
    def suffix(self) -> str:
        from . import images

        return images.suffix_for(self.format)

    # -- conversions -------------------------------------------------------------------------
    def to_pil(self) -> "Image.Image":
        """A loaded PIL image (the first frame for an animation)."""
        from . import images

        return images.open_image(self.data)

    def preview(self, max_side: int = 1024, format: str = "webp", quality: int = 80) -> bytes:
        """A downscaled preview (aspect kept), re-encoded in a compact format. Cached."""
        key = ("bytes", max_side, format, quality)
        if key not in self._previews:
            from . import images

            self._previews[key] = images.make_preview(self.data, max_side=max_side, format=format,
                                                      quality=quality)
        return self._previews[key]

    def _display(self, max_side: int, quality: int = 80) -> tuple[str, bytes]:
        """(mime, bytes): a JPEG preview, or a smaller PNG one when there is transparency."""
        key = ("display", max_side, quality)
        if key not in self._previews:
            from . import images

            self._previews[key] = images.preview_for_display(
                self.data, max_side=max_side, quality=quality, png_max_side=max(64, max_side // 2))
        return self._previews[key]

    def metadata(self) -> dict[str, str]:
        """What :meth:`save` embeds in the file."""
        meta = self.result.metadata() if self.result is not None else {"Software": "shark_nb"}
        meta["image_index"] = str(self.index)
        return meta

    # -- saving ------------------------------------------------------------------------------
    def save(self, path_or_folder: str | os.PathLike | None = None, *, overwrite: bool = False) -> Path:
        """Save the full-resolution image with its metadata; return the path written.

        A folder (an existing directory, or a path without a suffix) gets a safe name made from
        the prompt (``-2``, ``-3`` ... for the images of a call with several); a path with a suffix
        is used as the file name, and its suffix must match the format (the bytes are saved as
        served, never re-encoded). An existing file is never replaced unless ``overwrite=True``:
        the name gets a numeric suffix instead (``fox-2.png``). The call's ledger records where
        it was saved (``shark_nb.history()`` links to it).
        """
        path = self._save(path_or_folder, overwrite=overwrite)
        if self.result is not None:
            self.result._note_saved([path])
        return path

    def _save(self, path_or_folder: str | os.PathLike | None, *, overwrite: bool) -> Path:
        from . import images

        target = Path(path_or_folder if path_or_folder is not None else DEFAULT_FOLDER).expanduser()
        if _is_file_target(target):
            self._check_suffix(target)
            folder, name = target.parent, target.name
        else:
            n = self.result.images_billed if self.result is not None else 1
            suffix = (f"-{self.index + 1}" if n > 1 else "") + self.suffix
            folder, name = target, images.safe_filename(self.prompt or "image", suffix=suffix)
        path = self._write(folder, name, overwrite=overwrite)
        if self.result is not None:
            self.result.saved.append(path)
        return path

    def _check_suffix(self, target: Path) -> None:
        allowed = _FORMAT_SUFFIXES.get(self.format, (self.suffix,))
        if target.suffix.lower() not in allowed:
            raise ValidationError(
                "path", str(target), f"a file name ending in {' or '.join(allowed)}",
                detail=f"the image is {self.format.upper()}; use image.to_pil().save(...) to convert it",
            )

    def _write(self, folder: Path, name: str, *, overwrite: bool) -> Path:
        from . import images

        meta = self.metadata()
        if overwrite:
            return images.save_image(self.data, folder / name, metadata=meta, overwrite=True)
        folder.mkdir(parents=True, exist_ok=True)
        for _attempt in range(100):
            path = images.unique_path(folder, name)
            try:
                return images.save_image(self.data, path, metadata=meta, overwrite=False)
            except FileExistsError:
                continue  # another writer took the name between the check and the link
        raise FileExistsError(str(folder / name))  # pragma: no cover - 100 concurrent writers on one name

    # -- display -----------------------------------------------------------------------------
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": repr(self)}
        try:
            mime, data = self._display(config.PREVIEW_MAX_SIDE)
        except ValueError:
            return bundle
        bundle[mime] = base64.b64encode(data).decode("ascii")
        return bundle

    def __repr__(self) -> str:
        return (f"<GeneratedImage #{self.index} {self.size[0]}x{self.size[1]} {self.format.upper()} "
                f"{text.bytes_(len(self.data))}>")


@dataclass(eq=False)
class GenerationResult:
    """The outcome of one generation call: its images, what it cost, and how to find it again."""

    images: list[GeneratedImage]
    usage: Usage | None = None
    credit: float | None = None
    tracing_id: str = ""
    request: "ImageRequest | None" = None
    model: str = ""
    task_id: str | None = None
    created: int | None = None
    latency: float = 0.0
    offline: bool = False
    call_id: str | None = None
    saved: list[Path] = field(default_factory=list)
    #: Images the gateway answered with that could not be delivered (see :class:`MissingImage`).
    missing: list[MissingImage] = field(default_factory=list)
    #: Things the user must know about this call (images missing, more or fewer than asked).
    notes: list[str] = field(default_factory=list)
    #: How many images the gateway's answer held, set by the client before they download (so a
    #: result whose images are still arriving knows its size); 0 when not known.
    expected: int = field(default=0, repr=False)
    #: The ledger the call was booked in (set by the client): :meth:`save` records the paths there.
    ledger: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.images = list(self.images)
        if not self.model and self.request is not None:
            self.model = self.request.model
        for i, img in enumerate(self.images):
            if img.result is None:
                img.result = self
                if img.index == 0 and i:
                    img.index = i

    # -- facts -------------------------------------------------------------------------------
    @property
    def prompt(self) -> str:
        return self.request.prompt if self.request is not None else ""

    @property
    def images_billed(self) -> int:
        """How many images the gateway's answer held: delivered + missing (+ still arriving)."""
        return max(len(self.images) + len(self.missing), self.expected)

    @property
    def complete(self) -> bool:
        """True when every image of the answer was delivered."""
        return not self.missing

    def _delivery_line(self) -> str:
        """``"2 of 3 images delivered; image 3: the signed URL ... (HTTP 403)"``, or "" when complete."""
        if not self.missing:
            return ""
        return (f"{len(self.images)} of {self.images_billed} images delivered; "
                + "; ".join(str(m) for m in self.missing))

    @property
    def cost_usd(self) -> float | None:
        return pricing.credits_to_usd(self.credit)

    @property
    def estimate_credit(self) -> float | None:
        return self.request.estimate_credit() if self.request is not None else None

    def metadata(self) -> dict[str, str]:
        """The metadata embedded in every saved file (all values are text)."""
        meta: dict[str, str] = {"prompt": self.prompt}
        params = self.request.params() if self.request is not None else {"model": self.model}
        meta["parameters"] = json.dumps(params, ensure_ascii=False, sort_keys=False)
        meta["model"] = self.model
        meta["tracing_id"] = self.tracing_id or ""
        meta["credit"] = "unknown" if self.credit is None else str(self.credit)
        if self.usage is not None:
            meta["usage"] = json.dumps(self.usage.to_dict())
        if self.created is not None:
            meta["created"] = str(self.created)
        if self.task_id:
            meta["task_id"] = self.task_id
        if self.call_id:
            meta["call_id"] = self.call_id
        meta["offline"] = "offline simulator" if self.offline else "false"
        meta["Software"] = "shark_nb"
        return meta

    # -- saving ------------------------------------------------------------------------------
    def save(self, path_or_folder: str | os.PathLike = DEFAULT_FOLDER, *, overwrite: bool = False) -> list[Path]:
        """Save every delivered image; return the paths written.

        A folder (created if needed) gets safe names made from the prompt. A file name
        (``"fox.png"``) for a call with several images is numbered by the image's place in the
        answer: ``fox-1.png``, ``fox-2.png``. Existing files are never replaced unless
        ``overwrite=True`` (a numeric suffix is added instead). Every suffix is checked before
        any file is written.
        """
        target = Path(path_or_folder).expanduser()
        numbered = _is_file_target(target) and self.images_billed > 1
        if numbered:
            for img in self.images:
                img._check_suffix(target)
        paths: list[Path] = []
        try:
            for img in self.images:
                paths.append(img._save(target.with_name(f"{target.stem}-{img.index + 1}{target.suffix}")
                                       if numbered else target, overwrite=overwrite))
        finally:
            self._note_saved(paths)  # the files that made it, even when a later one failed
        return paths

    def _note_saved(self, paths: list[Path]) -> None:
        """One ledger line with every path saved so far (see ``Ledger.note_saved``). The files are
        on disk already: a ledger that cannot take the line costs a warning, never the save."""
        if self.ledger is None or not self.call_id or not paths:
            return
        try:
            self.ledger.note_saved(self.call_id, [Path(p).resolve() for p in paths])
        except Exception as exc:  # noqa: BLE001 - the images are saved; only the history link is lost
            import warnings

            warnings.warn(f"the images were saved, but the ledger could not record where ({exc})",
                          UserWarning, stacklevel=3)

    # -- sequence ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[GeneratedImage]:
        return iter(self.images)

    def __getitem__(self, i: int) -> GeneratedImage:
        return self.images[i]

    # -- display -----------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        """The package's one gallery (:class:`shark_nb.display.Gallery`) with 256 px thumbnails
        (JPEG, or PNG where there is transparency), each linked to its saved file."""
        from .display import Gallery

        return Gallery(self, max_side=config.THUMB_SIDE, preview_format="auto", quality=75).to_html()

    def _notes(self) -> list[str]:
        """The delivery line (when images are missing) and the other notes, for every display."""
        line = self._delivery_line()
        if line and any(str(m.url or "").startswith(("http://", "https://")) for m in self.missing):
            line += " — the call was charged; fetch the missing ones from result.missing[i].url while they live"
        return ([line] if line else []) + list(self.notes)

    def __str__(self) -> str:
        return "\n".join([repr(self), *self._notes()])

    def __repr__(self) -> str:
        n = len(self.images)
        count = (f"{n} of {self.images_billed} images delivered ({'; '.join(str(m) for m in self.missing)})"
                 if self.missing else text.count(n, "image"))
        return (f"<GenerationResult {count} prompt={text.shorten(self.prompt, 40)!r} "
                f"credit={text.money(self.credit)} tracing_id={self.tracing_id!r}{' offline' if self.offline else ''}>")
