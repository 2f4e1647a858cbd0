"""The Covalent MNIST tutorial's workflow, written once, runnable plain or as a lattice.

Import `mnist_core.workflow` for the runnable workflow (it imports covalent);
the model, tasks, data and config modules don't.
"""
