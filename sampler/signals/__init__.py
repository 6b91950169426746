"""Signals: named, scored properties of a session (errors, tool cycles, rarity), each a pure
function of the session's incrementally built features (rarity also of recent traffic).

Each kind is one module registered by name (``registry.py``); importing this package registers
them; each says its place in the order they run and their names are written."""

from sampler.signals import errors, rarity, tool_cycles  # noqa: F401  (imported to register)
