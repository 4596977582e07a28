"""Trading agents (ZI-U, ZI-C, Energo threshold, ZIP) and market sessions. Not built yet."""
