"""What marketing edits, read and rendered: the sequence files and their front matter
(``sequences``), the Jinja renderer with CSS inlined once per template version (``rendering`` and
its parts), the plain-text part, and the validator with its wording rules. Depends only on the core
(config, tokens, links, message_key)."""
