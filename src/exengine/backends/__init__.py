"""Device backends for other frameworks; each needs its extra and is imported on its own."""
