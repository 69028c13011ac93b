"""Storage backends under ExEngine's historical import path."""
