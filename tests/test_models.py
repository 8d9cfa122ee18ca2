"""Model resolution: offline defaults, English-only checks, hub names offline."""

import pytest

from woasr.asr import models
from woasr.asr.models import ModelUnavailableError, resolve_model


def test_defaults_follow_the_language():
    assert resolve_model(None, "en").name == "tiny.en"
    assert resolve_model(None, "de").name == "base"
    assert resolve_model(None, None).name == "base"


def test_explicit_model_wins():
    assert resolve_model("base", "en").name == "base"


def test_english_only_model_with_another_language_is_a_clear_error():
    with pytest.raises(ModelUnavailableError, match="English-only.*'base'"):
        resolve_model("tiny.en", "ko")


def test_tiny_en_comes_from_its_package_with_the_published_checksum():
    folder = models.tiny_en_dir()
    assert (folder / "config.json").is_file()
    assert models.sha256_of(folder / "model.bin") == models.TINY_EN_SHA256


def test_base_is_joined_once_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("WOASR_CACHE", str(tmp_path))
    folder = models.base_dir()
    assert folder == tmp_path / "models" / "base"
    assert models.sha256_of(folder / "model.bin") == models.BASE_SHA256
    assert {p.name for p in folder.iterdir()} == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    assert models.base_dir() == folder  # second call: no work


def test_a_folder_without_weights_is_rejected(tmp_path):
    with pytest.raises(ModelUnavailableError, match="no model.bin"):
        resolve_model(str(tmp_path), "en")
