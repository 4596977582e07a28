"""Meters: signed readings from simulated and real meters (docs/design.md, "Meters")."""
