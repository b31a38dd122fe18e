"""HTTP routes of the xalign Serve app, one module per API area."""
