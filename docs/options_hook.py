"""MkDocs hook: `<!-- options: module.ConfigClass -->` in a page becomes the table of that config's fields
(option, default, help), read from the dataclass itself, so the stage pages list exactly what `--help` does."""

from __future__ import annotations

import dataclasses
import html
import importlib
import re

MARKER = re.compile(r"<!-- options: ([\w.]+)\.(\w+) -->")


def options_table(module: str, name: str) -> str:
    config_class = getattr(importlib.import_module(module), name)
    rows = ["| option | default | what it sets |", "|---|---|---|"]
    for field in dataclasses.fields(config_class):
        if field.default is not dataclasses.MISSING:
            default = f"`{field.default!r}`"
        elif field.default_factory is not dataclasses.MISSING:
            default = f"`{field.default_factory()!r}`"
        else:
            default = "required"
        # Help texts name placeholders (`<runs_dir>/<name>/`): escaped, or the page would take them for HTML tags.
        help_text = html.escape(" ".join(str(field.metadata.get("help", "")).split()), quote=False).replace("|", "\\|")
        default = html.escape(default, quote=False).replace("|", "\\|")
        rows.append(f"| `--{field.name}` | {default} | {help_text} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return MARKER.sub(lambda match: options_table(match.group(1), match.group(2)), markdown)
