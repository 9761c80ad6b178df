"""ONNX Runtime runtime: the three graphs of export/to_onnx.py (any precision) behind the common interface.

Why our own loop: onnxruntime-genai has no LLaVA model type, and the bench needs image encoding,
prefill and decode timed apart. The loop is the one transformers.js runs on the same folder: encode
the image, embed the prompt ids, write the image features into the image-token positions, run the
decoder once over the prompt with an empty cache, then one token at a time with the returned
present keys/values as the next past. Inputs come from allava.preprocess (the HF processor's steps
in numpy, without torch: this process's memory is the format's, not PyTorch's).

Session settings (measured on the tiny default, see docs/experiments.md): intra-op threads = the
requested threads, one inter-op thread, sequential execution, all graph optimisations.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from allava.preprocess import ImagePreprocessor, PromptTokenizer
from allava.variant import Manifest
from runtimes.base import IMAGE_MARKER, GenerationResult, Runtime, Timings, VariantError, peak_rss_mb
from runtimes.memory_stats import return_freed_memory, status_mib

GRAPH_ROLES = ("vision_encoder", "embed_tokens", "model")
# The session settings the runtime uses (bench/experiments/onnx_session_options.py measures the alternatives).
# release_vision: drop the vision session once an image is encoded and open it again for the next image
# (its weights are not resident during the prefill, the peak; each image pays the session's load time).
# prepack: let kernels repack constant weights at load (MatMulNBits: its int8-activation layout). Off,
# external-data weights stay memory-mapped from the file and no packed copy is made (docs/memory.md).
# prefill_chunk: run the prompt through the decoder this many positions per call (0: all at once). The
# prefill's activations (attention scores of every head over the whole prompt, the MLP's 4x-wide rows)
# then scale with the chunk, not the ~620-position prompt; the cache grows the same way. Same math,
# one call per chunk (docs/memory.md).
SESSION_DEFAULTS = {"graph_optimization_level": "all", "cpu_mem_arena": True, "execution_mode": "sequential",
                    "release_vision": False, "prepack": True, "prefill_chunk": 0}
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}
_NP_DTYPE = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


class OnnxRuntime(Runtime):
    format = "onnx"

    def load(self, variant_path: str | Path, threads: int | None = None, **session: Any) -> OnnxRuntime:
        """``session`` overrides SESSION_DEFAULTS (graph_optimization_level, cpu_mem_arena, execution_mode,
        release_vision)."""
        import onnxruntime as ort

        t0 = time.perf_counter()
        self.variant = vdir = Path(variant_path)
        man = Manifest.read(vdir)
        missing = [r for r in GRAPH_ROLES if r not in man.files]
        if missing:
            raise VariantError(f"{vdir}: manifest lists no {', '.join(missing)} graph")
        self.folder = (vdir / man.extra.get("model_folder", ".")).resolve()
        settings = {**SESSION_DEFAULTS, **session}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (all cores)
        opts.inter_op_num_threads = 1
        opts.execution_mode = getattr(ort.ExecutionMode, f"ORT_{settings['execution_mode'].upper()}")
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[settings["graph_optimization_level"]])
        opts.enable_cpu_mem_arena = bool(settings["cpu_mem_arena"])
        opts.log_severity_level = 3
        if not settings["prepack"]:
            opts.add_session_config_entry("session.disable_prepacking", "1")
        self._opts = opts
        self.session_settings = settings
        self.threads = threads
        sessions = {}
        self.files = [vdir / f for f in man.files.values()]
        self._session_mib: dict[str, float] = {}
        for role in GRAPH_ROLES:
            path = vdir / man.files[role]
            if not path.is_file():
                raise VariantError(f"{path}: missing (listed in {vdir}'s manifest as {role})")
            anon0 = status_mib().get("RssAnon", 0.0)
            try:
                sessions[role] = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - ORT raises its own types for truncated or foreign files
                raise VariantError(f"{path}: ONNX Runtime could not load it ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:300]}); expected an ONNX graph from export/to_onnx.py") from exc
            self._session_mib[f"session_{role}"] = status_mib().get("RssAnon", 0.0) - anon0
            if role == "vision_encoder":
                self._vision_path, self._vision_input = path, sessions[role].get_inputs()[0].type
                if settings["release_vision"]:  # opened once to check the file, then freed before the others load
                    sessions[role] = None
        self.vision, self.embed, self.decoder = (sessions[r] for r in GRAPH_ROLES)
        try:
            self.pre = ImagePreprocessor.from_folder(self.folder)
            self.tok = PromptTokenizer.from_folder(self.folder)
        except (OSError, ValueError, KeyError) as exc:
            raise VariantError(f"{self.folder}: processor or tokenizer files unusable ({exc})") from exc
        self.eos_id = self.tok.eos_token_id
        self.decoder_run_s = 0.0  # time inside the decoder session (the rest of a step is this loop's overhead)
        self.last_decode_share: float | None = None  # of the last generation's decode time, the share in the decoder
        past = [i for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self.past_names = [i.name for i in past]
        self.output_names = [o.name for o in self.decoder.get_outputs()]
        self.present_names = self.output_names[1:]
        self.past_shape = (1, int(past[0].shape[1]), 0, int(past[0].shape[3]))
        self.past_dtype = _NP_DTYPE[past[0].type]  # float16 for a --kv-cache float16 graph
        # num_logits_to_keep (allava/onnx_decoder_io.py): generation asks for the last row only
        self.keeps_logits = any(i.name == "num_logits_to_keep" for i in self.decoder.get_inputs())
        self.embeds_dtype = _NP_DTYPE[self.decoder.get_inputs()[0].type]
        self.load_s = time.perf_counter() - t0
        return self

    def engine_memory(self) -> dict[str, Any]:
        """RssAnon growth around each InferenceSession (initializers copied out of the file, prepacked
        weights, the session's planned buffers), in MiB; ONNX Runtime states no buffer sizes itself."""
        return {"components_mib": {k: round(v, 1) for k, v in self._session_mib.items()},
                "session_settings": self.session_settings, "files": [str(p) for p in self.files]}

    @classmethod
    def build_info(cls) -> dict[str, Any]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "providers": ort.get_available_providers(), "device": ort.get_device()}

    # -- the loop ------------------------------------------------------------------------------
    def _image_features(self, image: Image.Image) -> np.ndarray:
        import onnxruntime as ort

        pixel = self.pre(image).astype(_NP_DTYPE[self._vision_input])
        vision = self.vision or ort.InferenceSession(str(self._vision_path), sess_options=self._opts,
                                                     providers=["CPUExecutionProvider"])
        feats = vision.run(None, {"pixel_values": pixel})[0]
        if not self.session_settings["release_vision"]:
            self.vision = vision
        else:
            del vision
            return_freed_memory()  # else malloc keeps the freed session's pages under the prefill
        return feats

    def _embed(self, ids: list[int]) -> np.ndarray:
        return self.embed.run(None, {"input_ids": np.asarray([ids], dtype=np.int64)})[0].astype(self.embeds_dtype)

    def _decode(self, embeds: np.ndarray, n_past: int, past: list[Any],
                keep: int = 0) -> tuple[np.ndarray, list[Any]]:
        """One decoder call over ``embeds`` at positions n_past..; returns its logits (the last ``keep`` rows
        where the graph can skip the rest, every row for keep=0) and the new cache.

        The cache stays in ONNX Runtime's own tensors (OrtValue) from one call to the next:
        ``InferenceSession.run`` would copy every present key/value into a new numpy array, a third copy
        of the cache beside the past and the present (196 MiB at ALLaVA-3B's ~620 positions in float16)
        and a copy per step (docs/memory.md)."""
        import onnxruntime as ort

        q = embeds.shape[1]
        feeds = {"inputs_embeds": embeds, "attention_mask": np.ones((1, n_past + q), np.int64),
                 "position_ids": np.arange(n_past, n_past + q, dtype=np.int64)[None]}
        if self.keeps_logits:
            feeds["num_logits_to_keep"] = np.asarray(keep, dtype=np.int64)
        values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in feeds.items()}
        values.update(zip(self.past_names, past, strict=True))
        t0 = time.perf_counter()
        logits, *present = self.decoder.run_with_ort_values(self.output_names, values)
        self.decoder_run_s += time.perf_counter() - t0
        return logits.numpy(), present

    def _prefill(self, image: Image.Image | None, prompt: str) -> tuple[np.ndarray, list[Any], int, dict]:
        import onnxruntime as ort

        if image is not None and prompt.count(IMAGE_MARKER) != 1:
            raise ValueError(f"prompt must hold exactly one {IMAGE_MARKER} marker")
        tm = {"image_encode_s": 0.0, "prefill_s": 0.0}
        feats = None
        if image is not None:
            t0 = time.perf_counter()
            feats = self._image_features(image)
            tm["image_encode_s"] = time.perf_counter() - t0
        ids = self.tok.encode(prompt, with_image=image is not None)
        t0 = time.perf_counter()
        embeds = self._embed(ids)
        if feats is not None:
            slots = np.asarray(ids) == self.tok.image_token_id
            flat = feats.reshape(-1, feats.shape[-1])
            if int(slots.sum()) != flat.shape[0]:
                raise ValueError(f"{int(slots.sum())} image tokens in the prompt but {flat.shape[0]} image features")
            embeds[0, slots] = flat.astype(embeds.dtype)
        past = [ort.OrtValue.ortvalue_from_numpy(np.zeros(self.past_shape, self.past_dtype)) for _ in self.past_names]
        chunk = int(self.session_settings["prefill_chunk"]) or embeds.shape[1]
        for start in range(0, embeds.shape[1], chunk):  # callers read the last position's logits only
            logits, past = self._decode(embeds[:, start:start + chunk], start, past, keep=1)
        tm["prefill_s"] = time.perf_counter() - t0
        return logits[0], past, len(ids), tm

    def generate(self, image: Image.Image | None, prompt: str, max_new_tokens: int = 32,
                 greedy: bool = True, ignore_eos: bool = False) -> GenerationResult:
        if not greedy:
            raise NotImplementedError("only greedy decoding is implemented (parity and accuracy use it)")
        t_start = time.perf_counter()
        logits, past, n_past, tm = self._prefill(image, prompt)
        tok = int(np.argmax(logits[-1]))
        ttft = time.perf_counter() - t_start
        ids = [tok]
        in_session = self.decoder_run_s
        t1 = time.perf_counter()
        while len(ids) < max_new_tokens and (ignore_eos or tok != self.eos_id):
            step, past = self._decode(self._embed([tok]), n_past, past, keep=1)
            n_past += 1
            tok = int(np.argmax(step[0, -1]))
            ids.append(tok)
        t_dec = time.perf_counter() - t1
        self.last_decode_share = (self.decoder_run_s - in_session) / t_dec if t_dec else None
        timings = Timings(load_s=self.load_s, image_encode_ms=tm["image_encode_s"] * 1e3, ttft_ms=ttft * 1e3,
                          prefill_tok_s=n_past / tm["prefill_s"] if tm["prefill_s"] else 0.0,
                          decode_tok_s=(len(ids) - 1) / t_dec if t_dec and len(ids) > 1 else 0.0,
                          peak_rss_mb=peak_rss_mb(), n_prompt_tokens=n_past, n_generated=len(ids))
        return GenerationResult(self.tok.decode(ids), ids, timings)

    def score(self, image: Image.Image | None, prompt: str, continuation_ids: list[int]) -> np.ndarray:
        """Prefill, then the continuation against the cache in one decoder call (as the torch runtime)."""
        logits, past, n_past, _ = self._prefill(image, prompt)
        rows = [logits[-1:]]
        if len(continuation_ids) > 1:
            rest, _ = self._decode(self._embed(list(continuation_ids[:-1])), n_past, past)
            rows.append(rest[0])
        return np.concatenate(rows).astype(np.float32)

    def image_embeddings(self, image: Image.Image) -> np.ndarray:
        feats = self._image_features(image)
        return feats.reshape(-1, feats.shape[-1]).astype(np.float32)

    def close(self) -> None:
        for name in ("vision", "embed", "decoder"):
            setattr(self, name, None)
