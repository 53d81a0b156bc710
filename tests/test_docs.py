"""The documentation checked, not only built: the rendered site holds no placeholder taken for an HTML tag, every
`align` command shown in docs/ parses, and docs/layout.md names every module and package."""

import html.parser
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_readme import align_part, bash_commands, parses

ROOT = Path(__file__).resolve().parents[1]
DOC_PAGES = sorted((ROOT / "docs").rglob("*.md"))

# Every element an HTML page may hold (HTML5, and the SVG the theme inlines); anything else in a rendered page is
# text the Markdown turned into a tag: `<runs_dir>/<name>/` becomes "outputs under //".
HTML_TAGS = set(
    """a abbr address area article aside audio b base bdi bdo blockquote body br button canvas caption cite
code col colgroup data datalist dd del details dfn dialog div dl dt em embed fieldset figcaption figure footer form
h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe img input ins kbd label legend li link main map mark menu meta
meter nav noscript object ol optgroup option output p param picture pre progress q rp rt ruby s samp script search
section select slot small source span strong style sub summary sup table tbody td template textarea tfoot th thead
time title tr track u ul var video wbr svg path g circle rect line polyline polygon use defs symbol""".split()
)


class TagCollector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.add(tag)


def test_no_rendered_page_holds_a_placeholder_taken_for_a_tag(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    pages = sorted((tmp_path / "site").rglob("*.html"))
    assert len(pages) >= len(DOC_PAGES)
    for page in pages:
        collector = TagCollector()
        collector.feed(page.read_text(encoding="utf-8"))
        unknown = collector.tags - HTML_TAGS
        assert not unknown, f"{page.relative_to(tmp_path / 'site')}: {sorted(unknown)} (escape < and > in its source)"
    rounds = (tmp_path / "site" / "stages" / "rounds" / "index.html").read_text(encoding="utf-8")
    assert "&lt;runs_dir&gt;/&lt;name&gt;/" in rounds  # the options table names the placeholder as written


def doc_commands() -> list[tuple[str, list[str]]]:
    return [(page.relative_to(ROOT).as_posix(), command) for page in DOC_PAGES
            for command in bash_commands(page.read_text(encoding="utf-8")) if align_part(command)]  # fmt: skip


@pytest.mark.parametrize("page, command", doc_commands(), ids=lambda value: value if isinstance(value, str) else
                         shlex.join(value)[:80])  # fmt: skip
def test_every_command_in_the_docs_parses(page, command):
    """Its options are the command's own and its values of the right kind (a file it names may be the user's)."""
    problem = parses(command)
    assert problem is None, f"{page}: {shlex.join(command)}: {problem}"


def test_the_layout_page_names_every_module_and_package():
    layout = (ROOT / "docs" / "layout.md").read_text()
    for module in sorted((ROOT / "align").glob("*.py")):
        if module.stem not in ("__init__", "__main__"):
            assert re.search(rf"\b{module.stem}\b", layout), f"docs/layout.md does not name align/{module.name}"
    for package in sorted((ROOT / "align").iterdir()):
        if package.is_dir() and not package.name.startswith("__"):
            assert f"align/{package.name}/" in layout, f"docs/layout.md does not name align/{package.name}/"
