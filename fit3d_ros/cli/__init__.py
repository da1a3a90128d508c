"""The ``fit3d-ros`` command line."""
