"""Trading agents and market sessions.

- traders.py: ZI-U, ZI-C and ZIP traders (Gode and Sunder 1993, Cliff 1997)
- gode_sunder.py, metrics.py: Gode and Sunder's markets on the CDA engine, and efficiency,
  Smith's alpha and profit dispersion; gode_sunder_defaults.py: a session's default size
- threshold.py: the Energo threshold agent
- community.py: the Energo community, call auctions every 15 minutes under Bmax caps, on
  the built-in profiles of wattmesh.meters.profiles

The `wattmesh simulate ...` commands that drive them live in wattmesh.exchange.
"""
