"""How a stage runs: its entry point (checked params, atomic outputs, exit codes), the file layout, BLAS threads."""
