"""What comes back after sending: clicks and opens landing (``tracking``), returned mail and
complaints (``bounces`` and its reader, classifier and trust rules), and the figures people read
(``reports``, ``funnel_figures``, a person's ``timeline``)."""
