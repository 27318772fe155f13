"""The async flavor (canonical source of the generated sync flavor)."""
