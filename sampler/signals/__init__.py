"""Signals: named, scored properties of a session (errors, tool cycles, rarity), each a pure
function of the session's incrementally built features (rarity also of recent traffic)."""
