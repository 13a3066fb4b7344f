"""espresso state."""
