"""Stage 0 for presets without a pretrained vision tower (``tiny``): supervised patch pre-training.

ALLaVA freezes a CLIP tower that was pre-trained on 400M image-text pairs; a randomly initialised
tiny tower frozen in its place carries little usable signal. This stage is the built-in world's
analogue of CLIP pre-training: each patch feature at the LLaVA feature layer learns to predict
what sits in its grid cell (kind, colour, size, word, cell index) from the scene records. After it
the tower is frozen, exactly as in the ALLaVA recipe.

Optionally (``align_projector``) it also pre-aligns the projector, as LLaVA's feature-alignment
stage does for a pretrained LM: each projected patch token is regressed onto the sum of the LM's
initial input embeddings of the words that describe its cell. Measured on the default world with
32 px patches it did not help (39.7% held-out vs. 46.6% without), so it is off by default.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm
from transformers import CLIPVisionModel

from allava.world.scene import COLOURS, GRID, POSITIONS, SHAPES, SIZES, WORDS

KINDS = ["empty", *SHAPES, "word"]
HEADS = {"kind": len(KINDS), "colour": len(COLOURS) + 1, "size": len(SIZES) + 1, "word": len(WORDS) + 1, "cell": GRID * GRID}
# colour x shape as one class: a direction per object name, so "the red triangle" is one key to match
NAME_HEAD = {"name": len(COLOURS) * len(SHAPES) + 1}


@dataclass
class VisionPretrainConfig:
    steps: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 30
    seed: int = 0
    align_projector: bool = False
    name_head: bool = False  # also predict colour x shape per patch (see NAME_HEAD)
    # > 0: pre-train on this many freshly drawn scenes (a stream of its own, as CLIP's pre-training
    # data is not ALLaVA's) instead of the training split; word_fraction of them carry a word
    fresh_scenes: int = 0
    fresh_word_fraction: float = 0.5
    # "heads": start the projector's first layer from the stage-0 heads, every attribute at equal
    # variance (see init_projector_from_heads); "random": transformers' default initialisation
    projector_init: str = "random"

    def __post_init__(self) -> None:  # a typo fails at config load, not after stage 0
        if self.projector_init not in ("random", "heads"):
            raise ValueError(f"vision_pretrain.projector_init: expected 'random' or 'heads', got {self.projector_init!r}")


def fresh_scenes(cfg: VisionPretrainConfig, image_size: int) -> tuple[list[dict], list]:
    """Scenes (as scene dicts) and their rendered images for stage 0, drawn from a seed of their own."""
    import random

    from allava.world.scene import render, sample_scene

    rng = random.Random(10_007 + cfg.seed)
    scenes = [sample_scene(rng, f"stage0_{i:06d}", cfg.fresh_word_fraction) for i in range(cfg.fresh_scenes)]
    return [s.to_json() for s in scenes], [render(s, image_size) for s in scenes]


def patch_targets(scenes: list[dict], image_size: int, patch_size: int) -> dict[str, torch.Tensor]:
    """Per-patch class targets, shape (n_images, n_patches) per head."""
    per_side = image_size // patch_size
    n = len(scenes)
    out = {k: torch.zeros(n, per_side * per_side, dtype=torch.long) for k in (*HEADS, *NAME_HEAD)}
    colour_ids = {c: i for i, c in enumerate(COLOURS)}
    for i, scene in enumerate(scenes):
        by_cell: dict[int, dict] = {s["cell"]: s for s in scene["shapes"]}
        word = scene.get("word")
        for p in range(per_side * per_side):
            row, col = divmod(p, per_side)
            cell = (row * GRID // per_side) * GRID + col * GRID // per_side
            out["cell"][i, p] = cell
            kind, colour, size, word_id = 0, len(COLOURS), len(SIZES), len(WORDS)
            name = NAME_HEAD["name"] - 1
            if cell in by_cell:
                s = by_cell[cell]
                kind, colour, size = 1 + SHAPES.index(s["shape"]), colour_ids[s["colour"]], SIZES.index(s["size"])
                name = colour * len(SHAPES) + SHAPES.index(s["shape"])
            elif word and word["cell"] == cell:
                kind, word_id = len(KINDS) - 1, WORDS.index(word["text"])
            out["kind"][i, p], out["colour"][i, p], out["size"][i, p], out["word"][i, p] = kind, colour, size, word_id
            out["name"][i, p] = name
    return out


def patch_words(scenes: list[dict], image_size: int, patch_size: int) -> list[list[str]]:
    """For every patch of every image (flattened), the words that describe its grid cell."""
    per_side = image_size // patch_size
    out: list[list[str]] = []
    for scene in scenes:
        by_cell: dict[int, dict] = {s["cell"]: s for s in scene["shapes"]}
        word = scene.get("word")
        for p in range(per_side * per_side):
            row, col = divmod(p, per_side)
            cell = (row * GRID // per_side) * GRID + col * GRID // per_side
            words = POSITIONS[cell].split()
            if cell in by_cell:
                s = by_cell[cell]
                words += [s["size"], s["colour"], s["shape"]]
            elif word and word["cell"] == cell:
                words += ["word", word["text"]]
            out.append(words)
    return out


def embedding_targets(words: list[list[str]], token_ids, embeddings: torch.Tensor) -> torch.Tensor:
    """Sum of the LM input embeddings of each patch's words (leading-space tokens, as answers use)."""
    cache: dict[str, list[int]] = {}
    rows = []
    for ws in words:
        ids = [t for w in ws for t in cache.setdefault(w, token_ids(" " + w))]
        rows.append(embeddings[ids].sum(0))
    return torch.stack(rows)


def pretrain_vision_tower(
    tower: CLIPVisionModel | nn.Module,
    pixel_values: torch.Tensor,
    scenes: list[dict],
    feature_layer: int,
    cfg: VisionPretrainConfig,
    log_path: Path | None = None,
    progress: bool = True,
    projector: nn.Module | None = None,
    amp_dtype: torch.dtype | None = torch.bfloat16,
    embed_targets: torch.Tensor | None = None,
) -> tuple[dict[str, float], nn.ModuleDict]:
    """Train ``tower`` in place so its ``feature_layer`` patch features encode the scene layout.

    With ``projector`` and ``embed_targets`` (n_images * n_patches, lm_hidden) the projector is
    trained in place too, onto those targets. Returns final per-head patch accuracies and the trained
    heads (for :func:`init_projector_from_heads`).
    """
    vcfg = tower.config
    targets = patch_targets(scenes, vcfg.image_size, vcfg.patch_size)
    head_sizes = {**HEADS, **(NAME_HEAD if cfg.name_head else {})}
    heads = nn.ModuleDict({k: nn.Linear(vcfg.hidden_size, n) for k, n in head_sizes.items()})
    params = list(tower.parameters()) + list(heads.parameters())
    n_patches = targets["cell"].shape[1]
    if projector is not None:
        assert embed_targets is not None
        params += list(projector.parameters())
        embed_targets = embed_targets.view(pixel_values.shape[0], n_patches, -1)
        target_power = embed_targets.pow(2).mean()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress_frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(cfg.seed)
    tower.train()
    acc: dict[str, float] = {}
    t0 = time.time()
    bar = tqdm(range(cfg.steps), desc="stage 0: vision pre-training", disable=not progress)
    log = log_path.open("a") if log_path else None
    for step in bar:
        idx = torch.randint(0, pixel_values.shape[0], (cfg.batch_size,), generator=gen)
        with torch.autocast(pixel_values.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            hidden = tower(pixel_values=pixel_values[idx], output_hidden_states=True).hidden_states[feature_layer]
            feats = hidden[:, 1:]  # drop CLS, as LLaVA's 'default' feature strategy does
            losses = {k: nn.functional.cross_entropy(h(feats).flatten(0, 1).float(), targets[k][idx].flatten()) for k, h in heads.items()}
            if projector is not None:
                projected = projector(feats).float()
                losses["align"] = nn.functional.mse_loss(projected, embed_targets[idx]) / target_power
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0 or step == cfg.steps - 1:
            with torch.no_grad():
                acc = {k: (h(feats.float()).argmax(-1) == targets[k][idx]).float().mean().item() for k, h in heads.items()}
            if projector is not None:
                acc["align_loss"] = losses["align"].item()
            bar.set_postfix(loss=f"{loss.item():.3f}", word=f"{acc['word']:.2f}", colour=f"{acc['colour']:.2f}")
            if log:
                log.write(json.dumps({"stage": "vision", "step": step, "loss": loss.item(), "elapsed_s": time.time() - t0, **{f"acc_{k}": v for k, v in acc.items()}}) + "\n")
    if log:
        log.close()
    opt.zero_grad(set_to_none=True)  # no stale gradients may reach the LLaVA stages' clipping
    tower.eval()
    return acc, heads


@torch.no_grad()
def init_projector_from_heads(projector: nn.Module, heads: nn.ModuleDict, features: torch.Tensor) -> dict[str, int]:
    """Start the projector's first layer as the stage-0 read-outs, every attribute at equal variance.

    Why: the frozen tower's features are dominated by colour (51% of the between-object variance on the
    default world) and shape (24%), with size at 5%. A randomly initialised projector keeps those
    proportions, and stage 1-2 gradients then amplify what is learned first: after training, size held
    0.2% and the cell 1.1% of the projected variance, and the look-ups that need them (size, position,
    cell questions) stayed near chance. Here hidden unit j of ``linear_1`` starts as one head's logit
    j, standardised over ``features`` (patch features, (n, hidden)) and scaled by 1/sqrt(classes), so
    each head (kind, colour, size, word, cell, name) carries the same variance into the LM; the
    remaining units start at zero and learn freely. Returns the hidden units used per head.

    Measured on the default (README, run V): worse, 65.6% / 56.9% held-out over two seeds against
    71.7% / 76.3% with the random projector; the plateaus it targets came from the LM's small
    initialisation instead (run Z). Kept as an option for towers whose features are this unbalanced.
    """
    lin = projector.linear_1
    n_hidden = lin.weight.shape[0]
    feats = features.float()
    rows_w, rows_b, used = [], [], {}
    for name, head in heads.items():
        w, b = head.weight.float(), head.bias.float()
        logits = feats @ w.T + b
        mean, std = logits.mean(0), logits.std(0).clamp_min(1e-3)
        scale = 1.0 / (std * head.out_features ** 0.5)
        rows_w.append(w * scale[:, None])
        rows_b.append((b - mean) * scale)
        used[name] = head.out_features
    w_all, b_all = torch.cat(rows_w), torch.cat(rows_b)
    if w_all.shape[0] > n_hidden:
        raise ValueError(f"projector hidden size {n_hidden} < {w_all.shape[0]} stage-0 head outputs")
    lin.weight.zero_()
    lin.bias.zero_()
    lin.weight[: w_all.shape[0]] = w_all.to(lin.weight.dtype)
    lin.bias[: w_all.shape[0]] = b_all.to(lin.bias.dtype)
    return used
