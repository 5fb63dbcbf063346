"""The plan executor: between the plan (pure values) and kernel/ (side effects only).

handlers.py says what each kind of step does, as calls of kernel/'s typed functions, in a table
keyed by step type; apply.py walks a plan through them in order, as a transaction (batched where
the kernel's acknowledgement is all a step needs, undone on failure or Ctrl-C).
"""
