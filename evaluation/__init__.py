"""xalign evaluation."""
