"""The single-file app build: index.html's markup + every module's source in a data block + one
inline bootstrap that turns them into blob: modules in dependency order and imports the entry.

Modules import with bare specifiers only, resolved by index.html's import map (exact or prefix
entries). At build time each specifier string is replaced by a placeholder naming the module it
resolves to; the bootstrap swaps placeholders for blob: URLs of modules already created (blob: URLs
cannot resolve relative or bare imports). The build fails (BuildError) on a relative or unresolvable
specifier, a non-literal dynamic import, an import cycle, or a specifier it could not rewrite.
Sources are embedded as JSON strings with every ``<`` escaped (``\\u003c``), so no ``</script>`` or
``<!--`` in a source can end or confuse its element.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass

from sdparta.portal.webapp import _IMPORTMAP_RE, csp_hash, importmap_text, strict_headers

_MODULE_SCRIPT_RE = re.compile(r"<script\b([^>]*)>\s*</script\s*>", re.I)
_SRC_RE = re.compile(r"\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.I)
_STYLESHEET_RE = re.compile(r"<link\b[^>]*\brel\s*=\s*[\"']?stylesheet[\"']?[^>]*>", re.I)
_HREF_RE = re.compile(r"\bhref\s*=\s*[\"']([^\"']+)[\"']", re.I)
_REGEX_BEFORE = set("(,=:[!&|?{};+-*%<>~^") | {""}
_REGEX_KEYWORDS = {"return", "typeof", "case", "do", "else", "in", "of", "new", "delete", "void", "throw",
                   "instanceof", "yield", "await"}

BOOTSTRAP_TEMPLATE = (
    "(()=>{const u=[];for(const e of document.querySelectorAll('script[type=\"application/json\"][data-module]'))"
    "{const s=JSON.parse(e.textContent).replace(/__PLACEHOLDER_(\\d+)__/g,(_,i)=>{if(!(i<u.length))"
    "throw new Error('module order');return u[+i]});"
    "u.push(URL.createObjectURL(new Blob([s],{type:'text/javascript'})))}import(u[u.length-1])})();")


class BuildError(Exception):
    """The web directory cannot be built into one file; the message names the module and why."""


@dataclass(frozen=True)
class AppBuild:
    html: bytes
    headers: dict[str, str]


#: Builds of this process by the digest of their files: the same page is built once, however many
#: portals a process starts (tests start hundreds; a build takes ~0.2 s of tokenizing).
_BUILT: dict[str, AppBuild] = {}
_BUILT_KEPT = 4


@dataclass
class _Tok:
    kind: str  # "str", "word", "punct"
    value: str
    start: int
    end: int


def _tokens(src: str) -> list[_Tok]:
    """Code-level tokens of JS source: strings (with positions), words, punctuators; comments,
    template literal text and regex literals are skipped (``${}`` code inside templates is lexed)."""
    out: list[_Tok] = []
    i, n = 0, len(src)
    depth: list[int] = []  # brace depth at each open template ${
    braces = 0
    while i < n:
        c = src[i]
        if c in " \t\r\n\u2028\u2029\ufeff":
            i += 1
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            if j < 0:
                raise BuildError("unterminated comment")
            i = j + 2
        elif c in "'\"":
            j = i + 1
            while j < n and src[j] != c:
                if src[j] == "\\":
                    j += 1
                elif src[j] == "\n":
                    raise BuildError("unterminated string")
                j += 1
            if j >= n:
                raise BuildError("unterminated string")
            out.append(_Tok("str", src[i + 1:j], i, j + 1))
            i = j + 1
        elif c == "`" or (c == "}" and depth and depth[-1] == braces):
            if c == "}":
                depth.pop()
            j = i + 1
            while j < n and src[j] != "`":
                if src[j] == "\\":
                    j += 1
                elif src.startswith("${", j):
                    break
                j += 1
            if j >= n:
                raise BuildError("unterminated template literal")
            if src[j] == "`":
                i = j + 1
            else:
                depth.append(braces)
                i = j + 2
            out.append(_Tok("punct", "`", i, i))
        elif c == "/":
            prev = out[-1] if out else None
            regex = prev is None or (prev.kind == "punct" and prev.value in _REGEX_BEFORE) or (
                prev.kind == "word" and prev.value in _REGEX_KEYWORDS)
            if regex:
                j, in_class = i + 1, False
                while j < n and (src[j] != "/" or in_class):
                    if src[j] == "\\":
                        j += 1
                    elif src[j] == "[":
                        in_class = True
                    elif src[j] == "]":
                        in_class = False
                    elif src[j] == "\n":
                        raise BuildError("unterminated regular expression")
                    j += 1
                j += 1
                while j < n and (src[j].isalnum()):
                    j += 1
                out.append(_Tok("word", "<regex>", i, j))
                i = j
            else:
                out.append(_Tok("punct", "/", i, i + 1))
                i += 1
        elif c.isalnum() or c in "_$" or ord(c) > 127:
            j = i
            while j < n and (src[j].isalnum() or src[j] in "_$" or ord(src[j]) > 127):
                j += 1
            out.append(_Tok("word", src[i:j], i, j))
            i = j
        else:
            if c == "{":
                braces += 1
            elif c == "}":
                braces -= 1
            if src.startswith("?.", i):
                out.append(_Tok("punct", "?.", i, i + 2))
                i += 2
                continue
            out.append(_Tok("punct", c, i, i + 1))
            i += 1
    return out


def specifiers(src: str) -> list[_Tok]:
    """The string tokens that are module specifiers: ``import … from "s"``, ``import "s"``,
    ``export … from "s"``, ``import("s")``; BuildError for a non-literal dynamic import."""
    toks = _tokens(src)
    found: list[_Tok] = []
    for k, t in enumerate(toks):
        if t.kind != "word" or t.value not in ("import", "export"):
            continue
        if k and toks[k - 1].kind == "punct" and toks[k - 1].value in (".", "?."):
            continue
        nxt = toks[k + 1] if k + 1 < len(toks) else None
        if nxt is None or (nxt.kind == "punct" and nxt.value in (":", ".")):
            continue
        if t.value == "import" and nxt.kind == "punct" and nxt.value == "(":
            arg = toks[k + 2] if k + 2 < len(toks) else None
            after = toks[k + 3] if k + 3 < len(toks) else None
            if arg is None or arg.kind != "str" or after is None or after.value not in (")", ","):
                raise BuildError("a dynamic import() without a string literal specifier cannot be built")
            found.append(arg)
            continue
        if t.value == "import" and nxt.kind == "str":
            found.append(nxt)
            continue
        # scan to `from "spec"` or the statement's end
        m, level = k + 1, 0
        while m < len(toks):
            x = toks[m]
            if x.kind == "punct" and x.value == "{":
                level += 1
            elif x.kind == "punct" and x.value == "}":
                level -= 1
            elif level == 0 and x.kind == "word" and x.value == "from" and m + 1 < len(toks) \
                    and toks[m + 1].kind == "str":
                found.append(toks[m + 1])
                break
            elif level == 0 and _ends_statement(toks, k, m):
                break
            m += 1
    return found


def _ends_statement(toks: list[_Tok], k: int, m: int) -> bool:
    """Token ``m`` ends the import/export statement at ``k`` (no ``from "spec"`` follows)."""
    x = toks[m]
    if x.value in (";", "=", "(", "import", "export"):
        return True
    if m == k + 1 and x.value in ("const", "let", "var", "function", "class", "default", "async"):
        return True
    return m > k + 1 and toks[m - 1].value == "}" and x.value not in ("from", "as")


def _resolve(spec: str, imports: dict[str, str], files: dict[str, bytes], where: str) -> str:
    if spec.startswith(("./", "../", "/")) or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", spec):
        raise BuildError(f"{where}: import of {spec!r} is not a bare specifier (the single-file build "
                         "resolves only bare specifiers through the import map)")
    target = imports.get(spec)
    if target is None:
        prefixes = [p for p in imports if p.endswith("/") and spec.startswith(p)]
        if not prefixes:
            raise BuildError(f"{where}: import of {spec!r} is not in the import map")
        best = max(prefixes, key=len)
        target = imports[best] + spec[len(best):]
    path = posixpath.normpath(target.removeprefix("./"))
    if path.startswith("../") or path.startswith("/") or path not in files:
        raise BuildError(f"{where}: {spec!r} resolves to {target!r}, which is not a file of the web directory")
    return path


def build(files: dict[str, bytes]) -> AppBuild:
    """The single-file page from the web directory's files (relative path → bytes); BuildError if
    it cannot be built."""
    digest = hashlib.sha256()
    for path, data in sorted(files.items()):
        digest.update(hashlib.sha256(path.encode()).digest() + hashlib.sha256(data).digest())
    key = digest.hexdigest()
    if key not in _BUILT:
        if len(_BUILT) >= _BUILT_KEPT:
            _BUILT.pop(next(iter(_BUILT)))
        _BUILT[key] = _build(files)
    return _BUILT[key]


def _build(files: dict[str, bytes]) -> AppBuild:
    if "index.html" not in files:
        raise BuildError("the web directory has no index.html")
    html = files["index.html"].decode("utf-8")
    try:
        imports = json.loads(importmap_text(html)).get("imports", {})
    except (ValueError, AttributeError) as exc:
        raise BuildError(f"index.html: the import map is not valid JSON: {exc}") from None
    entries = [m for m in _MODULE_SCRIPT_RE.finditer(html) if re.search(r"type\s*=\s*[\"']?module", m.group(1))
               and _SRC_RE.search(m.group(1))]
    if len(entries) != 1:
        raise BuildError(f"index.html must load exactly one <script type=\"module\" src=…>, found {len(entries)}")
    entry_src = _SRC_RE.search(entries[0].group(1)).group(1)  # type: ignore[union-attr]
    entry = posixpath.normpath(entry_src.removeprefix("./"))
    if entry not in files:
        raise BuildError(f"index.html: the entry module {entry_src!r} is not in the web directory")
    sources = {p: b.decode("utf-8") for p, b in files.items() if p.endswith((".js", ".mjs"))}
    placeholder = "__sdp" + hashlib.sha256("".join(sorted(sources.values())).encode()).hexdigest()[:12]
    order: list[str] = []
    state: dict[str, int] = {}
    deps: dict[str, list[tuple[_Tok, str]]] = {}

    def visit(path: str, chain: list[str]) -> None:
        if state.get(path) == 2:
            return
        if state.get(path) == 1:
            raise BuildError("import cycle: " + " → ".join([*chain[chain.index(path):], path]))
        state[path] = 1
        src = sources.get(path)
        if src is None:
            raise BuildError(f"{path} is imported as a module but is not a .js file")
        if placeholder in src:
            raise BuildError(f"{path} contains the build's placeholder text")
        try:
            specs = specifiers(src)
        except BuildError as exc:
            raise BuildError(f"{path}: {exc}") from None
        deps[path] = [(t, _resolve(t.value, imports, files, path)) for t in specs]
        for _, dep in deps[path]:
            visit(dep, [*chain, path])
        state[path] = 2
        order.append(path)

    visit(entry, [])
    index = {p: i for i, p in enumerate(order)}
    blocks = []
    for path in order:
        src = sources[path]
        for tok, dep in sorted(deps[path], key=lambda d: d[0].start, reverse=True):
            src = src[:tok.start + 1] + f"{placeholder}_{index[dep]}__" + src[tok.end - 1:]
        left = [t.value for t in specifiers(src) if not re.fullmatch(rf"{placeholder}_\d+__", t.value)]
        if left:
            raise BuildError(f"{path}: specifiers not rewritten: {left}")
        text = json.dumps(src, ensure_ascii=False).replace("<", "\\u003c")
        blocks.append(f'<script type="application/json" data-module="{index[path]}" data-path="{path}">'
                      f"{text}</script>")
    bootstrap = BOOTSTRAP_TEMPLATE.replace("__PLACEHOLDER", placeholder)
    styles: list[str] = []

    def inline_style(m: re.Match[str]) -> str:
        href = _HREF_RE.search(m.group(0))
        path = posixpath.normpath(href.group(1).removeprefix("./")) if href else ""
        if path not in files:
            raise BuildError(f"index.html: stylesheet {href.group(1) if href else '?'!r} is not in the web directory")
        css = files[path].decode("utf-8").replace("</", "<\\/")
        styles.append(csp_hash(css))
        return f"<style>{css}</style>"

    out = _STYLESHEET_RE.sub(inline_style, html)
    out = _IMPORTMAP_RE.sub("", out, count=1)
    out = re.sub(r"<link\b[^>]*\brel\s*=\s*[\"']?modulepreload[\"']?[^>]*>", "", out, flags=re.I)
    out = _MODULE_SCRIPT_RE.sub(lambda m: ("\n".join(blocks) + f"\n<script>{bootstrap}</script>")
                                if m.group(0) == entries[0].group(0) else m.group(0), out, count=0)
    headers = strict_headers(f"{csp_hash(bootstrap)} blob:", " ".join(styles) or "'none'")
    return AppBuild(out.encode("utf-8"), headers)
