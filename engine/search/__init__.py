"""Evolutionary (and random) search over allocation functions, with a durable run folder.

Light on import (no torch): `engine.search.control` and `engine.search.events` serve the screens
and the CLI too. The search itself: `engine.search.start.search_controller`.
"""
