"""difflab's Python API: what notebooks, the studio and the command line share."""
