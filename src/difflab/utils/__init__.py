"""Small helpers shared across difflab."""
