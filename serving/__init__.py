"""xalign serving."""
