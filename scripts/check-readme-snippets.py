#!/usr/bin/env python3
"""Checks that every C++ block of a Markdown file is cut from a compiled example.

Each ```cpp block must follow a line `<!-- snippet: examples/NAME.cpp -->` and equal that file's
regions between `// [readme]` and `// [/readme]` lines, each dedented, joined by one blank line.
CI builds and runs the examples (ctest `examples`), so a snippet that passes this check compiles
and runs.

usage: check-readme-snippets.py ROOT [MARKDOWN...]   (default: README.md)
Prints each mismatch with a diff; exits 1 if there is one.
"""
import difflib
import pathlib
import re
import sys
import textwrap

MARKER = re.compile(r"^<!-- snippet: (\S+) -->$")


def regions(path):
    out, current = [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped == "// [readme]":
            if current is not None:
                sys.exit(f"{path}:{number}: [readme] inside a [readme] region")
            current = []
        elif stripped == "// [/readme]":
            if current is None:
                sys.exit(f"{path}:{number}: [/readme] without [readme]")
            out.append(textwrap.dedent("\n".join(current)).strip("\n"))
            current = None
        elif current is not None:
            current.append(line)
    if current is not None:
        sys.exit(f"{path}: unterminated [readme] region")
    if not out:
        sys.exit(f"{path}: no // [readme] region")
    return "\n\n".join(out)


def check(root, markdown):
    lines = markdown.read_text().splitlines()
    problems, blocks = 0, 0
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```cpp":
            start = i
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            blocks += 1
            marker = MARKER.match(lines[start - 1].strip()) if start > 0 else None
            if not marker:
                print(f"{markdown}:{start + 1}: a cpp block without a "
                      "'<!-- snippet: examples/NAME.cpp -->' line before it")
                problems += 1
            else:
                source = root / marker.group(1)
                if not source.is_file():
                    print(f"{markdown}:{start}: {marker.group(1)} does not exist")
                    problems += 1
                else:
                    expected = regions(source)
                    actual = "\n".join(body).strip("\n")
                    if actual != expected:
                        print(f"{markdown}:{start + 1}: the block differs from {marker.group(1)}:")
                        sys.stdout.writelines(difflib.unified_diff(
                            expected.splitlines(True), [l + "\n" for l in actual.splitlines()],
                            marker.group(1), str(markdown)))
                        problems += 1
        i += 1
    print(f"{markdown}: {blocks} cpp blocks, {problems} not matching their example")
    return problems


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    root = pathlib.Path(sys.argv[1])
    files = [root / name for name in (sys.argv[2:] or ["README.md"])]
    sys.exit(1 if sum(check(root, f) for f in files) else 0)


if __name__ == "__main__":
    main()
