"""espresso metrics."""
