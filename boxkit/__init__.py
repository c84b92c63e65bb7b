"""boxkit: the small helpers that the Box's programs and the cloud share, below everything else.

`files` (atomic writes, private files and databases, the one-process lock of a state directory)
and `clikit` (what `boxd`, `boxctl` and `boxcloud` share in front of a person: one-line usage
errors, `--help` with examples and exit statuses, no traceback). Standard library only; it
imports no other package of the project (docs/architecture.md, "Layers").
"""
