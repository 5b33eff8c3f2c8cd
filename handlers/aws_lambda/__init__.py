"""AWS Lambda entry points. Each module is a thin shim over `shared`; nothing here imports torch.

Importing this package is cheap: each function module loads its own model at its own init.
"""
