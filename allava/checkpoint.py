"""Read a LLaVA-Phi Hugging Face folder without instantiating the model.

In the core package because every stage after training opens checkpoints (the exporters, the GPTQ
quantizer) and validates them the same way. Why not `from_pretrained`: an exporter only needs names, shapes and one tensor at a time, and a
3B checkpoint in fp32 is 12 GB. Reading safetensors lazily keeps the export's peak memory near the
largest single tensor. Key names are normalised across the layouts transformers has used for
`LlavaForConditionalGeneration` (`language_model.model.*` on disk in 4.x/5.x, `model.language_model.*`
in memory) so an imported released ALLaVA checkpoint works the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open


class CheckpointError(ValueError):
    """The folder is not a readable LLaVA-Phi checkpoint; the message says which file and why."""


# (prefix on disk, canonical prefix). First match wins; order matters (longest first).
_PREFIXES = [
    ("model.vision_tower.vision_model.", "vision."),
    ("vision_tower.vision_model.", "vision."),
    ("model.vision_tower.", "vision."),
    ("vision_tower.", "vision."),
    ("model.multi_modal_projector.", "projector."),
    ("multi_modal_projector.", "projector."),
    ("model.language_model.model.", "text."),
    ("language_model.model.", "text."),
    ("model.language_model.", "text."),
    ("language_model.lm_head.", "lm_head."),
    ("lm_head.", "lm_head."),
    ("language_model.", "text."),
]


def canonical_name(key: str) -> str | None:
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old) :]
    return None


@dataclass
class Checkpoint:
    """A LLaVA-Phi HF folder: config, tokenizer files and lazily read weights."""

    path: Path
    config: dict[str, Any]
    weight_files: list[Path]
    keys: dict[str, tuple[Path, str]] = field(default_factory=dict)  # canonical -> (file, key on disk)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def text(self) -> dict[str, Any]:
        return self.config["text_config"]

    @property
    def vision(self) -> dict[str, Any]:
        return self.config["vision_config"]

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor by canonical name, in its stored dtype."""
        file, key = self.keys[name]
        with safe_open(str(file), framework="pt") as f:
            return f.get_tensor(key)

    def iter_names(self, prefix: str) -> Iterator[str]:
        return (k for k in self.keys if k.startswith(prefix))

    def fingerprint(self) -> str:
        """sha256 over config.json and the weight files: which exact checkpoint a variant came from."""
        h = hashlib.sha256()
        for p in [self.path / "config.json", *self.weight_files]:
            h.update(p.name.encode())
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
        return h.hexdigest()


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Validate an HF LLaVA-Phi folder and index its tensors; raise CheckpointError with the reason otherwise."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a folder (expected a Hugging Face model folder)")
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{root}: missing config.json")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from e
    mt = config.get("model_type")
    text_mt = (config.get("text_config") or {}).get("model_type")
    vis_mt = (config.get("vision_config") or {}).get("model_type")
    if mt != "llava" or text_mt != "phi" or vis_mt not in ("clip_vision_model", "clip"):
        raise CheckpointError(
            f"{cfg_path}: unsupported architecture model_type={mt!r} text={text_mt!r} vision={vis_mt!r}; "
            "the toolkit handles LLaVA with a CLIP vision tower and a Phi language model "
            "(import released ALLaVA checkpoints into the transformers layout first)"
        )
    if not (root / "tokenizer.json").is_file():
        raise CheckpointError(
            f"{root}: no tokenizer.json; exports and quantized folders need the tokenizer (save it with processor.save_pretrained)"
        )
    index = root / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({root / f for f in json.loads(index.read_text())["weight_map"].values()})
    elif (root / "model.safetensors").is_file():
        files = [root / "model.safetensors"]
    else:
        raise CheckpointError(f"{root}: no model.safetensors (or sharded index); only safetensors checkpoints are read")
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{root}: missing weight file {f.name}")
    ck = Checkpoint(root, config, files)
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():  # noqa: SIM118 - safe_open is not iterable
                    name = canonical_name(key)
                    if name is None:
                        raise CheckpointError(f"{f}: unexpected tensor {key!r} for a LLaVA checkpoint")
                    ck.keys[name] = (f, key)
                    ck.shapes[name] = tuple(st.get_slice(key).get_shape())
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own error types for truncated/foreign files
            raise CheckpointError(f"{f}: cannot read safetensors ({e})") from e
    return ck


def load_tokenizer_info(root: Path) -> dict[str, Any]:
    """Vocab, merges, special tokens and chat template as the GGUF `gpt2` tokenizer needs them."""
    tj = json.loads((root / "tokenizer.json").read_text())
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise CheckpointError(f"{root}/tokenizer.json: tokenizer model {model.get('type')!r} is not BPE")
    vocab: dict[str, int] = dict(model["vocab"])
    special: set[int] = set()
    added: set[int] = set()
    for t in tj.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
        (special if t.get("special") else added).add(t["id"])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    tc_path = root / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text()) if tc_path.is_file() else {}
    template = None
    for name in ("chat_template.jinja",):
        if (root / name).is_file():
            template = (root / name).read_text()
    if template is None:
        template = tc.get("chat_template")
    if template is None and (root / "chat_template.json").is_file():
        template = json.loads((root / "chat_template.json").read_text()).get("chat_template")

    def tid(key: str) -> int | None:
        tok = tc.get(key)
        if isinstance(tok, dict):
            tok = tok.get("content")
        return vocab.get(tok) if tok is not None else None

    return {
        "vocab": vocab,
        "merges": merges,
        "special_ids": special,
        "added_ids": added,
        "bos": tid("bos_token"),
        "eos": tid("eos_token"),
        "pad": tid("pad_token"),
        "add_bos": bool(tc.get("add_bos_token", False)),
        "chat_template": template,
    }
