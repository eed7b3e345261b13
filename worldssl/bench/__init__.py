"""Benchmarks behind ``worldssl bench WHAT``: each figure is printed beside a baseline measured in the same run."""
