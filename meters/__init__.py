"""Meter readings and profiles. Not built yet."""
