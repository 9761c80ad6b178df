"""Serve the browser example on 127.0.0.1: the page, transformers.js' and onnxruntime-web's dist files, one model folder.

    python examples/browser/serve.py --model outputs/exports/onnx [--port 8000] [--node-modules DIR]

Why a script and not ``python -m http.server``: the page needs three folders under one origin (the page
itself at /, the npm packages' dist files at /vendor/, the ONNX export folder at /model/) so nothing
comes from a CDN or the hub, and the cross-origin isolation headers (COOP/COEP) that let
onnxruntime-web's WASM backend use threads (SharedArrayBuffer). Binds 127.0.0.1 only: the model folder
is served read-only to this machine, not to the network. tests/examples/test_browser_page.py starts it
(``make_server``) and drives the page in headless Chromium.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
PAGE_FILES = ("index.html", "app.js", "llava_image.js")


class Handler(http.server.SimpleHTTPRequestHandler):
    """Maps /vendor/* to node_modules, /model/* to the model folder, and only the page's files at /."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
                      ".json": "application/json", ".onnx": "application/octet-stream"}

    def __init__(self, *args, mounts: dict[str, Path], quiet: bool = True, **kwargs) -> None:
        self.mounts = mounts
        self.quiet = quiet
        super().__init__(*args, directory=str(HERE), **kwargs)

    def translate_path(self, path: str) -> str:
        """The file for a URL path; anything outside the mounts maps to a name that does not exist (404)."""
        rel = unquote(urlsplit(path).path)
        for prefix, root in self.mounts.items():
            if rel.startswith(prefix):
                target = (root / rel[len(prefix):]).resolve()
                return str(target) if target.is_relative_to(root) else str(root / "__outside__")
        name = rel.lstrip("/") or "index.html"
        return str(HERE / name) if name in PAGE_FILES else str(HERE / "__not_served__")

    def end_headers(self) -> None:
        # Cross-origin isolation: SharedArrayBuffer, hence multi-threaded WASM; no caching between runs.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def copyfile(self, source, outputfile) -> None:
        """A client that stops reading (a cancelled fetch, a closed tab) is not an error worth a traceback."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().copyfile(source, outputfile)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if not self.quiet:
            super().log_message(format, *args)


def make_server(model: Path, node_modules: Path, port: int = 0, quiet: bool = True) -> http.server.ThreadingHTTPServer:
    """A started server thread's server (``server.server_address[1]`` is the port; call ``shutdown()``)."""
    missing = [p for p in (model / "config.json", node_modules / "@huggingface/transformers/dist/transformers.web.js",
                           node_modules / "onnxruntime-web/dist") if not p.exists()]
    if missing:
        raise FileNotFoundError(f"not found: {', '.join(map(str, missing))}")
    mounts = {"/model/": model.resolve(), "/vendor/": node_modules.resolve()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                             functools.partial(Handler, mounts=mounts, quiet=quiet))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="an ONNX export folder (python export/to_onnx.py)")
    ap.add_argument("--node-modules", type=Path, default=HERE / "node_modules",
                    help="folder holding @huggingface/transformers and onnxruntime-web "
                         "(default: examples/browser/node_modules, made by `npm install` here)")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    try:
        server = make_server(args.model, args.node_modules, args.port, quiet=False)
    except (FileNotFoundError, OSError) as exc:
        print(f"serve.py: {exc}", file=sys.stderr)
        return 2
    print(f"open http://127.0.0.1:{server.server_address[1]}/  (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
