"""Getting mail out, once: the journey planner (what falls due when, in the reader's own
time), the outbox (claims under owned leases, outcomes), compose (the one message builder) and
messages (MIME bytes), the transports, and the sender's pass over a narrow store
(``send_store``; ``memory_store`` for unit tests), plus newsletter broadcasts."""
