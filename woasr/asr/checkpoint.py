"""A CTranslate2 Whisper model as an ``openai-whisper`` checkpoint, without loss.

The offline models of this product are CTranslate2 folders whose weights are stored in
float16 (docs/models). ``openai-whisper`` (and whisper-timestamped on top of it) loads a
``.pt`` file holding the model's dimensions and a PyTorch state dict. Both describe the same
network, so the conversion only renames tensors and splits CTranslate2's fused projections
(self-attention's query/key/value, cross-attention's key/value); every value is copied as it is.

:func:`read_ct2_variables` reads ``model.bin`` (the format of CTranslate2's own
``ModelSpec._serialize``); :func:`to_openai_whisper` maps the variables; :func:`write_checkpoint`
saves the file with the alignment heads of the model's ``config.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from woasr.asr.models import ModelChoice, ModelUnavailableError, cache_dir, sha256_of

log = logging.getLogger(__name__)

DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
"""CTranslate2's data type ids, in the order of its ``DataType`` enum."""


class CheckpointError(ValueError):
    """The folder is not a CTranslate2 Whisper model this converter understands."""


def read_ct2_variables(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every variable of a CTranslate2 ``model.bin``, aliases resolved to their targets' arrays."""
    data = path.read_bytes()
    offset = 0

    def take(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize(fmt)
        return int(value)

    def text() -> str:
        nonlocal offset
        length = take("H")
        value = data[offset:offset + length - 1].decode()
        offset += length
        return value

    version = take("I")
    if version < 5:
        raise CheckpointError(f"{path}: CTranslate2 binary version {version} is too old (5 or newer)")
    spec = text()
    if spec != "WhisperSpec":
        raise CheckpointError(f"{path}: a {spec}, not a Whisper model")
    take("I")  # the spec's revision
    variables: dict[str, npt.NDArray[Any]] = {}
    for _ in range(take("I")):
        name = text()
        shape = [take("I") for _ in range(take("B"))]
        dtype = DTYPES[take("B")]
        size = take("I")
        if dtype == "bfloat16":
            raise CheckpointError(f"{path}: {name} is bfloat16, which numpy cannot hold losslessly here")
        variables[name] = np.frombuffer(data, dtype=dtype, count=size // np.dtype(dtype).itemsize,
                                        offset=offset).reshape(shape)
        offset += size
    for _ in range(take("I")):
        alias, target = text(), text()
        variables[alias] = variables[target]
    return variables


@dataclass(frozen=True, slots=True)
class Dimensions:
    """``openai-whisper``'s ``ModelDimensions``."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int


_LINEAR = {"weight": "weight", "bias": "bias"}
_NORM = {"gamma": "weight", "beta": "bias"}


def to_openai_whisper(variables: dict[str, npt.NDArray[Any]]) -> tuple[Dimensions, dict[str, npt.NDArray[Any]]]:
    """The dimensions and the state dict (names of ``whisper.model.Whisper``) of a CTranslate2 model."""
    quantized = sorted(name for name in variables if name.endswith("weight_scale"))
    if quantized:
        raise CheckpointError(f"a quantized model ({quantized[0]}, ...): openai-whisper needs float weights; "
                              "convert a float16 or float32 folder")
    state: dict[str, npt.NDArray[Any]] = {}
    layers = {side: 1 + max(int(m.group(1)) for name in variables
                            if (m := re.match(rf"{side}/layer_(\d+)/", name)))
              for side in ("encoder", "decoder")}
    for name in ("conv1/weight", "conv1/bias", "conv2/weight", "conv2/bias"):
        state[f"encoder.{name.replace('/', '.')}"] = variables[f"encoder/{name}"]
    state["encoder.positional_embedding"] = variables["encoder/position_encodings/encodings"]
    _norm(state, "encoder.ln_post", variables, "encoder/layer_norm")
    state["decoder.token_embedding.weight"] = variables["decoder/embeddings/weight"]
    state["decoder.positional_embedding"] = variables["decoder/position_encodings/encodings"]
    _norm(state, "decoder.ln", variables, "decoder/layer_norm")
    for side in ("encoder", "decoder"):
        for i in range(layers[side]):
            ct2, ours = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            _attention(state, f"{ours}.attn", variables, f"{ct2}/self_attention", fused="qkv")
            _norm(state, f"{ours}.attn_ln", variables, f"{ct2}/self_attention/layer_norm")
            if side == "decoder":
                _attention(state, f"{ours}.cross_attn", variables, f"{ct2}/attention", fused="kv")
                _norm(state, f"{ours}.cross_attn_ln", variables, f"{ct2}/attention/layer_norm")
            _linear(state, f"{ours}.mlp.0", variables, f"{ct2}/ffn/linear_0")
            _linear(state, f"{ours}.mlp.2", variables, f"{ct2}/ffn/linear_1")
            _norm(state, f"{ours}.mlp_ln", variables, f"{ct2}/ffn/layer_norm")
    audio_state = int(variables["encoder/conv1/weight"].shape[0])
    text_ctx, text_state = variables["decoder/position_encodings/encodings"].shape
    dims = Dimensions(
        n_mels=int(variables["encoder/conv1/weight"].shape[1]),
        n_audio_ctx=int(variables["encoder/position_encodings/encodings"].shape[0]),
        n_audio_state=audio_state, n_audio_head=int(variables["encoder/num_heads"]), n_audio_layer=layers["encoder"],
        n_vocab=int(variables["decoder/embeddings/weight"].shape[0]), n_text_ctx=int(text_ctx),
        n_text_state=int(text_state), n_text_head=int(variables["decoder/num_heads"]), n_text_layer=layers["decoder"])
    return dims, state


def _linear(state: dict[str, Any], ours: str, variables: dict[str, Any], ct2: str) -> None:
    for theirs, mine in _LINEAR.items():
        state[f"{ours}.{mine}"] = variables[f"{ct2}/{theirs}"]


def _norm(state: dict[str, Any], ours: str, variables: dict[str, Any], ct2: str) -> None:
    for theirs, mine in _NORM.items():
        state[f"{ours}.{mine}"] = variables[f"{ct2}/{theirs}"]


def _attention(state: dict[str, Any], ours: str, variables: dict[str, Any], ct2: str, fused: str) -> None:
    """Self-attention: ``linear_0`` = query|key|value, ``linear_1`` = out. Cross-attention:
    ``linear_0`` = query, ``linear_1`` = key|value, ``linear_2`` = out. Whisper's key has no bias
    (CTranslate2 stores zeros for it, which are dropped)."""
    names = ["query", "key", "value"] if fused == "qkv" else ["key", "value"]
    weight, bias = variables[f"{ct2}/linear_0/weight"], variables[f"{ct2}/linear_0/bias"]
    if fused == "kv":
        state[f"{ours}.query.weight"], state[f"{ours}.query.bias"] = weight, bias
        weight, bias = variables[f"{ct2}/linear_1/weight"], variables[f"{ct2}/linear_1/bias"]
    for part, w, b in zip(names, np.split(weight, len(names)), np.split(bias, len(names)), strict=True):
        state[f"{ours}.{part}.weight"] = w
        if part != "key":
            state[f"{ours}.{part}.bias"] = b
        elif np.any(b):
            raise CheckpointError(f"{ct2}: a key bias that is not zero: not a Whisper model")
    _linear(state, f"{ours}.out", variables, f"{ct2}/linear_{1 if fused == 'qkv' else 2}")


def write_checkpoint(folder: Path, destination: Path) -> str:
    """Convert the CTranslate2 model in ``folder`` to ``destination`` (a ``.pt``); its sha256."""
    import torch  # the optional extra: only the conversion and the backend need it

    dims, state = to_openai_whisper(read_ct2_variables(folder / "model.bin"))
    config = json.loads((folder / "config.json").read_text())
    checkpoint = {
        "dims": asdict(dims),
        "model_state_dict": {name: torch.from_numpy(np.array(value)) for name, value in state.items()},
        "alignment_heads": [list(map(int, head)) for head in config.get("alignment_heads", [])],
        "source": {"folder": str(folder), "model_bin_sha256": sha256_of(folder / "model.bin")},
    }
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(f".{os.getpid()}.partial")  # processes converting at once: a file each
    torch.save(checkpoint, partial)
    partial.replace(destination)
    return sha256_of(destination)


def openai_whisper_checkpoint(choice: ModelChoice, convert: bool = True) -> Path:
    """The ``openai-whisper`` checkpoint of a local model, converted once into the cache and checked
    by sha256 against the record written beside it (a damaged or outdated one is converted again)."""
    folder = Path(choice.source)
    if not (folder / "model.bin").is_file():
        raise ModelUnavailableError(f"{choice.name!r} is not a local CTranslate2 folder: only local models "
                                    "(tiny.en, base, or a folder) can be converted for whisper-timestamped")
    target = cache_dir() / "openai-whisper" / f"{choice.name}.pt"
    record = target.with_suffix(".sha256")
    source_sha = sha256_of(folder / "model.bin")
    if target.is_file() and record.is_file():
        expected, converted_from = record.read_text().split()
        if converted_from == source_sha and sha256_of(target) == expected:
            return target
        log.warning("%s does not match its record: converting again", target)
    if not convert:
        raise ModelUnavailableError(f"{choice.name} has no openai-whisper checkpoint yet "
                                    f"(run `woasr models convert {choice.name} --to openai-whisper`)")
    log.info("converting %s to an openai-whisper checkpoint at %s (once)", choice.name, target)
    digest = write_checkpoint(folder, target)
    record.write_text(f"{digest} {source_sha}\n")
    return target
