"""The benchmark harness: specs (TOML), grid expansion, the cell runner, result store, launchers."""
