"""The people on the list and the rules over them: signing up and the consent ledger,
confirming, unsubscribing and resuming, preferences, address checks, CSV import and export, and
data rights (export, erasure). Uses ``sending`` to queue and cancel mail."""
