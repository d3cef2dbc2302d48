"""One module per command: ``NAME_arguments(parser)`` adds its arguments, ``cmd_NAME(args)`` runs it
and returns the exit code. `zoo.cli` parses and dispatches; the core plugin registers generate,
chat, eval, export and plot through `zoo_register_commands`, as any plugin would."""
