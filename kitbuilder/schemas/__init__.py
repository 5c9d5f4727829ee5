"""JSON Schemas shipped with the package (``schemas/`` at the repository root links here)."""
