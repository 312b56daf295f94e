"""MkDocs hook (mkdocs.yml `hooks:`): the settings table of configuration.md, generated from the schema
(linclass.settings, what `linclass settings` prints), so that the site never lists a stale default."""
from __future__ import annotations

MARKER = "<!-- settings-table -->"


def settings_table() -> str:
    from pydantic import BaseModel

    from linclass.settings import Settings, allowed

    def rows(section, path=""):
        for name, field in type(section).model_fields.items():
            key, value = f"{path}{name}", getattr(section, name)
            if isinstance(value, BaseModel):
                yield from rows(value, key + ".")
            elif key != "checked":
                cells = (f"`{key}`", f"`{value!r}`", allowed(field), field.description or "")
                yield "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join(["| setting | default | allowed | meaning |", "|---|---|---|---|", *rows(Settings())])


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, settings_table()) if MARKER in markdown else markdown
