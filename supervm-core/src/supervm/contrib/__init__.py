"""Plugins shipped with SuperVM as examples of the hook API."""
