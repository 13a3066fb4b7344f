"""espresso connectors."""
