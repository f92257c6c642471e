"""`vexport retention`, `vexport restore`: the retention job from the shell."""

COMMANDS: list = []
