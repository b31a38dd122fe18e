"""xalign cluster."""
