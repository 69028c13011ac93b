"""Device implementations that ship with the engine."""
