"""Placeholder created by the GhostNet/MobileNet helper so the registry imports; the owning helper replaces it."""
