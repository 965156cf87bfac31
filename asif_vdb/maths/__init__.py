"""The ASIF maths and its statistics as pure functions on arrays: no store, no model, no I/O."""
