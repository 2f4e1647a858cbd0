"""Measuring the MNIST workflow: Covalent server, runner, records, analysis, report."""
