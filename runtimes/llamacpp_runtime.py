"""llama.cpp runtime through llama-cpp-python's low-level bindings (llama_cpp + llama_cpp.mtmd_cpp).

Why low-level instead of `Llama` + `MTMDChatHandler`: we need image encode, prefill and decode timed
separately, the projector output (`mtmd_get_output_embd`) and raw logits for parity. The prompt is
split by libmtmd at its media marker, exactly as llama-mtmd-cli does, so the token stream equals
what upstream users get. Requires the CLS-order patch for correct image embeddings
(scripts/build_llama_cpp.sh); `LlamaCppRuntime.build_info()` says whether the loaded build carries it.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from allava.variant import Manifest
from runtimes import native_loop
from runtimes.base import IMAGE_MARKER, GenerationResult, Runtime, Timings, VariantError, peak_rss_mb
from runtimes.llamacpp_settings import FLASH_ATTN, KV_TYPES, LlamaCppSettings


class LlamaCppError(RuntimeError):
    """llama.cpp refused a file or failed to evaluate; the message carries llama.cpp's own last errors."""


class LlamaCppLoadError(LlamaCppError, VariantError):
    """llama.cpp or libmtmd could not load one of the variant's files."""


_LOG: collections.deque[str] = collections.deque(maxlen=40)
_LOG_CB = None
# llama.cpp's and libmtmd's own statements of what they allocated ("... buffer size = N MiB"), kept
# whole (the ring above drops them) in the list of the runtime that last called into llama.cpp (its
# load, context or prefill sets it): LlamaCppRuntime.engine_memory reads them
_MEM_SINK: list[list[str]] = [[]]
_MEM_RE = re.compile(r"^(?P<who>\w+):\s+(?P<what>.*?)\s*(?:buffer size|model size:)\s*=?\s*(?P<mib>[\d.]+) MiB")


def install_logger() -> None:
    """Route llama.cpp and libmtmd logs into a ring buffer (echoed when ALLAVA_LLAMA_VERBOSE=1)."""
    global _LOG_CB
    if _LOG_CB is not None:
        return
    import llama_cpp
    from llama_cpp import mtmd_cpp

    verbose = os.environ.get("ALLAVA_LLAMA_VERBOSE") == "1"

    @llama_cpp.llama_log_callback
    def cb(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        s = text.decode("utf-8", errors="replace")
        _LOG.append(s)
        if "MiB" in s and ("buffer size" in s or "model size:" in s):
            _MEM_SINK[0].append(s.strip())
        if verbose:
            print(s, end="", flush=True)

    _LOG_CB = cb
    llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_helper_log_set(cb, ctypes.c_void_p(0))


def _last_errors() -> str:
    lines = [s.strip() for s in _LOG if s.strip()]
    err = [s for s in lines if "error" in s.lower() or "failed" in s.lower() or "invalid" in s.lower()]
    return " | ".join((err or lines)[-4:])


class LlamaCppRuntime(Runtime):
    format = "gguf"

    @classmethod
    def build_info(cls) -> dict:
        """Version and patch status of the llama-cpp-python this process imports (the CLS-order fix),
        and the ggml CPU variant it runs (libggml-cpu-<level>.so) with the kernels compiled into it."""
        from runtimes.llamacpp_cpu import cpu_backend
        from runtimes.llamacpp_patch import status

        return {**status(), **cpu_backend()}

    def perf_counters(self) -> dict[str, float]:
        """llama.cpp's llama_perf_context since the last reset."""
        pc = self.L.llama_perf_context(self.ctx)
        return {"t_p_eval_ms": pc.t_p_eval_ms, "n_p_eval": pc.n_p_eval, "t_eval_ms": pc.t_eval_ms, "n_eval": pc.n_eval}

    def reset_perf_counters(self) -> None:
        self.L.llama_perf_context_reset(self.ctx)

    def engine_memory(self) -> dict[str, Any]:
        """What llama.cpp and libmtmd said they allocated since this runtime's load, in MiB, by part.

        From their log lines ("load_tensors: CPU_Mapped model buffer size = N MiB", "llama_kv_cache:
        CPU KV buffer size", "sched_reserve: CPU compute buffer size", clip's "load_hparams: model
        size" and "reserve_compute_meta: CPU compute buffer size"); the last statement of each wins
        (a grown context re-states its cache and compute buffers)."""
        parts: dict[str, float] = {}
        for line in self._mem_lines:
            m = _MEM_RE.match(line)
            if not m:
                continue
            who, what, mib = m["who"], m["what"].lower(), float(m["mib"])
            if who == "load_tensors":  # the language model's weights, by buffer type
                key = ("lm_weights_mapped" if "mapped" in what else "lm_weights_repacked" if "repack" in what
                       else "lm_weights_copied")
                parts[key] = parts.get(key, 0.0) + mib
                continue
            key = {"llama_kv_cache": "kv_cache", "sched_reserve": "lm_compute", "load_hparams": "vision_weights",
                   "reserve_compute_meta": "vision_compute"}.get(who)
            if key is None and "output" in what:
                key = "lm_output"
            if key:
                parts[key] = mib
        return {"components_mib": parts, "n_ctx": self.n_ctx, "type_k": self.settings.get("type_k"),
                "type_v": self.settings.get("type_v"), "files": [str(p) for p in self.files]}

    def load(self, variant_path: str | Path, threads: int | None = None, n_ctx: int | None = None,
             model_file: str | None = None, mmproj_file: str | None = None, **settings: Any) -> LlamaCppRuntime:
        """Open the variant's GGUF pair; ``settings`` are LlamaCppSettings fields (engine settings from
        the device profile or the command line; ``self.settings`` holds the values in effect)."""
        import llama_cpp as L
        from llama_cpp import mtmd_cpp as M

        if n_ctx is not None:
            settings["n_ctx"] = n_ctx
        cfg = LlamaCppSettings.from_mapping(settings)
        self.L, self.M = L, M
        install_logger()
        self._mem_lines: list[str] = []
        _MEM_SINK[0] = self._mem_lines
        t0 = time.perf_counter()
        vdir = Path(variant_path)
        self.variant = vdir
        precision = ""
        if model_file is None or mmproj_file is None:
            man = Manifest.read(vdir)  # FileNotFoundError names the folder (export with export/to_gguf.py)
            model_file = model_file or man.files["model"]
            mmproj_file = mmproj_file or man.files["mmproj"]
            precision = man.precision
        lm_path, mm_path = vdir / model_file, vdir / mmproj_file
        self.files = [lm_path, mm_path]
        for p in (lm_path, mm_path):
            if not p.is_file():
                raise LlamaCppLoadError(f"{p}: missing")
            with open(p, "rb") as f:
                if f.read(4) != b"GGUF":
                    raise LlamaCppLoadError(f"{p}: not a GGUF file")
        self.threads = threads or os.cpu_count() or 1
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        lm_precision = precision or Path(model_file).stem.split("-")[-1]
        mp.use_extra_bufts = cfg.repack_for(lm_precision)
        use_mmap = cfg.mmap_for(bool(mp.use_extra_bufts), lm_precision)
        mp.load_mode = L.LLAMA_LOAD_MODE_MMAP if use_mmap else L.LLAMA_LOAD_MODE_NONE
        self.model = L.llama_model_load_from_file(str(lm_path).encode(), mp)
        if not self.model:
            raise LlamaCppLoadError(f"{lm_path}: llama.cpp could not load the model: {_last_errors()}")
        self.cfg = cfg
        self.n_ctx_max = cfg.n_ctx or min(int(L.llama_model_n_ctx_train(self.model)), 4096)
        n_ubatch = min(cfg.n_ubatch, self.n_ctx_max)
        self.n_batch = min(cfg.n_batch or n_ubatch, self.n_ctx_max)
        self.settings = {**cfg.as_dict(), "n_batch": self.n_batch, "n_ubatch": min(n_ubatch, self.n_batch),
                         "repack": bool(mp.use_extra_bufts), "mmap": use_mmap,
                         "n_ctx_policy": "fixed" if cfg.n_ctx else "sized to the need of the run"}
        self.ctx = None
        self._make_context(cfg.n_ctx or min(cfg.ctx_floor, self.n_ctx_max), lm_path)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self.n_embd = int(L.llama_model_n_embd(self.model))
        mpar = M.mtmd_context_params_default()
        mpar.use_gpu = False
        mpar.n_threads = self.threads
        mpar.print_timings = False
        mpar.warmup = False
        mpar.flash_attn_type = FLASH_ATTN[cfg.clip_flash_attn]
        self.mctx = M.mtmd_init_from_file(str(mm_path).encode(), self.model, mpar)
        if not self.mctx:
            raise LlamaCppLoadError(f"{mm_path}: libmtmd could not load the projector: {_last_errors()}")
        self.marker = M.mtmd_default_marker().decode()
        self.batch = L.llama_batch_init(self.n_batch, 0, 1)
        # greedy pick in C: per generated token, Python only fills one batch slot (see _step)
        self.sampler = L.llama_sampler_init_greedy()
        b = self.batch
        self._slot_token, self._slot_pos, self._slot_logits = b.token, b.pos, b.logits
        b.n_seq_id[0], b.seq_id[0][0] = 1, 0
        self._llama_decode, self._sample = L.llama_decode, L.llama_sampler_sample
        self._eog_cache: dict[int, bool] = {}
        self._native = None if os.environ.get("ALLAVA_LLAMA_LOOP") == "python" else native_loop.load()
        self.decode_loop = "native" if self._native else "python"
        if self._native:
            addr = native_loop.function_address
            self._native_fns = (addr(L.llama_decode), addr(L.llama_sampler_sample), addr(L.llama_vocab_is_eog))
        self.load_s = time.perf_counter() - t0
        return self

    def _make_context(self, n_ctx: int, where: Path | None = None) -> None:
        """(Re)create the llama context with ``n_ctx`` positions (the old one, cache included, is freed first)."""
        L, cfg = self.L, self.cfg
        _MEM_SINK[0] = self._mem_lines
        if self.ctx:
            L.llama_free(self.ctx)
            self.ctx = None
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = self.n_batch
        cp.n_ubatch = self.settings["n_ubatch"]
        cp.n_threads = self.threads
        cp.n_threads_batch = self.threads
        cp.flash_attn_type = FLASH_ATTN[cfg.flash_attn]
        cp.type_k, cp.type_v = KV_TYPES[cfg.type_k], KV_TYPES[cfg.type_v]
        cp.no_perf = False
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise LlamaCppError(f"{where or self.variant}: could not create a context (n_ctx {n_ctx}, type_k "
                                f"{cfg.type_k}, type_v {cfg.type_v}, flash_attn {cfg.flash_attn}): {_last_errors()}")
        self.n_ctx = self.settings["n_ctx"] = int(L.llama_n_ctx(self.ctx))

    def _fit_context(self, need: int) -> None:
        """Grow the automatic context to hold ``need`` positions (a fixed n_ctx never changes)."""
        if self.cfg.n_ctx is None and need > self.n_ctx:
            self._make_context(self.cfg.auto_ctx(need, self.n_ctx, self.n_ctx_max))

    # -- low-level helpers -------------------------------------------------------------------
    def _reset(self) -> None:
        self.L.llama_memory_clear(self.L.llama_get_memory(self.ctx), True)

    def _decode(self, tokens: list[int], pos: int, logits_all: bool = False) -> np.ndarray:
        """Decode tokens at positions pos..; returns logits of the last token (or all, in order)."""
        L, b = self.L, self.batch
        rows = []
        for start in range(0, len(tokens), self.n_batch):
            part = tokens[start:start + self.n_batch]
            b.n_tokens = len(part)
            for j, t in enumerate(part):
                b.token[j] = t
                b.pos[j] = pos + start + j
                b.n_seq_id[j] = 1
                b.seq_id[j][0] = 0
                b.logits[j] = 1 if (logits_all or start + j == len(tokens) - 1) else 0
            rc = L.llama_decode(self.ctx, b)
            if rc != 0:
                raise LlamaCppError(f"llama_decode failed ({rc}): {_last_errors()}")
            idx = range(len(part)) if logits_all else ([len(part) - 1] if start + len(part) == len(tokens) else [])
            for j in idx:
                ptr = L.llama_get_logits_ith(self.ctx, j)
                rows.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        return np.stack(rows) if logits_all else rows[-1]

    def _step(self, tok: int, pos: int) -> int:
        """Decode one token at ``pos`` and return the greedy next token (argmax, first on ties).

        Why not _decode: on a model this small a decode takes ~0.3 ms, and copying the logits into
        numpy plus a Python argmax cost ~15% of that (the bench's llama.cpp overhead ratio)."""
        b = self.batch
        b.n_tokens = 1
        self._slot_token[0] = tok  # pointers cached at load: each ctypes field access builds an object
        self._slot_pos[0] = pos
        self._slot_logits[0] = 1  # slot 0's sequence fields are (1, 0) in every batch this class fills
        rc = self._llama_decode(self.ctx, b)
        if rc != 0:
            raise LlamaCppError(f"llama_decode failed ({rc}): {_last_errors()}")
        return self._sample(self.sampler, self.ctx, -1)

    def _decode_loop_python(self, first: int, n_past: int, max_new_tokens: int, ignore_eos: bool = False) -> list[int]:
        """Greedy generation after the prefill, one Python round trip per token (the fallback)."""
        ids = [first]
        tok, step = first, self._step
        is_eog = (lambda _t: False) if ignore_eos else self._is_eog
        while len(ids) < max_new_tokens and not is_eog(tok):
            if n_past + 1 >= self.n_ctx:
                break
            tok = step(tok, n_past)
            n_past += 1
            ids.append(tok)
        return ids

    def _decode_loop_native(self, first: int, n_past: int, max_new_tokens: int, ignore_eos: bool = False) -> list[int]:
        """The same loop in C (runtimes/csrc/greedy_loop.c): one ctypes call per generation."""
        max_new_tokens = max(1, max_new_tokens)  # as the Python loop: the prefill's token always counts
        out = (ctypes.c_int32 * max_new_tokens)()
        status = ctypes.c_int32(0)
        decode, sample, is_eog = self._native_fns
        if ignore_eos:
            is_eog = self._native.never_eog
        n = self._native(decode, sample, is_eog, self.ctx, self.sampler, self.vocab, ctypes.addressof(self.batch),
                         first, n_past, self.n_ctx, max_new_tokens, out, ctypes.byref(status))
        if n < 0:
            raise LlamaCppError(f"llama_decode failed ({status.value}) after {-n - 1} tokens: {_last_errors()}")
        return list(out[:n])

    def _is_eog(self, tok: int) -> bool:
        """llama_vocab_is_eog, remembered per token id (one ctypes call per id, not per step)."""
        hit = self._eog_cache.get(tok)
        if hit is None:
            hit = self._eog_cache[tok] = bool(self.L.llama_vocab_is_eog(self.vocab, tok))
        return hit

    def _bitmap(self, image: Image.Image):
        img = image.convert("RGB")
        data = img.tobytes()
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        bmp = self.M.mtmd_bitmap_init(img.width, img.height, buf)
        if not bmp:
            raise LlamaCppError("mtmd_bitmap_init failed")
        return bmp

    def _prefill(self, image: Image.Image | None, prompt: str, n_after: int = 0) -> tuple[np.ndarray, int, dict]:
        """Tokenize with libmtmd, encode the image, decode everything; returns last logits, n_past, timings.

        ``n_after``: positions the caller will decode after the prompt (new tokens, a continuation),
        so that an automatic context is grown to the whole request before the prompt goes in."""
        L, M = self.L, self.M
        _MEM_SINK[0] = self._mem_lines
        if image is None:
            text = prompt.replace(IMAGE_MARKER, "")
        else:
            if prompt.count(IMAGE_MARKER) != 1:
                raise ValueError(f"prompt must hold exactly one {IMAGE_MARKER} marker")
            text = prompt.replace(IMAGE_MARKER, self.marker)
        raw = text.encode()
        inp = M.mtmd_input_text(raw, len(raw), False, True)
        bitmaps = [self._bitmap(image)] if image is not None else []
        arr = (M.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
        chunks = M.mtmd_input_chunks_init()
        tm = {"image_encode_s": 0.0, "lm_prefill_s": 0.0, "n_prompt": 0, "embd": None}
        try:
            rc = M.mtmd_tokenize(self.mctx, chunks, ctypes.byref(inp), arr, len(bitmaps))
            if rc != 0:
                raise LlamaCppError(f"mtmd_tokenize failed ({rc}): {_last_errors()}")
            self._fit_context(int(M.mtmd_helper_get_n_pos(chunks)) + n_after)
            self._reset()
            n_past, last = 0, None
            for i in range(M.mtmd_input_chunks_size(chunks)):
                chunk = M.mtmd_input_chunks_get(chunks, i)
                kind = M.mtmd_input_chunk_get_type(chunk)
                if kind == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t(0)
                    ptr = M.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    toks = [ptr[k] for k in range(n.value)]
                    t0 = time.perf_counter()
                    last = self._decode(toks, n_past)
                    tm["lm_prefill_s"] += time.perf_counter() - t0
                    n_past += len(toks)
                    tm["n_prompt"] += len(toks)
                elif kind == M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    n_tok = int(M.mtmd_input_chunk_get_n_tokens(chunk))
                    t0 = time.perf_counter()
                    if M.mtmd_encode_chunk(self.mctx, chunk) != 0:
                        raise LlamaCppError(f"mtmd_encode_chunk failed: {_last_errors()}")
                    tm["image_encode_s"] += time.perf_counter() - t0
                    embd = M.mtmd_get_output_embd(self.mctx)
                    tm["embd"] = np.ctypeslib.as_array(embd, shape=(n_tok * self.n_embd,)).reshape(n_tok, -1).copy()
                    new_past = L.llama_pos(0)
                    t0 = time.perf_counter()
                    rc = M.mtmd_helper_decode_image_chunk(self.mctx, self.ctx, chunk, embd, n_past, 0, self.n_batch,
                                                          ctypes.byref(new_past), M.mtmd_helper_post_decode_callback(), None)
                    tm["lm_prefill_s"] += time.perf_counter() - t0
                    if rc != 0:
                        raise LlamaCppError(f"image chunk decode failed ({rc}): {_last_errors()}")
                    tm["n_prompt"] += int(new_past.value) - n_past
                    n_past = int(new_past.value)
                    last = None
                else:
                    raise LlamaCppError("audio chunks are not supported")
            if last is None:
                raise ValueError("the prompt must end with text after the image (the chat template's 'ASSISTANT:')")
            return last, n_past, tm
        finally:
            M.mtmd_input_chunks_free(chunks)
            for b in bitmaps:
                M.mtmd_bitmap_free(b)

    def _piece(self, tok: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.L.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.L.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, False)
        return buf.raw[:n]

    # -- Runtime interface --------------------------------------------------------------------
    def generate(self, image: Image.Image | None, prompt: str, max_new_tokens: int = 32,
                 greedy: bool = True, ignore_eos: bool = False) -> GenerationResult:
        if not greedy:
            raise NotImplementedError("only greedy decoding is implemented (parity and accuracy use it)")
        t_start = time.perf_counter()
        logits, n_past, tm = self._prefill(image, prompt, max_new_tokens)
        tok = int(np.argmax(logits))
        ttft = time.perf_counter() - t_start
        loop = self._decode_loop_native if self._native else self._decode_loop_python
        t1 = time.perf_counter()
        ids = loop(tok, n_past, max_new_tokens, ignore_eos)
        t_dec = time.perf_counter() - t1
        text = b"".join(self._piece(t) for t in ids if not self._is_eog(t))
        timings = Timings(load_s=self.load_s, image_encode_ms=tm["image_encode_s"] * 1e3, ttft_ms=ttft * 1e3,
                          prefill_tok_s=tm["n_prompt"] / tm["lm_prefill_s"] if tm["lm_prefill_s"] else 0.0,
                          decode_tok_s=(len(ids) - 1) / t_dec if t_dec and len(ids) > 1 else 0.0,
                          peak_rss_mb=peak_rss_mb(), n_prompt_tokens=tm["n_prompt"], n_generated=len(ids))
        return GenerationResult(text.decode("utf-8", errors="replace"), ids, timings)

    def score(self, image: Image.Image | None, prompt: str, continuation_ids: list[int]) -> np.ndarray:
        first, n_past, _ = self._prefill(image, prompt, len(continuation_ids))
        if len(continuation_ids) <= 1:
            return first[None, :]
        rest = self._decode(list(continuation_ids[:-1]), n_past, logits_all=True)
        return np.concatenate([first[None, :], rest], axis=0)

    def image_embeddings(self, image: Image.Image) -> np.ndarray:
        _, _, tm = self._prefill(image, f"{IMAGE_MARKER}\n")
        return tm["embd"]

    def prompt_token_ids(self, prompt: str) -> list[int]:
        """Text tokens of a prompt without image (for checking tokenizer parity)."""
        raw = prompt.encode()
        buf = (self.L.llama_token * (len(raw) + 8))()
        n = self.L.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), False, True)
        return list(buf[:n])

    def close(self) -> None:
        """Free llama.cpp's objects, newest first (the batch is a struct, the others pointers)."""
        L = getattr(self, "L", None)
        if L is None:
            return
        for attr, free in (("sampler", L.llama_sampler_free), ("mctx", self.M.mtmd_free), ("batch", L.llama_batch_free),
                           ("ctx", L.llama_free), ("model", L.llama_model_free)):
            handle = getattr(self, attr, None)
            if handle is not None and (attr == "batch" or handle):
                free(handle)
            setattr(self, attr, None)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
