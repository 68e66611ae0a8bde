"""The interposer (shim/): its build and its tables against Python's."""
