"""Build the pydocs retrieval corpus: long technical documents from the documentation installed in this venv.

Why: the retrieval defaults (chunk size, overlap, embedder, top-k) were tuned on Wikipedia paragraphs (XQuAD). A
held-out corpus of long technical documents behaves differently (headings, code, tables, near-duplicate phrasing
across libraries), so ``examples/rag-pydocs`` is an acceptance test of that kind we can rebuild anywhere without
shipping third-party text: the documents are regenerated from what is installed, and only our questions and a
manifest of hashes live in the repository.

How:
- packages: the long description (the README) in each pinned dependency's ``METADATA``, read with
  ``importlib.metadata``; Markdown stays ``.md``, reStructuredText and untyped descriptions become ``.txt``. Only
  packages pinned in ``constraints.txt`` are listed, so a fresh ``make setup`` venv has the same text.
- the standard library: ``pydoc``'s plain-text rendering of a module (what ``help(module)`` shows), without the
  parts that are noise or machine-dependent: the FILE path, the DATA dump (``os.environ``, platform constants),
  the package listings, the generic doc link, the stock docstrings of dunder methods and the members inherited
  from builtins, and object addresses. Hash randomization would reorder sets in reprs, so the script re-runs
  itself with ``PYTHONHASHSEED=0``.
- each file starts with a title line (``# rich 15.0.0`` / ``argparse (Python 3.11 standard library)``) and a blank
  line, uses ``\\n`` newlines, UTF-8 without BOM, no trailing spaces; a document over 60,000 characters is cut at
  the last section boundary below that (``truncated`` in the manifest). Gold spans are offsets into this text,
  exactly as ``tailor rag ingest`` reads it.
- ``manifest.json`` records per document its package, version, license, character count and sha256. When the
  bundled ``examples/rag-pydocs/manifest.json`` exists the script compares hashes, reports documents that differ
  or are missing, and copies only the questions whose documents match (after checking each gold span against the
  text) into ``OUT/questions-{train,test}.jsonl``.

    python scripts/build_pydocs_corpus.py --out runs/pydocs
    tailor rag ingest runs/pydocs/docs --index runs/pydocs-idx
    tailor rag eval runs/pydocs/questions-test.jsonl --index runs/pydocs-idx

Exit status: 0 (also when some documents differ from the bundled manifest: a warning names them), 2 when nothing
can be built (no document, or none matching the bundled manifest).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata as md
import json
import os
import pydoc
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "rag-pydocs"
CONSTRAINTS = ROOT / "constraints.txt"
MIN_CHARS = 8_000
MAX_CHARS = 60_000
STDLIB_LICENSE = "PSF-2.0"

# Pinned dependencies (constraints.txt) whose README is at least MIN_CHARS long and mostly prose. Left out:
# httpcore (httpcore2 is its fork with the same README, which would make answers ambiguous) and packages whose
# README is a short pointer to external docs (httpx, click, jinja2, numpy, ...): the stdlib fills that gap.
PACKAGES: tuple[str, ...] = (
    "accelerate", "annotated-types", "charset-normalizer", "colorama", "colorlog", "courlan", "ctranslate2",
    "datasets", "dateparser", "defusedxml", "dill", "fastapi", "fonttools", "httpcore2", "httpx2", "huggingface-hub",
    "lance-namespace-urllib3-client", "llguidance", "ml-dtypes", "narwhals", "onnx", "openai", "optuna", "pandas",
    "peft", "pgvector", "psutil", "pydantic", "pytest-timeout", "pytz", "regex", "rich", "ruff", "sacrebleu",
    "sentence-transformers", "sortedcontainers", "sympy", "tabulate", "threadpoolctl", "tld", "tokenizers", "torch",
    "tqdm", "trafilatura", "transformers", "trl", "typer", "xxhash",
)  # fmt: skip

# Standard-library modules whose cleaned pydoc text is at least MIN_CHARS long: the commonly used, prose-rich ones.
STDLIB: tuple[str, ...] = (
    "argparse", "asyncio", "calendar", "collections", "concurrent.futures", "configparser", "contextlib", "csv",
    "datetime", "decimal", "difflib", "doctest", "enum", "gzip", "http.client", "http.server", "inspect", "io",
    "ipaddress", "itertools", "json", "logging", "multiprocessing", "os", "pathlib", "pdb", "pickle", "queue",
    "random", "re", "secrets", "shutil", "signal", "smtplib", "socket", "sqlite3", "ssl", "statistics",
    "subprocess", "sys", "tarfile", "tempfile", "threading", "time", "traceback", "typing", "unittest",
    "urllib.parse", "urllib.request", "uuid", "weakref", "xml.etree.ElementTree", "zipfile",
)  # fmt: skip


@dataclass
class Doc:
    file: str  # the name under OUT/docs, which is also the doc_id `tailor rag ingest` gives it
    package: str  # distribution name, or "stdlib"
    version: str
    license: str
    source: str  # "README" (the METADATA long description) or "pydoc"
    text: str
    original_chars: int  # before truncation


# --- packages -------------------------------------------------------------------------------------------------


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_constraints(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[_norm_name(name)] = version.strip()
    return pins


def public_version(version: str) -> str:
    # torch installs as 2.13.0+cpu or +cu128 depending on the index; the README is the same, the title must be too.
    return version.split("+", 1)[0]


def license_of(meta: Any) -> str:
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return expression
    # Some packages paste the whole license text into License: keep it only when it is a name.
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 80 and text.upper() not in ("UNKNOWN", "NONE"):
        return text
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return "; ".join(dict.fromkeys(classifiers))
    return text.splitlines()[0].strip() if text else "unknown"


def long_description(meta: Any) -> str:
    body = meta.get_payload()
    if isinstance(body, str) and body.strip():
        return body
    # Metadata < 2.1 keeps the description in a header whose continuation lines start with 8 spaces or "|".
    header = meta.get("Description") or ""
    lines = header.splitlines()
    return "\n".join([lines[0], *(re.sub(r"^(?: {8}|       \|)", "", x) for x in lines[1:])]) if lines else ""


def package_doc(name: str) -> Doc | None:
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    meta = dist.metadata
    version = public_version(dist.version)
    markdown = (meta.get("Description-Content-Type") or "").lower().startswith("text/markdown")
    body = normalize(long_description(meta))
    if not body:
        return None
    title = f"# {meta['Name']} {version}" if markdown else f"{meta['Name']} {version}"
    text = f"{title}\n\n{body}"
    cut = truncate(text, "markdown" if markdown else "rst")
    file = f"{_norm_name(name)}.{'md' if markdown else 'txt'}"
    return Doc(file, meta["Name"], version, license_of(meta), "README", cut, len(text))


# --- standard library ----------------------------------------------------------------------------------------

_SECTION = re.compile(r"^[A-Z][A-Z ]*[A-Z]$")
_DROP_SECTIONS = {"MODULE REFERENCE", "PACKAGE CONTENTS", "SUBMODULES", "DATA", "FILE"}
# Docstrings every class gets from object/type slot wrappers (or none at all): they repeat in every class and say
# nothing about the module.
_STOCK_DOC = re.compile(
    r"|Return (repr|str|hash|iter|len|bool|dir)\(self\)\.|Return self[^.]*\.|Implement \S.*\.|Initialize self\..*"
    r"|Create and return a new object\..*|Helper for pickle\.|dictionary for instance variables.*"
    r"|list of weak references to the object.*|Default object formatter\..*|Size of object in memory.*"
    r"|Return next\(self\)\.|Delete self\[key\]\.|Set self\[key\] to value\.|Return key in self\."
    r"|Return self\[key\]\.|Call self as a function\.|Return state information for pickling\."
    r"|Abstract classes can override this to customize issubclass\(\)\..*"
    r"|This method is called when a class is subclassed\..*|Represent a PEP 585 generic type.*"
)
_BAR = "     |"  # the left margin of a top-level class in pydoc's text
_ENTRY = _BAR + "  "  # a member of that class
_RULE = re.compile(r"^     \|  -{20,}$")


def _is_member(line: str) -> bool:
    return line.startswith(_ENTRY) and line[len(_ENTRY) :][:1] not in ("", " ", "|")


def _is_section_header(line: str) -> bool:
    return bool(re.match(r"^     \|  [A-Z][\w ]*(defined here|inherited from [\w.]+):$", line))


def _clean_class_block(block: list[str]) -> list[str]:
    """One ``|  ----``-separated block of a class: gone when inherited from builtins, else without stock members."""
    header = next((x for x in block if x.strip(" |")), "")
    if re.search(r"inherited from builtins\.", header):
        return []
    out: list[str] = []
    i = 0
    while i < len(block):
        j = i + 1
        if _is_member(block[i]):
            while j < len(block) and block[j].startswith(_ENTRY + "  "):
                j += 1
            name = re.split(r"[(\s=]", block[i][len(_ENTRY) :], maxsplit=1)[0]
            doc = " ".join(x.strip(" |") for x in block[i + 1 : j]).strip()
            if name.startswith("__") and name.endswith("__") and _STOCK_DOC.fullmatch(doc):
                while j < len(block) and block[j] == _BAR:  # the blank line after it goes too
                    j += 1
                i = j
                continue
        out.extend(block[i:j])
        i = j
    # A section header ("Methods defined here:") whose members all went goes too, with its blank lines.
    while out and out[-1] == _BAR:
        out.pop()
    if out and _is_section_header(out[-1]):
        out.pop()
        while out and out[-1] == _BAR:
            out.pop()
    return out


def _clean_classes(lines: list[str]) -> list[str]:
    out: list[str] = []
    block: list[str] = []
    after_rule = False

    def flush() -> None:
        kept = _clean_class_block(block)
        if kept and after_rule:
            out.extend([_BAR, _ENTRY + "-" * 70])
        out.extend(kept)
        block.clear()

    for line in lines:
        if _RULE.match(line):
            flush()
            after_rule = True
            continue
        if block and block[-1].startswith(_BAR) and not line.startswith(_BAR):  # the class ended
            flush()
            after_rule = False
        block.append(line)
    flush()
    return out


def clean_pydoc(text: str) -> str:
    text = re.sub(".\b", "", text)  # overstrike bold, should a renderer ever use it
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)  # object addresses in reprs change every run
    # A default like executable=sys.executable would name this machine's venv (only the full path: a prefix such as
    # /usr would also rewrite paths the docstrings themselves mention).
    text = text.replace(sys.executable, "python")
    kept: list[str] = []
    drop = False
    for line in text.splitlines():
        line = line.rstrip()
        if _SECTION.match(line):
            drop = line in _DROP_SECTIONS
        if not drop:
            kept.append(line)
    kept = _clean_classes(kept)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n") + "\n"


def stdlib_doc(module: str, python: str) -> Doc | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    body = clean_pydoc(pydoc.plaintext.document(mod))
    text = f"{module} (Python {python} standard library)\n\n{body}"
    cut = truncate(text, "pydoc")
    version = ".".join(map(str, sys.version_info[:3]))
    return Doc(f"{module}.txt", "stdlib", version, STDLIB_LICENSE, "pydoc", cut, len(text))


# --- text -----------------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    # What `tailor rag ingest` would change (CR, NUL) is changed here, so file offsets are the ingested offsets.
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").lstrip("\ufeff")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`*+#:.])\1{2,}$")


def _boundaries(text: str, kind: str) -> list[int]:
    """Offsets where a section starts: a Markdown heading, a reStructuredText title, a pydoc section/member."""
    out: list[int] = []
    lines = text.split("\n")
    pos = 0
    fenced = False
    for i, line in enumerate(lines):
        prev = lines[i - 1] if i else ""
        if kind == "markdown":
            if re.match(r"^\s*(```|~~~)", line):
                fenced = not fenced
            elif not fenced and re.match(r"^#{1,6} ", line):
                out.append(pos)
        elif kind == "rst":
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if line.strip() and not line[0].isspace() and _RST_UNDERLINE.match(nxt) and len(nxt) >= len(line):
                out.append(pos - len(prev) - 1 if _RST_UNDERLINE.match(prev) else pos)
        elif prev == "" and (_SECTION.match(line) or re.match(r"^    (class )?[A-Za-z_]\w*\(", line)):
            out.append(pos)
        pos += len(line) + 1
    return out


def truncate(text: str, kind: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    cuts = [b for b in _boundaries(text, kind) if MIN_CHARS <= b <= MAX_CHARS]
    if not cuts:  # no heading in range: the last paragraph break will do, else a hard cut
        paragraph = text.rfind("\n\n", MIN_CHARS, MAX_CHARS)
        cuts = [paragraph if paragraph > 0 else MAX_CHARS]
    return text[: max(cuts)].rstrip("\n") + "\n"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- the corpus -----------------------------------------------------------------------------------------------


def build(out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Write OUT/docs/* and OUT/manifest.json; return the manifest's documents and warnings."""
    warnings: list[str] = []
    pins = read_constraints(CONSTRAINTS)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    docs: list[Doc] = []
    for name in PACKAGES:
        doc = package_doc(name)
        if doc is None:
            warnings.append(f"{name}: not installed or no long description, left out")
            continue
        pin = pins.get(_norm_name(name))
        if pins and pin != doc.version:
            warnings.append(f"{name}: installed {doc.version}, constraints.txt pins {pin}")
        docs.append(doc)
    for module in STDLIB:
        doc = stdlib_doc(module, python)
        if doc is None:
            warnings.append(f"{module}: cannot import, left out")
            continue
        docs.append(doc)
    short = [d.file for d in docs if len(d.text) < MIN_CHARS]
    if short:
        warnings.append(f"shorter than {MIN_CHARS:,} characters here: {', '.join(short)}")
    docs.sort(key=lambda d: d.file)
    if len({d.file for d in docs}) != len(docs):
        raise SystemExit("two documents share a file name; rename one in PACKAGES/STDLIB")

    doc_dir = out / "docs"
    doc_dir.mkdir(parents=True, exist_ok=True)
    old_manifest = out / "manifest.json"
    if old_manifest.is_file():  # a previous build's files that this one no longer writes would still be ingested
        stale = {d["file"] for d in json.loads(old_manifest.read_text(encoding="utf-8"))["documents"]}
        for file in stale - {d.file for d in docs}:
            (doc_dir / file).unlink(missing_ok=True)
    for doc in docs:
        with open(doc_dir / doc.file, "w", encoding="utf-8", newline="\n") as f:
            f.write(doc.text)
    rows = [
        {
            "file": d.file,
            "package": d.package,
            "version": d.version,
            "source": d.source,
            "license": d.license,
            "chars": len(d.text),
            "sha256": sha256(d.text),
            **({"truncated": True, "original_chars": d.original_chars} if len(d.text) < d.original_chars else {}),
        }
        for d in docs
    ]
    manifest = {
        "corpus": "pydocs",
        "python": python,
        "note": "Documents are generated by scripts/build_pydocs_corpus.py from the installed packages' README "
        "(METADATA long description) and pydoc; each keeps its package's license. Truncated documents were cut "
        f"at the last section boundary below {MAX_CHARS:,} characters.",
        "documents": rows,
    }
    old_manifest.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    strangers = sorted(p.name for p in doc_dir.iterdir() if p.name not in {d.file for d in docs})
    if strangers:
        warnings.append(f"{doc_dir} holds files not in the manifest, which ingest would read too: {strangers}")
    return rows, warnings


def copy_questions(out: Path, rows: list[dict[str, Any]], example: Path) -> tuple[int, list[str]]:
    """Compare with the bundled manifest and copy the questions whose documents match; return (matching docs,
    warnings)."""
    bundled = json.loads((example / "manifest.json").read_text(encoding="utf-8"))
    ref = {d["file"]: d["sha256"] for d in bundled["documents"]}
    here = {r["file"]: r["sha256"] for r in rows}
    missing = sorted(set(ref) - set(here))
    differ = sorted(f for f in set(ref) & set(here) if ref[f] != here[f])
    extra = sorted(set(here) - set(ref))
    ok = {f for f in set(ref) & set(here) if ref[f] == here[f]}
    warnings: list[str] = []
    if missing:
        warnings.append(f"missing here ({len(missing)}): {', '.join(missing)}")
    if differ:
        warnings.append(f"differ from {example / 'manifest.json'} ({len(differ)}): {', '.join(differ)}")
    if extra:
        warnings.append(f"not in the bundled manifest (no questions): {', '.join(extra)}")
    for split in ("train", "test"):
        src = example / f"questions-{split}.jsonl"
        if not src.is_file():
            continue
        kept: list[str] = []
        dropped = 0
        for line in src.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            q = json.loads(line)
            ids = {g["doc_id"] for g in q.get("gold", [])} | set(q.get("doc_ids", []))
            if not ids <= ok:
                dropped += 1
                continue
            bad = [g for g in q.get("gold", []) if _span(out, g) not in q.get("answers", [])]
            if bad:  # cannot happen with matching hashes, unless the questions file was edited by hand
                warnings.append(f"{src.name}: {q.get('id')}: gold span does not hold the answer, left out")
                continue
            kept.append(line)
        (out / src.name).write_text("".join(x + "\n" for x in kept), encoding="utf-8")
        if dropped:
            warnings.append(f"{src.name}: {dropped} question(s) left out, their documents differ or are missing")
        print(f"{out / src.name}: {len(kept)} questions")
    return len(ok), warnings


_TEXT_CACHE: dict[str, str] = {}


def _span(out: Path, gold: dict[str, Any]) -> str:
    doc_id = str(gold["doc_id"])
    if doc_id not in _TEXT_CACHE:
        _TEXT_CACHE[doc_id] = (out / "docs" / doc_id).read_text(encoding="utf-8")
    return _TEXT_CACHE[doc_id][int(gold["start"]) : int(gold["end"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (docs/, manifest.json, questions)")
    parser.add_argument("--example", type=Path, default=EXAMPLE, help="the bundled manifest and questions")
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":  # set reprs in pydoc text follow the hash seed
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        rerun = [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)]
        return subprocess.run(rerun, env=env, check=False).returncode

    rows, warnings = build(args.out)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not rows:
        print("error: no document could be built (are the packages installed?)", file=sys.stderr)
        return 2
    total = sum(r["chars"] for r in rows)
    print(f"{args.out / 'docs'}: {len(rows)} documents, {total:,} characters; manifest: {args.out / 'manifest.json'}")
    if not (args.example / "manifest.json").is_file() or args.example.resolve() == args.out.resolve():
        return 0
    matched, warnings = copy_questions(args.out, rows, args.example)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if matched == 0:
        print(
            f"error: none of the documents matches {args.example / 'manifest.json'} (another Python or other package "
            "versions than constraints.txt?), so no question applies",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
