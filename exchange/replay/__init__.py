"""Order-log replay for analysts: ``replay`` runs a log through the engine (with the
C scanner ``_logscan`` for the usual lines), ``to_ledger`` settles a replay into a
ledger, ``sample_log`` writes the bundled sample and benchmark logs."""
