"""The LOS core: pure decision logic, shared by the twin and the real agents.

Nothing here does I/O, reads a clock or owns a random generator: callers pass views,
histories, times and a seeded `random.Random` in.
"""
