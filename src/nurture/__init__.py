"""nurture: an email nurture sequence and newsletter for a clinic, exactly once in effect.

Where things are, top to bottom (imports only point down; tests/unit/test_layers.py checks it):

- entry points: ``web/`` (the signup endpoint, admin, studio), ``cli/``, ``scheduler``,
  ``sending_processes`` (one pass over several processes), ``runtime`` (builds the real parts);
- ``feedback/``: what comes back: clicks and opens landing, bounces and complaints, reports,
  a person's timeline;
- ``people/``: subscribers, the consent ledger, preferences, imports and data rights, and webhooks
  out (events queued where they happen, endpoints, the delivery worker);
- ``sending/``: the journey planner, the outbox, ``compose`` (the one message builder),
  ``messages`` (MIME bytes), transports, the sender and the store it claims and records through;
- ``content/``: the templates marketing edits, rendering, the validator;
- the core, here: config, db, models, migrations, tokens, webhook signatures, links, the clock,
  message keys.

A message is composed in ``sending.compose``, claimed in ``sending.outbox`` (through
``sending.send_store``), sent in ``sending.sender`` over ``sending.transports``, and its outcome
written in ``sending.outbox.record_outcomes``.
"""
