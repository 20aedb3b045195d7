"""Build a long-document retrieval corpus from the Debian man pages installed on this machine.

    python scripts/build_manpages_corpus.py --out runs/manpages [--reference examples/rag-manpages]

Why man pages: the RAG retrieval defaults were tuned on Wikipedia-style paragraphs (XQuAD); this corpus is their
acceptance test on something else — 98 long technical documents (10k–77k characters each: option lists,
configuration keys, prose sections), the shape of the held-out corpus we cannot see. The documents are not
shipped (each carries its package's license); they are rebuilt from ``/usr/share/man``, and the manifest pins
what they must hash to, so the hand-written questions in ``examples/rag-manpages`` stay valid.

How a page is rendered: ``man -E UTF-8 SECTION NAME`` with ``MANWIDTH=10000`` and the C.UTF-8 locale, then
cleaned here:
- no wrapping: at 10,000 columns every paragraph is one line, so a sentence is never split across lines (an
  answer span is one substring, and the chunker sees whole sentences); nothing is hyphenated for the same reason;
- no formatting: overstrike bold/underline (``x\\bx``) and SGR escapes are removed, trailing spaces stripped;
- the running header and footer lines (``TAR(1) ... TAR(1)``, padded to 10,000 columns) are dropped;
- indentation is halved (the 7-column body margin and 7-column nesting cost characters in every chunk, and half
  keeps the hierarchy readable); runs of blank lines become one; troff's two spaces after a sentence become one;
- each file starts with a title line, ``tar(1) — an archiving utility``, then a blank line, then the body.

The output is deterministic for a given set of installed packages (no dates, locale pinned, ``MANPATH`` pinned to
``/usr/share/man`` so nothing from ``/usr/local`` or a translated page slips in); the manifest records each page's
package and version so a hash mismatch can be traced to an upgrade.

Writes ``OUT/docs/<name>.<section>.txt`` and ``OUT/manifest.json``. With a reference folder holding a
``manifest.json`` (default: ``examples/rag-manpages`` next to this script), it compares hashes, reports which
documents differ or are missing here, and copies the reference questions whose documents all match into
``OUT/questions-{train,test}.jsonl``. Exit status: 0 (with a warning when some documents differ), 2 when ``man``
or the man pages are not installed at all, so a test can skip.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

MANWIDTH = 10_000
# A rendered line this long means groff wrapped a paragraph after all (one longer than the line): the "one
# sentence per line" promise would be broken silently, so the build fails instead.
MAX_LINE = MANWIDTH - 500
MAN_ROOT = "/usr/share/man"
REFERENCE = Path(__file__).resolve().parents[1] / "examples" / "rag-manpages"

# (name, section): long, prose-heavy technical pages, 10k–80k characters rendered (most 15k–50k), from sections 1,
# 5 and 8 mostly. Left out: rsync, sshd_config, cron and crontab (not installed on the build machine); bash, gpg,
# tmux, lsof, systemctl, systemd.unit, top, jq, mount, zip, git-config, curl, proc(5) and the cmake-* references
# (over 80k characters); apt(8), scp, ssh-agent, gitignore, fstab (under 9k); gcloud_* (generated, near-duplicates).
PAGES: tuple[tuple[str, str], ...] = (
    # archiving, compression, text tools
    ("tar", "1"),
    ("find", "1"),
    ("grep", "1"),
    ("sed", "1"),
    ("mawk", "1"),
    ("less", "1"),
    ("xargs", "1"),
    ("xz", "1"),
    ("zstd", "1"),
    ("unzip", "1"),
    ("gzip", "1"),
    ("bzip2", "1"),
    ("patch", "1"),
    ("bc", "1"),
    ("file", "1"),
    ("dash", "1"),
    ("man", "1"),
    ("groff", "1"),
    ("ps", "1"),
    ("strace", "1"),
    ("make", "1"),
    ("python3.11", "1"),
    # ssh
    ("ssh", "1"),
    ("ssh-keygen", "1"),
    ("sftp", "1"),
    ("ssh_config", "5"),
    # git
    ("git", "1"),
    ("git-commit", "1"),
    ("git-rebase", "1"),
    ("git-push", "1"),
    ("git-pull", "1"),
    ("git-merge", "1"),
    ("git-clone", "1"),
    ("git-fetch", "1"),
    ("git-reset", "1"),
    ("git-checkout", "1"),
    ("git-branch", "1"),
    ("git-stash", "1"),
    ("git-bisect", "1"),
    ("git-worktree", "1"),
    ("git-submodule", "1"),
    ("git-tag", "1"),
    ("git-filter-branch", "1"),
    ("gitattributes", "5"),
    ("githooks", "5"),
    ("gitrevisions", "7"),
    ("gitglossary", "7"),
    # systemd
    ("systemd", "1"),
    ("journalctl", "1"),
    ("systemd-analyze", "1"),
    ("systemd-run", "1"),
    ("systemd.service", "5"),
    ("systemd.socket", "5"),
    ("systemd.timer", "5"),
    ("systemd.resource-control", "5"),
    ("journald.conf", "5"),
    ("tmpfiles.d", "5"),
    ("systemd-tmpfiles", "8"),
    # Debian packaging and APT
    ("apt-get", "8"),
    ("apt-cache", "8"),
    ("apt.conf", "5"),
    ("sources.list", "5"),
    ("apt_preferences", "5"),
    ("dpkg", "1"),
    ("dpkg-query", "1"),
    ("dpkg-source", "1"),
    ("dpkg-buildpackage", "1"),
    ("update-alternatives", "1"),
    ("deb-control", "5"),
    # crypto
    ("gpg-agent", "1"),
    ("openssl-req", "1ssl"),
    ("openssl-x509", "1ssl"),
    ("openssl-s_client", "1ssl"),
    ("openssl-ca", "1ssl"),
    # toolchain
    ("objdump", "1"),
    ("readelf", "1"),
    ("nm", "1"),
    ("ar", "1"),
    ("ld.so", "8"),
    ("elf", "5"),
    # system administration
    ("ip-link", "8"),
    ("ip-route", "8"),
    ("ss", "8"),
    ("mke2fs", "8"),
    ("tune2fs", "8"),
    ("e2fsck", "8"),
    ("hwclock", "8"),
    ("useradd", "8"),
    ("adduser", "8"),
    ("start-stop-daemon", "8"),
    ("login.defs", "5"),
    ("ext4", "5"),
    # Linux overviews
    ("capabilities", "7"),
    ("signal", "7"),
    ("tcp", "7"),
    ("unix", "7"),
    ("inotify", "7"),
    ("daemon", "7"),
)


@dataclass
class Entry:
    """One document of the manifest."""

    file: str
    name: str
    section: str
    package: str | None
    version: str | None
    sha256: str
    chars: int


class Missing(Exception):
    """The page is not installed here, or ``man`` could not render it."""


def _env() -> dict[str, str]:
    # A fixed environment: the user's MANOPT, MANPATH, pager or locale must not change a byte of the output.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "MANPATH": MAN_ROOT,
        "MANWIDTH": str(MANWIDTH),
        # Hyphenation off where groff knows the register (1.23+); at this width nothing would break anyway.
        "MANROFFOPT": "-rHY=0",
        "GROFF_NO_SGR": "1",
    }


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", env=_env())


def source_path(name: str, section: str) -> str:
    """The page's source file, as ``man -w`` resolves it."""
    proc = _run(["man", "-w", section, name])
    if proc.returncode != 0 or not proc.stdout.strip():
        raise Missing(f"{name}({section}): not installed")
    return proc.stdout.splitlines()[0].strip()


_SGR = re.compile(r"\x1b\[[0-9;]*m")
_OVERSTRIKE = re.compile(r".\x08")
# troff puts two spaces after a sentence that ends a source line; one is what the held-out prose looks like.
_SENTENCE_GAP = re.compile(r"(?<=[.!?])([)\]\"'’”]*)  (?=\S)")
# tbl boxes: a rule line spans the widest cell, and at this width a prose cell is thousands of columns wide, so
# rules go and the padding before a cell border shrinks to one space (rows stay rows, columns stay in order).
_TABLE_RULE = re.compile(r"^[─┌┐└┘├┤┬┴┼│ ]*[─┌┐└┘├┤┬┴┼][─┌┐└┘├┤┬┴┼│ ]*$")
_CELL_PAD = re.compile(r" {2,}│")
# A line indented further than this was centered (``.ce``) on the 10,000-column line: it gets the body margin.
CENTERED = 100
BODY_INDENT = 7


def clean(raw: str, page: str) -> tuple[str, str]:
    """The rendered page as (description from the NAME section, cleaned body)."""
    text = _OVERSTRIKE.sub("", _SGR.sub("", raw)).replace("\r", "")
    lines = [line.expandtabs(8).rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    # The header and footer (``FIND(1)  General Commands Manual  FIND(1)``): the only lines as wide as the page.
    for i in (0, -1):
        if not lines or len(lines[i]) <= MAX_LINE:
            raise ValueError(f"{page}: no running header/footer line where expected")
        lines.pop(i)
    out: list[str] = []
    for line in lines:
        if len(line) > MAX_LINE:
            raise ValueError(f"{page}: a line of {len(line)} characters: groff wrapped a paragraph")
        body = line.lstrip(" ")
        if not body:
            if out and out[-1]:
                out.append("")
            continue
        if _TABLE_RULE.match(body):
            continue
        if "│" in body:
            body = _CELL_PAD.sub(" │", body)
        indent = len(line) - len(line.lstrip(" "))
        if indent > CENTERED:
            indent = BODY_INDENT
        out.append(" " * ((indent + 1) // 2) + _SENTENCE_GAP.sub(r"\1 ", body))
    while out and not out[0]:
        out.pop(0)
    while out and not out[-1]:
        out.pop()
    return _description(out, page), "\n".join(out) + "\n"


def _description(lines: list[str], page: str) -> str:
    """What follows the dash in the NAME section: ``tar - an archiving utility`` gives ``an archiving utility``."""
    try:
        start = lines.index("NAME") + 1
    except ValueError:
        raise ValueError(f"{page}: no NAME section") from None
    name_lines: list[str] = []
    for line in lines[start:]:
        if not line or not line.startswith(" "):
            break
        name_lines.append(line.strip())
    head = " ".join(name_lines)
    match = re.search(r"\s[-‐−—–]+\s+(.+)$", head)
    if not match:
        raise ValueError(f"{page}: NAME line without a description: {head!r}")
    return match.group(1).strip()


def render(name: str, section: str) -> str:
    """The document text: title line, blank line, cleaned body."""
    page = f"{name}({section})"
    proc = _run(["man", "-E", "UTF-8", "-P", "cat", section, name])
    if proc.returncode != 0 or not proc.stdout.strip():
        raise Missing(f"{page}: man failed: {proc.stderr.strip()[:200]}")
    description, body = clean(proc.stdout, page)
    return f"{name}({section}) — {description}\n\n{body}"


def package_of(path: str) -> tuple[str | None, str | None]:
    """The Debian package owning ``path`` (or the file it links to) and its installed version."""
    if shutil.which("dpkg") is None:
        return None, None
    for candidate in dict.fromkeys([path, os.path.realpath(path)]):
        proc = _run(["dpkg", "-S", candidate])
        if proc.returncode == 0 and proc.stdout.strip():
            # "pkg[:arch][, pkg2]: /path" — diversions print extra lines; the owner is on the last one.
            package = proc.stdout.strip().splitlines()[-1].split(": ", 1)[0].split(",")[0].strip()
            version = _run(["dpkg-query", "-W", "-f", "${Version}", package])
            return package, (version.stdout.strip() or None) if version.returncode == 0 else None
    return None, None


def build(out: Path) -> tuple[list[Entry], list[str]]:
    """Render every page of ``PAGES`` into ``out/docs``; returns the manifest entries and the pages missing here."""
    docs = out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []
    missing: list[str] = []
    for name, section in PAGES:
        try:
            path = source_path(name, section)
            text = render(name, section)
        except (Missing, ValueError) as err:
            # ValueError: a layout this script does not recognise (another groff, say). The page is left out
            # and reported, so its questions drop out instead of being scored against a mangled text.
            missing.append(str(err))
            continue
        file = f"{name}.{section}.txt"
        # newline="" writes "\n" as is on every platform: the gold offsets count one character per line end.
        with open(docs / file, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        package, version = package_of(path)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        entries.append(Entry(file, name, section, package, version, digest, len(text)))
    return entries, missing


def tool_version(cmd: list[str]) -> str | None:
    proc = _run(cmd)
    return proc.stdout.splitlines()[0].strip() if proc.returncode == 0 and proc.stdout.strip() else None


def compare(entries: list[Entry], reference: Path, out: Path) -> None:
    """Check the built documents against the reference manifest and copy the questions whose documents all match
    (a question on a document that renders differently here would be scored against text it was not written for)."""
    ref = json.loads((reference / "manifest.json").read_text(encoding="utf-8"))
    ours = {e.file: e.sha256 for e in entries}
    matching: set[str] = set()
    bad: list[str] = []
    for doc in ref["documents"]:
        file = doc["file"]
        if file not in ours:
            bad.append(f"  {file}: missing here (reference: {doc.get('package')} {doc.get('version')})")
        elif ours[file] != doc["sha256"]:
            bad.append(f"  {file}: differs (reference: {doc.get('package')} {doc.get('version')})")
        else:
            matching.add(file)
    for split in ("train", "test"):
        src = reference / f"questions-{split}.jsonl"
        if not src.exists():
            continue
        kept = total = 0
        with open(src, encoding="utf-8") as f, open(out / src.name, "w", encoding="utf-8", newline="") as g:
            for line in f:
                if not line.strip():
                    continue
                total += 1
                if all(d in matching for d in json.loads(line)["doc_ids"]):
                    g.write(line if line.endswith("\n") else line + "\n")
                    kept += 1
        print(f"{out / src.name}: {kept} of {total} questions (their documents match the reference)")
    if bad:
        print(f"warning: {len(bad)} of {len(ref['documents'])} documents differ from {reference / 'manifest.json'}")
        print("\n".join(bad))
        print("their questions were left out; other package versions render other text")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (docs/, manifest.json, questions)")
    parser.add_argument(
        "--reference", type=Path, default=REFERENCE, help="folder with the shipped manifest.json and questions"
    )
    args = parser.parse_args()
    if shutil.which("man") is None or not Path(MAN_ROOT).is_dir():
        print(f"error: man pages are not installed (need the `man` command and {MAN_ROOT})", file=sys.stderr)
        return 2
    entries, missing = build(args.out)
    if not entries:
        print("error: none of the listed man pages is installed; " + "; ".join(missing[:3]), file=sys.stderr)
        return 2
    manifest = {
        "corpus": "Debian man pages, rendered without line wrapping (scripts/build_manpages_corpus.py)",
        "render": {
            "command": "man -E UTF-8 -P cat SECTION NAME",
            "env": {k: v for k, v in _env().items() if k not in ("PATH", "HOME")},
            "man": tool_version(["man", "--version"]),
            "groff": tool_version(["groff", "--version"]),
        },
        "documents": [asdict(e) for e in entries],
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", "utf-8")
    chars = sum(e.chars for e in entries)
    print(f"{args.out / 'docs'}: {len(entries)} documents, {chars:,} characters")
    for line in missing:
        print(f"warning: left out {line}")
    if (args.reference / "manifest.json").exists():
        compare(entries, args.reference, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
