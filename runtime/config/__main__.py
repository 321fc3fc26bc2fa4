"""``python -m runtime.config``: the table of every variable, as docs/configuration.md has it."""

from runtime.config import markdown_table

print(markdown_table(), end="")
