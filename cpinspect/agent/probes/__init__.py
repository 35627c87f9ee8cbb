"""Read-only probes of the running CherryPy process. Each copies what it reads; none locks."""
