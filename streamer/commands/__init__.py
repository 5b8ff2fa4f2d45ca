"""CLI subcommands, one module each; see streamer/cli.py for the contract."""
