"""The browser page under /web/ and the headers of skyfile downloads, over a real portal process."""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.procs import PortalProcess, start_portal

IMPORTMAP = '{"imports": {"sdparta/": "./js/"}}'
INDEX = f"""<!doctype html><html><head><script type="importmap">{IMPORTMAP}</script>
<link rel="stylesheet" href="style.css"></head><body><main id="app"></main>
<script type="module" src="./js/main.js"></script></body></html>"""


@pytest.fixture()
def web_dir(tmp_path: Path) -> Path:
    root = tmp_path / "web"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "style.css").write_text("body { margin: 0 }\n" * 50)
    (root / "js" / "main.js").write_text('import { x } from "sdparta/keys.js";\nconsole.log(x);\n' * 20)
    (root / "js" / "keys.js").write_text("export const x = 1;\n")
    (root / ".secret").write_text("hidden")
    (root / "js" / ".hidden.js").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside")
    return root


@pytest.fixture()
def web_portal(tmp_path: Path, web_dir: Path) -> Iterator[PortalProcess]:
    proc = start_portal(tmp_path / "p.sqlite3", extra=["--web-dir", str(web_dir)])
    try:
        yield proc
    finally:
        proc.stop()


def check_strict(headers: httpx.Headers) -> None:
    csp = headers["content-security-policy"]
    digest = "'sha256-" + base64.b64encode(hashlib.sha256(IMPORTMAP.encode()).digest()).decode() + "'"
    directives = dict([*d.strip().split(" ", 1), ""][:2] for d in csp.split(";"))
    assert directives == {
        "default-src": "'none'", "script-src": f"'self' {digest}", "connect-src": "'self' ws: wss:",
        "img-src": "'self' blob: data:", "media-src": "'self' blob: mediastream:", "style-src": "'self'",
        "frame-ancestors": "'none'", "base-uri": "'none'", "form-action": "'none'"}
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert re.match(r"camera=\(self\), microphone=\(self\), ", headers["permissions-policy"])
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["x-frame-options"] == "DENY"


def test_web_files_with_strict_headers(web_portal: PortalProcess, web_dir: Path) -> None:
    url = web_portal.url
    redirect = httpx.get(url + "/web")
    assert redirect.status_code == 301 and redirect.headers["location"] == "/web/"
    index = httpx.get(url + "/web/")
    assert index.status_code == 200 and index.text == INDEX
    assert index.headers["content-type"].startswith("text/html")
    check_strict(index.headers)
    js = httpx.get(url + "/web/js/keys.js")
    assert js.headers["content-type"].startswith("text/javascript") and js.text == "export const x = 1;\n"
    check_strict(js.headers)
    assert httpx.get(url + "/web/style.css").headers["content-type"].startswith("text/css")
    again = httpx.get(url + "/web/js/keys.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("path", ["/web/.secret", "/web/js/.hidden.js", "/web/../outside.txt",
                                  "/web/%2e%2e/outside.txt", "/web/js/", "/web/js", "/web/js/..%2f..%2foutside.txt",
                                  "/web//etc/passwd", "/web/nothing.js"])
def test_no_traversal_dotfiles_or_listings(web_portal: PortalProcess, path: str) -> None:
    with httpx.Client() as client:
        response = client.send(httpx.Request("GET", web_portal.url + path))
    assert response.status_code == 404, (path, response.status_code, response.text[:200])
    assert "outside" not in response.text and "hidden" not in response.text


def test_gzip_when_accepted(web_portal: PortalProcess) -> None:
    with httpx.Client() as client:
        raw = client.get(web_portal.url + "/web/js/main.js", headers={"Accept-Encoding": "gzip"})
        plain = client.get(web_portal.url + "/web/js/main.js", headers={"Accept-Encoding": "identity"})
    assert raw.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert int(raw.headers["content-length"]) < int(plain.headers["content-length"])
    assert raw.content == plain.content  # httpx decodes
    assert raw.headers["etag"] != plain.headers["etag"]


def test_uploaded_html_is_never_a_page(web_portal: PortalProcess) -> None:
    page = b"<html><script>alert(document.domain)</script></html>"
    upload = httpx.post(web_portal.url + "/skynet/skyfile", files={"file": ("x.html", page, "text/html")})
    link = upload.json()["skylink"]
    got = httpx.get(f"{web_portal.url}/{link}")
    assert got.content == page
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"] == "attachment"
    assert "sandbox" in got.headers["content-security-policy"]


def test_gzip_file_is_valid(web_portal: PortalProcess) -> None:
    with httpx.Client() as client, client.stream("GET", web_portal.url + "/web/js/main.js",
                                                 headers={"Accept-Encoding": "gzip"}) as r:
        body = b"".join(r.iter_raw())
    assert gzip.decompress(body).startswith(b"import")


def test_app_skylink_is_the_page(web_portal: PortalProcess, web_dir: Path) -> None:
    from sdparta.portal.app_build import build
    from sdparta.portal.webapp import load_web_dir
    from sdparta.store.crypto import skylink_for_content

    built = build(load_web_dir(web_dir).raw)
    link = skylink_for_content(built.html)
    got = httpx.get(f"{web_portal.url}/{link}")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/html")
    assert skylink_for_content(got.content) == link and got.content == built.html
    csp = got.headers["content-security-policy"]
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+' blob:;", csp) and "frame-ancestors 'none'" in csp
    assert got.headers["x-content-type-options"] == "nosniff"
    assert b'type="importmap"' not in got.content and b"<style>" in got.content


def files_of(**sources: str) -> dict[str, bytes]:
    files = {"index.html": INDEX.encode(), "style.css": b"body{}"}
    files.update({f"js/{name}.js": text.encode() for name, text in sources.items()})
    return files


def test_build_refuses_relative_imports_cycles_and_unknown() -> None:
    from sdparta.portal.app_build import BuildError, build

    with pytest.raises(BuildError, match=r"js/main.js: import of './keys.js' is not a bare specifier"):
        build(files_of(main='import { x } from "./keys.js";', keys="export const x = 1;"))
    with pytest.raises(BuildError, match=r"import cycle: js/a.js → js/b.js → js/a.js"):
        build(files_of(main='import "sdparta/a.js";', a='export * from "sdparta/b.js";',
                       b='import { y } from "sdparta/a.js"; export const z = 1;'))
    with pytest.raises(BuildError, match=r"'lodash' is not in the import map"):
        build(files_of(main='const m = await import("lodash");'))
    with pytest.raises(BuildError, match="without a string literal"):
        build(files_of(main='const m = await import(name);'))


def test_build_embeds_sources_safely() -> None:
    import json as jsonlib

    from sdparta.portal.app_build import build

    keys = 'export const x = "</script><script>alert(1)</script><!-- ";\n// import "nothing"\n'
    main = ('import { x } from "sdparta/keys.js";\nconst s = `import "no" ${x}`;\n'
            'export { x } from "sdparta/keys.js";\nconst r = /"sdparta\\/keys.js"/; import("sdparta/keys.js");\n')
    html = build(files_of(main=main, keys=keys)).html.decode()
    assert html.count("</script>") == html.count("<script") and "alert(1)</script>" not in html
    blocks = re.findall(r'<script type="application/json" data-module="(\d)" data-path="([^"]+)">(.*?)</script>',
                        html, re.S)
    assert [(i, p) for i, p, _ in blocks] == [("0", "js/keys.js"), ("1", "js/main.js")]
    assert jsonlib.loads(blocks[0][2]) == keys
    rewritten = jsonlib.loads(blocks[1][2])
    assert "sdparta/keys.js\"" not in rewritten.replace('/"sdparta\\/keys.js"/', "")
    assert rewritten.count("_0__") == 3 and '`import "no" ${x}`' in rewritten


def test_start_prints_the_page_urls(web_portal: PortalProcess, web_dir: Path) -> None:
    from sdparta.portal.app_build import build
    from sdparta.portal.webapp import load_web_dir
    from sdparta.store.crypto import skylink_for_content

    assert web_portal.proc.stdout is not None
    lines = [web_portal.proc.stdout.readline().strip() for _ in range(3)]
    link = skylink_for_content(build(load_web_dir(web_dir).raw).html)
    assert lines[1] == f"web page: {web_portal.url}/web/"
    assert lines[2].endswith(f": {web_portal.url}/{link}")


def run_portal(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sdparta", "portal", "--port", "0", "--data",
                           str(tmp_path / "x.sqlite3"), *argv], capture_output=True, text=True, timeout=60)


def test_a_page_that_cannot_be_built_is_refused_before_the_start(tmp_path: Path, web_dir: Path) -> None:
    """--web-dir is loaded and built while the flags are parsed: one line, exit 2, nothing started."""
    (web_dir / "js" / "keys.js").write_text('import "./main.js";\n')
    proc = run_portal(tmp_path, "--web-dir", str(web_dir))
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"sdparta portal: --web-dir: {web_dir}: ")
    assert "js/keys.js: import of './main.js' is not a bare specifier" in proc.stderr
    assert not (tmp_path / "x.sqlite3").exists()


@pytest.mark.parametrize(("case", "expected"), [
    ("missing", "is not a directory"), ("a file", "is not a directory"), ("no index", "has no index.html"),
    ("two import maps", "exactly one <script type=\"importmap\">, found 2"), ("not utf-8", "is not UTF-8"),
])
def test_bad_web_dirs_are_one_line_and_exit_2(tmp_path: Path, web_dir: Path, case: str, expected: str) -> None:
    target = web_dir
    if case == "missing":
        target = tmp_path / "nowhere"
    elif case == "a file":
        target = web_dir / "style.css"
    elif case == "no index":
        (web_dir / "index.html").unlink()
    elif case == "two import maps":
        twice = f'<script type="importmap">{IMPORTMAP}</script></head>'
        (web_dir / "index.html").write_text(INDEX.replace("</head>", twice))
    else:
        (web_dir / "index.html").write_bytes(INDEX.encode() + b"\xff\xfe")
    proc = run_portal(tmp_path, "--web-dir", str(target))
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and proc.stdout == "", (case, proc.stderr)
    assert lines[0].startswith(f"sdparta portal: --web-dir: {target}") and expected in lines[0], (case, lines)


def test_only_the_current_build_is_a_page(tmp_path: Path, web_dir: Path) -> None:
    """An old build stays stored as an ordinary skyfile; after the page changes it is data, not HTML."""
    from sdparta.portal.app_build import build
    from sdparta.portal.webapp import load_web_dir
    from sdparta.store.crypto import skylink_for_content

    data = tmp_path / "kept.sqlite3"
    old_html = build(load_web_dir(web_dir).raw).html
    old = skylink_for_content(old_html)
    first = start_portal(data, extra=["--web-dir", str(web_dir)])
    first.stop()
    (web_dir / "js" / "keys.js").write_text("export const x = 2;\n")
    new = skylink_for_content(build(load_web_dir(web_dir).raw).html)
    second = start_portal(data, extra=["--web-dir", str(web_dir)])
    try:
        was = httpx.get(f"{second.url}/{old}")
        assert was.status_code == 200 and was.content == old_html
        assert was.headers["content-type"] == "application/octet-stream"
        assert was.headers["content-disposition"] == "attachment"
        assert "sandbox" in was.headers["content-security-policy"]
        now = httpx.get(f"{second.url}/{new}")
        assert now.headers["content-type"].startswith("text/html") and skylink_for_content(now.content) == new
    finally:
        second.stop()


async def test_the_page_build_is_outside_the_skyfile_quota(tmp_path: Path, web_dir: Path) -> None:
    """The portal's own page is stored as a skyfile but charged to nobody: a small quota stays the
    clients', and no upload can evict the page."""
    from sdparta.portal.options import PortalOptions
    from sdparta.portal.server import start_portal as start_in_process

    (web_dir / "js" / "big.js").write_text("export const big = `" + "x" * 150_000 + "`;\n")
    (web_dir / "js" / "main.js").write_text('import { big } from "sdparta/big.js";\nconsole.log(big);\n')
    running = await start_in_process("127.0.0.1", 0, tmp_path / "q.sqlite3",
                                     PortalOptions(max_blob_bytes=64 * 1024, quota_bytes=200 * 1024,
                                                   web_dir=str(web_dir)))
    try:
        [(link, built)] = running.portal.app_builds.items()
        assert len(built.html) > 150_000 and running.portal.db.used_bytes == 0
        async with httpx.AsyncClient(base_url=running.url) as http:
            codes = [(await http.post("/skynet/skyfile", files={"file": ("b", bytes([i]) * 60 * 1024)})).status_code
                     for i in range(4)]
            assert codes == [200, 200, 200, 507]
            page = await http.get(f"/{link}")
        assert page.status_code == 200 and page.content == built.html
        assert running.portal.db.get_blob(link) == built.html  # stored, as a skyfile
    finally:
        await running.stop()
