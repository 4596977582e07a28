"""Meters: signed readings from simulated and real meters (DESIGN.md, "Meters")."""
