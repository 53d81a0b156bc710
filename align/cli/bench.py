"""Run one of the benchmarks under `eval/bench/` (a source checkout's; they are not installed with the package).
Each measures align against a reference in the same run and prints the ratio (eval/bench/README.md).

    align bench                          # list them
    align bench decode --preset small --batch 8 --new_tokens 128 --repeats 5
    align bench gpu --out eval/bench/results/gpu.json      # the GPU run sheet
    align bench decode --help

Options after the name are the benchmark's own.
"""

import runpy
import sys

from ..config import exit_with_error
from ..io import CHECKOUT

BENCH_DIR = CHECKOUT / "eval" / "bench"


def benchmarks() -> dict[str, str]:
    """Name -> first line of the docstring, of every benchmark script in the checkout."""
    import ast

    found = {}
    for script in sorted(BENCH_DIR.glob("*.py")):
        docstring = ast.get_docstring(ast.parse(script.read_text())) or ""
        found[script.stem] = docstring.splitlines()[0] if docstring else ""
    return found


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or "align bench"
    if not BENCH_DIR.is_dir():
        exit_with_error(f"no eval/bench/ next to this install ({BENCH_DIR}); the benchmarks ship with the source "
                        "checkout: git clone the repository and pip install -e .", prog)  # fmt: skip
    available = benchmarks()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks:\n" + "\n".join(f"  {name:12s} {line}" for name, line in available.items()))
        return
    name, rest = argv[0], argv[1:]
    if name not in available:
        exit_with_error(f"unknown benchmark {name!r}, expected one of {list(available)}", prog)
    sys.argv = [f"{prog} {name}", *rest]  # the benchmark parses sys.argv and names itself in its usage line
    runpy.run_path(str(BENCH_DIR / f"{name}.py"), run_name="__main__")


if __name__ == "__main__":
    main()
