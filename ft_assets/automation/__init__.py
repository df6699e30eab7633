"""Sensors, schedules and automation conditions (retraining on new drops comes with a later issue)."""
