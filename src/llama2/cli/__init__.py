"""The `llama2` command: one module per command group, each with `register(subparsers)`."""
