"""espresso flows."""
