#!/usr/bin/env python3
"""The manual pages against what they describe: every option of `spliced --help` in spliced(8), every
config key (the README's example and the loader's lists of known keys) in spliced.yaml(5), the version
in both headers, and no warning from man(1) when it formats them.

Usage: check-man.py BINARY SOURCE_DIR
"""
import os
import re
import shutil
import subprocess
import sys


def roff_text(path):
    """The page's text with the roff escapes that matter here undone."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"\\f[BIRP]", "", text)
    text = text.replace("\\-", "-").replace("\\(dq", '"').replace("\\e", "\\")
    return text


def main():
    binary, src = sys.argv[1], sys.argv[2]
    man8 = os.path.join(src, "man", "spliced.8")
    man5 = os.path.join(src, "man", "spliced.yaml.5")
    problems = []

    # Options: spliced --help, plus the aliases main.cpp accepts.
    usage = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    options = sorted(set(re.findall(r"--[a-z][a-z-]*", usage)) | {"--help", "--config="})
    page8 = roff_text(man8)
    for opt in options:
        if opt not in page8:
            problems.append(f"spliced.8 does not mention {opt}")

    # Config keys: the README's example config and every key list in the loader.
    with open(os.path.join(src, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = re.search(r"^## Configuration\n+```yaml\n(.*?)^```", readme, re.S | re.M)
    if not block:
        problems.append("README.md has no ```yaml block under '## Configuration'")
        readme_keys = set()
    else:
        body = re.sub(r"#.*", "", block.group(1))
        readme_keys = set(re.findall(r"([a-z_]+):(?=\s)", body))
    with open(os.path.join(src, "daemon", "config", "loader.cpp"), encoding="utf-8") as f:
        loader = f.read()
    lists = re.findall(r"mapping \w+\(\*this,[^;]*?\{((?:\s*\"[a-z_]+\",?)+)\s*\}", loader, re.S)
    loader_keys = set()
    for keys in lists:
        loader_keys |= set(re.findall(r'"([a-z_]+)"', keys))
    if len(lists) < 5 or "routes" not in loader_keys:
        problems.append(f"found only {len(lists)} key lists in daemon/config/loader.cpp: the pattern is stale")
    # A key is described where a .B or .BR line starts with it ("name:" or "name").
    with open(man5, encoding="utf-8") as f:
        terms = {m.group(1) for m in re.finditer(r'^\.BR? "?([a-z_]+):?', f.read(), re.M)}
    for key in sorted(readme_keys | loader_keys):
        if key not in terms:
            problems.append(f"spliced.yaml.5 has no .B/.BR entry for the key {key}")

    # Versions: the headers say what --version says.
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    for path in (man8, man5):
        with open(path, encoding="utf-8") as f:
            th = next((l for l in f if l.startswith(".TH ")), "")
        if f'"spliced {version}"' not in th:
            problems.append(f"{os.path.basename(path)}: .TH does not say \"spliced {version}\": {th.strip()}")

    # Formatting: man --warnings prints groff's warnings on stderr.
    if shutil.which("man"):
        for path in (man8, man5):
            r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path],
                               capture_output=True, text=True, env={**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"})
            if r.returncode != 0 or r.stderr.strip():
                problems.append(f"{os.path.basename(path)}: man --warnings: {r.stderr.strip() or r.returncode}")
    else:
        print("note: man(1) is missing, formatting not checked")

    for p in problems:
        print("FAIL:", p)
    print(f"SUMMARY man_pages: {len(options)} options, {len(readme_keys | loader_keys)} config keys "
          f"({len(lists)} loader key lists), version {version}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
