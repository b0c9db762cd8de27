"""The browser page under ``/web/``: files of the package's ``sdparta/web/`` directory (or an
injected one), loaded into memory once at start, served with strict headers.

Only files that were present at start are served: a request path is looked up in a dict of
relative paths, so there is no path traversal, no directory listing and no dotfile (any path part
starting with ``.`` is skipped while loading). Each file has a strong ETag (its SHA-256) and a
gzip variant (when smaller); ``Cache-Control: no-cache`` makes browsers revalidate (304) because
names are not content-addressed.

CSP (docs/portal.md explains each directive): scripts only from this origin plus the inline import
map by its hash; ``connect-src 'self' ws: wss:`` because the page talks to this portal and to Nostr
relays the user names, which are arbitrary hosts (a CSP cannot be narrower than the scheme there;
the protection against injected code is ``script-src``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

#: Bounds on what is loaded from the web directory (it is package data, but never trust sizes).
MAX_FILES = 2000
MAX_TOTAL_BYTES = 32 * 1024 * 1024

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json", ".svg": "image/svg+xml", ".wasm": "application/wasm",
    ".png": "image/png", ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json", ".wav": "audio/wav",
}
COMPRESSIBLE = {".html", ".js", ".mjs", ".css", ".json", ".svg", ".txt", ".webmanifest", ".wasm"}

# Only features Chromium knows: an unknown one ("bluetooth") is a console warning on every load.
PERMISSIONS_POLICY = ("camera=(self), microphone=(self), display-capture=(), geolocation=(), payment=(), "
                      "usb=(), serial=(), hid=(), midi=(), accelerometer=(), gyroscope=(), "
                      "magnetometer=()")
CONNECT_SRC = "'self' ws: wss:"

_IMPORTMAP_RE = re.compile(r"<script\b[^>]*\btype\s*=\s*[\"']?importmap[\"']?[^>]*>(.*?)</script\s*>", re.S | re.I)


class WebDirError(Exception):
    """The web directory cannot be served (no single import map in index.html, too large)."""


def strict_headers(script_src: str, style_src: str = "'self'") -> dict[str, str]:
    """The headers every page response carries."""
    csp = (f"default-src 'none'; script-src {script_src}; connect-src {CONNECT_SRC}; "
           "img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
           f"style-src {style_src}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Permissions-Policy": PERMISSIONS_POLICY,
            "Cross-Origin-Opener-Policy": "same-origin", "X-Frame-Options": "DENY"}


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def importmap_text(index_html: str) -> str:
    """The inline import map's exact text (index.html must hold exactly one)."""
    found = _IMPORTMAP_RE.findall(index_html)
    if len(found) != 1:
        raise WebDirError(f"index.html must contain exactly one <script type=\"importmap\">, found {len(found)}")
    return str(found[0])


@dataclass
class WebFile:
    body: bytes
    gz: bytes | None
    content_type: str
    etag: str


@dataclass
class WebDir:
    files: dict[str, WebFile] = field(default_factory=dict)
    raw: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def present(self) -> bool:
        return "index.html" in self.files


def default_web_dir() -> Any:
    """The package's ``sdparta/web`` directory (a Traversable: works installed, zipped or editable)."""
    return resources.files("sdparta") / "web"


def _walk(root: Any, prefix: str, out: dict[str, bytes], total: list[int]) -> None:
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        rel = f"{prefix}{entry.name}"
        if entry.is_dir():
            _walk(entry, rel + "/", out, total)
        elif entry.is_file():
            data = entry.read_bytes()
            total[0] += len(data)
            if len(out) >= MAX_FILES or total[0] > MAX_TOTAL_BYTES:
                raise WebDirError(f"the web directory is too large (> {MAX_FILES} files or {MAX_TOTAL_BYTES} bytes)")
            out[rel] = data


def load_web_dir(root: str | Path | Any | None = None) -> WebDir:
    """Load every servable file; an absent directory is an empty WebDir (``/web/`` answers 404)."""
    base: Any = Path(root) if isinstance(root, (str, Path)) else (root if root is not None else default_web_dir())
    web_dir = WebDir(source=str(base))
    if not base.is_dir():
        return web_dir
    raw: dict[str, bytes] = {}
    _walk(base, "", raw, [0])
    web_dir.raw = raw
    for rel, data in raw.items():
        suffix = Path(rel).suffix.lower()
        gz = gzip.compress(data, 9, mtime=0) if suffix in COMPRESSIBLE and len(data) > 256 else None
        if gz is not None and len(gz) >= len(data):
            gz = None
        web_dir.files[rel] = WebFile(data, gz, CONTENT_TYPES.get(suffix, "application/octet-stream"),
                                     hashlib.sha256(data).hexdigest()[:32])
    if "index.html" in raw:
        text = raw["index.html"].decode("utf-8")
        web_dir.headers = strict_headers(f"'self' {csp_hash(importmap_text(text))}")
    return web_dir


def accepts_gzip(header: str) -> bool:
    for part in header.lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def serve(web_dir: WebDir, request: web.Request, path: str) -> web.StreamResponse:
    """One /web/ file (``path`` relative to the web dir; "" is index.html)."""
    headers = dict(web_dir.headers) if web_dir.headers else strict_headers("'self'")
    rel = path or "index.html"
    item = web_dir.files.get(rel) if len(rel) < 512 and "\\" not in rel and "\0" not in rel else None
    if item is None or any(part.startswith(".") or part == "" for part in rel.split("/")):
        return web.json_response({"message": "no such file in the web page"}, status=404, headers=headers)
    use_gz = item.gz is not None and accepts_gzip(request.headers.get("Accept-Encoding", ""))
    etag = f'"{item.etag}-gz"' if use_gz else f'"{item.etag}"'
    headers.update({"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"})
    wanted = request.headers.get("If-None-Match", "")
    if wanted and len(wanted) < 4096 and any(t.strip().removeprefix("W/") in (f'"{item.etag}"', f'"{item.etag}-gz"')
                                             for t in wanted.split(",")):
        return web.Response(status=304, headers=headers)
    if use_gz:
        headers["Content-Encoding"] = "gzip"
    body = item.gz if use_gz else item.body
    headers["Content-Type"] = item.content_type
    return web.Response(body=body, headers=headers)
